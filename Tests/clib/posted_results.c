/* SPDX-License-Identifier: MIT */
/*
 * posted_results.c: each call of the drop-in library returns its own
 * result, whatever posted request failed before it.
 *
 * Driven as QEMU drives libxendevicemodel, through Xen's own
 * <xendevicemodel.h>, against dmop-broker on the simulated hypervisor with
 * --simulated-record: a posted MSI, INTx or ISA level that the policy
 * refuses or that the hypervisor fails (six kinds), each followed by every
 * kind of call that waits. Every waiting call's return value and errno must
 * be what the hypervisor record says that call got (rc 0: 0; rc -E: -1 and
 * errno E), never the posted request's failure. Posting happens on one
 * handle and the waiting call on another, as QEMU's own and libxenctrl's
 * handles share one session.
 * Usage: posted_results BROKER POLICY WORKDIR
 *        (POLICY: Tests/clib/posted_results.policy).
 */
#include "clib_common.h"  /* first: it defines _GNU_SOURCE */

#include <stdbool.h>
#include <stdint.h>
/* The tools' view of the Xen headers (HVM_IOREQSRV_BUFIOREQ_ATOMIC). */
#define __XEN_TOOLS__ 1
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xendevicemodel.h>

#define DOMID 5

static char record[4096];
static xendevicemodel_handle *poster, *waiter;
static ioservid_t server;

struct record_entry { uint32_t op; int rc; };

/* The record's lines, in order; returns the count (at most max kept). */
static int read_record(struct record_entry *out, int max)
{
    FILE *f = fopen(record, "re");
    char line[512];
    int n = 0;
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        const char *op = strstr(line, "\"op\":"), *rc = strstr(line, "\"rc\":");
        if (n < max) {
            out[n].op = op ? (uint32_t)strtol(op + 5, NULL, 10) : UINT32_MAX;
            out[n].rc = rc ? (int)strtol(rc + 5, NULL, 10) : 1;
        }
        n++;
    }
    fclose(f);
    return n;
}

static int record_count(void)
{
    struct record_entry e;
    return read_record(&e, 0);
}

static struct record_entry record_at(int index)
{
    static struct record_entry all[4096];
    struct record_entry none = { UINT32_MAX, 1 };
    int n = read_record(all, 4096);
    return index >= 0 && index < n && index < 4096 ? all[index] : none;
}

/* ---- the posted requests that fail ---- */

struct failing_post {
    const char *name;
    bool in_record;   /* reached the hypervisor (and failed there) */
    int (*post)(void);
};

/* level 2 fails the policy's "level <= 1": refused, never forwarded. */
static int refused_isa(void) { return xendevicemodel_set_isa_irq_level(poster, DOMID, 4, 2); }
static int refused_intx(void) { return xendevicemodel_set_pci_intx_level(poster, DOMID, 0, 0, 3, 0, 2); }
/* An address above the policy's 0xfffff. */
static int refused_msi(void) { return xendevicemodel_inject_msi(poster, DOMID, 0x100000, 0x4041); }
/* Allowed, and Xen refuses: ISA IRQ 20 (> 15: -EINVAL), PCI device 32
 * (> 31: -EINVAL), an MSI with vector 0 and no pirq (-ERANGE). */
static int xen_failed_isa(void) { return xendevicemodel_set_isa_irq_level(poster, DOMID, 20, 1); }
static int xen_failed_intx(void) { return xendevicemodel_set_pci_intx_level(poster, DOMID, 0, 0, 32, 0, 1); }
static int xen_failed_msi(void) { return xendevicemodel_inject_msi(poster, DOMID, 0, 0); }

static const struct failing_post posts[] = {
    { "refused set_isa_irq_level", false, refused_isa },
    { "refused set_pci_intx_level", false, refused_intx },
    { "refused inject_msi", false, refused_msi },
    { "Xen-failed set_isa_irq_level", true, xen_failed_isa },
    { "Xen-failed set_pci_intx_level", true, xen_failed_intx },
    { "Xen-failed inject_msi", true, xen_failed_msi },
};

