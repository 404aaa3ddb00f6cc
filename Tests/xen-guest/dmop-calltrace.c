/* SPDX-License-Identifier: MIT */
/*
 * LD_PRELOAD shim for QEMU: logs every xendevicemodel_* call QEMU makes, with
 * its arguments and the result the library gave back, one line per call, to
 * the file named by $DMOP_CALLTRACE. It wraps whichever libxendevicemodel
 * QEMU loaded (Xen's, or the broker's drop-in), so the same trace is taken
 * with and without the broker and can be held against the broker's audit
 * log: a call QEMU made that the audit does not show, or with another
 * result, is a DMOP the broker lost or changed.
 *
 * Line format (times are CLOCK_MONOTONIC seconds, comparable with dom0's
 * /proc/uptime):
 *   <t> op=<DMOP name> dom=<domid> [<field>=<value> ...] rc=<rc> errno=<errno>
 * DMOP names and field names are those of <xen/hvm/dm_op.h> and of the
 * broker's audit and policy (map_pcidev is map_io_range type=2,
 * shutdown is remote_shutdown, modified_memory_bulk is modified_memory).
 *
 * The file is opened in a constructor: QEMU with dm_restrict chroots and
 * drops to its -runas user after start-up, when a path would no longer work.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xendevicemodel.h>

static int trace_fd = -1;
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;

__attribute__((constructor)) static void calltrace_open(void)
{
    const char *path = getenv("DMOP_CALLTRACE");
    if (path && *path)
        trace_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    /* The broker and other children need not see the shim. */
    unsetenv("LD_PRELOAD");
}

/* Calls the library makes to itself (modified_memory through
 * modified_memory_bulk) are one DMOP: only the outermost call is noted. */
static __thread int depth;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* One line per call; write(2) of a whole line keeps lines of threads apart. */
static void note(double t, int rc, int err, const char *fmt, ...)
{
    char line[512];
    int n, m;
    va_list ap;

    if (trace_fd < 0 || depth > 0)
        return;
    n = snprintf(line, sizeof line, "%.6f ", t);
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof line - 32)
        n = (int)sizeof line - 32;
    n += snprintf(line + n, sizeof line - (size_t)n, " rc=%d errno=%d\n", rc, rc < 0 ? err : 0);
    pthread_mutex_lock(&trace_lock);
    if (write(trace_fd, line, (size_t)n) < 0) {
        /* nothing to do: the trace is best effort, QEMU must go on */
    }
    pthread_mutex_unlock(&trace_lock);
}

