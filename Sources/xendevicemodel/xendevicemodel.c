/* SPDX-License-Identifier: MIT */
/*
 * xendevicemodel.c: the 26 functions of Xen 4.17's <xendevicemodel.h>,
 * forwarding every DMOP to dmop-broker instead of issuing
 * IOCTL_PRIVCMD_DM_OP.
 *
 * Each function builds the same buffers as Xen's libxendevicemodel: buffer
 * 0 is a zeroed struct xen_dm_op (32 bytes) with the op and its payload;
 * track_dirty_vram and modified_memory add buffer 1. Arguments Xen's
 * library rejects itself are rejected here the same way (EINVAL, nothing
 * sent). Outputs are written where Xen's library writes them, and only on
 * success. The definitions are compiled against the system header, so a
 * signature that differs from Debian's fails to build.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <stdint.h> /* <xen/xen.h> uses the fixed-width types without it */
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xendevicemodel.h>

#include "private.h"

/* ---------- helpers ---------- */

static int call1(xendevicemodel_handle *dmod, domid_t domid,
                 struct xen_dm_op *op)
{
    struct dmop_buf bufs[1] = { { op, sizeof(*op) } };
    return dmop_session_call(dmod, domid, 1, bufs);
}

/* The interrupt ops: posted when the session allows (session.c). */
static int post1(xendevicemodel_handle *dmod, domid_t domid,
                 struct xen_dm_op *op)
{
    struct dmop_buf buf = { op, sizeof(*op) };
    return dmop_session_post(dmod, domid, op->op, &buf);
}

static int call2(xendevicemodel_handle *dmod, domid_t domid,
                 struct xen_dm_op *op, void *extra, size_t extra_size)
{
    struct dmop_buf bufs[2] = { { op, sizeof(*op) }, { extra, extra_size } };
    return dmop_session_call(dmod, domid, 2, bufs);
}

static void op_init(struct xen_dm_op *op, uint32_t code)
{
    memset(op, 0, sizeof(*op));
    op->op = code;
}

/* A NULL handle is a caller bug; fail it rather than crash. */
#define CHECK_HANDLE(dmod)          \
    do {                            \
        if (!(dmod)) {              \
            errno = EBADF;          \
            return -1;              \
        }                           \
    } while (0)

/* ---------- open, close, restrict ---------- */

static int restrict_callback(Xentoolcore__Active_Handle *ah, domid_t domid)
{
    xendevicemodel_handle *dmod = (xendevicemodel_handle *)
        ((char *)ah - offsetof(xendevicemodel_handle, tc_ah));
    return xendevicemodel_restrict(dmod, domid);
}

DMOP_EXPORT xendevicemodel_handle *
xendevicemodel_open(struct xentoollog_logger *logger, unsigned int open_flags)
{
    xendevicemodel_handle *dmod = calloc(1, sizeof(*dmod));
    int e;

    if (!dmod)
        return NULL;
    dmod->logger = logger;
    dmod->flags = open_flags;
    dmod->tc_ah.restrict_callback = restrict_callback;
    /* libxentoolcore's rule: register before the handle can do anything. */
    xentoolcore__register_active_handle(&dmod->tc_ah);

    if (dmop_session_attach(dmod) < 0) {
        e = errno;
        xentoolcore__deregister_active_handle(&dmod->tc_ah);
        free(dmod);
        errno = e;
        return NULL;
    }
    return dmod;
}

DMOP_EXPORT int xendevicemodel_close(xendevicemodel_handle *dmod)
{
    if (!dmod)
        return 0;
    /* libxentoolcore's rule: deregister first. The broker session stays
     * for the process's other handles (see session.c). */
    xentoolcore__deregister_active_handle(&dmod->tc_ah);
    free(dmod);
    return 0;
}

/*
 * The broker's privcmd fd is restricted to its one domain before it serves
 * anyone, so every handle of ours is restricted from birth. As with
 * IOCTL_PRIVCMD_RESTRICT on an fd already restricted: the same domid is a
 * no-op success, another one is EINVAL.
 */
