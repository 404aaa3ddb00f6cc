/* SPDX-License-Identifier: MIT */
/*
 * golden.c: the dmop-broker libxendevicemodel.so.1 against Xen's own.
 *
 * One program, linked against Debian's libxendevicemodel, run twice:
 *
 *   golden real TRANSCRIPT   Debian's library (no LD_LIBRARY_PATH). This
 *                            program interposes open() and ioctl(): the
 *                            library's /dev/xen/ fds are /dev/null, and
 *                            IOCTL_PRIVCMD_DM_OP is answered by a model of
 *                            the hypervisor and recorded.
 *   golden ours TRANSCRIPT   Our library (LD_LIBRARY_PATH=its directory).
 *                            A mock broker thread on a socketpair
 *                            (DMOP_BROKER_FD) checks every REQUEST against
 *                            dmop-broker-protocol(7), records it and answers
 *                            from the same model.
 *
 * Both runs make the same calls (every function of <xendevicemodel.h>,
 * valid and invalid arguments) and write one transcript: each request as it
 * reached privcmd or the broker (domid, buffer sizes, every byte), each
 * call's return value, errno and outputs. The two transcripts must be
 * identical: then our library sends exactly what Xen's would hand to
 * privcmd, rejects the same arguments itself, and reports the same results.
 *
 *   golden pipeline          Our library only: threads share one handle and
 *                            the mock broker answers batches of requests in
 *                            reverse order; every thread must still get its
 *                            own reply (outputs and errno).
 */
/* As QEMU and Xen's tools build: hvm_op.h keeps HVM_IOREQSRV_* behind it. */
#define __XEN_TOOLS__ 1
#include "clib_common.h"

#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/ioctl.h>

#include <xen/xen.h>
#include <xen/sched.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/sys/privcmd.h>
#include <xendevicemodel.h>
#include <xentoolcore.h>

#include "dmop_abi.h"
#include "dmop_wire.h"

#define DOMID 5

static enum { MODE_REAL, MODE_OURS, MODE_PIPELINE } mode;
static FILE *transcript;
static pthread_mutex_t transcript_lock = PTHREAD_MUTEX_INITIALIZER;
static int requests_seen;
static int batches_reversed;   /* pipeline: answers given out of order */

/* ---------- the model of the hypervisor ---------- */

/* The payload bytes Xen writes back per op, as the protocol returns them. */
static int op_returns_buf0(uint32_t op)
{
    return op == XEN_DMOP_create_ioreq_server ||
           op == XEN_DMOP_get_ioreq_server_info ||
           op == XEN_DMOP_set_mem_type ||
           op == XEN_DMOP_map_mem_type_to_ioreq_server ||
           op == XEN_DMOP_nr_vcpus;
}

/* Outputs that depend on the inputs, so a reply given to the wrong caller
 * shows. Returns 0 or a negative errno; writes only on success. */
static int model(unsigned nr, void *b0, size_t s0, void *b1, size_t s1)
{
    struct xen_dm_op *op = b0;

    if (nr < 1 || s0 != sizeof(*op))
        return -EFAULT;
    switch (op->op) {
    case XEN_DMOP_create_ioreq_server:
        if (op->u.create_ioreq_server.handle_bufioreq > 2)
            return -EINVAL;
        op->u.create_ioreq_server.id =
            40 + op->u.create_ioreq_server.handle_bufioreq;
        return 0;
    case XEN_DMOP_get_ioreq_server_info: {
        struct xen_dm_op_get_ioreq_server_info *i = &op->u.get_ioreq_server_info;
        if (i->id == 0x7777)
            return -ENOENT;
        i->bufioreq_port = 0x300u + i->id;
        if (!(i->flags & XEN_DMOP_no_gfns)) {
            i->ioreq_gfn = 0xf0000u + i->id;
            i->bufioreq_gfn = 0xf1000u + i->id;
        }
        return 0;
    }
    case XEN_DMOP_set_ioreq_server_state:
        /* Ids from 100 fail with errno id - 100 (the pipeline test). */
        if (op->u.set_ioreq_server_state.id >= 100)
            return -(int)(op->u.set_ioreq_server_state.id - 100);
        return 0;
    case XEN_DMOP_set_isa_irq_level:
        return op->u.set_isa_irq_level.isa_irq > 15 ? -EINVAL : 0;
    case XEN_DMOP_track_dirty_vram:
        if (nr != 2)
            return -EINVAL;
        for (size_t k = 0; k < s1; k++)
            ((unsigned char *)b1)[k] =
                (unsigned char)(k * 37 + op->u.track_dirty_vram.first_pfn);
        return 0;
    case XEN_DMOP_nr_vcpus:
        op->u.nr_vcpus.vcpus = 3;
        return 0;
    default:
        return 0;
    }
}

