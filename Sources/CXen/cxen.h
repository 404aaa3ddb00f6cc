/* SPDX-License-Identifier: MIT */
/* Umbrella for Debian's libxen-dev headers. Order matters: xen.h needs the
 * integer types first, privcmd.h needs domid_t from xen.h. Function-like
 * macros (ioctl numbers, DOMID_*) do not import into Swift, so they are
 * re-exported here as inline functions: every number still comes from the
 * headers, none is typed by hand. */
#ifndef DMOP_CXEN_H
#define DMOP_CXEN_H
/* The tools' view of the headers (as libxendevicemodel is built): the latest
 * interface version (HVMMEM_unused) and the tools-only HVM_IOREQSRV_BUFIOREQ_*. */
#ifndef __XEN_TOOLS__
#define __XEN_TOOLS__ 1
#endif
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <xen/xen.h>
#include <xen/version.h>
#include <xen/hvm/dm_op.h>
#include <xen/hvm/hvm_op.h>
#include <xen/sys/privcmd.h>
#include "dmop_abi.h"

static inline unsigned long cxen_ioctl_privcmd_hypercall(void) { return IOCTL_PRIVCMD_HYPERCALL; }
static inline unsigned long cxen_ioctl_privcmd_dm_op(void) { return IOCTL_PRIVCMD_DM_OP; }
static inline unsigned long cxen_ioctl_privcmd_restrict(void) { return IOCTL_PRIVCMD_RESTRICT; }
static inline unsigned long cxen_ioctl_privcmd_mmapbatch_v2(void) { return IOCTL_PRIVCMD_MMAPBATCH_V2; }
static inline unsigned long cxen_ioctl_privcmd_mmap_resource(void) { return IOCTL_PRIVCMD_MMAP_RESOURCE; }
static inline domid_t cxen_domid_first_reserved(void) { return DOMID_FIRST_RESERVED; }
static inline domid_t cxen_domid_invalid(void) { return DOMID_INVALID; }
static inline domid_t cxen_domid_self(void) { return DOMID_SELF; }
static inline uint32_t cxen_latest_interface_version(void) { return __XEN_LATEST_INTERFACE_VERSION__; }
static inline uint32_t cxen_dmop_abi_identifier(void) { return dmop_abi_identifier(); }
/* A cast, so it does not import: pin_memory_cacheattr's "delete" type. */
static inline uint32_t cxen_dmop_delete_mem_cacheattr(void) { return XEN_DMOP_DELETE_MEM_CACHEATTR; }
/* glibc's errno names ("EPERM"; NULL for an unknown value), glibc 2.32 and
 * later; <string.h> declares it only under _GNU_SOURCE. The trusted core's
 * messages use it, so that the core needs no module of the project's. */
extern const char *strerrorname_np(int errnum);
static inline const char *cxen_errno_name(int value) { return strerrorname_np(value); }
#endif
