/* SPDX-License-Identifier: MIT */
/* The few POSIX/Linux pieces Swift cannot import cleanly: struct ucred and
 * accept4 (behind _GNU_SOURCE), the CMSG_* macros, and an async-signal-safe
 * termination flag. Everything else is called from Swift through Glibc. */
#ifndef DMOP_CPOSIX_H
#define DMOP_CPOSIX_H
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/stat.h>

typedef struct {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
} cposix_peercred;

/* SO_PEERCRED of a connected Unix socket. 0 or -1 with errno. */
int cposix_peercred_get(int fd, cposix_peercred *out);

/* accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK): the broker waits
 * in cposix_wait, never in a socket call. */
int cposix_accept_cloexec(int fd);

/* open(".", O_PATH | O_DIRECTORY | O_CLOEXEC): the working directory, to
 * return to with fchdir (O_PATH: no read permission needed). */
int cposix_open_working_directory(void);

/* dup3(oldfd, newfd, O_CLOEXEC). */
int cposix_dup3_cloexec(int oldfd, int newfd);

/* recvmsg of one datagram into buf. Returns the byte count or -1/errno.
 * *truncated is set when the datagram was longer than len (MSG_TRUNC), or
 * when the control data did not fit (MSG_CTRUNC). Any file descriptors that
 * came with SCM_RIGHTS are closed at once; *fds_received says how many. */
ssize_t cposix_recv_datagram(int fd, void *buf, size_t len, int *truncated, int *fds_received);
/* The same with extra recvmsg flags (MSG_DONTWAIT). */
ssize_t cposix_recv_datagram_flags(int fd, void *buf, size_t len, int flags, int *truncated, int *fds_received);

/* sendmsg of one datagram, optionally with one fd in SCM_RIGHTS (fd_to_pass
 * < 0: none). Returns bytes sent or -1/errno. MSG_NOSIGNAL is always set. */
ssize_t cposix_send_datagram(int fd, const void *buf, size_t len, int fd_to_pass);
/* The same with extra sendmsg flags (MSG_DONTWAIT). */
ssize_t cposix_send_datagram_flags(int fd, const void *buf, size_t len, int fd_to_pass, int flags);

/* Makes stderr line-buffered (a C global Swift 6 cannot touch safely). */
int cposix_line_buffer_stderr(void);

/* A periodic SIGALRM every interval_ns (ITIMER_REAL), whose handler does
 * nothing and does not restart: a blocking receive returns EINTR within one
 * interval of any moment (two if the tick lands just before it sleeps), with
 * no kernel timer armed per receive. Blocked inside cposix_wait. Call after
 * cposix_install_stop_handler and before the seccomp filter. */
int cposix_start_receive_ticks(int64_t interval_ns);

/* For a loop that receives without cposix_wait: is a stop signal pending
 * (blocked)? Then it is taken, and its number returned; else 0. */
int cposix_take_pending_stop(void);

/* SIGTERM/SIGINT handler that only records the signal; SIGHUP and SIGUSR1
 * only set flags the loop takes (the broker goes on). SIGTERM and SIGINT are
 * then blocked except inside cposix_wait, so neither is lost between a check
 * of the flag and a blocking call. */
int cposix_install_stop_handler(void);
int cposix_stop_signal(void);
/* Nonzero when SIGHUP or SIGUSR1 arrived and was not taken yet. */
int cposix_runtime_signal_pending(void);
/* 1 once per SIGHUP (reopen the audit file), then 0. */
int cposix_take_hangup(void);
/* 1 once per SIGUSR1 (write a stats line), then 0. */
int cposix_take_stats_request(void);

/* ppoll on one fd for `events`, with the stop signals unblocked only for the
 * duration of the call (SIGHUP and SIGUSR1 are never blocked). timeout_ns < 0: no limit. Returns 1 (revents in
 * *revents), 0 on timeout, or -1 with errno (EINTR: a signal above, also
 * reported when one arrived before the call and was not taken yet). */
int cposix_wait(int fd, short events, int64_t timeout_ns, short *revents);

/* Monotonic clock in nanoseconds (vDSO, no syscall in the steady state). */
uint64_t cposix_monotonic_ns(void);
/* Wall clock, seconds and nanoseconds since the epoch. */
void cposix_realtime(int64_t *sec, int32_t *nsec);
/* fstat(2) through SYS_fstat (not glibc's newfstatat): 0 or -1 with errno. */
int cposix_fstat(int fd, struct stat *out);

#endif
