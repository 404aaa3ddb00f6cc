/* SPDX-License-Identifier: MIT */
/*
 * e2e.c: the dmop-broker libxendevicemodel.so.1 against a real dmop-broker
 * on the simulated hypervisor.
 *
 *   e2e BROKER POLICY WORKDIR
 *
 * Compiled against the system <xendevicemodel.h>, linked against Debian's
 * libxendevicemodel and run with LD_LIBRARY_PATH naming the directory of
 * ours (as QEMU runs under dmop-qemu-wrapper). The broker writes every call
 * that reached the hypervisor to WORKDIR/record.jsonl, so each call is
 * checked for where it stopped: in the library, at the broker, or at the
 * (simulated) hypervisor.
 *
 * Covers: open failures and version skew (clear errno, message on stderr);
 * every function with its outputs; refusals (policy, condition, another or a
 * reserved domid: EPERM without reaching the hypervisor); errors the library
 * raises itself (EINVAL, E2BIG, nothing sent); restrict and
 * xentoolcore_restrict_all; several threads on one handle; the broker's exit
 * on hang-up; a second session over DMOP_BROKER_SOCKET (--listen).
 */
#define __XEN_TOOLS__ 1
#include "clib_common.h"

#include <poll.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xendevicemodel.h>
#include <xentoolcore.h>

#include "dmop_abi.h"
#include "dmop_wire.h"

#define DOMID 5
#define VCPUS 3

static const char *broker, *policy, *workdir;
static char record[4096];

/* Calls that reached the (simulated) hypervisor so far. */
static int hv_calls(void)
{
    FILE *f = fopen(record, "re");
    int n = 0, ch;
    if (!f)
        return 0;
    while ((ch = fgetc(f)) != EOF)
        if (ch == '\n')
            n++;
    fclose(f);
    return n;
}

/* The last record line, for messages. */
static const char *last_record(void)
{
    static char line[512];
    FILE *f = fopen(record, "re");
    line[0] = 0;
    if (!f)
        return line;
    while (fgets(line, sizeof line, f))
        ;
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    return line;
}

#define REACHED(before, what) \
    CHECK(hv_calls() == (before) + 1, "%s: did not reach the hypervisor once", what)
#define STOPPED(before, what) \
    CHECK(hv_calls() == (before), "%s: reached the hypervisor (%s)", what, last_record())

static void setenv_fd(int fd)
{
    char num[16];
    snprintf(num, sizeof num, "%d", fd);
    setenv("DMOP_BROKER_FD", num, 1);
}

/* ---------- opening: failures and skew ---------- */

/* A one-shot fake broker: answers HELLO with the given datagram (or
 * closes when len is 0). Keeps its end open until the test ends. */
struct fake {
    int fd;
    unsigned char reply[64];
    size_t len;
};

static void *fake_broker(void *arg)
{
    struct fake *f = arg;
    unsigned char hello[64];
    if (recv(f->fd, hello, sizeof hello, 0) > 0 && f->len)
        send(f->fd, f->reply, f->len, MSG_NOSIGNAL);
    if (!f->len)
        shutdown(f->fd, SHUT_RDWR);
    return NULL;
}

static int open_with_fake(struct fake *f)
{
    int sv[2];
    pthread_t t;
    xendevicemodel_handle *h;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    f->fd = sv[0];
    pthread_create(&t, NULL, fake_broker, f);
    setenv_fd(sv[1]);
    h = xendevicemodel_open(NULL, 0);
    pthread_join(t, NULL);
    /* sv[1] stays open on purpose: its number is spent for this process. */
    if (h) {
        xendevicemodel_close(h);
        return 0;
    }
    return errno;
}

/* A fake broker that welcomes, then answers the first request with a REPLY
 * to another request_id; returns whether it then saw the hang-up. */
