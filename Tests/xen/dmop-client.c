/* SPDX-License-Identifier: MIT */
/*
 * dmop-client.c - a QEMU-like device model session against dmop-broker,
 * written from man/dmop-broker-protocol.7 alone (scripts/xen-test).
 *
 *   dmop-client --socket PATH --domid D --label L --vcpus N|denied --irq allowed|denied
 *   dmop-client --socket PATH --domid D --label L --expect-peer-refused
 *   [--as UID:GID]  drop to this user first, as a deprivileged QEMU runs
 *   [--xen-version MAJOR.MINOR]  the version WELCOME must report
 *
 * The session is what QEMU does with a real HVM guest (create an ioreq
 * server, read its info, map port ranges, enable, disable, unmap, destroy),
 * plus what a hostile device model might try (another domid, a reserved
 * domid, denied and unknown ops, wrong buffer counts and sizes, nonzero
 * pads, a malformed datagram). Each check prints
 * "TEST <label>.<name> PASS|FAIL <detail>"; each request's outcome is also
 * printed as "OBSERVED <label>.<name> origin=O result=R reason=C", which
 * scripts/xen-test compares between the real hypervisor and the simulated
 * one.
 *
 * --vcpus N: the policy allows nr_vcpus and the domain has N vCPUs;
 * --vcpus denied: the policy does not allow nr_vcpus.
 * --irq: whether the policy allows the ISA/PCI interrupt-line ops.
 *
 * Op numbers and struct layouts come from <xen/hvm/dm_op.h>; the protocol's
 * own numbers (message types, reason codes) from the man page.
 *
 * Exit status: 0 when every check passed, 1 otherwise, 2 on bad usage.
 */
#define _GNU_SOURCE
#define __XEN_TOOLS__ 1 /* HVM_IOREQSRV_BUFIOREQ_* are tools-only */
#include <stdint.h>
#include <stdlib.h>
#include <grp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>

#include "dmop_abi.h"
#include "xentest.h"

/* dmop-broker-protocol(7): header, message types. */
#define MAGIC 0x424F4D44u
#define T_HELLO 0x0001
#define T_WELCOME 0x0002
#define T_REFUSED 0x0003
#define T_REQUEST 0x0010
#define T_REPLY 0x0011
#define T_PROTOCOL_ERROR 0x00FF
#define PROTOCOL_VERSION 1
#define MAX_BUFS 16
#define MAX_BUF_SIZE 4096
#define MAX_DATAGRAM (16 + 4 * MAX_BUFS + MAX_BUFS * MAX_BUF_SIZE)

/* dmop-broker-protocol(7): reason codes. */
enum {
    R_NONE = 0,
    R_DOMID_MISMATCH = 1,
    R_DOMID_RESERVED = 2,
    R_OP_UNKNOWN = 3,
    R_OP_NOT_ALLOWED = 4,
    R_BAD_BUFFER_COUNT = 5,
    R_BAD_BUFFER_SIZE = 6,
    R_PAYLOAD_FIELD_NONZERO = 7,
    R_CONDITION_FAILED = 8,
    R_NOT_OWNER = 10,
    R_BAD_MAGIC = 32,
};

enum { ORIGIN_HYPERVISOR = 0, ORIGIN_BROKER = 1 };

static const char *label = "session";
static int sock = -1;
static uint32_t next_id = 1;
static uint32_t xen_version; /* major << 16 | minor; 0: not checked */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, (uint16_t)v); put16(p + 2, (uint16_t)(v >> 16)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const uint8_t *p) { return get16(p) | (uint32_t)get16(p + 2) << 16; }

static char *tname(const char *name)
{
    static char buf[160];
    snprintf(buf, sizeof buf, "%s.%s", label, name);
    return buf;
}

static int connect_to(const char *path)
{
    struct sockaddr_un a;
    struct timeval tv = { .tv_sec = 20 };
    int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

    if (s < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof a.sun_path) {
        errno = ENAMETOOLONG;
        close(s);
        return -1;
    }
    strcpy(a.sun_path, path);
    if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
        int e = errno;
        close(s);
        errno = e;
        return -1;
    }
    /* A broker that hangs must fail the run, not stall it until the VM timeout. */
    setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return s;
}

