/* Umbrella for Debian's libxen-dev headers. Order matters: xen.h needs the
 * integer types first, privcmd.h needs domid_t from xen.h. Function-like
 * macros (ioctl numbers, DOMID_*) do not import into Swift, so they are
 * re-exported here as inline functions: every number still comes from the
 * headers, none is typed by hand. */
#ifndef DMOP_CXEN_H
#define DMOP_CXEN_H
#include <stdint.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/version.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/sys/privcmd.h>

static inline unsigned long cxen_ioctl_privcmd_hypercall(void) { return IOCTL_PRIVCMD_HYPERCALL; }
static inline unsigned long cxen_ioctl_privcmd_dm_op(void) { return IOCTL_PRIVCMD_DM_OP; }
static inline unsigned long cxen_ioctl_privcmd_restrict(void) { return IOCTL_PRIVCMD_RESTRICT; }
static inline unsigned long cxen_ioctl_privcmd_mmapbatch_v2(void) { return IOCTL_PRIVCMD_MMAPBATCH_V2; }
static inline unsigned long cxen_ioctl_privcmd_mmap_resource(void) { return IOCTL_PRIVCMD_MMAP_RESOURCE; }
static inline domid_t cxen_domid_first_reserved(void) { return DOMID_FIRST_RESERVED; }
static inline domid_t cxen_domid_invalid(void) { return DOMID_INVALID; }
static inline domid_t cxen_domid_self(void) { return DOMID_SELF; }
static inline uint32_t cxen_latest_interface_version(void) { return __XEN_LATEST_INTERFACE_VERSION__; }
#endif