static void *lying_broker(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char m[128];
    ssize_t n;
    intptr_t hung_up = 0;

    if (recv(fd, m, sizeof m, 0) == DMOP_WIRE_HELLO_SIZE) {
        memset(m, 0, DMOP_WIRE_WELCOME_SIZE);
        dmop_put32(m, DMOP_WIRE_MAGIC);
        dmop_put16(m + 4, DMOP_WIRE_TYPE_WELCOME);
        dmop_put16(m + 6, 1);
        dmop_put32(m + 8, dmop_abi_identifier());
        dmop_put16(m + 16, DOMID);
        dmop_put16(m + 18, 16);
        dmop_put32(m + 20, 4096);
        send(fd, m, DMOP_WIRE_WELCOME_SIZE, MSG_NOSIGNAL);
        n = recv(fd, m, sizeof m, 0);
        if (n >= DMOP_WIRE_REQUEST_FIXED) {
            uint32_t id = dmop_get32(m + 8);
            memset(m, 0, DMOP_WIRE_REPLY_FIXED);
            dmop_put32(m, DMOP_WIRE_MAGIC);
            dmop_put16(m + 4, DMOP_WIRE_TYPE_REPLY);
            dmop_put16(m + 6, DOMID);
            dmop_put32(m + 8, id + 1000);
            send(fd, m, DMOP_WIRE_REPLY_FIXED, MSG_NOSIGNAL);
            hung_up = recv(fd, m, sizeof m, 0) == 0;
        }
    }
    close(fd);
    return (void *)hung_up;
}

static void test_open_failures(void)
{
    xendevicemodel_handle *h;
    struct fake f;
    int p[2], s[2], e;

    unsetenv("DMOP_BROKER_FD");
    unsetenv("DMOP_BROKER_SOCKET");
    fprintf(stderr, "--- expect: neither DMOP_BROKER_FD nor DMOP_BROKER_SOCKET\n");
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == ENOENT, "open without a broker: %p errno %d", (void *)h, errno);

    setenv("DMOP_BROKER_FD", "12abc", 1);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == EINVAL, "DMOP_BROKER_FD=12abc: errno %d", errno);

    if (pipe(p) < 0)
        die("pipe");
    setenv_fd(p[0]);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == ENOTSOCK, "DMOP_BROKER_FD=pipe: errno %d", errno);

    if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) < 0)
        die("socketpair");
    setenv_fd(s[0]);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == EPROTOTYPE, "DMOP_BROKER_FD=stream socket: errno %d", errno);

    setenv("DMOP_BROKER_FD", "987", 1);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == EBADF, "DMOP_BROKER_FD=987 (closed): errno %d", errno);

    unsetenv("DMOP_BROKER_FD");
    setenv("DMOP_BROKER_SOCKET", "/nonexistent/dmop.sock", 1);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h == NULL && errno == ENOENT, "DMOP_BROKER_SOCKET missing: errno %d", errno);
    unsetenv("DMOP_BROKER_SOCKET");

    /* Version skew: the broker refuses the hello. */
    fprintf(stderr, "--- expect: refused, reason 43 VERSION_UNSUPPORTED\n");
    memset(&f, 0, sizeof f);
    dmop_put32(f.reply, DMOP_WIRE_MAGIC);
    dmop_put16(f.reply + 4, DMOP_WIRE_TYPE_REFUSED);
    dmop_put16(f.reply + 6, DMOP_REASON_VERSION_UNSUPPORTED);
    dmop_put16(f.reply + 8, 2);
    dmop_put16(f.reply + 10, 3);
    dmop_put32(f.reply + 12, dmop_abi_identifier());
    dmop_put16(f.reply + 16, 11);
    memcpy(f.reply + 20, "speaks 2..3", 11);
    f.len = 31;
    e = open_with_fake(&f);
    CHECK(e == EPROTONOSUPPORT, "REFUSED version: errno %d", e);

    /* Skew the other way: a WELCOME for another DMOP ABI. */
    fprintf(stderr, "--- expect: built for DMOP ABI 0x00040f00\n");
    memset(&f, 0, sizeof f);
    dmop_put32(f.reply, DMOP_WIRE_MAGIC);
    dmop_put16(f.reply + 4, DMOP_WIRE_TYPE_WELCOME);
    dmop_put16(f.reply + 6, 1);
    dmop_put32(f.reply + 8, 0x00040f00);
    dmop_put16(f.reply + 16, DOMID);
    dmop_put16(f.reply + 18, 16);
    dmop_put32(f.reply + 20, 4096);
    f.len = DMOP_WIRE_WELCOME_SIZE;
    e = open_with_fake(&f);
    CHECK(e == EPROTONOSUPPORT, "WELCOME for 0x00040f00: errno %d", e);

    /* A version we never offered. */
    dmop_put32(f.reply + 8, dmop_abi_identifier());
    dmop_put16(f.reply + 6, DMOP_WIRE_VERSION_MAX + 1);
    e = open_with_fake(&f);
    CHECK(e == EPROTONOSUPPORT, "WELCOME version %d: errno %d", DMOP_WIRE_VERSION_MAX + 1, e);

    /* Hang-up instead of an answer. */
    memset(&f, 0, sizeof f);
    e = open_with_fake(&f);
    CHECK(e == ECONNRESET, "hang-up during the hello: errno %d", e);

    /* A reply to a request nobody sent: the library ends the session (EIO)
     * and hangs up, rather than guess. */
    {
        int sv[2];
        pthread_t t;
        void *hung_up = NULL;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
            die("socketpair");
        pthread_create(&t, NULL, lying_broker, (void *)(intptr_t)sv[0]);
        setenv_fd(sv[1]);
        h = xendevicemodel_open(NULL, 0);
        CHECK(h != NULL, "open with the lying broker: errno %d", errno);
        if (h) {
            fprintf(stderr, "--- expect: a REPLY to request 1001, which is not waiting\n");
            int rc = xendevicemodel_set_isa_irq_level(h, DOMID, 1, 1);
            CHECK_ERR(rc, EIO, "a call answered with another request's id");
            rc = xendevicemodel_set_isa_irq_level(h, DOMID, 1, 0);
            CHECK_ERR(rc, EIO, "a call after the session broke");
            xendevicemodel_close(h);
        }
        pthread_join(t, &hung_up);
        CHECK(hung_up != NULL, "the library did not hang up on a lying broker");
    }
    unsetenv("DMOP_BROKER_FD");
}