DMOP_EXPORT int xendevicemodel_restrict(xendevicemodel_handle *dmod,
                                        domid_t domid)
{
    CHECK_HANDLE(dmod);
    if (domid != dmod->domid) {
        dmop_log(dmod->logger, XTL_ERROR, -1,
                 "cannot restrict to domain %u: this handle's dmop-broker "
                 "serves domain %u only", domid, dmod->domid);
        errno = EINVAL;
        return -1;
    }
    return 0;
}

/* ---------- ioreq servers ---------- */

DMOP_EXPORT int xendevicemodel_create_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, int handle_bufioreq,
    ioservid_t *id)
{
    struct xen_dm_op op;
    int rc;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_create_ioreq_server);
    op.u.create_ioreq_server.handle_bufioreq = (uint8_t)handle_bufioreq;

    rc = call1(dmod, domid, &op);
    if (rc)
        return rc;
    *id = op.u.create_ioreq_server.id;
    return 0;
}

DMOP_EXPORT int xendevicemodel_get_ioreq_server_info(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id,
    xen_pfn_t *ioreq_gfn, xen_pfn_t *bufioreq_gfn,
    evtchn_port_t *bufioreq_port)
{
    struct xen_dm_op op;
    struct xen_dm_op_get_ioreq_server_info *info = &op.u.get_ioreq_server_info;
    int rc;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_get_ioreq_server_info);
    info->id = id;
    /* Asking for neither gfn tells Xen not to map the ioreq pages. */
    if (!ioreq_gfn && !bufioreq_gfn)
        info->flags |= XEN_DMOP_no_gfns;

    rc = call1(dmod, domid, &op);
    if (rc)
        return rc;
    if (ioreq_gfn)
        *ioreq_gfn = info->ioreq_gfn;
    if (bufioreq_gfn)
        *bufioreq_gfn = info->bufioreq_gfn;
    if (bufioreq_port)
        *bufioreq_port = info->bufioreq_port;
    return 0;
}

static int io_range(xendevicemodel_handle *dmod, domid_t domid, uint32_t code,
                    ioservid_t id, uint32_t type, uint64_t start, uint64_t end)
{
    struct xen_dm_op op;
    /* map and unmap share struct xen_dm_op_ioreq_server_range. */
    struct xen_dm_op_ioreq_server_range *r = &op.u.map_io_range_to_ioreq_server;

    op_init(&op, code);
    r->id = id;
    r->type = type;
    r->start = start;
    r->end = end;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_map_io_range_to_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id, int is_mmio,
    uint64_t start, uint64_t end)
{
    CHECK_HANDLE(dmod);
    return io_range(dmod, domid, XEN_DMOP_map_io_range_to_ioreq_server, id,
                    is_mmio ? XEN_DMOP_IO_RANGE_MEMORY : XEN_DMOP_IO_RANGE_PORT,
                    start, end);
}

DMOP_EXPORT int xendevicemodel_unmap_io_range_from_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id, int is_mmio,
    uint64_t start, uint64_t end)
{
    CHECK_HANDLE(dmod);
    return io_range(dmod, domid, XEN_DMOP_unmap_io_range_from_ioreq_server, id,
                    is_mmio ? XEN_DMOP_IO_RANGE_MEMORY : XEN_DMOP_IO_RANGE_PORT,
                    start, end);
}

DMOP_EXPORT int xendevicemodel_map_mem_type_to_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id, uint16_t type,
    uint32_t flags)
{
    struct xen_dm_op op;
    struct xen_dm_op_map_mem_type_to_ioreq_server *m =
        &op.u.map_mem_type_to_ioreq_server;

    CHECK_HANDLE(dmod);
    /* Xen's library accepts only this type and only the write flag. */
    if (type != HVMMEM_ioreq_server ||
        (flags & ~XEN_DMOP_IOREQ_MEM_ACCESS_WRITE)) {
        errno = EINVAL;
        return -1;
    }
    op_init(&op, XEN_DMOP_map_mem_type_to_ioreq_server);
    m->id = id;
    m->type = type;
    m->flags = flags;
    return call1(dmod, domid, &op);
}

