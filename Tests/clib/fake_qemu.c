/* SPDX-License-Identifier: MIT */
/*
 * fake_qemu.c: a stand-in for QEMU under dmop-qemu-wrapper.
 *
 * Linked like QEMU against Debian's libxendevicemodel; the wrapper's
 * LD_LIBRARY_PATH must make it load ours. Checks, from inside the process
 * the wrapper exec'd:
 *   - its argv is QEMU's, unchanged, and -xen-domid-restrict is there;
 *   - DMOP_BROKER_FD names an inherited SOCK_SEQPACKET socket;
 *   - libxendevicemodel.so.1 came from FAKE_QEMU_LIBDIR;
 *   - no_new_privs is set and a seccomp filter is on;
 *   - ioctl IOCTL_PRIVCMD_DM_OP, IRQFD and IOEVENTFD fail with EPERM on any
 *     fd (also with junk in the upper half of the command), while other
 *     privcmd ioctls still reach the driver (ENOTTY from /dev/null) and
 *     ordinary ioctls work;
 *   - DMOPs through the library reach the broker: allowed ones succeed, one
 *     the policy denies gives EPERM; xentoolcore_restrict_all works.
 * Exit status 0 when every check passed.
 *
 * With FAKE_QEMU_PROBE set it plays QEMU answering a probe (-version,
 * -help ...): prints its argv and what it finds (no broker, the library
 * path, no_new_privs, seccomp, its uid), one line on stderr, and exits with
 * FAKE_QEMU_EXIT (default 0), as QEMU's own status. Without it, "-version"
 * alone answers as QEMU does, with FAKE_QEMU_VERSION (default 7.2.19).
 * Each guest run also prints its argv and its state: namespaces and rlimits.
 */
#define __XEN_TOOLS__ 1
#include "clib_common.h"

#include <dlfcn.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/sys/privcmd.h>
#include <xendevicemodel.h>
#include <xentoolcore.h>

#include "privcmd_eventfd.h"

static int seccomp_mode(void)
{
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    int mode = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "Seccomp: %d", &mode) == 1)
            break;
    fclose(f);
    return mode;
}

static void check_ioctl(int fd, unsigned long cmd, int want_errno, const char *what)
{
    int rc;
    errno = 0;
    /* The raw system call: glibc passes the 64-bit value through. */
    rc = (int)syscall(SYS_ioctl, fd, cmd, NULL);
    CHECK(rc == -1 && errno == want_errno, "%s: rc %d errno %d (%s), want %d",
          what, rc, errno, strerror(errno), want_errno);
}

