/* SPDX-License-Identifier: MIT */
/* dmop-standin: stands in for QEMU under dmop-qemu-wrapper (--qemu) to show
 * that the library is the only way a DMOP leaves the wrapped process.
 *
 *   dmop-standin -xen-domid N [-xen-domid-restrict] [-runas USER]
 *                [direct|library ...]
 *
 * direct:  IOCTL_PRIVCMD_DM_OP straight on /dev/xen/privcmd, as an
 *          unmodified QEMU with Xen's own libxendevicemodel would; the
 *          device is opened at start, as root, and with -runas the stand-in
 *          then drops to USER, as QEMU does after its start-up;
 * library: the same DMOP through xendevicemodel_set_isa_irq_level(), i.e.
 *          whatever libxendevicemodel.so.1 the dynamic linker picked (the
 *          wrapper puts the broker's first on LD_LIBRARY_PATH).
 * The DMOP is set_isa_irq_level(irq 3, level 0): deasserting COM2's line,
 * which the test guests do not have, so it changes nothing in them.
 * Prints "STANDIN <what> rc=R errno=E (text)" per action; exit status 0. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <xendevicemodel.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xen/sys/privcmd.h>

#define IRQ 3

static int direct(int fd, domid_t domid) {
    if (fd < 0) return -1;
    struct xen_dm_op op;
    memset(&op, 0, sizeof op);
    op.op = XEN_DMOP_set_isa_irq_level;
    op.u.set_isa_irq_level.isa_irq = IRQ;
    op.u.set_isa_irq_level.level = 0;
    privcmd_dm_op_buf_t buf = { .uptr = &op, .size = sizeof op };
    privcmd_dm_op_t call = { .dom = domid, .num = 1, .ubufs = &buf };
    return ioctl(fd, IOCTL_PRIVCMD_DM_OP, &call);
}

static int library(domid_t domid) {
    xendevicemodel_handle *h = xendevicemodel_open(NULL, 0);
    if (!h) return -1;
    int rc = xendevicemodel_set_isa_irq_level(h, domid, IRQ, 0);
    int e = errno;
    xendevicemodel_close(h);
    errno = e;
    return rc;
}

int main(int argc, char **argv) {
    long domid = -1;
    int first = argc;
    const char *runas = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-xen-domid") == 0 && i + 1 < argc) {
            char *end;
            domid = strtol(argv[++i], &end, 10);
            if (*end || domid <= 0 || domid >= DOMID_FIRST_RESERVED) domid = -1;
        } else if (strcmp(argv[i], "-runas") == 0 && i + 1 < argc && first == argc) {
            runas = argv[++i];
        } else if (strcmp(argv[i], "-xen-domid-restrict") != 0 && first == argc) {
            first = i;
        }
    }
    if (domid < 0 || first == argc) {
        fprintf(stderr, "usage: dmop-standin -xen-domid N [-xen-domid-restrict] [-runas USER] direct|library ...\n");
        return 2;
    }
    int privcmd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    if (runas) {
        struct passwd *pw = getpwnam(runas);
        if (!pw || setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0) {
            fprintf(stderr, "dmop-standin: cannot become %s: %s\n", runas, strerror(errno));
            return 2;
        }
        printf("STANDIN runas %s uid=%d\n", runas, (int)getuid());
    }
    for (int i = first; i < argc; i++) {
        int rc;
        if (strcmp(argv[i], "direct") == 0) rc = direct(privcmd, (domid_t)domid);
        else if (strcmp(argv[i], "library") == 0) rc = library((domid_t)domid);
        else { fprintf(stderr, "dmop-standin: unknown action %s\n", argv[i]); return 2; }
        int e = rc < 0 ? errno : 0;
        printf("STANDIN %s rc=%d errno=%d (%s)\n", argv[i], rc, e, e ? strerror(e) : "ok");
        fflush(stdout);
    }
    return 0;
}