/* The library's own function (RTLD_NEXT), resolved once. */
#define REAL(name)                                        \
    static __typeof__(&name) real_##name;                 \
    if (!real_##name)                                     \
        real_##name = (__typeof__(&name))dlsym(RTLD_NEXT, #name); \
    if (!real_##name) {                                   \
        errno = ENOSYS;                                   \
        return -1;                                        \
    }

#define CALL(expr)            \
    double t_ = now();        \
    depth++;                  \
    int rc_ = (expr);         \
    int err_ = errno;         \
    depth--;

#define DONE() \
    errno = err_; \
    return rc_;

int xendevicemodel_create_ioreq_server(xendevicemodel_handle *h, domid_t dom, int bufioreq, ioservid_t *id)
{
    REAL(xendevicemodel_create_ioreq_server);
    CALL(real_xendevicemodel_create_ioreq_server(h, dom, bufioreq, id));
    note(t_, rc_, err_, "op=create_ioreq_server dom=%u handle_bufioreq=%d id=%d", dom, bufioreq,
         rc_ == 0 && id ? (int)*id : -1);
    DONE();
}

int xendevicemodel_get_ioreq_server_info(xendevicemodel_handle *h, domid_t dom, ioservid_t id, xen_pfn_t *ioreq_gfn,
                                         xen_pfn_t *bufioreq_gfn, evtchn_port_t *bufioreq_port)
{
    REAL(xendevicemodel_get_ioreq_server_info);
    CALL(real_xendevicemodel_get_ioreq_server_info(h, dom, id, ioreq_gfn, bufioreq_gfn, bufioreq_port));
    note(t_, rc_, err_, "op=get_ioreq_server_info dom=%u id=%u", dom, id);
    DONE();
}

int xendevicemodel_map_io_range_to_ioreq_server(xendevicemodel_handle *h, domid_t dom, ioservid_t id, int is_mmio,
                                                uint64_t start, uint64_t end)
{
    REAL(xendevicemodel_map_io_range_to_ioreq_server);
    CALL(real_xendevicemodel_map_io_range_to_ioreq_server(h, dom, id, is_mmio, start, end));
    note(t_, rc_, err_, "op=map_io_range_to_ioreq_server dom=%u id=%u type=%d start=0x%" PRIx64 " end=0x%" PRIx64, dom,
         id, is_mmio, start, end);
    DONE();
}

int xendevicemodel_unmap_io_range_from_ioreq_server(xendevicemodel_handle *h, domid_t dom, ioservid_t id, int is_mmio,
                                                    uint64_t start, uint64_t end)
{
    REAL(xendevicemodel_unmap_io_range_from_ioreq_server);
    CALL(real_xendevicemodel_unmap_io_range_from_ioreq_server(h, dom, id, is_mmio, start, end));
    note(t_, rc_, err_, "op=unmap_io_range_from_ioreq_server dom=%u id=%u type=%d start=0x%" PRIx64 " end=0x%" PRIx64,
         dom, id, is_mmio, start, end);
    DONE();
}

int xendevicemodel_map_pcidev_to_ioreq_server(xendevicemodel_handle *h, domid_t dom, ioservid_t id, uint16_t seg,
                                              uint8_t bus, uint8_t dev, uint8_t fn)
{
    REAL(xendevicemodel_map_pcidev_to_ioreq_server);
    CALL(real_xendevicemodel_map_pcidev_to_ioreq_server(h, dom, id, seg, bus, dev, fn));
    note(t_, rc_, err_, "op=map_io_range_to_ioreq_server dom=%u id=%u type=2 sbdf=%04x:%02x:%02x.%u", dom, id, seg, bus,
         dev, fn);
    DONE();
}

int xendevicemodel_unmap_pcidev_from_ioreq_server(xendevicemodel_handle *h, domid_t dom, ioservid_t id, uint16_t seg,
                                                  uint8_t bus, uint8_t dev, uint8_t fn)
{
    REAL(xendevicemodel_unmap_pcidev_from_ioreq_server);
    CALL(real_xendevicemodel_unmap_pcidev_from_ioreq_server(h, dom, id, seg, bus, dev, fn));
    note(t_, rc_, err_, "op=unmap_io_range_from_ioreq_server dom=%u id=%u type=2 sbdf=%04x:%02x:%02x.%u", dom, id, seg,
         bus, dev, fn);
    DONE();
}

int xendevicemodel_destroy_ioreq_server(xendevicemodel_handle *h, domid_t dom, ioservid_t id)
{
    REAL(xendevicemodel_destroy_ioreq_server);
    CALL(real_xendevicemodel_destroy_ioreq_server(h, dom, id));
    note(t_, rc_, err_, "op=destroy_ioreq_server dom=%u id=%u", dom, id);
    DONE();
}

int xendevicemodel_set_ioreq_server_state(xendevicemodel_handle *h, domid_t dom, ioservid_t id, int enabled)
{
    REAL(xendevicemodel_set_ioreq_server_state);
    CALL(real_xendevicemodel_set_ioreq_server_state(h, dom, id, enabled));
    note(t_, rc_, err_, "op=set_ioreq_server_state dom=%u id=%u enabled=%d", dom, id, enabled);
    DONE();
}

int xendevicemodel_set_pci_intx_level(xendevicemodel_handle *h, domid_t dom, uint16_t seg, uint8_t bus, uint8_t dev,
                                      uint8_t intx, unsigned int level)
{
    REAL(xendevicemodel_set_pci_intx_level);
    CALL(real_xendevicemodel_set_pci_intx_level(h, dom, seg, bus, dev, intx, level));
    note(t_, rc_, err_, "op=set_pci_intx_level dom=%u domain=%u bus=%u device=%u intx=%u level=%u", dom, seg, bus, dev,
         intx, level);
    DONE();
}

int xendevicemodel_set_isa_irq_level(xendevicemodel_handle *h, domid_t dom, uint8_t irq, unsigned int level)
{
    REAL(xendevicemodel_set_isa_irq_level);
    CALL(real_xendevicemodel_set_isa_irq_level(h, dom, irq, level));
    note(t_, rc_, err_, "op=set_isa_irq_level dom=%u isa_irq=%u level=%u", dom, irq, level);
    DONE();
}

int xendevicemodel_set_pci_link_route(xendevicemodel_handle *h, domid_t dom, uint8_t link, uint8_t irq)
{
    REAL(xendevicemodel_set_pci_link_route);
    CALL(real_xendevicemodel_set_pci_link_route(h, dom, link, irq));
    note(t_, rc_, err_, "op=set_pci_link_route dom=%u link=%u isa_irq=%u", dom, link, irq);
    DONE();
}

int xendevicemodel_inject_msi(xendevicemodel_handle *h, domid_t dom, uint64_t addr, uint32_t data)
{
    REAL(xendevicemodel_inject_msi);
    CALL(real_xendevicemodel_inject_msi(h, dom, addr, data));
    note(t_, rc_, err_, "op=inject_msi dom=%u addr=0x%" PRIx64 " data=0x%x", dom, addr, data);
    DONE();
}

int xendevicemodel_track_dirty_vram(xendevicemodel_handle *h, domid_t dom, uint64_t first_pfn, uint32_t nr,
                                    unsigned long *bitmap)
{
    REAL(xendevicemodel_track_dirty_vram);
    CALL(real_xendevicemodel_track_dirty_vram(h, dom, first_pfn, nr, bitmap));
    unsigned dirty = 0;
    if (rc_ == 0 && bitmap)
        for (uint32_t i = 0; i < (nr + 8 * sizeof(long) - 1) / (8 * sizeof(long)); i++)
            dirty += (unsigned)__builtin_popcountl(bitmap[i]);
    note(t_, rc_, err_, "op=track_dirty_vram dom=%u first_pfn=0x%" PRIx64 " nr=%u dirty=%u", dom, first_pfn, nr, dirty);
    DONE();
}

int xendevicemodel_modified_memory(xendevicemodel_handle *h, domid_t dom, uint64_t first_pfn, uint32_t nr)
{
    REAL(xendevicemodel_modified_memory);
    CALL(real_xendevicemodel_modified_memory(h, dom, first_pfn, nr));
    note(t_, rc_, err_, "op=modified_memory dom=%u nr_extents=1 pages=%u largest_extent=%u", dom, nr, nr);
    DONE();
}

int xendevicemodel_modified_memory_bulk(xendevicemodel_handle *h, domid_t dom,
                                        struct xen_dm_op_modified_memory_extent extents[], uint32_t nr)
{
    REAL(xendevicemodel_modified_memory_bulk);
    uint64_t pages = 0, largest = 0;
    for (uint32_t i = 0; extents && i < nr; i++) {
        pages += extents[i].nr;
        if (extents[i].nr > largest)
            largest = extents[i].nr;
    }
    CALL(real_xendevicemodel_modified_memory_bulk(h, dom, extents, nr));
    note(t_, rc_, err_, "op=modified_memory dom=%u nr_extents=%u pages=%" PRIu64 " largest_extent=%" PRIu64, dom, nr, pages, largest);
    DONE();
}

int xendevicemodel_set_mem_type(xendevicemodel_handle *h, domid_t dom, hvmmem_type_t type, uint64_t first_pfn,
                                uint32_t nr)
{
    REAL(xendevicemodel_set_mem_type);
    CALL(real_xendevicemodel_set_mem_type(h, dom, type, first_pfn, nr));
    note(t_, rc_, err_, "op=set_mem_type dom=%u mem_type=%d first_pfn=0x%" PRIx64 " nr=%u", dom, (int)type, first_pfn,
         nr);
    DONE();
}

int xendevicemodel_inject_event(xendevicemodel_handle *h, domid_t dom, int vcpu, uint8_t vector, uint8_t type,
                                uint32_t error_code, uint8_t insn_len, uint64_t extra)
{
    REAL(xendevicemodel_inject_event);
    CALL(real_xendevicemodel_inject_event(h, dom, vcpu, vector, type, error_code, insn_len, extra));
    note(t_, rc_, err_, "op=inject_event dom=%u vcpuid=%d vector=%u type=%u", dom, vcpu, vector, type);
    DONE();
}

int xendevicemodel_shutdown(xendevicemodel_handle *h, domid_t dom, unsigned int reason)
{
    REAL(xendevicemodel_shutdown);
    CALL(real_xendevicemodel_shutdown(h, dom, reason));
    note(t_, rc_, err_, "op=remote_shutdown dom=%u reason=%u", dom, reason);
    DONE();
}

int xendevicemodel_relocate_memory(xendevicemodel_handle *h, domid_t dom, uint32_t size, uint64_t src_gfn,
                                   uint64_t dst_gfn)
{
    REAL(xendevicemodel_relocate_memory);
    CALL(real_xendevicemodel_relocate_memory(h, dom, size, src_gfn, dst_gfn));
    note(t_, rc_, err_, "op=relocate_memory dom=%u size=%u src_gfn=0x%" PRIx64 " dst_gfn=0x%" PRIx64, dom, size, src_gfn,
         dst_gfn);
    DONE();
}

int xendevicemodel_pin_memory_cacheattr(xendevicemodel_handle *h, domid_t dom, uint64_t start, uint64_t end,
                                        uint32_t type)
{
    REAL(xendevicemodel_pin_memory_cacheattr);
    CALL(real_xendevicemodel_pin_memory_cacheattr(h, dom, start, end, type));
    note(t_, rc_, err_, "op=pin_memory_cacheattr dom=%u start=0x%" PRIx64 " end=0x%" PRIx64 " type=%u", dom, start, end,
         type);
    DONE();
}

int xendevicemodel_nr_vcpus(xendevicemodel_handle *h, domid_t dom, unsigned int *vcpus)
{
    REAL(xendevicemodel_nr_vcpus);
    CALL(real_xendevicemodel_nr_vcpus(h, dom, vcpus));
    note(t_, rc_, err_, "op=nr_vcpus dom=%u", dom);
    DONE();
}