int main(int argc, char **argv)
{
    long domid = -1;
    int restricted = 0, fd, type = 0, flags, devnull, p[2], avail = -1;
    socklen_t len = sizeof type;
    const char *env, *libdir;
    struct stat st;
    Dl_info info;
    xendevicemodel_handle *h;
    ioservid_t id = 0xffff;
    int rc;

    if (getenv("FAKE_QEMU_PROBE")) {
        const char *status = getenv("FAKE_QEMU_EXIT");
        printf("fake-qemu probe: argv");
        for (int i = 1; i < argc; i++)
            printf(" [%s]", argv[i]);
        printf("\nfake-qemu probe: broker_fd=%s ld_library_path=%s no_new_privs=%d "
               "seccomp=%d uid=%d\n", getenv("DMOP_BROKER_FD") ? "set" : "unset",
               getenv("LD_LIBRARY_PATH") ? "set" : "unset",
               prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0), seccomp_mode(), (int)getuid());
        fprintf(stderr, "fake-qemu probe: a line on stderr\n");
        return status ? atoi(status) : 0;
    }
    if (argc == 2 && !strcmp(argv[1], "-version")) {
        const char *version = getenv("FAKE_QEMU_VERSION");
        printf("QEMU emulator version %s\nCopyright (c) 2003-2022 Fabrice Bellard and the QEMU "
               "Project developers\n", version ? version : "7.2.19 (Debian 1:7.2+dfsg-7+deb12u13)");
        return 0;
    }
    printf("fake-qemu argv:");
    for (int i = 1; i < argc; i++)
        printf(" [%s]", argv[i]);
    printf("\n");
    {
        static const int resources[] = { RLIMIT_CORE, RLIMIT_MSGQUEUE, RLIMIT_LOCKS, RLIMIT_MEMLOCK,
                                         RLIMIT_FSIZE };
        char mnt[64] = "?", ipc[64] = "?";
        ssize_t n;
        n = readlink("/proc/self/ns/mnt", mnt, sizeof mnt - 1);
        mnt[n > 0 ? n : 1] = 0;
        n = readlink("/proc/self/ns/ipc", ipc, sizeof ipc - 1);
        ipc[n > 0 ? n : 1] = 0;
        printf("fake-qemu state: %s %s", mnt, ipc);
        for (size_t i = 0; i < sizeof resources / sizeof resources[0]; i++) {
            struct rlimit rl;
            getrlimit(resources[i], &rl);
            printf(" %llu:%llu", (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
        }
        printf("\n");
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-xen-domid") && i + 1 < argc)
            domid = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-xen-domid-restrict"))
            restricted = 1;
    }
    CHECK(domid > 0, "no -xen-domid in argv");
    /* FAKE_QEMU_UNRESTRICTED: the test that overrides the requirement. */
    CHECK(restricted || getenv("FAKE_QEMU_UNRESTRICTED"), "no -xen-domid-restrict in argv");

    env = getenv("DMOP_BROKER_FD");
    CHECK(env != NULL, "DMOP_BROKER_FD is not set");
    if (!env)
        return clib_finish("fake-qemu");
    fd = atoi(env);
    CHECK(fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode), "DMOP_BROKER_FD=%s is not a socket", env);
    CHECK(getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET,
          "DMOP_BROKER_FD type %d", type);
    flags = fcntl(fd, F_GETFD);
    CHECK(flags >= 0 && !(flags & FD_CLOEXEC), "DMOP_BROKER_FD flags %d before the library", flags);
    CHECK(getenv("DMOP_BROKER_SOCKET") == NULL, "DMOP_BROKER_SOCKET still set");

    libdir = getenv("FAKE_QEMU_LIBDIR");
    CHECK(libdir != NULL, "FAKE_QEMU_LIBDIR not passed through");
    CHECK(dladdr((void *)xendevicemodel_open, &info) != 0 && info.dli_fname,
          "dladdr(xendevicemodel_open)");
    /* The loader names the LD_LIBRARY_PATH entry it found the library in. */
    CHECK(libdir && info.dli_fname && strncmp(info.dli_fname, libdir, strlen(libdir)) == 0,
          "libxendevicemodel.so.1 loaded from %s, not from %s",
          info.dli_fname ? info.dli_fname : "?", libdir ? libdir : "?");

    CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1, "no_new_privs is not set");
    CHECK(seccomp_mode() == 2, "seccomp mode %d, want 2 (filter)", seccomp_mode());

    devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull < 0)
        die("open /dev/null");
    check_ioctl(devnull, IOCTL_PRIVCMD_DM_OP, EPERM, "DM_OP on /dev/null");
    check_ioctl(devnull, DMOP_IOCTL_PRIVCMD_IRQFD, EPERM, "IRQFD on /dev/null");
    check_ioctl(devnull, DMOP_IOCTL_PRIVCMD_IOEVENTFD, EPERM, "IOEVENTFD on /dev/null");
    check_ioctl(fd, IOCTL_PRIVCMD_DM_OP, EPERM, "DM_OP on the broker socket");
    check_ioctl(-1, IOCTL_PRIVCMD_DM_OP, EPERM, "DM_OP on fd -1");
    check_ioctl(devnull, (1ul << 32) | IOCTL_PRIVCMD_DM_OP, EPERM,
                "DM_OP with bit 32 set (the kernel reads 32 bits)");
    check_ioctl(devnull, 0xdead000000000000ul | DMOP_IOCTL_PRIVCMD_IRQFD, EPERM,
                "IRQFD with junk in the upper half");
    /* What the wrapper leaves to the kernel: privcmd would see these. */
    check_ioctl(devnull, IOCTL_PRIVCMD_HYPERCALL, ENOTTY, "HYPERCALL on /dev/null");
    check_ioctl(devnull, IOCTL_PRIVCMD_MMAPBATCH_V2, ENOTTY, "MMAPBATCH_V2 on /dev/null");
    check_ioctl(devnull, IOCTL_PRIVCMD_MMAP_RESOURCE, ENOTTY, "MMAP_RESOURCE on /dev/null");
    check_ioctl(devnull, IOCTL_PRIVCMD_RESTRICT, ENOTTY, "RESTRICT on /dev/null");
    if (pipe(p) < 0)
        die("pipe");
    CHECK(write(p[1], "abc", 3) == 3, "write");
    CHECK(ioctl(p[0], FIONREAD, &avail) == 0 && avail == 3, "FIONREAD: %d", avail);

    h = xendevicemodel_open(NULL, 0);
    CHECK(h != NULL, "xendevicemodel_open: errno %d (%s)", errno, strerror(errno));
    if (h) {
        flags = fcntl(fd, F_GETFD);
        CHECK(flags >= 0 && (flags & FD_CLOEXEC), "the library did not set FD_CLOEXEC");
        rc = xendevicemodel_create_ioreq_server(h, (domid_t)domid, HVM_IOREQSRV_BUFIOREQ_ATOMIC, &id);
        CHECK(rc == 0 && id < 8, "create_ioreq_server: rc %d errno %d id %u", rc, errno, id);
        rc = xendevicemodel_set_isa_irq_level(h, (domid_t)domid, 4, 1);
        CHECK_OK(rc, "set_isa_irq_level through the broker");
        rc = xendevicemodel_inject_event(h, (domid_t)domid, 0, 14, 3, 0, 0, 0);
        CHECK_ERR(rc, EPERM, "inject_event (qemu-xen.policy denies it)");
        rc = xendevicemodel_set_isa_irq_level(h, (domid_t)(domid + 1), 4, 1);
        CHECK_ERR(rc, EPERM, "another domid");
        rc = xentoolcore_restrict_all((domid_t)domid);
        CHECK_OK(rc, "xentoolcore_restrict_all, as QEMU's -xen-domid-restrict does");
        rc = xendevicemodel_destroy_ioreq_server(h, (domid_t)domid, id);
        CHECK_OK(rc, "destroy_ioreq_server");
        xendevicemodel_close(h);
    }
    printf("fake-qemu: pid %d argv[0] %s\n", (int)getpid(), argv[0]);
    return clib_finish("fake-qemu");
}
