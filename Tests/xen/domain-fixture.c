/* SPDX-License-Identifier: MIT */
/*
 * domain-fixture.c - the toolstack's part of the real-Xen test (scripts/xen-test).
 *
 * Runs as root in the PV dom0 the harness boots under QEMU. There is no
 * libxl, no xenstored: a raw XEN_DOMCTL_createdomain through
 * IOCTL_PRIVCMD_HYPERCALL gives an empty HVM domain that is never started
 * but exists, which is all the ioreq-server DMOPs need to succeed.
 *
 *   domain-fixture create [--vcpus N] [--pv]
 *       Creates the domain; prints its domid (only the number) on stdout.
 *   domain-fixture destroy DOMID
 *   domain-fixture raw DOMID
 *       The privcmd/Xen errno table, measured with ioctls on fds of its own
 *       (no broker): one TEST line per case, named raw.<case>, with the
 *       observed errno in the detail. These are the facts the simulated
 *       hypervisor must reproduce.
 *   domain-fixture xen-version
 *       Prints the running hypervisor's version as MAJOR.MINOR.
 *   domain-fixture check-broker PID DOMID UID:GID PREFIX
 *       The confined broker seen from outside: credentials, no_new_privs,
 *       seccomp, open fds, and (through a pidfd_getfd copy of its privcmd
 *       fd) that privcmd is restricted to exactly DOMID. Checks are named
 *       PREFIX.broker-*.
 *
 * Every number (domctl and dmop op numbers, ioctl numbers, interface
 * versions) comes from Debian's libxen-dev headers, which are the same Xen
 * release as the hypervisor the harness boots (xen-test builds it against
 * the booted release's libxen-dev).
 *
 * Exit status: 0 when every check passed (or the command succeeded), 1 on
 * a failed check or error, 2 on bad usage.
 */
#define _GNU_SOURCE
#define __XEN_TOOLS__ 1 /* domctl.h refuses to be included without it */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <xen/xen.h>
#include <xen/version.h>
#include <xen/domctl.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/sys/privcmd.h>

#include "xentest.h"

#define PRIVCMD "/dev/xen/privcmd"
#define PAGE 4096

/*
 * Hypercall and DM_OP buffers are read and written by Xen straight from our
 * address space, so they live in locked pages: Xen cannot fault them in.
 * Page 0: DM_OP buffers; pages 1-2: a second buffer / oversized buffers;
 * page 3: the domctl.
 */
static unsigned char *scratch;

static void scratch_init(void)
{
    scratch = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (scratch == MAP_FAILED) {
        perror("domain-fixture: mmap");
        exit(1);
    }
    if (mlock(scratch, 4 * PAGE) != 0) {
        perror("domain-fixture: mlock");
        exit(1);
    }
}

static int open_privcmd(void)
{
    int fd = open(PRIVCMD, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "domain-fixture: open %s: %s\n", PRIVCMD, strerror(errno));
        exit(1);
    }
    return fd;
}