/* ---- the calls that wait ---- */

struct waiting_call {
    const char *name;
    uint32_t op;
    int (*call)(void);
};

static int call_create(void)
{
    /* Every round creates one and destroys it below: Xen allows 8. */
    return xendevicemodel_create_ioreq_server(waiter, DOMID, HVM_IOREQSRV_BUFIOREQ_ATOMIC, &server);
}
static int call_info(void)
{
    xen_pfn_t ioreq = 0, bufioreq = 0;
    evtchn_port_t port = 0;
    return xendevicemodel_get_ioreq_server_info(waiter, DOMID, server, &ioreq, &bufioreq, &port);
}
static int call_map_io(void)
{
    return xendevicemodel_map_io_range_to_ioreq_server(waiter, DOMID, server, 0, 0x3f8, 0x3ff);
}
static int call_unmap_io(void)
{
    return xendevicemodel_unmap_io_range_from_ioreq_server(waiter, DOMID, server, 0, 0x3f8, 0x3ff);
}
static int call_map_mem_type(void)
{
    return xendevicemodel_map_mem_type_to_ioreq_server(waiter, DOMID, server, HVMMEM_ioreq_server,
                                                       XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
}
static int call_state(void) { return xendevicemodel_set_ioreq_server_state(waiter, DOMID, server, 1); }
static int call_destroy(void) { return xendevicemodel_destroy_ioreq_server(waiter, DOMID, server); }
static int call_link_route(void) { return xendevicemodel_set_pci_link_route(waiter, DOMID, 1, 5); }
static int call_dirty_vram(void)
{
    unsigned long bitmap[1] = { 0 };
    return xendevicemodel_track_dirty_vram(waiter, DOMID, 0xf0000, 64, bitmap);
}
static int call_modified(void) { return xendevicemodel_modified_memory(waiter, DOMID, 0x100, 4); }
static int call_mem_type(void) { return xendevicemodel_set_mem_type(waiter, DOMID, HVMMEM_ram_ro, 0xc0, 64); }
static int call_relocate(void) { return xendevicemodel_relocate_memory(waiter, DOMID, 16, 0x200, 0xf0000); }
static int call_pin(void) { return xendevicemodel_pin_memory_cacheattr(waiter, DOMID, 0xf0000, 0xf0fff, 6); }
static int call_event(void) { return xendevicemodel_inject_event(waiter, DOMID, 0, 0x20, 0, ~0u, 0, 0); }
/* Xen on x86 has no such line: -EOPNOTSUPP, its own failure. */
static int call_irq_level(void) { return xendevicemodel_set_irq_level(waiter, DOMID, 33, 1); }
static int call_vcpus(void)
{
    unsigned int vcpus = 0;
    return xendevicemodel_nr_vcpus(waiter, DOMID, &vcpus);
}

static const struct waiting_call calls[] = {
    { "create_ioreq_server", XEN_DMOP_create_ioreq_server, call_create },
    { "get_ioreq_server_info", XEN_DMOP_get_ioreq_server_info, call_info },
    { "map_io_range_to_ioreq_server", XEN_DMOP_map_io_range_to_ioreq_server, call_map_io },
    { "unmap_io_range_from_ioreq_server", XEN_DMOP_unmap_io_range_from_ioreq_server, call_unmap_io },
    { "map_mem_type_to_ioreq_server", XEN_DMOP_map_mem_type_to_ioreq_server, call_map_mem_type },
    { "set_ioreq_server_state", XEN_DMOP_set_ioreq_server_state, call_state },
    { "set_pci_link_route", XEN_DMOP_set_pci_link_route, call_link_route },
    { "track_dirty_vram", XEN_DMOP_track_dirty_vram, call_dirty_vram },
    { "modified_memory", XEN_DMOP_modified_memory, call_modified },
    { "set_mem_type", XEN_DMOP_set_mem_type, call_mem_type },
    { "relocate_memory", XEN_DMOP_relocate_memory, call_relocate },
    { "pin_memory_cacheattr", XEN_DMOP_pin_memory_cacheattr, call_pin },
    { "inject_event", XEN_DMOP_inject_event, call_event },
    { "set_irq_level", XEN_DMOP_set_irq_level, call_irq_level },
    { "nr_vcpus", XEN_DMOP_nr_vcpus, call_vcpus },
    { "destroy_ioreq_server", XEN_DMOP_destroy_ioreq_server, call_destroy },
};

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

int main(int argc, char **argv)
{
    const char *extra[8];
    const char *broker, *policy, *workdir;
    pid_t pid;
    int fd, st, performed = 0;
    char num[16];

    if (argc != 4)
        die("usage: posted_results BROKER POLICY WORKDIR");
    broker = argv[1];
    policy = argv[2];
    workdir = argv[3];
    snprintf(record, sizeof record, "%s/record.jsonl", workdir);
    unlink(record);
    extra[0] = "--hypervisor";
    extra[1] = "simulated";
    extra[2] = "--simulated-record";
    extra[3] = record;
    extra[4] = getuid() == 0 ? "--allow-root" : NULL;
    extra[5] = NULL;

    fd = spawn_broker(broker, DOMID, policy, extra, &pid);
    snprintf(num, sizeof num, "%d", fd);
    setenv("DMOP_BROKER_FD", num, 1);
    poster = xendevicemodel_open(NULL, 0);
    waiter = xendevicemodel_open(NULL, 0);
    if (!poster || !waiter)
        die("xendevicemodel_open");

    for (size_t p = 0; p < COUNT(posts); p++) {
        for (size_t c = 0; c < COUNT(calls); c++) {
            int before = record_count(), after, rc, e, want;
            struct record_entry got;

            rc = xendevicemodel_set_isa_irq_level(poster, DOMID, 1, 0);
            CHECK_OK(rc, "a good posted set_isa_irq_level first");
            rc = posts[p].post();
            /* Posted: 0 at once, whatever comes of it. */
            CHECK(rc == 0, "%s before %s: rc %d errno %d", posts[p].name, calls[c].name, rc, errno);
            errno = 0;
            rc = calls[c].call();
            e = errno;
            after = record_count();
            /* The good post, the failing one if it reached Xen, this call. */
            CHECK(after == before + 2 + (posts[p].in_record ? 1 : 0),
                  "%s after %s: the record grew by %d", calls[c].name, posts[p].name, after - before);
            if (posts[p].in_record) {
                struct record_entry failed = record_at(after - 2);
                CHECK(failed.rc < 0, "%s: the hypervisor gave rc %d, a failure was wanted",
                      posts[p].name, failed.rc);
            }
            got = record_at(after - 1);
            CHECK(got.op == calls[c].op, "%s after %s: the record's last call is op %u",
                  calls[c].name, posts[p].name, got.op);
            want = got.rc;
            if (want == 0) {
                performed++;
                CHECK(rc == 0, "%s after %s: the hypervisor performed it (rc 0), the call returned "
                      "%d with errno %d (%s)", calls[c].name, posts[p].name, rc, e, strerror(e));
            } else {
                CHECK(rc == -1 && e == -want, "%s after %s: the hypervisor returned %d, the call "
                      "returned %d with errno %d (%s)", calls[c].name, posts[p].name, want, rc, e,
                      strerror(e));
            }
        }
    }
    /* Most of the calls must have been performed: otherwise the test
     * would not show that a posted failure never replaces a success. */
    CHECK(performed * 4 >= (int)(COUNT(posts) * COUNT(calls)) * 3,
          "only %d of %zu waiting calls were performed by the hypervisor", performed,
          COUNT(posts) * COUNT(calls));

    xendevicemodel_close(poster);
    xendevicemodel_close(waiter);
    shutdown(fd, SHUT_RDWR);
    st = wait_exit(pid, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "broker status 0x%x", st);
    return clib_finish("posted_results");
}