static uint8_t rx[MAX_DATAGRAM + 1];

/* One datagram; its length, 0 on EOF, -1 on error (errno). */
static ssize_t receive(void)
{
    return recv(sock, rx, sizeof rx, 0);
}

struct reply {
    ssize_t len;       /* < 0: no reply (error or EOF); see err */
    int err;           /* errno of a failed recv, 0 on EOF */
    uint16_t type, domid;
    uint32_t id;
    int32_t result;
    uint16_t origin, reason, nbufs;
    struct { uint16_t index; uint32_t size; const uint8_t *data; } bufs[2];
    const char *malformed; /* why the REPLY does not follow the page, or NULL */
};

static void parse_reply(struct reply *r, ssize_t n)
{
    size_t off;

    memset(r, 0, sizeof *r);
    r->len = n;
    if (n <= 0) {
        r->len = -1;
        r->err = n < 0 ? errno : 0;
        return;
    }
    if (n < 8 || get32(rx) != MAGIC) {
        r->malformed = "short or bad magic";
        return;
    }
    r->type = get16(rx + 4);
    r->domid = get16(rx + 6);
    if (r->type != T_REPLY) {
        r->malformed = "not a REPLY";
        return;
    }
    if (n < 24) {
        r->malformed = "REPLY shorter than 24 bytes";
        return;
    }
    r->id = get32(rx + 8);
    r->result = (int32_t)get32(rx + 12);
    r->origin = get16(rx + 16);
    r->reason = get16(rx + 18);
    r->nbufs = get16(rx + 20);
    if (get16(rx + 22) != 0) {
        r->malformed = "reserved field not zero";
        return;
    }
    if (r->nbufs > 2 || (size_t)n < 24 + 8u * r->nbufs) {
        r->malformed = "bad nr_bufs";
        return;
    }
    off = 24 + 8u * r->nbufs;
    for (unsigned i = 0; i < r->nbufs; i++) {
        const uint8_t *d = rx + 24 + 8 * i;
        r->bufs[i].index = get16(d);
        r->bufs[i].size = get32(d + 4);
        if (get16(d + 2) != 0) {
            r->malformed = "descriptor reserved field not zero";
            return;
        }
        if (r->bufs[i].size > MAX_BUF_SIZE || off + r->bufs[i].size > (size_t)n) {
            r->malformed = "buffer overruns the datagram";
            return;
        }
        r->bufs[i].data = rx + off;
        off += r->bufs[i].size;
    }
    if (off != (size_t)n)
        r->malformed = "length does not match the descriptors";
}

static int send_request(uint16_t domid, uint32_t id, unsigned nbufs, const uint32_t *sizes,
                        const uint8_t *const *data)
{
    static uint8_t tx[MAX_DATAGRAM];
    size_t off = 16 + 4 * (size_t)nbufs;

    put32(tx, MAGIC);
    put16(tx + 4, T_REQUEST);
    put16(tx + 6, domid);
    put32(tx + 8, id);
    put16(tx + 12, (uint16_t)nbufs);
    put16(tx + 14, 0);
    for (unsigned i = 0; i < nbufs; i++) {
        put32(tx + 16 + 4 * i, sizes[i]);
        memcpy(tx + off, data[i], sizes[i]);
        off += sizes[i];
    }
    return send(sock, tx, off, MSG_NOSIGNAL) == (ssize_t)off ? 0 : -1;
}

static void observe(const char *name, const struct reply *r)
{
    if (r->len < 0 || r->malformed)
        printf("OBSERVED %s.%s none\n", label, name);
    else
        printf("OBSERVED %s.%s origin=%u result=%d reason=%u\n", label, name, r->origin, r->result, r->reason);
    fflush(stdout);
}

/*
 * One request, one reply. bufs/sizes describe the request's buffers; buffer
 * 0, when the reply carries it back, is copied into *op.
 */