/* ---------- every function ---------- */

static void test_functions(xendevicemodel_handle *h)
{
    ioservid_t id = 0xBEEF;
    xen_pfn_t g1 = 0, g2 = 0;
    evtchn_port_t port = 0, port2 = 0;
    unsigned int vcpus = 0;
    unsigned long bitmap[1];
    static unsigned long big[1000];
    struct xen_dm_op_modified_memory_extent ext[300];
    int rc, n;

    n = hv_calls();
    rc = xendevicemodel_create_ioreq_server(h, DOMID, HVM_IOREQSRV_BUFIOREQ_ATOMIC, &id);
    CHECK_OK(rc, "create_ioreq_server");
    CHECK(id < 8, "ioreq server id %u", id);
    REACHED(n, "create_ioreq_server");

    n = hv_calls();
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, id, &g1, &g2, &port);
    CHECK_OK(rc, "get_ioreq_server_info");
    CHECK(g1 != 0 && g2 != 0 && g1 != g2 && port != 0, "gfns %#lx %#lx port %u",
          (unsigned long)g1, (unsigned long)g2, port);
    REACHED(n, "get_ioreq_server_info");
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, id, NULL, NULL, &port2);
    CHECK(rc == 0 && port2 == port, "port only: rc %d port %u (was %u)", rc, port2, port);
    /* A server this session did not create: the broker refuses it
     * (NOT_OWNER) with the ENOENT Xen gives for an absent server. */
    n = hv_calls();
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, 7, &g1, &g2, &port2);
    CHECK_ERR(rc, ENOENT, "get_ioreq_server_info of a server not ours");
    STOPPED(n, "get_ioreq_server_info(7)");

    rc = xendevicemodel_map_io_range_to_ioreq_server(h, DOMID, id, 0, 0xcf8, 0xcff);
    CHECK_OK(rc, "map port range");
    rc = xendevicemodel_map_io_range_to_ioreq_server(h, DOMID, id, 1, 0xfee00000, 0xfeefffff);
    CHECK_OK(rc, "map mmio range");
    rc = xendevicemodel_map_io_range_to_ioreq_server(h, DOMID, id, 0, 0xcfc, 0xcfc);
    CHECK_ERR(rc, EEXIST, "map an overlapping port range");
    rc = xendevicemodel_unmap_io_range_from_ioreq_server(h, DOMID, id, 0, 0xcf8, 0xcff);
    CHECK_OK(rc, "unmap port range");
    rc = xendevicemodel_unmap_io_range_from_ioreq_server(h, DOMID, id, 1, 0xfee00000, 0xfeefffff);
    CHECK_OK(rc, "unmap mmio range");
    rc = xendevicemodel_map_pcidev_to_ioreq_server(h, DOMID, id, 0, 0, 2, 0);
    CHECK_OK(rc, "map_pcidev 00:02.0");
    rc = xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOMID, id, 0, 0, 2, 0);
    CHECK_OK(rc, "unmap_pcidev 00:02.0");

    n = hv_calls();
    rc = xendevicemodel_map_pcidev_to_ioreq_server(h, DOMID, id, 0, 0, 32, 0);
    CHECK_ERR(rc, EINVAL, "map_pcidev device 32");
    rc = xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOMID, id, 0, 0, 1, 8);
    CHECK_ERR(rc, EINVAL, "unmap_pcidev function 8");
    rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, id, HVMMEM_ram_rw, 0);
    CHECK_ERR(rc, EINVAL, "map_mem_type with type ram_rw");
    rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, id, HVMMEM_ioreq_server,
                                                     XEN_DMOP_IOREQ_MEM_ACCESS_READ);
    CHECK_ERR(rc, EINVAL, "map_mem_type with the read flag");
    rc = xendevicemodel_track_dirty_vram(h, DOMID, 0, 40000, big);
    CHECK_ERR(rc, E2BIG, "track_dirty_vram with a 5000-byte bitmap");
    rc = xendevicemodel_modified_memory_bulk(h, DOMID, ext, 300);
    CHECK_ERR(rc, E2BIG, "modified_memory_bulk with 300 extents");
    rc = xendevicemodel_track_dirty_vram(h, DOMID + 1, 0, 40000, big);
    CHECK_ERR(rc, EPERM, "oversized bitmap for another domid (privcmd checks the domid first)");
    STOPPED(n, "arguments the library rejects itself");

    n = hv_calls();
    rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, id, HVMMEM_ioreq_server,
                                                     XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    CHECK(rc == 0 || (errno != EPERM && errno != EINVAL),
          "map_mem_type_to_ioreq_server: rc %d errno %d", rc, errno);
    REACHED(n, "map_mem_type_to_ioreq_server");

    rc = xendevicemodel_set_ioreq_server_state(h, DOMID, id, 1);
    CHECK_OK(rc, "set_ioreq_server_state(1)");
    rc = xendevicemodel_set_pci_intx_level(h, DOMID, 0, 0, 3, 0, 1);
    CHECK_OK(rc, "set_pci_intx_level");
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 4, 1);
    CHECK_OK(rc, "set_isa_irq_level(4, 1)");
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 4, 0);
    CHECK_OK(rc, "set_isa_irq_level(4, 0)");
    n = hv_calls();
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 16, 1);
    CHECK_ERR(rc, EINVAL, "set_isa_irq_level(16): Xen's EINVAL");
    REACHED(n, "set_isa_irq_level(16)");
    n = hv_calls();
    rc = xendevicemodel_set_irq_level(h, DOMID, 33, 1);
    CHECK_ERR(rc, EOPNOTSUPP, "set_irq_level on x86");
    REACHED(n, "set_irq_level");
    rc = xendevicemodel_set_pci_link_route(h, DOMID, 2, 11);
    CHECK_OK(rc, "set_pci_link_route(2, 11)");
    rc = xendevicemodel_inject_msi(h, DOMID, 0xfee00000, 0x4041);
    CHECK_OK(rc, "inject_msi");

    n = hv_calls();
    memset(bitmap, 0xAA, sizeof bitmap);
    rc = xendevicemodel_track_dirty_vram(h, DOMID, 0x100, 64, bitmap);
    CHECK_OK(rc, "track_dirty_vram(64 pages)");
    CHECK(bitmap[0] != 0xAAAAAAAAAAAAAAAAul, "bitmap not written: %#lx", bitmap[0]);
    REACHED(n, "track_dirty_vram");
    rc = xendevicemodel_track_dirty_vram(h, DOMID, 0, 0, NULL);
    CHECK_OK(rc, "track_dirty_vram(stop)");

    rc = xendevicemodel_modified_memory(h, DOMID, 0x100, 4);
    CHECK_OK(rc, "modified_memory");
    memset(ext, 0, sizeof ext);
    for (int k = 0; k < 3; k++) {
        ext[k].first_pfn = 0x200u + 0x10u * (unsigned)k;
        ext[k].nr = 2;
    }
    rc = xendevicemodel_modified_memory_bulk(h, DOMID, ext, 3);
    CHECK_OK(rc, "modified_memory_bulk(3)");

    rc = xendevicemodel_set_mem_type(h, DOMID, HVMMEM_ram_ro, 0xc0, 64);
    CHECK_OK(rc, "set_mem_type(ram_ro)");
    n = hv_calls();
    rc = xendevicemodel_relocate_memory(h, DOMID, 1, 0x300, 0xf0000);
    CHECK(rc == 0 || errno != EPERM, "relocate_memory: rc %d errno %d", rc, errno);
    REACHED(n, "relocate_memory");
    rc = xendevicemodel_pin_memory_cacheattr(h, DOMID, 0xf1000, 0xf1fff, XEN_DMOP_MEM_CACHEATTR_WB);
    CHECK_OK(rc, "pin_memory_cacheattr(WB)");
    rc = xendevicemodel_nr_vcpus(h, DOMID, &vcpus);
    CHECK(rc == 0 && vcpus == VCPUS, "nr_vcpus: rc %d vcpus %u", rc, vcpus);

    /* Refusals: EPERM, and nothing reaches the hypervisor. */
    n = hv_calls();
    rc = xendevicemodel_inject_event(h, DOMID, 0, 14, 3, 0, 0, 0x1000);
    CHECK_ERR(rc, EPERM, "inject_event (not in the policy)");
    rc = xendevicemodel_set_pci_link_route(h, DOMID, 4, 11);
    CHECK_ERR(rc, EPERM, "set_pci_link_route(4) (condition link <= 3)");
    rc = xendevicemodel_set_isa_irq_level(h, DOMID + 1, 4, 1);
    CHECK_ERR(rc, EPERM, "set_isa_irq_level for another domid");
    rc = xendevicemodel_set_isa_irq_level(h, DOMID_FIRST_RESERVED, 4, 1);
    CHECK_ERR(rc, EPERM, "set_isa_irq_level for DOMID_FIRST_RESERVED");
    vcpus = 77;
    rc = xendevicemodel_nr_vcpus(h, 0, &vcpus);
    CHECK_ERR(rc, EPERM, "nr_vcpus of dom0");
    CHECK(vcpus == 77, "vcpus written on refusal: %u", vcpus);
    STOPPED(n, "refused requests");

    rc = xendevicemodel_set_ioreq_server_state(h, DOMID, id, 0);
    CHECK_OK(rc, "set_ioreq_server_state(0)");
    rc = xendevicemodel_destroy_ioreq_server(h, DOMID, id);
    CHECK_OK(rc, "destroy_ioreq_server");
    rc = xendevicemodel_destroy_ioreq_server(h, DOMID, id);
    CHECK(rc == -1 && (errno == ENOENT || errno == EPERM),
          "destroy twice: rc %d errno %d", rc, errno);
}

