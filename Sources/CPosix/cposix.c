/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "cposix.h"
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/stat.h>
#include <sys/syscall.h>

_Static_assert(sizeof(cposix_peercred) == sizeof(struct ucred), "ucred layout");

int cposix_peercred_get(int fd, cposix_peercred *out) {
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return -1;
    if (len != sizeof cred) { errno = EPROTO; return -1; }
    out->pid = cred.pid;
    out->uid = cred.uid;
    out->gid = cred.gid;
    return 0;
}

int cposix_accept_cloexec(int fd) {
    return accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

int cposix_open_working_directory(void) {
    return open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
}

int cposix_dup3_cloexec(int oldfd, int newfd) {
    return dup3(oldfd, newfd, O_CLOEXEC);
}

ssize_t cposix_recv_datagram(int fd, void *buf, size_t len, int *truncated, int *fds_received) {
    return cposix_recv_datagram_flags(fd, buf, len, 0, truncated, fds_received);
}

ssize_t cposix_recv_datagram_flags(int fd, void *buf, size_t len, int flags, int *truncated, int *fds_received) {
    /* Room for a few fds: anything that arrives is counted and closed. */
    union { char buf[CMSG_SPACE(sizeof(int) * 16)]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf;
    msg.msg_controllen = sizeof control.buf;
    *truncated = 0;
    *fds_received = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | flags);
    if (n < 0) return -1;
    if (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) *truncated = 1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            int *fds = (int *)CMSG_DATA(c);
            for (size_t i = 0; i < count; i++) {
                int received;
                memcpy(&received, fds + i, sizeof received);
                close(received);
                (*fds_received)++;
            }
        }
    }
    return n;
}

ssize_t cposix_send_datagram(int fd, const void *buf, size_t len, int fd_to_pass) {
    return cposix_send_datagram_flags(fd, buf, len, fd_to_pass, 0);
}

ssize_t cposix_send_datagram_flags(int fd, const void *buf, size_t len, int fd_to_pass, int flags) {
    union { char buf[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
    struct msghdr msg;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (fd_to_pass >= 0) {
        memset(&control, 0, sizeof control);
        msg.msg_control = control.buf;
        msg.msg_controllen = sizeof control.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd_to_pass, sizeof(int));
    }
    return sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
}

static volatile sig_atomic_t stop_signal = 0;
/* The mask inside cposix_wait: the caller's, with the handled signals open. */
static sigset_t wait_mask;
static int stop_signals_blocked = 0;

static void on_stop(int sig) { stop_signal = sig; }

static volatile sig_atomic_t hangup_pending = 0;
static volatile sig_atomic_t stats_pending = 0;

static void on_runtime(int sig) {
    if (sig == SIGHUP) hangup_pending = 1;
    else stats_pending = 1;
}

int cposix_install_stop_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: the wait returns EINTR */
    if (sigaction(SIGTERM, &sa, NULL) != 0) return -1;
    if (sigaction(SIGINT, &sa, NULL) != 0) return -1;
    /* SIGHUP (reopen the audit file) and SIGUSR1 (stats) only set flags. */
    sa.sa_handler = on_runtime;
    if (sigaction(SIGHUP, &sa, NULL) != 0) return -1;
    if (sigaction(SIGUSR1, &sa, NULL) != 0) return -1;
    signal(SIGPIPE, SIG_IGN);
    /* The stop signals are blocked everywhere but inside cposix_wait's
     * ppoll: one that arrives while the broker works stays pending and ends
     * the next wait at once, so none is lost between a check of the flag and
     * a blocking call. SIGHUP and SIGUSR1 stay deliverable at any time, so
     * that their flags are set before the next wait looks (a ppoll that finds
     * the fd ready leaves a blocked signal pending and undelivered); one that
     * lands between that look and the ppoll waits for the next wake-up.
     * (A parent may have blocked any of them: the mask survives exec.) */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGUSR1);
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) != 0) return -1;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, &wait_mask) != 0) return -1;
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    stop_signals_blocked = 1;
    return 0;
}

int cposix_wait(int fd, short events, int64_t timeout_ns, short *revents) {
    struct pollfd pfd = { .fd = fd, .events = events, .revents = 0 };
    struct timespec limit, *limitp = NULL;
    if (stop_signal || hangup_pending || stats_pending) { errno = EINTR; return -1; }
    if (timeout_ns >= 0) {
        limit.tv_sec = (time_t)(timeout_ns / 1000000000);
        limit.tv_nsec = (long)(timeout_ns % 1000000000);
        limitp = &limit;
    }
    int rc = ppoll(&pfd, 1, limitp, stop_signals_blocked ? &wait_mask : NULL);
    if (rc > 0 && revents) *revents = pfd.revents;
    /* A ppoll that finds the fd ready leaves a pending stop signal blocked:
     * a client that always has the next request ready would starve it. So
     * every so many ready waits, look, and take a pending one. */
    static unsigned ready_waits = 0;
    if (rc > 0 && stop_signals_blocked && ++ready_waits % 64 == 0 && cposix_take_pending_stop()) {
        errno = EINTR;
        return -1;
    }
    return rc;
}

int cposix_take_pending_stop(void) {
    sigset_t pending;
    if (!stop_signals_blocked) return stop_signal;
    if (sigpending(&pending) == 0 && (sigismember(&pending, SIGTERM) == 1 || sigismember(&pending, SIGINT) == 1)) {
        /* Unblocked for a zero wait, the signal runs its handler. */
        struct timespec now = { 0, 0 };
        ppoll(NULL, 0, &now, &wait_mask);
    }
    return stop_signal;
}

static void on_receive_tick(int sig) { (void)sig; }

int cposix_start_receive_ticks(int64_t interval_ns) {
    /* Without the stop handler's wait mask the ticks would end every ppoll. */
    if (!stop_signals_blocked) { errno = EINVAL; return -1; }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_receive_tick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: a blocking recvmsg returns EINTR */
    if (sigaction(SIGALRM, &sa, NULL) != 0) return -1;
    /* Deliverable everywhere but in cposix_wait: a broker idle in ppoll is
     * not woken by the ticks; a pending one runs as ppoll returns. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGALRM);
    if (sigprocmask(SIG_UNBLOCK, &set, NULL) != 0) return -1;
    sigaddset(&wait_mask, SIGALRM);
    struct timeval every = { .tv_sec = (time_t)(interval_ns / 1000000000),
                             .tv_usec = (suseconds_t)(interval_ns % 1000000000 / 1000) };
    struct itimerval timer = { .it_interval = every, .it_value = every };
    return setitimer(ITIMER_REAL, &timer, NULL);
}

int cposix_stop_signal(void) { return stop_signal; }

int cposix_runtime_signal_pending(void) { return hangup_pending | stats_pending; }

int cposix_take_hangup(void) {
    int pending = hangup_pending;
    hangup_pending = 0;
    return pending;
}

int cposix_take_stats_request(void) {
    int pending = stats_pending;
    stats_pending = 0;
    return pending;
}

uint64_t cposix_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void cposix_realtime(int64_t *sec, int32_t *nsec) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    *sec = ts.tv_sec;
    *nsec = (int32_t)ts.tv_nsec;
}

int cposix_line_buffer_stderr(void) {
    return setvbuf(stderr, NULL, _IOLBF, 0);
}

/* fstat(2) as the system call itself: glibc's fstat() goes through
 * newfstatat(fd, "", AT_EMPTY_PATH), and the seccomp rule names fstat on the
 * audit fd alone. */
int cposix_fstat(int fd, struct stat *out) {
    return (int)syscall(SYS_fstat, fd, out);
}
