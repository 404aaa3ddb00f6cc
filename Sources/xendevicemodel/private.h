/* SPDX-License-Identifier: MIT */
/*
 * private.h: internals of the dmop-broker libxendevicemodel.so.1.
 */
#ifndef DMOP_XENDEVICEMODEL_PRIVATE_H
#define DMOP_XENDEVICEMODEL_PRIVATE_H

#include <stddef.h>
#include <stdint.h>

#include <xentoollog.h>
#include <xendevicemodel.h>
#include <xen_list.h>

/* Only the 26 functions of <xendevicemodel.h> leave the library; the
 * version script does the same, this keeps the symbol table small. */
#define DMOP_EXPORT __attribute__((visibility("default")))

/*
 * libxentoolcore's handle registry, as Xen's own libraries use it
 * (tools/include/xentoolcore_internal.h, not installed by Debian). The
 * layout is an ABI between Xen's libraries: a restrict callback pointer and
 * a XEN_LIST_ENTRY. Registering puts our handles on the list that
 * xentoolcore_restrict_all(domid) walks, which is how QEMU's
 * -xen-domid-restrict reaches xendevicemodel_restrict.
 */
typedef struct Xentoolcore__Active_Handle Xentoolcore__Active_Handle;
typedef int Xentoolcore__Restrict_Callback(Xentoolcore__Active_Handle *,
                                           domid_t domid);
struct Xentoolcore__Active_Handle {
    Xentoolcore__Restrict_Callback *restrict_callback;
    XEN_LIST_ENTRY(Xentoolcore__Active_Handle) entry;
};
void xentoolcore__register_active_handle(Xentoolcore__Active_Handle *);
void xentoolcore__deregister_active_handle(Xentoolcore__Active_Handle *);

struct xendevicemodel_handle {
    Xentoolcore__Active_Handle tc_ah;
    xentoollog_logger *logger;   /* the caller's, or NULL for stderr */
    unsigned int flags;
    domid_t domid;               /* the broker's domain, from its WELCOME */
};

/* One buffer of a DMOP, as in IOCTL_PRIVCMD_DM_OP. */
struct dmop_buf {
    void *ptr;
    size_t size;
};

/* Logs through the handle's logger, or to stderr at XTL_PROGRESS and
 * above (what Xen's library does without a logger). errno is kept. */
void dmop_log(xentoollog_logger *logger, xentoollog_level level, int errnoval,
              const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* Connects to the broker (once per process) and fills dmod->domid.
 * Returns 0, or -1 with errno set and the reason logged. */
int dmop_session_attach(xendevicemodel_handle *dmod);

/* Sends one DMOP to the broker and waits for its reply. On success the
 * buffers the hypervisor wrote are copied back into bufs[].ptr. Returns 0,
 * or -1 with errno as privcmd or Xen would set it. */
int dmop_session_call(xendevicemodel_handle *dmod, domid_t domid,
                      unsigned int nr_bufs, struct dmop_buf bufs[]);

/* Sends one DMOP without waiting when the session may post op `op`
 * (protocol 2, the policy's posted_ops, DMOP_POSTED not 0), else as
 * dmop_session_call. A posted call returns 0 once the request is sent; its
 * failure, if any, is logged and counted when the reply to the next call
 * that waits brings it, and changes no other call's result (session.c). */
int dmop_session_post(xendevicemodel_handle *dmod, domid_t domid,
                      uint32_t op, struct dmop_buf *buf);

#endif /* DMOP_XENDEVICEMODEL_PRIVATE_H */
