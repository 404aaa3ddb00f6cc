/* SPDX-License-Identifier: MIT */
/*
 * privcmd_eventfd.h: IOCTL_PRIVCMD_IRQFD and IOCTL_PRIVCMD_IOEVENTFD.
 *
 * Neither Debian 12's <xen/sys/privcmd.h> (Xen 4.17) nor its linux-libc-dev
 * 6.1 <xen/privcmd.h> defines them: they came with Linux 6.7/6.8. The
 * numbers are built here the way the Linux uapi header builds them,
 * _IOW('P', 8/9, struct), from structs with the uapi's layout; when a
 * header that defines them is installed, its values are used and must
 * agree. Used by dmop-qemu-wrapper's seccomp filter and by its tests.
 */
#ifndef DMOP_PRIVCMD_EVENTFD_H
#define DMOP_PRIVCMD_EVENTFD_H

#include <stdint.h>
#include <sys/ioctl.h>

/* Linux include/uapi/xen/privcmd.h, struct privcmd_irqfd. */
struct dmop_privcmd_irqfd {
    uint64_t dm_op;     /* user pointer to one DMOP buffer */
    uint32_t size;
    uint32_t fd;        /* the eventfd */
    uint32_t flags;
    uint16_t dom;       /* domid_t */
    uint8_t pad[2];
};

/* Linux include/uapi/xen/privcmd.h, struct privcmd_ioeventfd. */
struct dmop_privcmd_ioeventfd {
    uint64_t ioreq;
    uint64_t ports;
    uint64_t addr;
    uint32_t addr_len;
    uint32_t event_fd;
    uint32_t vcpus;
    uint32_t vq;
    uint32_t flags;
    uint16_t dom;       /* domid_t */
    uint8_t pad[2];
};

/* The layouts the kernel expects on x86_64 (the uapi's sizes); a wrong
 * field here would silently give another ioctl number. */
_Static_assert(sizeof(struct dmop_privcmd_irqfd) == 24, "privcmd_irqfd layout");
_Static_assert(sizeof(struct dmop_privcmd_ioeventfd) == 48, "privcmd_ioeventfd layout");

#define DMOP_IOCTL_PRIVCMD_IRQFD     _IOW('P', 8, struct dmop_privcmd_irqfd)
#define DMOP_IOCTL_PRIVCMD_IOEVENTFD _IOW('P', 9, struct dmop_privcmd_ioeventfd)

#ifdef IOCTL_PRIVCMD_IRQFD
_Static_assert(IOCTL_PRIVCMD_IRQFD == DMOP_IOCTL_PRIVCMD_IRQFD, "IRQFD number");
#endif
#ifdef IOCTL_PRIVCMD_IOEVENTFD
_Static_assert(IOCTL_PRIVCMD_IOEVENTFD == DMOP_IOCTL_PRIVCMD_IOEVENTFD, "IOEVENTFD number");
#endif

#endif /* DMOP_PRIVCMD_EVENTFD_H */