/* PCI device and function numbers the SBDF encoding can hold. */
static int bad_pci_devfn(uint8_t device, uint8_t function)
{
    return device > 0x1f || function > 0x7;
}

/* map/unmap_pcidev: one device is a range of one SBDF. The library itself
 * refuses a device or function the encoding cannot hold, as Xen's does. */
static int pcidev(xendevicemodel_handle *dmod, domid_t domid, uint32_t op, ioservid_t id,
                  uint16_t segment, uint8_t bus, uint8_t device, uint8_t function)
{
    uint64_t sbdf;

    CHECK_HANDLE(dmod);
    if (bad_pci_devfn(device, function)) {
        errno = EINVAL;
        return -1;
    }
    sbdf = XEN_DMOP_PCI_SBDF((uint64_t)segment, (uint64_t)bus,
                             (uint64_t)device, (uint64_t)function);
    return io_range(dmod, domid, op, id, XEN_DMOP_IO_RANGE_PCI, sbdf, sbdf);
}

DMOP_EXPORT int xendevicemodel_map_pcidev_to_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id,
    uint16_t segment, uint8_t bus, uint8_t device, uint8_t function)
{
    return pcidev(dmod, domid, XEN_DMOP_map_io_range_to_ioreq_server, id,
                  segment, bus, device, function);
}

DMOP_EXPORT int xendevicemodel_unmap_pcidev_from_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id,
    uint16_t segment, uint8_t bus, uint8_t device, uint8_t function)
{
    return pcidev(dmod, domid, XEN_DMOP_unmap_io_range_from_ioreq_server, id,
                  segment, bus, device, function);
}

DMOP_EXPORT int xendevicemodel_destroy_ioreq_server(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_destroy_ioreq_server);
    op.u.destroy_ioreq_server.id = id;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_set_ioreq_server_state(
    xendevicemodel_handle *dmod, domid_t domid, ioservid_t id, int enabled)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = id;
    op.u.set_ioreq_server_state.enabled = !!enabled;
    return call1(dmod, domid, &op);
}

/* ---------- interrupts ---------- */

DMOP_EXPORT int xendevicemodel_set_pci_intx_level(
    xendevicemodel_handle *dmod, domid_t domid, uint16_t segment,
    uint8_t bus, uint8_t device, uint8_t intx, unsigned int level)
{
    struct xen_dm_op op;
    struct xen_dm_op_set_pci_intx_level *l = &op.u.set_pci_intx_level;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_pci_intx_level);
    l->domain = segment;
    l->bus = bus;
    l->device = device;
    l->intx = intx;
    l->level = (uint8_t)level;
    return post1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_set_isa_irq_level(
    xendevicemodel_handle *dmod, domid_t domid, uint8_t irq,
    unsigned int level)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_isa_irq_level);
    op.u.set_isa_irq_level.isa_irq = irq;
    op.u.set_isa_irq_level.level = (uint8_t)level;
    return post1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_set_irq_level(
    xendevicemodel_handle *dmod, domid_t domid, unsigned int irq,
    unsigned int level)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_irq_level);
    op.u.set_irq_level.irq = irq;
    op.u.set_irq_level.level = (uint8_t)level;
    return post1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_set_pci_link_route(
    xendevicemodel_handle *dmod, domid_t domid, uint8_t link, uint8_t irq)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_pci_link_route);
    op.u.set_pci_link_route.link = link;
    op.u.set_pci_link_route.isa_irq = irq;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_inject_msi(
    xendevicemodel_handle *dmod, domid_t domid, uint64_t msi_addr,
    uint32_t msi_data)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_inject_msi);
    op.u.inject_msi.addr = msi_addr;
    op.u.inject_msi.data = msi_data;
    return post1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_inject_event(
    xendevicemodel_handle *dmod, domid_t domid, int vcpu, uint8_t vector,
    uint8_t type, uint32_t error_code, uint8_t insn_len, uint64_t extra)
{
    struct xen_dm_op op;
    struct xen_dm_op_inject_event *ev = &op.u.inject_event;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_inject_event);
    ev->vcpuid = (uint32_t)vcpu;
    ev->vector = vector;
    ev->type = type;
    ev->error_code = error_code;
    ev->insn_len = insn_len;
    ev->cr2 = extra;
    return call1(dmod, domid, &op);
}