/* ---------- several threads, one handle ---------- */

#define THREADS 6
#define ROUNDS 150

static xendevicemodel_handle *shared;
static evtchn_port_t ports[THREADS];
static ioservid_t ids[THREADS];

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    for (int k = 0; k < ROUNDS && clib_failures < 20; k++) {
        evtchn_port_t port = 0;
        unsigned int vcpus = 0;
        int rc;

        /* Outputs unique to this thread's server: a reply handed to the
         * wrong caller shows up here. */
        rc = xendevicemodel_get_ioreq_server_info(shared, DOMID, ids[t], NULL, NULL, &port);
        CHECK(rc == 0 && port == ports[t], "thread %u round %d: rc %d port %u (want %u)",
              t, k, rc, port, ports[t]);
        /* Each thread's own mix of outcomes. */
        switch (t % 3) {
        case 0:
            rc = xendevicemodel_set_isa_irq_level(shared, DOMID, (uint8_t)(t + 1), k & 1);
            CHECK(rc == 0, "thread %u: set_isa_irq_level rc %d errno %d", t, rc, errno);
            break;
        case 1:
            rc = xendevicemodel_inject_event(shared, DOMID, 0, 14, 3, 0, 0, 0);
            CHECK(rc == -1 && errno == EPERM, "thread %u: inject_event rc %d errno %d",
                  t, rc, errno);
            break;
        default:
            rc = xendevicemodel_set_isa_irq_level(shared, DOMID, (uint8_t)(20 + t), 1);
            CHECK(rc == -1 && errno == EINVAL, "thread %u: isa irq %u rc %d errno %d",
                  t, 20 + t, rc, errno);
            break;
        }
        rc = xendevicemodel_nr_vcpus(shared, DOMID, &vcpus);
        CHECK(rc == 0 && vcpus == VCPUS, "thread %u: nr_vcpus rc %d vcpus %u", t, rc, vcpus);
    }
    return NULL;
}