static void record_request(unsigned dom, unsigned nr, const size_t sizes[],
                           const unsigned char *const bufs[])
{
    pthread_mutex_lock(&transcript_lock);
    requests_seen++;
    if (transcript) {
        fprintf(transcript, "  REQ dom=%u nr=%u", dom, nr);
        for (unsigned i = 0; i < nr; i++) {
            fprintf(transcript, " [%zu:", sizes[i]);
            for (size_t k = 0; k < sizes[i]; k++)
                fprintf(transcript, "%02x", bufs[i][k]);
            fprintf(transcript, "]");
        }
        fprintf(transcript, "\n");
    }
    pthread_mutex_unlock(&transcript_lock);
}

/* ---------- real mode: a fake privcmd under Xen's library ---------- */

static int fake_fds[16];
static int nfake;

static int is_fake(int fd)
{
    for (int i = 0; i < nfake; i++)
        if (fake_fds[i] == fd)
            return 1;
    return 0;
}

int open(const char *path, int flags, ...)
{
    static int (*real_open)(const char *, int, ...);
    mode_t m = 0;
    int fd;

    if (!real_open)
        real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        m = va_arg(ap, mode_t);
        va_end(ap);
    }
    if (mode == MODE_REAL && strncmp(path, "/dev/xen/", 9) == 0) {
        fd = real_open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd >= 0 && nfake < 16)
            fake_fds[nfake++] = fd;
        return fd;
    }
    return real_open(path, flags, m);
}

int ioctl(int fd, unsigned long req, ...)
{
    static int (*real_ioctl)(int, unsigned long, ...);
    va_list ap;
    void *arg;

    va_start(ap, req);
    arg = va_arg(ap, void *);
    va_end(ap);
    if (!real_ioctl)
        real_ioctl = (int (*)(int, unsigned long, ...))dlsym(RTLD_NEXT, "ioctl");
    if (!is_fake(fd))
        return real_ioctl(fd, req, arg);

    if (req == IOCTL_PRIVCMD_DM_OP) {
        privcmd_dm_op_t *u = arg;
        size_t sizes[16];
        const unsigned char *bufs[16];
        int rc;

        if (u->num == 0)
            return 0;           /* xendevicemodel_open's probe */
        /* privcmd's own limits, before anything reaches Xen. */
        if (u->num > DMOP_WIRE_MAX_BUFFERS) {
            errno = E2BIG;
            return -1;
        }
        for (unsigned i = 0; i < u->num; i++) {
            if (u->ubufs[i].size > DMOP_WIRE_MAX_BUFFER_SIZE) {
                errno = E2BIG;
                return -1;
            }
            sizes[i] = u->ubufs[i].size;
            bufs[i] = u->ubufs[i].uptr;
        }
        record_request(u->dom, u->num, sizes, bufs);
        rc = model(u->num, u->ubufs[0].uptr, u->ubufs[0].size,
                   u->num > 1 ? u->ubufs[1].uptr : NULL,
                   u->num > 1 ? u->ubufs[1].size : 0);
        if (rc < 0) {
            errno = -rc;
            return -1;
        }
        return 0;
    }
    if (req == IOCTL_PRIVCMD_RESTRICT)
        return 0;
    errno = ENOTTY;
    return -1;
}