static void call(const char *name, uint16_t domid, struct xen_dm_op *op, unsigned nbufs,
                 const uint32_t *sizes, const uint8_t *const *data, struct reply *r)
{
    uint32_t id = next_id++;

    if (send_request(domid, id, nbufs, sizes, data) != 0) {
        memset(r, 0, sizeof *r);
        r->len = -1;
        r->err = errno;
    } else {
        parse_reply(r, receive());
    }
    if (r->len >= 0 && !r->malformed) {
        if (r->id != id)
            r->malformed = "request_id not echoed";
        else if (r->domid != domid)
            r->malformed = "domid not echoed";
    }
    if (r->len >= 0 && !r->malformed && op)
        for (unsigned i = 0; i < r->nbufs; i++)
            if (r->bufs[i].index == 0 && r->bufs[i].size == sizeof *op)
                memcpy(op, r->bufs[i].data, sizeof *op);
    observe(name, r);
}

/* The common shape: buffer 0 is the 32-byte struct xen_dm_op, as libxendevicemodel sends it. */
static void call1(const char *name, uint16_t domid, struct xen_dm_op *op, struct reply *r)
{
    uint32_t size = sizeof *op;
    uint8_t copy[sizeof *op];
    const uint8_t *data = copy;

    memcpy(copy, op, sizeof copy);
    call(name, domid, op, 1, &size, &data, r);
}

static const char *describe(const struct reply *r)
{
    static char buf[160];
    if (r->len < 0)
        snprintf(buf, sizeof buf, "no reply (%s)", r->err ? strerror(r->err) : "connection closed");
    else if (r->malformed)
        snprintf(buf, sizeof buf, "malformed reply: %s", r->malformed);
    else
        snprintf(buf, sizeof buf, "origin=%u result=%d (%s) reason=%u nr_bufs=%u", r->origin, r->result,
                 xt_errname(r->result), r->reason, r->nbufs);
    return buf;
}

static int well_formed(const struct reply *r) { return r->len >= 0 && !r->malformed; }

/* The hypervisor answered `want` (0 or -errno). want_bufs: buffers the op writes back. */
static int expect_hv(const char *name, const struct reply *r, int want, unsigned want_bufs)
{
    int ok = well_formed(r) && r->origin == ORIGIN_HYPERVISOR && r->reason == R_NONE && r->result == want &&
             r->nbufs == (want == 0 ? want_bufs : 0);
    return xt_check(tname(name), ok, "%s; expected origin=0 result=%d (%s) nr_bufs=%u", describe(r), want,
                    xt_errname(want), want == 0 ? want_bufs : 0);
}

static int expect_refused(const char *name, const struct reply *r, unsigned reason, int want)
{
    int ok = well_formed(r) && r->origin == ORIGIN_BROKER && r->reason == reason && r->result == want &&
             r->nbufs == 0;
    return xt_check(tname(name), ok, "%s; expected origin=1 reason=%u result=%d (%s)", describe(r), reason, want,
                    xt_errname(want));
}

static void op_init(struct xen_dm_op *op, uint32_t number)
{
    memset(op, 0, sizeof *op);
    op->op = number;
}

static int hello(uint16_t domid, uint32_t *allowed_ops)
{
    uint8_t h[16];
    ssize_t n;
    int ok;

    put32(h, MAGIC);
    put16(h + 4, T_HELLO);
    put16(h + 6, 0);
    put16(h + 8, PROTOCOL_VERSION);
    put16(h + 10, PROTOCOL_VERSION);
    put32(h + 12, dmop_abi_identifier());
    if (send(sock, h, sizeof h, MSG_NOSIGNAL) != (ssize_t)sizeof h)
        return xt_check(tname("welcome"), 0, "send HELLO: %s", strerror(errno));
    n = receive();
    if (n != 32 || get32(rx) != MAGIC || get16(rx + 4) != T_WELCOME)
        return xt_check(tname("welcome"), 0, "expected a 32-byte WELCOME, got %zd bytes type 0x%x", n,
                        n >= 6 ? get16(rx + 4) : 0);
    *allowed_ops = get32(rx + 24);
    ok = get16(rx + 6) == PROTOCOL_VERSION && get32(rx + 8) == dmop_abi_identifier() &&
         get16(rx + 16) == domid && get16(rx + 18) == MAX_BUFS && get32(rx + 20) == MAX_BUF_SIZE &&
         get32(rx + 28) == 0;
    xt_check(tname("welcome"), ok, "version=%u dmop_abi=0x%08x domid=%u max_buffers=%u max_buffer_size=%u "
             "allowed_ops=0x%08x", get16(rx + 6), get32(rx + 8), get16(rx + 16), get16(rx + 18), get32(rx + 20),
             *allowed_ops);
    /* The version the broker read before its restriction, against the
     * fixture's own XENVER_version hypercall. */
    if (xen_version)
        xt_check(tname("welcome-xen-version"), get32(rx + 12) == xen_version, "xen_version=%u.%u expected %u.%u",
                 get32(rx + 12) >> 16, get32(rx + 12) & 0xffff, xen_version >> 16, xen_version & 0xffff);
    return ok;
}