/* ioctl result as 0 or -errno, the convention of the broker's REPLY. */
static int xioctl(int fd, unsigned long req, void *arg)
{
    return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

static int domctl(int fd, struct xen_domctl *dc)
{
    privcmd_hypercall_t h;
    struct xen_domctl *buf = (struct xen_domctl *)(scratch + 3 * PAGE);
    int rc;

    dc->interface_version = XEN_DOMCTL_INTERFACE_VERSION;
    memcpy(buf, dc, sizeof *dc);
    memset(&h, 0, sizeof h);
    h.op = __HYPERVISOR_domctl;
    h.arg[0] = (uint64_t)(uintptr_t)buf;
    rc = xioctl(fd, IOCTL_PRIVCMD_HYPERCALL, &h);
    memcpy(dc, buf, sizeof *dc);
    return rc;
}

static int create_domain(int fd, int hvm, unsigned vcpus, domid_t *out)
{
    struct xen_domctl dc;
    int rc;

    memset(&dc, 0, sizeof dc);
    dc.cmd = XEN_DOMCTL_createdomain;
    dc.domain = 0; /* 0: Xen picks a free domid */
    dc.u.createdomain.max_vcpus = vcpus;
    dc.u.createdomain.max_evtchn_port = 1023;
    dc.u.createdomain.max_grant_frames = -1;
    dc.u.createdomain.max_maptrack_frames = -1;
    dc.u.createdomain.grant_opts = XEN_DOMCTL_GRANT_version(1);
    if (hvm) {
        /* HAP: the TCG CPU offers SVM with nested paging. vPCI is for PVH
         * dom0 only and createdomain refuses it for a domU. */
        dc.u.createdomain.flags = XEN_DOMCTL_CDF_hvm | XEN_DOMCTL_CDF_hap;
        dc.u.createdomain.arch.emulation_flags = XEN_X86_EMU_ALL & ~XEN_X86_EMU_VPCI;
    }
    rc = domctl(fd, &dc);
    if (rc == 0)
        *out = dc.domain;
    return rc;
}

static int destroy_domain(int fd, domid_t dom)
{
    struct xen_domctl dc;

    memset(&dc, 0, sizeof dc);
    dc.cmd = XEN_DOMCTL_destroydomain;
    dc.domain = dom;
    return domctl(fd, &dc);
}

/*
 * IOCTL_PRIVCMD_DM_OP with nbufs buffers. Buffer 0 holds *op in its first
 * bytes and is size0 long; further buffers point into pages 1-2 and are
 * sizeN long. The op is copied back out of buffer 0 afterwards.
 */
static int dm_op(int fd, domid_t dom, struct xen_dm_op *op, unsigned nbufs, size_t size0, size_t sizeN)
{
    privcmd_dm_op_buf_t bufs[32];
    privcmd_dm_op_t arg;
    int rc;

    if (nbufs > 32)
        return -E2BIG; /* never asked for; keeps bufs[] in bounds */
    memset(scratch, 0, 3 * PAGE);
    memcpy(scratch, op, sizeof *op);
    for (unsigned i = 0; i < nbufs; i++) {
        bufs[i].uptr = i == 0 ? scratch : scratch + PAGE;
        bufs[i].size = i == 0 ? size0 : sizeN;
    }
    arg.dom = dom;
    arg.num = (uint16_t)nbufs;
    arg.ubufs = bufs;
    rc = xioctl(fd, IOCTL_PRIVCMD_DM_OP, &arg);
    memcpy(op, scratch, sizeof *op);
    return rc;
}

static int restrict_fd(int fd, domid_t dom)
{
    return xioctl(fd, IOCTL_PRIVCMD_RESTRICT, &dom);
}

static int parse_domid(const char *s, domid_t *out)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v >= DOMID_FIRST_RESERVED) {
        fprintf(stderr, "domain-fixture: '%s' is not a guest domid\n", s);
        return -1;
    }
    *out = (domid_t)v;
    return 0;
}

/* expect: 0 or a negative errno. */
static void expect(const char *name, int rc, int want)
{
    xt_check(name, rc == want, "rc=%d (%s) expected=%d (%s)", rc, xt_errname(rc), want, xt_errname(want));
}

#define DMOP_SIZE sizeof(struct xen_dm_op)

/*
 * The errno table. Part of it is what the broker could forward, part is what
 * it refuses itself (and so only the simulated model would ever see): both
 * say what "faithful" means for the simulation.
 */