/* ---------- ours and pipeline: a mock broker ---------- */

static unsigned char rxbuf[70000];

struct pending {
    uint32_t id;
    uint16_t dom;
    unsigned nr;
    size_t sizes[16];
    /* 8-aligned copies: buffer 0 is read as struct xen_dm_op. */
    uint64_t b0[512], b1[512];
};

static int send_reply(int fd, struct pending *p)
{
    unsigned char out[24 + 16 + 2 * 4096];
    size_t len = DMOP_WIRE_REPLY_FIXED;
    int rc = model(p->nr, p->b0, p->sizes[0], p->nr > 1 ? p->b1 : NULL,
                   p->nr > 1 ? p->sizes[1] : 0);
    struct xen_dm_op *op = (struct xen_dm_op *)p->b0;
    int ret0 = rc == 0 && op_returns_buf0(op->op);
    int ret1 = rc == 0 && op->op == XEN_DMOP_track_dirty_vram && p->nr > 1;
    unsigned nret = (unsigned)(ret0 + ret1);

    memset(out, 0, sizeof out);
    dmop_put32(out, DMOP_WIRE_MAGIC);
    dmop_put16(out + 4, DMOP_WIRE_TYPE_REPLY);
    dmop_put16(out + 6, p->dom);
    dmop_put32(out + 8, p->id);
    dmop_put32(out + 12, (uint32_t)rc);
    dmop_put16(out + 20, (uint16_t)nret);
    len += 8 * nret;
    if (ret0) {
        dmop_put16(out + 24, 0);
        dmop_put32(out + 28, (uint32_t)p->sizes[0]);
    }
    if (ret1) {
        unsigned char *d = out + 24 + 8 * (nret - 1);
        dmop_put16(d, 1);
        dmop_put32(d + 4, (uint32_t)p->sizes[1]);
    }
    if (ret0) {
        memcpy(out + len, p->b0, p->sizes[0]);
        len += p->sizes[0];
    }
    if (ret1) {
        memcpy(out + len, p->b1, p->sizes[1]);
        len += p->sizes[1];
    }
    return send(fd, out, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Parses one REQUEST strictly, as the man page defines it. */
static int parse_request(const unsigned char *m, ssize_t n, struct pending *p)
{
    size_t off, total;

    CHECK(n >= DMOP_WIRE_REQUEST_FIXED, "REQUEST of %zd bytes", n);
    if (n < DMOP_WIRE_REQUEST_FIXED)
        return -1;
    CHECK(dmop_get32(m) == DMOP_WIRE_MAGIC, "REQUEST magic");
    CHECK(dmop_get16(m + 4) == DMOP_WIRE_TYPE_REQUEST, "type 0x%x",
          dmop_get16(m + 4));
    CHECK(dmop_get16(m + 14) == 0, "REQUEST reserved bytes 14..15");
    p->dom = dmop_get16(m + 6);
    p->id = dmop_get32(m + 8);
    p->nr = dmop_get16(m + 12);
    CHECK(p->nr >= 1 && p->nr <= 2, "nr_bufs %u", p->nr);
    if (p->nr < 1 || p->nr > 2)
        return -1;
    off = DMOP_WIRE_REQUEST_FIXED + 4 * p->nr;
    total = off;
    for (unsigned i = 0; i < p->nr; i++) {
        p->sizes[i] = dmop_get32(m + DMOP_WIRE_REQUEST_FIXED + 4 * i);
        CHECK(p->sizes[i] <= DMOP_WIRE_MAX_BUFFER_SIZE, "size %zu",
              p->sizes[i]);
        if (p->sizes[i] > DMOP_WIRE_MAX_BUFFER_SIZE)
            return -1;
        total += p->sizes[i];
    }
    CHECK(total == (size_t)n, "REQUEST length %zd, sizes say %zu", n, total);
    if (total != (size_t)n)
        return -1;
    memcpy(p->b0, m + off, p->sizes[0]);
    if (p->nr > 1)
        memcpy(p->b1, m + off + p->sizes[0], p->sizes[1]);
    return 0;
}

static void *mock_broker(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char w[DMOP_WIRE_WELCOME_SIZE];
    ssize_t n;
    static struct pending batch[4];

    n = recv(fd, rxbuf, sizeof rxbuf, 0);
    CHECK(n == DMOP_WIRE_HELLO_SIZE, "HELLO of %zd bytes", n);
    CHECK(dmop_get32(rxbuf) == DMOP_WIRE_MAGIC &&
          dmop_get16(rxbuf + 4) == DMOP_WIRE_TYPE_HELLO &&
          dmop_get16(rxbuf + 6) == 0, "HELLO header");
    CHECK(dmop_get16(rxbuf + 8) <= 1 && dmop_get16(rxbuf + 10) >= 1,
          "HELLO versions %u..%u", dmop_get16(rxbuf + 8),
          dmop_get16(rxbuf + 10));
    CHECK(dmop_get32(rxbuf + 12) == dmop_abi_identifier(),
          "HELLO dmop_abi 0x%x", dmop_get32(rxbuf + 12));

    memset(w, 0, sizeof w);
    dmop_put32(w, DMOP_WIRE_MAGIC);
    dmop_put16(w + 4, DMOP_WIRE_TYPE_WELCOME);
    dmop_put16(w + 6, 1);
    dmop_put32(w + 8, dmop_abi_identifier());
    dmop_put32(w + 12, (4u << 16) | 17u);
    dmop_put16(w + 16, DOMID);
    dmop_put16(w + 18, DMOP_WIRE_MAX_BUFFERS);
    dmop_put32(w + 20, DMOP_WIRE_MAX_BUFFER_SIZE);
    dmop_put32(w + 24, 0xffffffffu);
    if (send(fd, w, sizeof w, MSG_NOSIGNAL) != (ssize_t)sizeof w)
        die("mock broker: send WELCOME");

    for (;;) {
        int count = 0;
        n = recv(fd, rxbuf, sizeof rxbuf, 0);
        if (n <= 0)
            break;
        if (parse_request(rxbuf, n, &batch[0]) < 0)
            break;
        if (mode != MODE_PIPELINE) {
            const unsigned char *bufs[2] = { (unsigned char *)batch[0].b0,
                                             (unsigned char *)batch[0].b1 };
            record_request(batch[0].dom, batch[0].nr, batch[0].sizes, bufs);
            if (send_reply(fd, &batch[0]) < 0)
                break;
            continue;
        }
        /* Gather what else is in flight, then answer newest first. */
        count = 1;
        while (count < 4) {
            struct pollfd pfd = { fd, POLLIN, 0 };
            if (poll(&pfd, 1, 2) <= 0)
                break;
            n = recv(fd, rxbuf, sizeof rxbuf, 0);
            if (n <= 0 || parse_request(rxbuf, n, &batch[count]) < 0)
                goto out;
            count++;
        }
        if (count > 1)
            batches_reversed++;
        for (int i = count - 1; i >= 0; i--) {
            requests_seen++;
            if (send_reply(fd, &batch[i]) < 0)
                goto out;
        }
    }
out:
    close(fd);
    return NULL;
}

static void start_mock_broker(void)
{
    int sv[2];
    pthread_t t;
    char num[16];

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    snprintf(num, sizeof num, "%d", sv[1]);
    setenv("DMOP_BROKER_FD", num, 1);
    unsetenv("DMOP_BROKER_SOCKET");
    if (pthread_create(&t, NULL, mock_broker, (void *)(intptr_t)sv[0]) != 0)
        die("pthread_create");
    pthread_detach(t);
}

/* ---------- the scenario both libraries run ---------- */

static void result(const char *label, int rc, const char *fmt, ...)
{
    int e = errno;
    va_list ap;

    fprintf(transcript, "CALL %s rc=%d", label, rc);
    if (rc)
        fprintf(transcript, " errno=%d", e);
    if (fmt) {
        fputc(' ', transcript);
        va_start(ap, fmt);
        vfprintf(transcript, fmt, ap);
        va_end(ap);
    }
    fputc('\n', transcript);
    fflush(transcript);
    errno = e;
}

#define REQS_BEFORE() int reqs_ = requests_seen
#define NO_REQUEST(what) \
    CHECK(requests_seen == reqs_, "%s reached the hypervisor", what)

static void scenario(void)
{
    xendevicemodel_handle *h, *h2;
    ioservid_t id;
    xen_pfn_t g1, g2;
    evtchn_port_t port;
    unsigned int vcpus;
    unsigned long bitmap[2];
    static unsigned long big[1000];
    struct xen_dm_op_modified_memory_extent ext[300];
    int rc;

    h = xendevicemodel_open(NULL, 0);
    CHECK(h != NULL, "xendevicemodel_open: errno %d (%s)", errno,
          strerror(errno));
    if (!h)
        return;

    rc = xendevicemodel_restrict(h, DOMID);
    result("restrict(own domid)", rc, NULL);
    CHECK_OK(rc, "restrict to the broker's domid");

    id = 0xBEEF;
    rc = xendevicemodel_create_ioreq_server(h, DOMID, HVM_IOREQSRV_BUFIOREQ_ATOMIC, &id);
    result("create_ioreq_server(atomic)", rc, "id=%u", id);
    CHECK(rc == 0 && id == 42, "create_ioreq_server id %u", id);
    id = 0xBEEF;
    rc = xendevicemodel_create_ioreq_server(h, DOMID, 9, &id);
    result("create_ioreq_server(9)", rc, "id=%u", id);
    CHECK_ERR(rc, EINVAL, "create_ioreq_server(9)");
    CHECK(id == 0xBEEF, "id written on failure: %u", id);

    g1 = g2 = 0x5555;
    port = 0x6666;
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, 3, &g1, &g2, &port);
    result("get_ioreq_server_info(all)", rc, "gfn=%#lx bufgfn=%#lx port=%#x",
           (unsigned long)g1, (unsigned long)g2, port);
    CHECK(rc == 0 && g1 == 0xf0003 && g2 == 0xf1003 && port == 0x303,
          "info outputs");
    g1 = g2 = 0x5555;
    port = 0x6666;
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, 3, NULL, NULL, &port);
    result("get_ioreq_server_info(port only)", rc, "port=%#x", port);
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, 3, &g1, NULL, NULL);
    result("get_ioreq_server_info(gfn only)", rc, "gfn=%#lx", (unsigned long)g1);
    g1 = g2 = 0x5555;
    port = 0x6666;
    rc = xendevicemodel_get_ioreq_server_info(h, DOMID, 0x7777, &g1, &g2, &port);
    result("get_ioreq_server_info(missing)", rc, "gfn=%#lx bufgfn=%#lx port=%#x",
           (unsigned long)g1, (unsigned long)g2, port);
    CHECK_ERR(rc, ENOENT, "get_ioreq_server_info(0x7777)");
    CHECK(g1 == 0x5555 && g2 == 0x5555 && port == 0x6666,
          "outputs written on failure");

    rc = xendevicemodel_map_io_range_to_ioreq_server(h, DOMID, 3, 0, 0xcf8, 0xcff);
    result("map_io_range(port)", rc, NULL);
    rc = xendevicemodel_map_io_range_to_ioreq_server(h, DOMID, 3, 7, 0xfee00000, 0xfeefffff);
    result("map_io_range(mmio, is_mmio=7)", rc, NULL);
    rc = xendevicemodel_unmap_io_range_from_ioreq_server(h, DOMID, 3, 0, 0x70, 0x71);
    result("unmap_io_range(port)", rc, NULL);
    rc = xendevicemodel_unmap_io_range_from_ioreq_server(h, DOMID, 3, 1, 0xa0000, 0xbffff);
    result("unmap_io_range(mmio)", rc, NULL);

    rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, 3, HVMMEM_ioreq_server,
                                                     XEN_DMOP_IOREQ_MEM_ACCESS_WRITE);
    result("map_mem_type(write)", rc, NULL);
    rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, 3, HVMMEM_ioreq_server, 0);
    result("map_mem_type(unmap)", rc, NULL);
    {
        REQS_BEFORE();
        rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, 3, HVMMEM_ram_rw, 0);
        result("map_mem_type(ram_rw)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "map_mem_type wrong type");
        rc = xendevicemodel_map_mem_type_to_ioreq_server(h, DOMID, 3, HVMMEM_ioreq_server,
                                                         XEN_DMOP_IOREQ_MEM_ACCESS_READ);
        result("map_mem_type(read)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "map_mem_type read flag");
        NO_REQUEST("map_mem_type with bad arguments");
    }

    rc = xendevicemodel_map_pcidev_to_ioreq_server(h, DOMID, 3, 0x1234, 0xab, 31, 7);
    result("map_pcidev(1234:ab:1f.7)", rc, NULL);
    rc = xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOMID, 3, 0, 0, 2, 0);
    result("unmap_pcidev(0:0:2.0)", rc, NULL);
    {
        REQS_BEFORE();
        rc = xendevicemodel_map_pcidev_to_ioreq_server(h, DOMID, 3, 0, 0, 32, 0);
        result("map_pcidev(dev 32)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "map_pcidev dev 32");
        rc = xendevicemodel_map_pcidev_to_ioreq_server(h, DOMID, 3, 0, 0, 0, 8);
        result("map_pcidev(fn 8)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "map_pcidev fn 8");
        rc = xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOMID, 3, 0, 0, 255, 0);
        result("unmap_pcidev(dev 255)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "unmap_pcidev dev 255");
        rc = xendevicemodel_unmap_pcidev_from_ioreq_server(h, DOMID, 3, 0, 0, 0, 200);
        result("unmap_pcidev(fn 200)", rc, NULL);
        CHECK_ERR(rc, EINVAL, "unmap_pcidev fn 200");
        NO_REQUEST("pcidev with bad device/function");
    }

    rc = xendevicemodel_set_ioreq_server_state(h, DOMID, 3, 1);
    result("set_ioreq_server_state(1)", rc, NULL);
    rc = xendevicemodel_set_ioreq_server_state(h, DOMID, 3, 0);
    result("set_ioreq_server_state(0)", rc, NULL);
    rc = xendevicemodel_set_ioreq_server_state(h, DOMID, 3, 0x100);
    result("set_ioreq_server_state(0x100)", rc, NULL);
    rc = xendevicemodel_destroy_ioreq_server(h, DOMID, 3);
    result("destroy_ioreq_server", rc, NULL);

    rc = xendevicemodel_set_pci_intx_level(h, DOMID, 0, 0, 3, 2, 1);
    result("set_pci_intx_level", rc, NULL);
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 4, 1);
    result("set_isa_irq_level(4,1)", rc, NULL);
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 12, 0x101);
    result("set_isa_irq_level(12,0x101)", rc, NULL);
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 200, 1);
    result("set_isa_irq_level(200)", rc, NULL);
    CHECK_ERR(rc, EINVAL, "set_isa_irq_level(200)");
    rc = xendevicemodel_set_irq_level(h, DOMID, 33, 1);
    result("set_irq_level", rc, NULL);
    rc = xendevicemodel_set_pci_link_route(h, DOMID, 2, 11);
    result("set_pci_link_route", rc, NULL);
    rc = xendevicemodel_inject_msi(h, DOMID, 0xfee01000, 0x4041);
    result("inject_msi", rc, NULL);
    rc = xendevicemodel_inject_event(h, DOMID, 1, 0x0e, 3, 0x2, 0, 0xdeadbeef000ull);
    result("inject_event(#PF)", rc, NULL);
    rc = xendevicemodel_inject_event(h, DOMID, -1, 0x20, 0, ~0u, 2, 0);
    result("inject_event(vcpu -1)", rc, NULL);

    memset(bitmap, 0xAA, sizeof bitmap);
    rc = xendevicemodel_track_dirty_vram(h, DOMID, 0x100, 100, bitmap);
    {
        const unsigned char *b = (const unsigned char *)bitmap;
        char hex[2 * sizeof bitmap + 1];
        for (size_t k = 0; k < sizeof bitmap; k++)
            sprintf(hex + 2 * k, "%02x", b[k]);
        result("track_dirty_vram(100 pages)", rc, "bitmap=%s", hex);
        /* 13 bytes written, the rest of the caller's array untouched. */
        CHECK(rc == 0 && b[0] == 0x00 && b[1] == 37 && b[12] == (unsigned char)(12 * 37) &&
              b[13] == 0xAA && b[15] == 0xAA, "bitmap %s", hex);
    }
    rc = xendevicemodel_track_dirty_vram(h, DOMID, 0, 0, NULL);
    result("track_dirty_vram(stop)", rc, NULL);
    {
        REQS_BEFORE();
        rc = xendevicemodel_track_dirty_vram(h, DOMID, 0, 40000, big);
        result("track_dirty_vram(40000 pages)", rc, NULL);
        CHECK_ERR(rc, E2BIG, "bitmap of 5000 bytes");
        NO_REQUEST("a 5000-byte bitmap");
    }

    rc = xendevicemodel_modified_memory(h, DOMID, 0x1000, 16);
    result("modified_memory", rc, NULL);
    memset(ext, 0, sizeof ext);
    for (int k = 0; k < 300; k++) {
        ext[k].first_pfn = 0x2000u + 0x100u * (unsigned)k;
        ext[k].nr = (uint32_t)k + 1;
    }
    rc = xendevicemodel_modified_memory_bulk(h, DOMID, ext, 3);
    result("modified_memory_bulk(3)", rc, NULL);
    rc = xendevicemodel_modified_memory_bulk(h, DOMID, ext, 256);
    result("modified_memory_bulk(256)", rc, NULL);
    rc = xendevicemodel_modified_memory_bulk(h, DOMID, ext, 300);
    result("modified_memory_bulk(300)", rc, NULL);
    CHECK_ERR(rc, E2BIG, "300 extents");

    rc = xendevicemodel_set_mem_type(h, DOMID, HVMMEM_ram_ro, 0xc0, 64);
    result("set_mem_type", rc, NULL);
    rc = xendevicemodel_relocate_memory(h, DOMID, 16, 0x100, 0x200);
    result("relocate_memory", rc, NULL);
    rc = xendevicemodel_pin_memory_cacheattr(h, DOMID, 0xf1000, 0xf1fff,
                                             XEN_DMOP_MEM_CACHEATTR_WB);
    result("pin_memory_cacheattr", rc, NULL);
    rc = xendevicemodel_shutdown(h, DOMID, SHUTDOWN_reboot);
    result("shutdown(reboot)", rc, NULL);
    vcpus = 99;
    rc = xendevicemodel_nr_vcpus(h, DOMID, &vcpus);
    result("nr_vcpus", rc, "vcpus=%u", vcpus);
    CHECK(rc == 0 && vcpus == 3, "nr_vcpus %u", vcpus);

    rc = xendevicemodel_set_isa_irq_level(h, DOMID + 1, 4, 0);
    result("set_isa_irq_level(other domid)", rc, NULL);

    rc = xentoolcore_restrict_all(DOMID);
    result("xentoolcore_restrict_all(own domid)", rc, NULL);
    CHECK_OK(rc, "xentoolcore_restrict_all");

    /* libxenctrl opens a handle of its own inside QEMU: a second one works. */
    h2 = xendevicemodel_open(NULL, 0);
    CHECK(h2 != NULL, "second handle: errno %d", errno);
    if (h2) {
        vcpus = 99;
        rc = xendevicemodel_nr_vcpus(h2, DOMID, &vcpus);
        result("nr_vcpus(second handle)", rc, "vcpus=%u", vcpus);
        rc = xendevicemodel_close(h2);
        result("close(second handle)", rc, NULL);
    }
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 1, 1);
    result("set_isa_irq_level(after closing the other handle)", rc, NULL);

    rc = xendevicemodel_close(h);
    result("close", rc, NULL);
    CHECK_OK(rc, "close");
    rc = xendevicemodel_close(NULL);
    result("close(NULL)", rc, NULL);
}