static void test_threads(xendevicemodel_handle *h)
{
    pthread_t th[THREADS];
    int before = hv_calls();

    shared = h;
    for (unsigned t = 0; t < THREADS; t++) {
        /* Without gfns: Xen has only two legacy ioreq gfns to hand out. */
        int rc = xendevicemodel_create_ioreq_server(h, DOMID, 2, &ids[t]);
        CHECK_OK(rc, "create a server per thread");
        rc = xendevicemodel_get_ioreq_server_info(h, DOMID, ids[t], NULL, NULL, &ports[t]);
        CHECK_OK(rc, "its info");
        for (unsigned u = 0; u < t; u++)
            CHECK(ports[u] != ports[t] && ids[u] != ids[t], "servers %u and %u alike", u, t);
    }
    for (unsigned t = 0; t < THREADS; t++)
        pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    for (unsigned t = 0; t < THREADS; t++)
        CHECK_OK(xendevicemodel_destroy_ioreq_server(h, DOMID, ids[t]), "destroy");
    /* Every call but the refused inject_events reached the hypervisor. */
    CHECK(hv_calls() - before == THREADS * 2 + THREADS * ROUNDS * 3 -
                                 (THREADS / 3) * ROUNDS + THREADS,
          "%d calls reached the hypervisor", hv_calls() - before);
}