/* ---------- memory ---------- */

DMOP_EXPORT int xendevicemodel_track_dirty_vram(
    xendevicemodel_handle *dmod, domid_t domid, uint64_t first_pfn,
    uint32_t nr, unsigned long *dirty_bitmap)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_track_dirty_vram);
    op.u.track_dirty_vram.first_pfn = first_pfn;
    op.u.track_dirty_vram.nr = nr;
    /* One bit per page, rounded up to whole bytes. */
    return call2(dmod, domid, &op, dirty_bitmap, ((size_t)nr + 7) / 8);
}

DMOP_EXPORT int xendevicemodel_modified_memory_bulk(
    xendevicemodel_handle *dmod, domid_t domid,
    struct xen_dm_op_modified_memory_extent extents[], uint32_t nr)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_modified_memory);
    op.u.modified_memory.nr_extents = nr;
    op.u.modified_memory.opaque = 0;
    return call2(dmod, domid, &op, extents,
                 (size_t)nr * sizeof(struct xen_dm_op_modified_memory_extent));
}

DMOP_EXPORT int xendevicemodel_modified_memory(
    xendevicemodel_handle *dmod, domid_t domid, uint64_t first_pfn,
    uint32_t nr)
{
    struct xen_dm_op_modified_memory_extent extent;

    memset(&extent, 0, sizeof extent);
    extent.first_pfn = first_pfn;
    extent.nr = nr;
    return xendevicemodel_modified_memory_bulk(dmod, domid, &extent, 1);
}

DMOP_EXPORT int xendevicemodel_set_mem_type(
    xendevicemodel_handle *dmod, domid_t domid, hvmmem_type_t mem_type,
    uint64_t first_pfn, uint32_t nr)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_set_mem_type);
    op.u.set_mem_type.mem_type = (uint16_t)mem_type;
    op.u.set_mem_type.first_pfn = first_pfn;
    op.u.set_mem_type.nr = nr;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_relocate_memory(
    xendevicemodel_handle *dmod, domid_t domid, uint32_t size,
    uint64_t src_gfn, uint64_t dst_gfn)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_relocate_memory);
    op.u.relocate_memory.size = size;
    op.u.relocate_memory.src_gfn = src_gfn;
    op.u.relocate_memory.dst_gfn = dst_gfn;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_pin_memory_cacheattr(
    xendevicemodel_handle *dmod, domid_t domid, uint64_t start, uint64_t end,
    uint32_t type)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_pin_memory_cacheattr);
    op.u.pin_memory_cacheattr.start = start;
    op.u.pin_memory_cacheattr.end = end;
    op.u.pin_memory_cacheattr.type = type;
    return call1(dmod, domid, &op);
}

/* ---------- domain ---------- */

DMOP_EXPORT int xendevicemodel_shutdown(
    xendevicemodel_handle *dmod, domid_t domid, unsigned int reason)
{
    struct xen_dm_op op;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_remote_shutdown);
    op.u.remote_shutdown.reason = reason;
    return call1(dmod, domid, &op);
}

DMOP_EXPORT int xendevicemodel_nr_vcpus(
    xendevicemodel_handle *dmod, domid_t domid, unsigned int *vcpus)
{
    struct xen_dm_op op;
    int rc;

    CHECK_HANDLE(dmod);
    op_init(&op, XEN_DMOP_nr_vcpus);
    rc = call1(dmod, domid, &op);
    if (rc)
        return rc;
    *vcpus = op.u.nr_vcpus.vcpus;
    return 0;
}