/* ---------- pipeline ---------- */

static xendevicemodel_handle *shared;

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;

    for (int k = 0; k < 300; k++) {
        xen_pfn_t g1 = 0, g2 = 0;
        evtchn_port_t port = 0;
        int rc = xendevicemodel_get_ioreq_server_info(shared, DOMID, (ioservid_t)t,
                                                      &g1, &g2, &port);
        CHECK(rc == 0 && g1 == 0xf0000u + t && g2 == 0xf1000u + t &&
              port == 0x300u + t, "thread %u call %d: rc %d gfn %#lx port %#x",
              t, k, rc, (unsigned long)g1, port);
        /* A refusal of our own: id 100 + e fails with errno e. */
        rc = xendevicemodel_set_ioreq_server_state(shared, DOMID,
                                                   (ioservid_t)(100 + t + 1), 1);
        CHECK(rc == -1 && errno == (int)t + 1, "thread %u call %d: rc %d errno %d",
              t, k, rc, errno);
        if (clib_failures > 20)
            break;
    }
    return NULL;
}

static void pipeline(void)
{
    pthread_t th[8];

    shared = xendevicemodel_open(NULL, 0);
    CHECK(shared != NULL, "open: errno %d", errno);
    if (!shared)
        return;
    for (unsigned t = 0; t < 8; t++)
        pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t);
    for (unsigned t = 0; t < 8; t++)
        pthread_join(th[t], NULL);
    CHECK(requests_seen == 8 * 300 * 2, "%d requests answered", requests_seen);
    /* Otherwise the run proved nothing about matching replies by id. */
    CHECK(batches_reversed > 0, "no request was answered out of order");
    printf("pipeline: %d batches answered newest first\n", batches_reversed);
    xendevicemodel_close(shared);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage: golden real|ours TRANSCRIPT | golden pipeline");
    if (strcmp(argv[1], "real") == 0)
        mode = MODE_REAL;
    else if (strcmp(argv[1], "ours") == 0)
        mode = MODE_OURS;
    else if (strcmp(argv[1], "pipeline") == 0)
        mode = MODE_PIPELINE;
    else
        die("unknown mode %s", argv[1]);

    if (mode == MODE_PIPELINE) {
        start_mock_broker();
        pipeline();
        return clib_finish("golden pipeline");
    }
    if (argc < 3)
        die("usage: golden %s TRANSCRIPT", argv[1]);
    transcript = fopen(argv[2], "w");
    if (!transcript)
        die("fopen %s", argv[2]);
    if (mode == MODE_OURS)
        start_mock_broker();
    scenario();
    CHECK(requests_seen >= 40, "only %d requests recorded", requests_seen);
    fclose(transcript);
    return clib_finish(mode == MODE_REAL ? "golden real" : "golden ours");
}