static int cmd_raw(domid_t dom)
{
    int fd = open_privcmd(), rfd = open_privcmd();
    struct xen_dm_op op;
    domid_t absent = (domid_t)(dom + 100), pv;
    int rc;

    /* --- unrestricted fd: Xen's answers --- */
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_nr_vcpus;
    expect("raw.num0", dm_op(fd, dom, &op, 0, 0, 0), 0);
    expect("raw.absent-domain", dm_op(fd, absent, &op, 1, DMOP_SIZE, 0), -ESRCH);
    expect("raw.self-dom0", dm_op(fd, 0, &op, 1, DMOP_SIZE, 0), -EPERM);
    expect("raw.3-bufs", dm_op(fd, dom, &op, 3, DMOP_SIZE, 8), -E2BIG);
    expect("raw.17-bufs", dm_op(fd, dom, &op, 17, DMOP_SIZE, 8), -E2BIG);
    expect("raw.buf-4097", dm_op(fd, dom, &op, 1, 4097, 0), -E2BIG);
    expect("raw.buf0-4-bytes", dm_op(fd, dom, &op, 1, 4, 0), -EFAULT);
    expect("raw.buf0-8-bytes", dm_op(fd, dom, &op, 1, 8, 0), -EFAULT);
    expect("raw.buf0-4096", dm_op(fd, dom, &op, 1, 4096, 0), 0);

    memset(&op, 0, sizeof op);
    op.op = 9999;
    expect("raw.unknown-op", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EOPNOTSUPP);
    /* set_irq_level is Arm only: x86 has no entry for it. */
    op.op = XEN_DMOP_set_irq_level;
    expect("raw.arm-only-op", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EOPNOTSUPP);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_nr_vcpus;
    op.pad = 1;
    expect("raw.header-pad", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_create_ioreq_server;
    op.u.create_ioreq_server.handle_bufioreq = HVM_IOREQSRV_BUFIOREQ_ATOMIC + 1;
    expect("raw.create-bad-bufioreq", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_get_ioreq_server_info;
    op.u.get_ioreq_server_info.id = 7; /* no server exists yet */
    expect("raw.info-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);
    /* Every other op that names a server, with otherwise valid arguments:
     * the broker answers an id its session does not own with this errno. */
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_map_io_range_to_ioreq_server;
    op.u.map_io_range_to_ioreq_server.id = 7;
    op.u.map_io_range_to_ioreq_server.start = 0x3f8;
    op.u.map_io_range_to_ioreq_server.end = 0x3ff;
    expect("raw.map-range-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);
    op.op = XEN_DMOP_unmap_io_range_from_ioreq_server;
    expect("raw.unmap-range-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_ioreq_server_state;
    op.u.set_ioreq_server_state.id = 7;
    op.u.set_ioreq_server_state.enabled = 1;
    expect("raw.set-state-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_destroy_ioreq_server;
    op.u.destroy_ioreq_server.id = 7;
    expect("raw.destroy-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_map_mem_type_to_ioreq_server;
    op.u.map_mem_type_to_ioreq_server.id = 7;
    op.u.map_mem_type_to_ioreq_server.type = HVMMEM_ioreq_server;
    op.u.map_mem_type_to_ioreq_server.flags = XEN_DMOP_IOREQ_MEM_ACCESS_WRITE;
    expect("raw.map-mem-type-no-server", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -ENOENT);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_isa_irq_level;
    op.u.set_isa_irq_level.isa_irq = 16; /* ISA IRQs are 0..15 */
    expect("raw.isa-irq-16", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    /* The interrupt ops QEMU issues most, on a domain that never ran. */
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_isa_irq_level;
    op.u.set_isa_irq_level.isa_irq = 4;
    op.u.set_isa_irq_level.level = 1;
    expect("raw.isa-irq-4-high", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), 0);
    op.u.set_isa_irq_level.level = 0;
    expect("raw.isa-irq-4-low", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), 0);
    op.u.set_isa_irq_level.level = 2;
    expect("raw.isa-irq-level-2", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_pci_link_route;
    op.u.set_pci_link_route.link = 0;
    op.u.set_pci_link_route.isa_irq = 5;
    expect("raw.pci-link-route", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), 0);
    op.u.set_pci_link_route.link = 4;
    expect("raw.pci-link-4", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_pci_intx_level;
    op.u.set_pci_intx_level.device = 3;
    op.u.set_pci_intx_level.level = 1;
    expect("raw.pci-intx-high", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), 0);
    op.u.set_pci_intx_level.level = 0;
    expect("raw.pci-intx-low", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), 0);
    op.u.set_pci_intx_level.device = 32;
    expect("raw.pci-intx-device-32", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_modified_memory;
    expect("raw.modified-memory-1-buf", dm_op(fd, dom, &op, 1, DMOP_SIZE, 0), -EINVAL);

    /* A PV domain is not a DMOP target. */
    rc = create_domain(fd, 0, 1, &pv);
    if (xt_check("raw.create-pv-domain", rc == 0, "rc=%d (%s)", rc, xt_errname(rc))) {
        memset(&op, 0, sizeof op);
        op.op = XEN_DMOP_nr_vcpus;
        expect("raw.pv-target", dm_op(fd, pv, &op, 1, DMOP_SIZE, 0), -EINVAL);
        expect("raw.destroy-pv-domain", destroy_domain(fd, pv), 0);
    }

    /* --- restricted fd: privcmd's answers --- */
    expect("raw.restrict", restrict_fd(rfd, dom), 0);
    expect("raw.restrict-same-again", restrict_fd(rfd, dom), 0);
    expect("raw.restrict-other", restrict_fd(rfd, absent), -EINVAL);
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_nr_vcpus;
    expect("raw.restricted-other-domain", dm_op(rfd, absent, &op, 1, DMOP_SIZE, 0), -EPERM);
    expect("raw.restricted-other-num0", dm_op(rfd, absent, &op, 0, 0, 0), -EPERM);
    expect("raw.restricted-17-bufs", dm_op(rfd, dom, &op, 17, DMOP_SIZE, 8), -E2BIG);
    expect("raw.restricted-hypercall", xioctl(rfd, IOCTL_PRIVCMD_HYPERCALL, NULL), -EPERM);
    expect("raw.unrestricted-hypercall-null", xioctl(fd, IOCTL_PRIVCMD_HYPERCALL, NULL), -EFAULT);
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_nr_vcpus;
    rc = dm_op(rfd, dom, &op, 1, DMOP_SIZE, 0);
    xt_check("raw.restricted-nr-vcpus", rc == 0, "rc=%d (%s) vcpus=%u", rc, xt_errname(rc), op.u.nr_vcpus.vcpus);

    close(rfd);
    close(fd);
    return xt_failed ? 1 : 0;
}

/* The value of "Key:" in /proc/PID/status, whitespace squeezed; "" if absent. */
static void status_field(const char *status, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key), n = 0;
    const char *p = status;

    out[0] = 0;
    while (p && *p) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ':') {
            p += klen + 1;
            while (*p && *p != '\n' && n + 1 < size) {
                if (*p == ' ' || *p == '\t') {
                    if (n > 0 && out[n - 1] != ' ')
                        out[n++] = ' ';
                } else {
                    out[n++] = *p;
                }
                p++;
            }
            if (n > 0 && out[n - 1] == ' ')
                n--;
            out[n] = 0;
            return;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
}

/*
 * The confined broker, seen from outside (one process: every fork counts
 * under TCG). PREFIX names the checks.
 *  - /proc/PID/status: the dropped uid and gid, no groups, no capabilities,
 *    no_new_privs, a seccomp filter;
 *  - open fds beyond stdio: only privcmd and sockets, exactly one privcmd;
 *  - that privcmd fd, copied with pidfd_getfd (the restriction lives in the
 *    open file description, so the copy shares it), without side effects:
 *    HYPERCALL with a NULL argument is EPERM on a restricted fd (checked
 *    before the argument is read) and EFAULT on an unrestricted one; DM_OP
 *    with num=0 returns 0 without a hypercall, but only after the domid
 *    check: 0 for DOMID and EPERM for other domids proves the restriction
 *    names exactly DOMID.
 */
static int cmd_check_broker(pid_t pid, domid_t dom, unsigned uid, unsigned gid, const char *prefix)
{
    char path[64], link[PATH_MAX + 1], status[8192], v[256], want[64], name[128], extra[512] = "";
    int pidfd, fd, n, found = 0;
    size_t el = 0;
    DIR *d;
    struct dirent *e;

#define NAME(suffix) (snprintf(name, sizeof name, "%s.%s", prefix, suffix), name)
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    n = fd < 0 ? -1 : (int)read(fd, status, sizeof status - 1);
    if (fd >= 0)
        close(fd);
    if (n <= 0) {
        xt_check(NAME("broker-status"), 0, "cannot read %s: %s", path, strerror(errno));
        return 1;
    }
    status[n] = 0;
    snprintf(want, sizeof want, "%u %u %u %u", uid, uid, uid, uid);
    status_field(status, "Uid", v, sizeof v);
    xt_check(NAME("broker-uid"), strcmp(v, want) == 0, "Uid: %s", v);
    snprintf(want, sizeof want, "%u %u %u %u", gid, gid, gid, gid);
    status_field(status, "Gid", v, sizeof v);
    xt_check(NAME("broker-gid"), strcmp(v, want) == 0, "Gid: %s", v);
    status_field(status, "Groups", v, sizeof v);
    xt_check(NAME("broker-groups"), v[0] == 0, "Groups: '%s'", v);
    status_field(status, "NoNewPrivs", v, sizeof v);
    xt_check(NAME("broker-no-new-privs"), strcmp(v, "1") == 0, "NoNewPrivs: %s", v);
    status_field(status, "Seccomp", v, sizeof v);
    xt_check(NAME("broker-seccomp"), strcmp(v, "2") == 0, "Seccomp: %s (2 = filter)", v);
    {
        char eff[64], prm[64], amb[64];
        status_field(status, "CapEff", eff, sizeof eff);
        status_field(status, "CapPrm", prm, sizeof prm);
        status_field(status, "CapAmb", amb, sizeof amb);
        xt_check(NAME("broker-no-caps"),
                 strtoull(eff, NULL, 16) == 0 && strtoull(prm, NULL, 16) == 0 && strtoull(amb, NULL, 16) == 0 &&
                     eff[0] && prm[0],
                 "CapEff: %s CapPrm: %s CapAmb: %s", eff, prm, amb);
    }

    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d) {
        xt_check(NAME("broker-fds"), 0, "cannot list %s: %s", path, strerror(errno));
        return 1;
    }
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd < 0)
        xt_check(NAME("broker-pidfd"), 0, "pidfd_open(%d): %s", (int)pid, strerror(errno));
    while ((e = readdir(d)) != NULL) {
        privcmd_dm_op_t arg;
        ssize_t len;
        int target, copy;

        if (e->d_name[0] == '.')
            continue;
        target = atoi(e->d_name);
        len = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (len < 0)
            continue;
        link[len] = 0;
        if (target <= 2)
            continue; /* stdio: whatever the toolstack gave (here a log file) */
        if (strncmp(link, "socket:", 7) == 0)
            continue;
        if (strcmp(link, PRIVCMD) != 0) {
            el += (size_t)snprintf(extra + el, el < sizeof extra ? sizeof extra - el : 0, " %d->%s", target, link);
            if (el >= sizeof extra)
                el = sizeof extra - 1;
            continue;
        }
        found++;
        if (pidfd < 0)
            continue;
        copy = (int)syscall(SYS_pidfd_getfd, pidfd, target, 0);
        if (copy < 0) {
            xt_check(NAME("broker-privcmd-copy"), 0, "pidfd_getfd(fd %d): %s", target, strerror(errno));
            continue;
        }
        n = xioctl(copy, IOCTL_PRIVCMD_HYPERCALL, NULL);
        xt_check(NAME("broker-privcmd-hypercall-refused"), n == -EPERM, "fd %d: rc=%d (%s), EPERM when restricted",
                 target, n, xt_errname(n));
        memset(&arg, 0, sizeof arg);
        arg.dom = dom;
        n = xioctl(copy, IOCTL_PRIVCMD_DM_OP, &arg);
        xt_check(NAME("broker-privcmd-serves-domid"), n == 0, "fd %d: DM_OP(dom %u, num=0) rc=%d (%s)", target,
                 dom, n, xt_errname(n));
        arg.dom = (domid_t)(dom + 1);
        n = xioctl(copy, IOCTL_PRIVCMD_DM_OP, &arg);
        xt_check(NAME("broker-privcmd-refuses-domid+1"), n == -EPERM, "fd %d: DM_OP(dom %u, num=0) rc=%d (%s)",
                 target, arg.dom, n, xt_errname(n));
        arg.dom = 0;
        n = xioctl(copy, IOCTL_PRIVCMD_DM_OP, &arg);
        xt_check(NAME("broker-privcmd-refuses-dom0"), n == -EPERM, "fd %d: DM_OP(dom 0, num=0) rc=%d (%s)", target,
                 n, xt_errname(n));
        close(copy);
    }
    closedir(d);
    if (pidfd >= 0)
        close(pidfd);
    xt_check(NAME("broker-fds"), extra[0] == 0, "beyond stdio, privcmd and sockets:%s", extra[0] ? extra : " none");
    /* One: a second one would be a leak the sandbox should have closed. */
    xt_check(NAME("broker-privcmd-fd-count"), found == 1, "%d privcmd fd(s) in pid %d", found, (int)pid);
#undef NAME
    return xt_failed ? 1 : 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: domain-fixture create [--vcpus N] [--pv]\n"
            "       domain-fixture destroy DOMID\n"
            "       domain-fixture raw DOMID\n"
            "       domain-fixture xen-version\n"
            "       domain-fixture check-broker PID DOMID UID:GID PREFIX\n");
    exit(2);
}

int main(int argc, char **argv)
{
    domid_t dom;

    if (argc < 2)
        usage();
    scratch_init();

    if (strcmp(argv[1], "create") == 0) {
        unsigned vcpus = 1;
        int hvm = 1, rc, fd;

        for (int i = 2; i < argc; i++) {
            if (strcmp(argv[i], "--vcpus") == 0 && i + 1 < argc) {
                char *end;
                unsigned long v = strtoul(argv[++i], &end, 10);
                if (*end || v < 1 || v > 128)
                    usage();
                vcpus = (unsigned)v;
            } else if (strcmp(argv[i], "--pv") == 0) {
                hvm = 0;
            } else {
                usage();
            }
        }
        fd = open_privcmd();
        rc = create_domain(fd, hvm, vcpus, &dom);
        if (rc != 0) {
            fprintf(stderr, "domain-fixture: createdomain: %s (%d)\n", xt_errname(rc), rc);
            return 1;
        }
        printf("%u\n", dom);
        return 0;
    }
    if (strcmp(argv[1], "destroy") == 0 && argc == 3) {
        int rc;
        if (parse_domid(argv[2], &dom) != 0)
            return 2;
        rc = destroy_domain(open_privcmd(), dom);
        if (rc != 0) {
            fprintf(stderr, "domain-fixture: destroydomain %u: %s (%d)\n", dom, xt_errname(rc), rc);
            return 1;
        }
        return 0;
    }
    if (strcmp(argv[1], "xen-version") == 0 && argc == 2) {
        privcmd_hypercall_t h;
        long v;

        memset(&h, 0, sizeof h);
        h.op = __HYPERVISOR_xen_version;
        h.arg[0] = XENVER_version;
        v = ioctl(open_privcmd(), IOCTL_PRIVCMD_HYPERCALL, &h);
        if (v < 0) {
            fprintf(stderr, "domain-fixture: XENVER_version: %s\n", strerror(errno));
            return 1;
        }
        printf("%ld.%ld\n", v >> 16, v & 0xffff);
        return 0;
    }
    if (strcmp(argv[1], "raw") == 0 && argc == 3) {
        if (parse_domid(argv[2], &dom) != 0)
            return 2;
        return cmd_raw(dom);
    }
    if (strcmp(argv[1], "check-broker") == 0 && argc == 6) {
        char *end;
        long pid = strtol(argv[2], &end, 10);
        unsigned uid, gid;
        if (*end || pid <= 0 || parse_domid(argv[3], &dom) != 0 || sscanf(argv[4], "%u:%u", &uid, &gid) != 2)
            usage();
        return cmd_check_broker((pid_t)pid, dom, uid, gid, argv[5]);
    }
    usage();
    return 2;
}