/* ---------- one session over an inherited fd ---------- */

static void session_over_fd(int fd)
{
    xendevicemodel_handle *h, *h2;
    int rc;

    setenv_fd(fd);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h != NULL, "open with the broker: errno %d (%s)", errno, strerror(errno));
    if (!h)
        return;

    rc = xendevicemodel_restrict(h, DOMID);
    CHECK_OK(rc, "restrict to the broker's domid");
    rc = xendevicemodel_restrict(h, DOMID + 1);
    CHECK_ERR(rc, EINVAL, "restrict to another domid");
    rc = xentoolcore_restrict_all(DOMID);
    CHECK_OK(rc, "xentoolcore_restrict_all(own domid) reaches our handle");
    rc = xentoolcore_restrict_all(DOMID + 1);
    CHECK_ERR(rc, EINVAL, "xentoolcore_restrict_all(another domid) reaches our handle");

    /* libxenctrl's handle and QEMU's share the session. */
    h2 = xendevicemodel_open(NULL, 0);
    CHECK(h2 != NULL, "second handle: errno %d", errno);

    test_functions(h);
    if (h2) {
        unsigned int v = 0;
        CHECK(xendevicemodel_nr_vcpus(h2, DOMID, &v) == 0 && v == VCPUS,
              "second handle: nr_vcpus %u", v);
        CHECK_OK(xendevicemodel_close(h2), "close second handle");
    }
    test_threads(h);

    rc = xendevicemodel_shutdown(h, DOMID, SHUTDOWN_poweroff);
    CHECK_OK(rc, "shutdown(poweroff)");
    CHECK_OK(xendevicemodel_close(h), "close");
}