static void session(uint16_t dom, long vcpus, int irq_allowed)
{
    struct xen_dm_op op;
    struct reply r;
    uint32_t allowed = 0;
    ioservid_t id = 0;

    if (!hello(dom, &allowed))
        return;
    /* The session's own ops must be allowed; inject_event (a denied op below) must not. */
    {
        uint32_t need = 1u << XEN_DMOP_create_ioreq_server | 1u << XEN_DMOP_get_ioreq_server_info |
                        1u << XEN_DMOP_map_io_range_to_ioreq_server |
                        1u << XEN_DMOP_unmap_io_range_from_ioreq_server |
                        1u << XEN_DMOP_set_ioreq_server_state | 1u << XEN_DMOP_destroy_ioreq_server;
        uint32_t irq = 1u << XEN_DMOP_set_isa_irq_level | 1u << XEN_DMOP_set_pci_intx_level |
                       1u << XEN_DMOP_set_pci_link_route;
        int nr_bit = !!(allowed & 1u << XEN_DMOP_nr_vcpus);
        xt_check(tname("welcome-allowed-ops"),
                 (allowed & need) == need && !(allowed & 1u << XEN_DMOP_inject_event) && nr_bit == (vcpus > 0) &&
                     (allowed & irq) == (irq_allowed ? irq : 0),
                 "allowed_ops=0x%08x needs 0x%08x, nr_vcpus %s, irq ops %s", allowed, need,
                 nr_bit ? "allowed" : "denied", (allowed & irq) == irq ? "allowed" : "not all allowed");
    }

    op_init(&op, XEN_DMOP_nr_vcpus);
    call1("nr_vcpus", dom, &op, &r);
    if (vcpus > 0) {
        if (expect_hv("nr_vcpus", &r, 0, 1))
            xt_check(tname("nr_vcpus-value"), op.u.nr_vcpus.vcpus == (uint32_t)vcpus, "vcpus=%u expected %ld",
                     op.u.nr_vcpus.vcpus, vcpus);
    } else {
        expect_refused("nr_vcpus", &r, R_OP_NOT_ALLOWED, -EPERM);
    }

    /* QEMU: xen_create_ioreq_server (no buffered ioreqs with no_gfns is still
     * valid; QEMU asks for atomic bufioreq, which needs guest memory). */
    op_init(&op, XEN_DMOP_create_ioreq_server);
    op.u.create_ioreq_server.handle_bufioreq = HVM_IOREQSRV_BUFIOREQ_OFF;
    op.u.create_ioreq_server.id = 0xffff; /* output: must be overwritten */
    call1("create_ioreq_server", dom, &op, &r);
    if (expect_hv("create_ioreq_server", &r, 0, 1)) {
        id = op.u.create_ioreq_server.id;
        xt_check(tname("create_ioreq_server-id"), id != 0xffff, "id=%u", id);
    }

    op_init(&op, XEN_DMOP_get_ioreq_server_info);
    op.u.get_ioreq_server_info.id = id;
    op.u.get_ioreq_server_info.flags = XEN_DMOP_no_gfns;
    call1("get_ioreq_server_info", dom, &op, &r);
    expect_hv("get_ioreq_server_info", &r, 0, 1);

    op_init(&op, XEN_DMOP_get_ioreq_server_info);
    op.u.get_ioreq_server_info.id = (ioservid_t)(id + 1);
    op.u.get_ioreq_server_info.flags = XEN_DMOP_no_gfns;
    /* A server this session did not create never reaches Xen; the broker
     * answers with Xen's errno for an absent server (the fixture's raw
     * table checks what Xen says). */
    call1("get_ioreq_server_info-unknown-id", dom, &op, &r);
    expect_refused("get_ioreq_server_info-unknown-id", &r, R_NOT_OWNER, -ENOENT);

    /* The UART ports, as QEMU maps them for an emulated serial port. */
    op_init(&op, XEN_DMOP_map_io_range_to_ioreq_server);
    op.u.map_io_range_to_ioreq_server.id = id;
    op.u.map_io_range_to_ioreq_server.type = XEN_DMOP_IO_RANGE_PORT;
    op.u.map_io_range_to_ioreq_server.start = 0x3f8;
    op.u.map_io_range_to_ioreq_server.end = 0x3ff;
    call1("map_io_range", dom, &op, &r);
    expect_hv("map_io_range", &r, 0, 0);
    call1("map_io_range-again", dom, &op, &r);
    expect_hv("map_io_range-again", &r, -EEXIST, 0);

    /* Both test policies allow type <= 2 only. */
    op.u.map_io_range_to_ioreq_server.type = 3;
    call1("map_io_range-type3", dom, &op, &r);
    expect_refused("map_io_range-type3", &r, R_CONDITION_FAILED, -EPERM);

    op_init(&op, XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = id;
    op.u.set_ioreq_server_state.enabled = 1;
    call1("enable", dom, &op, &r);
    expect_hv("enable", &r, 0, 0);

    /* The interrupt hot path: ISA IRQ and PCI INTx lines up and down. */
    op_init(&op, XEN_DMOP_set_isa_irq_level);
    op.u.set_isa_irq_level.isa_irq = 4;
    op.u.set_isa_irq_level.level = 1;
    call1("isa_irq-high", dom, &op, &r);
    if (irq_allowed) {
        expect_hv("isa_irq-high", &r, 0, 0);
        op.u.set_isa_irq_level.level = 0;
        call1("isa_irq-low", dom, &op, &r);
        expect_hv("isa_irq-low", &r, 0, 0);
        /* The policy's condition (level <= 1) refuses before Xen's EINVAL. */
        op.u.set_isa_irq_level.level = 2;
        call1("isa_irq-level-2", dom, &op, &r);
        expect_refused("isa_irq-level-2", &r, R_CONDITION_FAILED, -EPERM);

        op_init(&op, XEN_DMOP_set_pci_intx_level);
        op.u.set_pci_intx_level.device = 3;
        op.u.set_pci_intx_level.level = 1;
        call1("pci_intx-high", dom, &op, &r);
        expect_hv("pci_intx-high", &r, 0, 0);
        op.u.set_pci_intx_level.level = 0;
        call1("pci_intx-low", dom, &op, &r);
        expect_hv("pci_intx-low", &r, 0, 0);

        op_init(&op, XEN_DMOP_set_pci_link_route);
        op.u.set_pci_link_route.link = 0;
        op.u.set_pci_link_route.isa_irq = 5;
        call1("pci_link_route", dom, &op, &r);
        expect_hv("pci_link_route", &r, 0, 0);
    } else {
        expect_refused("isa_irq-high", &r, R_OP_NOT_ALLOWED, -EPERM);
    }

    /* Several requests in flight, answered in order (QEMU's threads). */
    {
        struct xen_dm_op ops[3];
        uint32_t size = sizeof op, ids[3];
        int ok = 1;
        char detail[200] = "";
        size_t dl = 0;

        for (int i = 0; i < 3; i++) {
            op_init(&ops[i], XEN_DMOP_set_ioreq_server_state);
            ops[i].u.set_ioreq_server_state.id = id;
            ops[i].u.set_ioreq_server_state.enabled = (uint8_t)(i & 1);
            ids[i] = 1000 + (uint32_t)i;
            const uint8_t *data = (const uint8_t *)&ops[i];
            if (send_request(dom, ids[i], 1, &size, &data) != 0)
                ok = 0;
        }
        for (int i = 0; i < 3 && ok; i++) {
            char name[32];

            parse_reply(&r, receive());
            snprintf(name, sizeof name, "pipelined-%d", i);
            observe(name, &r);
            ok = well_formed(&r) && r.id == ids[i] && r.origin == ORIGIN_HYPERVISOR && r.result == 0;
            dl += (size_t)snprintf(detail + dl, sizeof detail - dl, "#%u:%s ", r.id, ok ? "ok" : describe(&r));
        }
        xt_check(tname("pipelined-3"), ok, "%s", detail);
    }

    op_init(&op, XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = id;
    op.u.set_ioreq_server_state.enabled = 0;
    call1("disable", dom, &op, &r);
    expect_hv("disable", &r, 0, 0);

    op_init(&op, XEN_DMOP_unmap_io_range_from_ioreq_server);
    op.u.unmap_io_range_from_ioreq_server.id = id;
    op.u.unmap_io_range_from_ioreq_server.type = XEN_DMOP_IO_RANGE_PORT;
    op.u.unmap_io_range_from_ioreq_server.start = 0x3f8;
    op.u.unmap_io_range_from_ioreq_server.end = 0x3ff;
    call1("unmap_io_range", dom, &op, &r);
    expect_hv("unmap_io_range", &r, 0, 0);
    call1("unmap_io_range-again", dom, &op, &r);
    expect_hv("unmap_io_range-again", &r, -ENOENT, 0);

    /* --- refusals: none of these may reach the hypervisor --- */
    op_init(&op, XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = id;
    call1("other-domid", (uint16_t)(dom + 1), &op, &r);
    expect_refused("other-domid", &r, R_DOMID_MISMATCH, -EPERM);
    call1("dom0", 0, &op, &r);
    expect_refused("dom0", &r, R_DOMID_MISMATCH, -EPERM);
    call1("domid-invalid", DOMID_INVALID, &op, &r);
    expect_refused("domid-invalid", &r, R_DOMID_RESERVED, -EPERM);
    call1("domid-self", DOMID_SELF, &op, &r);
    expect_refused("domid-self", &r, R_DOMID_RESERVED, -EPERM);

    op_init(&op, XEN_DMOP_inject_event);
    call1("denied-op", dom, &op, &r);
    expect_refused("denied-op", &r, R_OP_NOT_ALLOWED, -EPERM);

    op_init(&op, 9999);
    call1("unknown-op", dom, &op, &r);
    expect_refused("unknown-op", &r, R_OP_UNKNOWN, -EPERM);

    {
        uint32_t sizes[2] = { sizeof op, 8 };
        uint8_t extra[8] = { 0 };
        const uint8_t *data[2] = { (const uint8_t *)&op, extra };

        op_init(&op, XEN_DMOP_set_ioreq_server_state);
        op.u.set_ioreq_server_state.id = id;
        call("two-buffers", dom, NULL, 2, sizes, data, &r);
        expect_refused("two-buffers", &r, R_BAD_BUFFER_COUNT, -EINVAL);
        call("no-buffers", dom, NULL, 0, sizes, data, &r);
        expect_refused("no-buffers", &r, R_BAD_BUFFER_COUNT, -EINVAL);

        /* 8 bytes: the header only, no payload. */
        op_init(&op, XEN_DMOP_create_ioreq_server);
        sizes[0] = 8;
        call("short-buffer", dom, NULL, 1, sizes, data, &r);
        expect_refused("short-buffer", &r, R_BAD_BUFFER_SIZE, -EINVAL);
    }

    op_init(&op, XEN_DMOP_set_ioreq_server_state);
    op.u.set_ioreq_server_state.id = id;
    op.pad = 1;
    call1("nonzero-pad", dom, &op, &r);
    expect_refused("nonzero-pad", &r, R_PAYLOAD_FIELD_NONZERO, -EINVAL);

    /* --- teardown, as QEMU does at exit --- */
    op_init(&op, XEN_DMOP_destroy_ioreq_server);
    op.u.destroy_ioreq_server.id = id;
    call1("destroy_ioreq_server", dom, &op, &r);
    expect_hv("destroy_ioreq_server", &r, 0, 0);
    /* Destroyed, so no longer this session's. */
    call1("destroy_ioreq_server-again", dom, &op, &r);
    expect_refused("destroy_ioreq_server-again", &r, R_NOT_OWNER, -ENOENT);

    /* A malformed datagram ends the session with PROTOCOL_ERROR BAD_MAGIC. */
    {
        uint8_t bad[16] = { 'X', 'X', 'X', 'X', 0x10, 0 };
        ssize_t n;

        send(sock, bad, sizeof bad, MSG_NOSIGNAL);
        n = receive();
        xt_check(tname("bad-magic"), n >= 16 && get32(rx) == MAGIC && get16(rx + 4) == T_PROTOCOL_ERROR &&
                 get16(rx + 6) == R_BAD_MAGIC,
                 "got %zd bytes type 0x%x reason %u", n, n >= 6 ? get16(rx + 4) : 0, n >= 8 ? get16(rx + 6) : 0);
        n = receive();
        xt_check(tname("closed-after-protocol-error"), n == 0, "recv=%zd%s%s", n, n < 0 ? " " : "",
                 n < 0 ? strerror(errno) : "");
    }
}

/* A peer whose uid --peer-uid does not allow: no WELCOME, the connection closes. */
static void peer_refused(void)
{
    uint8_t h[16];
    ssize_t n;

    put32(h, MAGIC);
    put16(h + 4, T_HELLO);
    put16(h + 6, 0);
    put16(h + 8, PROTOCOL_VERSION);
    put16(h + 10, PROTOCOL_VERSION);
    put32(h + 12, dmop_abi_identifier());
    send(sock, h, sizeof h, MSG_NOSIGNAL);
    n = receive();
    xt_check(tname("peer-refused"), n == 0 || (n < 0 && errno == ECONNRESET),
             "recv=%zd (%s) after HELLO as uid %u", n, n < 0 ? strerror(errno) : n == 0 ? "closed" : "a reply",
             (unsigned)getuid());
}

static void usage(void)
{
    fprintf(stderr, "usage: dmop-client --socket PATH --domid D [--label L] [--xen-version MAJOR.MINOR] [--as UID:GID]\n"
                    "                   (--vcpus N|denied --irq allowed|denied | --expect-peer-refused)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    long dom = -1, vcpus = 0;
    int refused_mode = 0, have_vcpus = 0, irq_allowed = -1;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--socket") == 0 && v) {
            path = v; i++;
        } else if (strcmp(a, "--domid") == 0 && v) {
            char *end;
            dom = strtol(v, &end, 10);
            if (*end || dom < 0 || dom >= DOMID_FIRST_RESERVED)
                usage();
            i++;
        } else if (strcmp(a, "--label") == 0 && v) {
            label = v; i++;
        } else if (strcmp(a, "--vcpus") == 0 && v) {
            char *end;
            vcpus = strcmp(v, "denied") == 0 ? 0 : strtol(v, &end, 10);
            if (strcmp(v, "denied") != 0 && (*end || vcpus < 1))
                usage();
            have_vcpus = 1; i++;
        } else if (strcmp(a, "--xen-version") == 0 && v) {
            unsigned major, minor;
            if (sscanf(v, "%u.%u", &major, &minor) != 2 || major > 0xffff || minor > 0xffff)
                usage();
            xen_version = major << 16 | minor;
            i++;
        } else if (strcmp(a, "--as") == 0 && v) {
            unsigned uid, gid;
            if (sscanf(v, "%u:%u", &uid, &gid) != 2)
                usage();
            /* busybox has no setpriv --reuid: drop here, groups first. */
            if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 || setresuid(uid, uid, uid) != 0) {
                fprintf(stderr, "dmop-client: cannot become %u:%u: %s\n", uid, gid, strerror(errno));
                return 1;
            }
            i++;
        } else if (strcmp(a, "--irq") == 0 && v) {
            if (strcmp(v, "allowed") == 0)
                irq_allowed = 1;
            else if (strcmp(v, "denied") == 0)
                irq_allowed = 0;
            else
                usage();
            i++;
        } else if (strcmp(a, "--expect-peer-refused") == 0) {
            refused_mode = 1;
        } else {
            usage();
        }
    }
    if (!path || dom < 0 || have_vcpus == refused_mode || (!refused_mode && irq_allowed < 0))
        usage();

    sock = connect_to(path);
    if (sock < 0) {
        xt_check(tname("connect"), 0, "%s: %s (uid %u)", path, strerror(errno), (unsigned)getuid());
        return 1;
    }
    if (refused_mode)
        peer_refused();
    else
        session((uint16_t)dom, vcpus, irq_allowed);
    close(sock);
    return xt_failed ? 1 : 0;
}