/* ---------- main ---------- */

int main(int argc, char **argv)
{
    xendevicemodel_handle *h, *h2;
    pid_t pid;
    int fd, st, rc;
    char sock[4096], vcpus[8];
    const char *extra[16];

    if (argc != 4)
        die("usage: e2e BROKER POLICY WORKDIR");
    broker = argv[1];
    policy = argv[2];
    workdir = argv[3];
    snprintf(record, sizeof record, "%s/record.jsonl", workdir);
    snprintf(vcpus, sizeof vcpus, "%d", VCPUS);
    unlink(record);
    extra[0] = "--hypervisor";
    extra[1] = "simulated";
    extra[2] = "--simulated-record";
    extra[3] = record;
    extra[4] = "--simulated-vcpus";
    extra[5] = vcpus;
    extra[6] = getuid() == 0 ? "--allow-root" : NULL;
    extra[7] = NULL;

    test_open_failures();

    /* The main session runs in a child, as QEMU would: the broker must exit
     * on its own once that process is gone. */
    fd = spawn_broker(broker, DOMID, policy, extra, &pid);
    {
        int counts[2], cp[2];
        pid_t child;
        if (pipe(cp) < 0)
            die("pipe");
        child = fork();
        if (child < 0)
            die("fork");
        if (child == 0) {
            close(cp[0]);
            session_over_fd(fd);
            counts[0] = clib_checks;
            counts[1] = clib_failures;
            if (write(cp[1], counts, sizeof counts) != (ssize_t)sizeof counts)
                _exit(3);
            _exit(0);
        }
        close(cp[1]);
        close(fd);      /* only the child holds QEMU's end now */
        st = wait_exit(child, 60000);
        CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "session child: wait status %#x", st);
        if (read(cp[0], counts, sizeof counts) == (ssize_t)sizeof counts) {
            clib_checks += counts[0];
            clib_failures += counts[1];
        } else {
            CHECK(0, "the session child reported nothing");
        }
        close(cp[0]);
    }
    st = wait_exit(pid, 5000);
    CHECK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "broker after its client exited: wait status %#x (-1: still running)", st);
    if (st == -1) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }

    /* A second session, found by path (dmop-broker --listen). */
    unsetenv("DMOP_BROKER_FD");
    snprintf(sock, sizeof sock, "%s/broker.sock", workdir);
    unlink(sock);
    spawn_broker_at(broker, DOMID, policy, sock, extra, &pid);
    setenv("DMOP_BROKER_SOCKET", sock, 1);
    h = xendevicemodel_open(NULL, 0);
    CHECK(h != NULL, "open by DMOP_BROKER_SOCKET: errno %d (%s)", errno, strerror(errno));
    if (h) {
        unsigned int v = 0;
        rc = xendevicemodel_nr_vcpus(h, DOMID, &v);
        CHECK(rc == 0 && v == VCPUS, "nr_vcpus over --listen: rc %d vcpus %u", rc, v);
        rc = xendevicemodel_set_isa_irq_level(h, DOMID + 2, 1, 1);
        CHECK_ERR(rc, EPERM, "another domid over --listen");
    }
    kill(pid, SIGTERM);
    st = wait_exit(pid, 5000);
    CHECK(st != -1, "listening broker did not stop on SIGTERM");
    if (h) {
        /* The broker is gone: calls fail with EIO, a new open says why. */
        fprintf(stderr, "--- expect: lost the dmop-broker session\n");
        rc = xendevicemodel_set_isa_irq_level(h, DOMID, 1, 0);
        CHECK_ERR(rc, EIO, "a call after the broker exited");
        h2 = xendevicemodel_open(NULL, 0);
        CHECK(h2 == NULL && (errno == ECONNREFUSED || errno == ENOENT),
              "open after the broker exited: %p errno %d", (void *)h2, errno);
        CHECK_OK(xendevicemodel_close(h), "close after the broker exited");
    }

    return clib_finish("e2e");
}
