/* SPDX-License-Identifier: MIT */
/*
 * session.c: the process's one session with its dmop-broker.
 *
 * Every handle of a process shares one connection. QEMU opens two handles
 * (its own and libxenctrl's, inside xc_interface_open), the broker serves
 * one client at a time, and an inherited DMOP_BROKER_FD can say HELLO only
 * once. The connection lives until the process exits: closing the last
 * handle does not end it, so a transient open/close cannot take the guest's
 * broker away (the broker exits when this process's socket hangs up).
 *
 * Threads: each call registers a waiter with a fresh request_id, sends its
 * REQUEST without holding the lock (one sendmsg is one datagram, so sends
 * from several threads never interleave), then either becomes the reader
 * or sleeps. The reader receives one REPLY, hands it to the waiter whose
 * request_id it carries, and wakes everyone. Several requests can thus be
 * in flight on one handle and each gets its own reply.
 *
 * Posting (protocol 2): the interrupt ops are sent without a waiter and
 * the call returns 0 at once. The broker serves requests in the order they
 * arrive, so any call that waits is a barrier behind every request posted
 * before it. A posted request that fails comes back in the trailer of the
 * next REPLY. It belongs to the posted request alone: it is logged, with a
 * running count of the process's posted failures, and never changes the
 * result or errno of the call whose REPLY carried it (each call returns
 * what the hypervisor or the broker said about that call, as Xen's own
 * library does). How many posted requests are in flight is bounded by the
 * socket's send buffer: sendmsg blocks while the broker is behind, and
 * nothing is dropped.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <stdint.h> /* <xen/xen.h> uses the fixed-width types without it */
/* First: it needs the tools' view of <xen/xen.h>. */
#include "../CXen/dmop_abi.h"
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>

#include "dmop_wire.h"
#include "private.h"

/* How long xendevicemodel_open waits for WELCOME before it gives up. */
#define HANDSHAKE_TIMEOUT_MS 10000

/* The largest datagram a broker sends us that we read whole: a REPLY with
 * both buffers at the protocol's size limit. Longer ones are detected with
 * MSG_TRUNC and refused (a PROTOCOL_ERROR's text is logged truncated). */
#define RX_CAPACITY (DMOP_WIRE_REPLY_FIXED + \
                     DMOP_WIRE_MAX_REPLY_BUFFERS * DMOP_WIRE_REPLY_DESC_SIZE + \
                     DMOP_WIRE_MAX_REPLY_BUFFERS * DMOP_WIRE_MAX_BUFFER_SIZE + \
                     DMOP_WIRE_POSTED_FAILURE_SIZE)

/* Our largest REQUEST: we never send more than two buffers. */
#define MAX_CALL_BUFFERS 2

struct waiter {
    struct waiter *next;
    uint32_t id;
    domid_t domid;
    unsigned int nr_bufs;
    struct dmop_buf *bufs;
    bool done;
    int error;              /* 0, or the errno the call reports */
};

enum session_state { SESSION_NONE, SESSION_READY, SESSION_BROKEN };

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    enum session_state state;
    int fd;
    bool env_fd_spent;      /* DMOP_BROKER_FD was used; never reuse its number */
    int env_fd;
    /* From WELCOME. */
    uint16_t version;
    uint32_t dmop_abi;
    uint32_t xen_version;
    domid_t domid;
    uint16_t max_buffers;
    uint32_t max_buffer_size;
    uint32_t allowed_ops;
    uint32_t posted_ops;    /* version 2: ops the policy lets us post */
    bool posting;           /* DMOP_POSTED is not "0" */
    /* Calls in flight. */
    uint32_t next_id;
    bool reader_active;
    struct waiter *waiters;
    /* Posted requests of this process that failed (refused or failed in
     * the hypervisor), as the broker's trailers counted them: what the
     * library's log lines report. */
    uint64_t posted_failures;
    unsigned char rx[RX_CAPACITY];
} S = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .state = SESSION_NONE,
    .fd = -1,
    .env_fd = -1,
    .next_id = 1,
};

void dmop_log(xentoollog_logger *logger, xentoollog_level level, int errnoval,
              const char *fmt, ...)
{
    int saved = errno;
    va_list ap;

    va_start(ap, fmt);
    if (logger && logger->vmessage) {
        logger->vmessage(logger, level, errnoval, "xendevicemodel", fmt, ap);
    } else if (level >= XTL_PROGRESS) {
        /* One fprintf per line so lines from threads do not mix. */
        char line[1024];
        int n = vsnprintf(line, sizeof line, fmt, ap);
        if (n < 0)
            line[0] = 0;
        if (errnoval >= 0)
            fprintf(stderr, "xendevicemodel (dmop-broker client): %s: %s\n",
                    line, strerror(errnoval));
        else
            fprintf(stderr, "xendevicemodel (dmop-broker client): %s\n", line);
    }
    va_end(ap);
    errno = saved;
}

static ssize_t send_all_nosignal(int fd, struct msghdr *msg)
{
    ssize_t n;
    /* MSG_NOSIGNAL: a dead broker must give QEMU an error, not SIGPIPE. */
    do {
        n = sendmsg(fd, msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    return n;
}

static ssize_t recv_datagram(int fd, unsigned char *buf, size_t cap)
{
    ssize_t n;
    /* MSG_TRUNC makes recv return the datagram's real length, so an
     * oversized one is seen as such instead of silently cut. */
    do {
        n = recv(fd, buf, cap, MSG_TRUNC);
    } while (n < 0 && errno == EINTR);
    return n;
}

/* ---------- finding the broker ---------- */

static int adopt_inherited_fd(xendevicemodel_handle *dmod, const char *text)
{
    xentoollog_logger *lg = dmod->logger;
    char *end = NULL;
    long v;
    struct stat st;
    int type = 0;
    socklen_t len = sizeof type;

    errno = 0;
    v = strtol(text, &end, 10);
    if (errno || end == text || *end != 0 || v < 0 || v > INT_MAX) {
        dmop_log(lg, XTL_ERROR, -1,
                 "DMOP_BROKER_FD=\"%s\" is not a file descriptor number", text);
        errno = EINVAL;
        return -1;
    }
    if (S.env_fd_spent && (int)v == S.env_fd) {
        dmop_log(lg, XTL_ERROR, -1,
                 "DMOP_BROKER_FD=%ld was already used by this process and its "
                 "session ended; it cannot be used again", v);
        errno = ENOTCONN;
        return -1;
    }
    if (fstat((int)v, &st) < 0) {
        dmop_log(lg, XTL_ERROR, errno,
                 "DMOP_BROKER_FD=%ld is not an open file descriptor", v);
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        dmop_log(lg, XTL_ERROR, -1,
                 "DMOP_BROKER_FD=%ld is not a socket", v);
        errno = ENOTSOCK;
        return -1;
    }
    if (getsockopt((int)v, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
        dmop_log(lg, XTL_ERROR, errno,
                 "DMOP_BROKER_FD=%ld: cannot read the socket type", v);
        return -1;
    }
    if (type != SOCK_SEQPACKET) {
        dmop_log(lg, XTL_ERROR, -1,
                 "DMOP_BROKER_FD=%ld is a socket of type %d, not SOCK_SEQPACKET",
                 v, type);
        errno = EPROTOTYPE;
        return -1;
    }
    /* Like Xen's own privcmd fd (O_CLOEXEC): programs QEMU runs must not
     * inherit the broker connection. */
    if (fcntl((int)v, F_SETFD, FD_CLOEXEC) < 0) {
        dmop_log(lg, XTL_ERROR, errno,
                 "DMOP_BROKER_FD=%ld: cannot set close-on-exec", v);
        return -1;
    }
    S.env_fd = (int)v;
    S.env_fd_spent = true;
    return (int)v;
}

static int connect_socket_path(xendevicemodel_handle *dmod, const char *path)
{
    xentoollog_logger *lg = dmod->logger;
    struct sockaddr_un sa;
    int fd;

    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (path[0] == 0 || strlen(path) >= sizeof sa.sun_path) {
        dmop_log(lg, XTL_ERROR, -1,
                 "DMOP_BROKER_SOCKET=\"%s\" is empty or longer than %zu bytes",
                 path, sizeof sa.sun_path - 1);
        errno = path[0] == 0 ? EINVAL : ENAMETOOLONG;
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path));

    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        dmop_log(lg, XTL_ERROR, errno, "cannot create a SOCK_SEQPACKET socket");
        return -1;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        int e = errno;
        dmop_log(lg, XTL_ERROR, e,
                 "cannot connect to dmop-broker at DMOP_BROKER_SOCKET=%s", path);
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* ---------- the handshake ---------- */

static int refused_errno(unsigned int reason)
{
    switch (reason) {
    case DMOP_REASON_VERSION_UNSUPPORTED:
    case DMOP_REASON_XEN_INTERFACE_MISMATCH:
        return EPROTONOSUPPORT;
    default:
        return EPROTO;
    }
}

static int handshake(xendevicemodel_handle *dmod, int fd)
{
    xentoollog_logger *lg = dmod->logger;
    unsigned char hello[DMOP_WIRE_HELLO_SIZE];
    unsigned char *m = S.rx;
    struct iovec iov;
    struct msghdr msg;
    struct pollfd pfd;
    ssize_t n;
    int pr;
    uint16_t type;

    memset(hello, 0, sizeof hello);
    dmop_put32(hello + 0, DMOP_WIRE_MAGIC);
    dmop_put16(hello + 4, DMOP_WIRE_TYPE_HELLO);
    dmop_put16(hello + 8, DMOP_WIRE_VERSION_MIN);
    dmop_put16(hello + 10, DMOP_WIRE_VERSION_MAX);
    dmop_put32(hello + 12, dmop_abi_identifier());

    memset(&msg, 0, sizeof msg);
    iov.iov_base = hello;
    iov.iov_len = sizeof hello;
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    n = send_all_nosignal(fd, &msg);
    if (n != (ssize_t)sizeof hello) {
        dmop_log(lg, XTL_ERROR, n < 0 ? errno : -1,
                 "cannot send HELLO to dmop-broker");
        if (n >= 0)
            errno = EIO;
        return -1;
    }

    pfd.fd = fd;
    pfd.events = POLLIN;
    do {
        pr = poll(&pfd, 1, HANDSHAKE_TIMEOUT_MS);
    } while (pr < 0 && errno == EINTR);
    if (pr == 0) {
        dmop_log(lg, XTL_ERROR, -1,
                 "dmop-broker did not answer HELLO within %d ms",
                 HANDSHAKE_TIMEOUT_MS);
        errno = ETIMEDOUT;
        return -1;
    }
    if (pr < 0) {
        dmop_log(lg, XTL_ERROR, errno, "waiting for dmop-broker's WELCOME");
        return -1;
    }

    n = recv_datagram(fd, m, RX_CAPACITY);
    if (n < 0) {
        dmop_log(lg, XTL_ERROR, errno, "cannot receive dmop-broker's WELCOME");
        return -1;
    }
    if (n == 0) {
        dmop_log(lg, XTL_ERROR, -1,
                 "dmop-broker closed the connection instead of answering HELLO");
        errno = ECONNRESET;
        return -1;
    }
    if (n < DMOP_WIRE_HEADER_SIZE || dmop_get32(m) != DMOP_WIRE_MAGIC) {
        dmop_log(lg, XTL_ERROR, -1,
                 "the answer to HELLO is not a dmop-broker message "
                 "(%zd bytes, bad magic or too short)", n);
        errno = EPROTO;
        return -1;
    }
    type = dmop_get16(m + 4);

    if (type == DMOP_WIRE_TYPE_REFUSED) {
        unsigned int reason = dmop_get16(m + 6);
        size_t have = (size_t)(n > RX_CAPACITY ? RX_CAPACITY : n);
        size_t tlen = 0;
        if (have < DMOP_WIRE_REFUSED_FIXED) {
            dmop_log(lg, XTL_ERROR, -1,
                     "dmop-broker refused the connection with a truncated "
                     "REFUSED (%zd bytes), reason %u %s", n, reason,
                     dmop_reason_name(reason));
        } else {
            tlen = dmop_get16(m + 16);
            if (tlen > have - DMOP_WIRE_REFUSED_FIXED)
                tlen = have - DMOP_WIRE_REFUSED_FIXED;
            dmop_log(lg, XTL_ERROR, -1,
                     "dmop-broker refused the connection: reason %u %s; the "
                     "broker speaks protocol %u..%u for DMOP ABI 0x%08"
                     PRIx32 ", this library speaks %u..%u for 0x%08" PRIx32
                     ": %.*s",
                     reason, dmop_reason_name(reason),
                     dmop_get16(m + 8), dmop_get16(m + 10), dmop_get32(m + 12),
                     DMOP_WIRE_VERSION_MIN, DMOP_WIRE_VERSION_MAX,
                     dmop_abi_identifier(),
                     (int)tlen, (const char *)m + DMOP_WIRE_REFUSED_FIXED);
        }
        errno = refused_errno(reason);
        return -1;
    }
    if (type == DMOP_WIRE_TYPE_PROTOCOL_ERROR) {
        unsigned int reason = dmop_get16(m + 6);
        size_t have = (size_t)(n > RX_CAPACITY ? RX_CAPACITY : n);
        size_t tlen = 0;
        if (have >= DMOP_WIRE_PROTOCOL_ERROR_FIXED) {
            tlen = dmop_get16(m + 12);
            if (tlen > have - DMOP_WIRE_PROTOCOL_ERROR_FIXED)
                tlen = have - DMOP_WIRE_PROTOCOL_ERROR_FIXED;
        }
        dmop_log(lg, XTL_ERROR, -1,
                 "dmop-broker rejected HELLO: PROTOCOL_ERROR reason %u %s: %.*s",
                 reason, dmop_reason_name(reason), (int)tlen,
                 (const char *)m + DMOP_WIRE_PROTOCOL_ERROR_FIXED);
        errno = EPROTO;
        return -1;
    }
    if (type != DMOP_WIRE_TYPE_WELCOME || n != DMOP_WIRE_WELCOME_SIZE) {
        dmop_log(lg, XTL_ERROR, -1,
                 "expected WELCOME (type 0x%04x, %d bytes) from dmop-broker, "
                 "got type 0x%04x, %zd bytes", DMOP_WIRE_TYPE_WELCOME,
                 DMOP_WIRE_WELCOME_SIZE, type, n);
        errno = EPROTO;
        return -1;
    }

    S.version = dmop_get16(m + 6);
    S.dmop_abi = dmop_get32(m + 8);
    S.xen_version = dmop_get32(m + 12);
    S.domid = dmop_get16(m + 16);
    S.max_buffers = dmop_get16(m + 18);
    S.max_buffer_size = dmop_get32(m + 20);
    S.allowed_ops = dmop_get32(m + 24);
    S.posted_ops = S.version >= DMOP_WIRE_VERSION_POSTING ? dmop_get32(m + 28) : 0;

    /* A broker that welcomes what we did not offer is skew too. */
    if (S.version < DMOP_WIRE_VERSION_MIN || S.version > DMOP_WIRE_VERSION_MAX) {
        dmop_log(lg, XTL_ERROR, -1,
                 "dmop-broker chose protocol version %u, this library speaks "
                 "%u..%u", S.version, DMOP_WIRE_VERSION_MIN,
                 DMOP_WIRE_VERSION_MAX);
        errno = EPROTONOSUPPORT;
        return -1;
    }
    if (S.dmop_abi != dmop_abi_identifier()) {
        dmop_log(lg, XTL_ERROR, -1,
                 "dmop-broker was built for DMOP ABI 0x%08" PRIx32
                 ", this library for 0x%08" PRIx32, S.dmop_abi,
                 dmop_abi_identifier());
        errno = EPROTONOSUPPORT;
        return -1;
    }
    if ((S.version < DMOP_WIRE_VERSION_POSTING && dmop_get32(m + 28) != 0) ||
        (S.posted_ops & ~S.allowed_ops) != 0 || S.domid >= DOMID_FIRST_RESERVED ||
        S.max_buffers < MAX_CALL_BUFFERS || S.max_buffer_size == 0) {
        dmop_log(lg, XTL_ERROR, -1,
                 "malformed WELCOME from dmop-broker (domid %u, max_buffers %u, "
                 "max_buffer_size %" PRIu32 ", posted_ops 0x%08" PRIx32 ")",
                 S.domid, S.max_buffers, S.max_buffer_size, dmop_get32(m + 28));
        errno = EPROTO;
        return -1;
    }
    if (S.max_buffer_size > DMOP_WIRE_MAX_BUFFER_SIZE)
        S.max_buffer_size = DMOP_WIRE_MAX_BUFFER_SIZE;
    {
        const char *posted = getenv("DMOP_POSTED");
        S.posting = !(posted && strcmp(posted, "0") == 0);
    }

    dmop_log(lg, XTL_DEBUG, -1,
             "dmop-broker session: protocol %u, domid %u, Xen %" PRIu32 ".%"
             PRIu32 ", allowed ops 0x%08" PRIx32 ", posted ops 0x%08" PRIx32
             "%s", S.version, S.domid, S.xen_version >> 16,
             S.xen_version & 0xffff, S.allowed_ops, S.posted_ops,
             S.posting ? "" : " (DMOP_POSTED=0: not posting)");
    return 0;
}

int dmop_session_attach(xendevicemodel_handle *dmod)
{
    xentoollog_logger *lg = dmod->logger;
    const char *fd_text, *path;
    int fd = -1, rc = -1, e = 0;

    pthread_mutex_lock(&S.lock);

    if (S.state == SESSION_BROKEN) {
        /* Start over only once nothing uses the old connection. */
        if (S.waiters || S.reader_active) {
            dmop_log(lg, XTL_ERROR, -1,
                     "the dmop-broker connection is lost and calls on it are "
                     "still finishing");
            e = EIO;
            goto out;
        }
        close(S.fd);
        S.fd = -1;
        S.state = SESSION_NONE;
    }
    if (S.state == SESSION_READY) {
        dmod->domid = S.domid;
        rc = 0;
        goto out;
    }

    fd_text = getenv("DMOP_BROKER_FD");
    path = getenv("DMOP_BROKER_SOCKET");
    if (!fd_text && !path) {
        dmop_log(lg, XTL_ERROR, -1,
                 "no dmop-broker to talk to: neither DMOP_BROKER_FD nor "
                 "DMOP_BROKER_SOCKET is set (this libxendevicemodel forwards "
                 "every device-model operation to dmop-broker and never "
                 "opens privcmd itself)");
        e = ENOENT;
        goto out;
    }
    if (fd_text) {
        fd = adopt_inherited_fd(dmod, fd_text);
        e = errno;
        if (fd >= 0 && handshake(dmod, fd) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
        if (fd < 0 && path)
            dmop_log(lg, XTL_WARN, -1,
                     "DMOP_BROKER_FD did not work; trying DMOP_BROKER_SOCKET=%s",
                     path);
    }
    if (fd < 0 && path) {
        fd = connect_socket_path(dmod, path);
        e = errno;
        if (fd >= 0 && handshake(dmod, fd) < 0) {
            e = errno;
            close(fd);
            fd = -1;
        }
    }
    if (fd < 0)
        goto out;

    S.fd = fd;
    S.state = SESSION_READY;
    dmod->domid = S.domid;
    rc = 0;

out:
    pthread_mutex_unlock(&S.lock);
    if (rc < 0)
        errno = e ? e : EIO;
    return rc;
}

/* ---------- calls ---------- */

/* Called with the lock held: the session is over, every waiter fails. */
static void session_break(xentoollog_logger *lg, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void session_break(xentoollog_logger *lg, const char *fmt, ...)
{
    struct waiter *w;
    char why[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);

    if (S.state == SESSION_READY)
        dmop_log(lg, XTL_ERROR, -1,
                 "lost the dmop-broker session: %s; every further call fails "
                 "with EIO", why);
    S.state = SESSION_BROKEN;
    /* Whatever broke it, end it for both sides: the broker sees the
     * hang-up and exits, a thread blocked in recv wakes up. */
    if (S.fd >= 0)
        shutdown(S.fd, SHUT_RDWR);
    for (w = S.waiters; w; w = w->next) {
        if (!w->done) {
            w->done = true;
            w->error = EIO;
        }
    }
    pthread_cond_broadcast(&S.cond);
}

static struct waiter *find_waiter(uint32_t id)
{
    struct waiter *w;
    for (w = S.waiters; w; w = w->next)
        if (w->id == id && !w->done)
            return w;
    return NULL;
}

/* Called with the lock held, for the datagram of n bytes in S.rx. */
static void dispatch(xentoollog_logger *lg, ssize_t n, int recv_errno)
{
    const unsigned char *m = S.rx;
    struct waiter *w;
    unsigned int nr, i;
    size_t off, total;
    uint32_t id;
    int32_t result;
    int posted_error = 0;
    uint16_t type, origin, reason, flags;
    size_t end;
    bool seen[MAX_CALL_BUFFERS] = { false, false };

    if (n < 0) {
        session_break(lg, "receive failed: %s", strerror(recv_errno));
        return;
    }
    if (n == 0) {
        session_break(lg, "dmop-broker closed the connection");
        return;
    }
    if (n < DMOP_WIRE_HEADER_SIZE || dmop_get32(m) != DMOP_WIRE_MAGIC) {
        session_break(lg, "a %zd-byte datagram without the DMOB magic", n);
        return;
    }
    type = dmop_get16(m + 4);
    if (type == DMOP_WIRE_TYPE_PROTOCOL_ERROR) {
        size_t have = (size_t)(n > RX_CAPACITY ? RX_CAPACITY : n);
        size_t tlen = 0;
        if (have >= DMOP_WIRE_PROTOCOL_ERROR_FIXED) {
            tlen = dmop_get16(m + 12);
            if (tlen > have - DMOP_WIRE_PROTOCOL_ERROR_FIXED)
                tlen = have - DMOP_WIRE_PROTOCOL_ERROR_FIXED;
        }
        session_break(lg, "dmop-broker sent PROTOCOL_ERROR reason %u %s "
                      "(request %" PRIu32 "): %.*s", dmop_get16(m + 6),
                      dmop_reason_name(dmop_get16(m + 6)),
                      have >= 12 ? dmop_get32(m + 8) : 0, (int)tlen,
                      (const char *)m + DMOP_WIRE_PROTOCOL_ERROR_FIXED);
        return;
    }
    if (n > RX_CAPACITY) {
        session_break(lg, "an oversized %zd-byte datagram", n);
        return;
    }
    if (type != DMOP_WIRE_TYPE_REPLY || n < DMOP_WIRE_REPLY_FIXED) {
        session_break(lg, "expected a REPLY, got type 0x%04x of %zd bytes",
                      type, n);
        return;
    }

    id = dmop_get32(m + 8);
    w = find_waiter(id);
    if (!w) {
        session_break(lg, "a REPLY to request %" PRIu32 ", which is not "
                      "waiting", id);
        return;
    }
    result = (int32_t)dmop_get32(m + 12);
    origin = dmop_get16(m + 16);
    reason = dmop_get16(m + 18);
    nr = dmop_get16(m + 20);
    flags = dmop_get16(m + 22);
    end = (size_t)n;
    if (flags == DMOP_WIRE_REPLY_POSTED_FAILURE &&
        S.version >= DMOP_WIRE_VERSION_POSTING && end >= DMOP_WIRE_REPLY_FIXED +
        DMOP_WIRE_POSTED_FAILURE_SIZE)
        end -= DMOP_WIRE_POSTED_FAILURE_SIZE;
    else if (flags != 0)
        flags = 0xffff;
    if (dmop_get16(m + 6) != w->domid || flags == 0xffff ||
        origin > DMOP_WIRE_ORIGIN_BROKER ||
        (origin == DMOP_WIRE_ORIGIN_HYPERVISOR && reason != 0) ||
        (origin == DMOP_WIRE_ORIGIN_BROKER && result >= 0) ||
        nr > DMOP_WIRE_MAX_REPLY_BUFFERS ||
        (nr > 0 && (result != 0 || origin != DMOP_WIRE_ORIGIN_HYPERVISOR))) {
        session_break(lg, "malformed REPLY to request %" PRIu32 " (domid %u "
                      "for %u, result %" PRId32 ", origin %u, reason %u, "
                      "nr_bufs %u)", id, dmop_get16(m + 6), w->domid, result,
                      origin, reason, nr);
        return;
    }

    /* Check every descriptor before copying anything. */
    off = DMOP_WIRE_REPLY_FIXED + (size_t)nr * DMOP_WIRE_REPLY_DESC_SIZE;
    if (end < off) {
        session_break(lg, "REPLY to request %" PRIu32 " shorter than its "
                      "descriptors", id);
        return;
    }
    total = off;
    for (i = 0; i < nr; i++) {
        const unsigned char *d = m + DMOP_WIRE_REPLY_FIXED +
                                 i * DMOP_WIRE_REPLY_DESC_SIZE;
        unsigned int idx = dmop_get16(d);
        uint32_t size = dmop_get32(d + 4);
        if (idx >= w->nr_bufs || seen[idx] || dmop_get16(d + 2) != 0 ||
            size != w->bufs[idx].size) {
            session_break(lg, "REPLY to request %" PRIu32 " returns buffer "
                          "%u of %" PRIu32 " bytes, which was not sent that "
                          "way", id, idx, size);
            return;
        }
        seen[idx] = true;
        total += size;
    }
    if (total != end) {
        session_break(lg, "REPLY to request %" PRIu32 " is %zd bytes, its "
                      "descriptors say %zu", id, n, total);
        return;
    }
    if (flags == DMOP_WIRE_REPLY_POSTED_FAILURE) {
        const unsigned char *t = m + end;
        int32_t presult = (int32_t)dmop_get32(t + 8);
        uint16_t porigin = dmop_get16(t + 12), preason = dmop_get16(t + 14);
        if (presult >= 0 || porigin > DMOP_WIRE_ORIGIN_BROKER ||
            (porigin == DMOP_WIRE_ORIGIN_HYPERVISOR) != (preason == 0)) {
            session_break(lg, "malformed posted failure in the REPLY to "
                          "request %" PRIu32 " (result %" PRId32 ", origin "
                          "%u, reason %u)", id, presult, porigin, preason);
            return;
        }
        posted_error = presult >= -4095 ? -presult : EIO;
        /* This one and the later ones the trailer counts. */
        S.posted_failures += 1 + (uint64_t)dmop_get32(t + 16);
        if (porigin == DMOP_WIRE_ORIGIN_BROKER)
            dmop_log(lg, XTL_ERROR, posted_error,
                     "posted request %" PRIu32 " (DMOP op %" PRIu32 ") was "
                     "refused by dmop-broker: reason %u %s; %" PRIu32
                     " later posted request(s) failed too; %" PRIu64
                     " posted request(s) of this process failed so far",
                     dmop_get32(t), dmop_get32(t + 4), preason,
                     dmop_reason_name(preason), dmop_get32(t + 16),
                     S.posted_failures);
        else
            dmop_log(lg, XTL_ERROR, posted_error,
                     "posted request %" PRIu32 " (DMOP op %" PRIu32 ") "
                     "failed in the hypervisor; %" PRIu32 " later posted "
                     "request(s) failed too; %" PRIu64 " posted request(s) "
                     "of this process failed so far", dmop_get32(t),
                     dmop_get32(t + 4), dmop_get32(t + 16), S.posted_failures);
    }
    for (i = 0; i < nr; i++) {
        const unsigned char *d = m + DMOP_WIRE_REPLY_FIXED +
                                 i * DMOP_WIRE_REPLY_DESC_SIZE;
        unsigned int idx = dmop_get16(d);
        uint32_t size = dmop_get32(d + 4);
        if (size)
            memcpy(w->bufs[idx].ptr, m + off, size);
        off += size;
    }

    if (result < 0) {
        /* The errno privcmd or Xen returned, or the broker's refusal. */
        w->error = result >= -4095 ? -result : EIO;
        if (origin == DMOP_WIRE_ORIGIN_BROKER)
            dmop_log(lg, XTL_DEBUG, -1,
                     "dmop-broker refused request %" PRIu32 ": reason %u %s",
                     id, reason, dmop_reason_name(reason));
    } else {
        /* privcmd's ioctl returns >= 0 on success; the library reports 0,
         * whatever posted failure came with it (logged above). */
        w->error = 0;
    }
    w->done = true;
}

static uint32_t fresh_id(void)
{
    for (;;) {
        uint32_t id = S.next_id++;
        if (!find_waiter(id))
            return id;
    }
}

int dmop_session_call(xendevicemodel_handle *dmod, domid_t domid,
                      unsigned int nr_bufs, struct dmop_buf bufs[])
{
    xentoollog_logger *lg = dmod->logger;
    unsigned char head[DMOP_WIRE_REQUEST_FIXED + 4 * MAX_CALL_BUFFERS];
    struct iovec iov[1 + MAX_CALL_BUFFERS];
    struct msghdr msg;
    struct waiter w, **pp;
    size_t len;
    ssize_t n;
    unsigned int i, iovcnt;
    int fd, e;

    if (nr_bufs == 0 || nr_bufs > MAX_CALL_BUFFERS) {
        errno = EINVAL;
        return -1;
    }

    pthread_mutex_lock(&S.lock);
    if (S.state != SESSION_READY) {
        pthread_mutex_unlock(&S.lock);
        /* Debug only: losing the session was logged once, at XTL_ERROR,
         * and QEMU's hot paths would repeat this line per interrupt. */
        dmop_log(lg, XTL_DEBUG, -1, "no dmop-broker session");
        errno = EIO;
        return -1;
    }
    /* What privcmd refuses itself, in its order: another domid than the
     * fd's restriction (EPERM), then a buffer too large (E2BIG). Such a
     * request must not reach the broker: the protocol forbids it. */
    for (i = 0; i < nr_bufs; i++) {
        if (bufs[i].size > S.max_buffer_size) {
            int e = domid != S.domid ? EPERM : E2BIG;
            pthread_mutex_unlock(&S.lock);
            errno = e;
            return -1;
        }
    }
    memset(&w, 0, sizeof w);
    w.id = fresh_id();
    w.domid = domid;
    w.nr_bufs = nr_bufs;
    w.bufs = bufs;
    w.next = S.waiters;
    S.waiters = &w;
    fd = S.fd;
    pthread_mutex_unlock(&S.lock);

    /* REQUEST: header, sizes, then the buffers straight from the caller. */
    memset(head, 0, sizeof head);
    dmop_put32(head + 0, DMOP_WIRE_MAGIC);
    dmop_put16(head + 4, DMOP_WIRE_TYPE_REQUEST);
    dmop_put16(head + 6, domid);
    dmop_put32(head + 8, w.id);
    dmop_put16(head + 12, (uint16_t)nr_bufs);
    len = DMOP_WIRE_REQUEST_FIXED + 4 * nr_bufs;
    iov[0].iov_base = head;
    iov[0].iov_len = len;
    iovcnt = 1;
    for (i = 0; i < nr_bufs; i++) {
        dmop_put32(head + DMOP_WIRE_REQUEST_FIXED + 4 * i, (uint32_t)bufs[i].size);
        if (bufs[i].size) {
            iov[iovcnt].iov_base = bufs[i].ptr;
            iov[iovcnt].iov_len = bufs[i].size;
            iovcnt++;
            len += bufs[i].size;
        }
    }
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = iov;
    msg.msg_iovlen = iovcnt;
    n = send_all_nosignal(fd, &msg);
    e = errno;

    pthread_mutex_lock(&S.lock);
    if (n != (ssize_t)len && !w.done)
        session_break(lg, "sending request %" PRIu32 " failed: %s", w.id,
                      n < 0 ? strerror(e) : "short send");

    while (!w.done) {
        if (!S.reader_active) {
            S.reader_active = true;
            pthread_mutex_unlock(&S.lock);
            n = recv_datagram(fd, S.rx, RX_CAPACITY);
            e = errno;
            pthread_mutex_lock(&S.lock);
            S.reader_active = false;
            dispatch(lg, n, e);
            /* Whoever got a reply, or the next reader, must wake. */
            pthread_cond_broadcast(&S.cond);
        } else {
            pthread_cond_wait(&S.cond, &S.lock);
        }
    }

    for (pp = &S.waiters; *pp; pp = &(*pp)->next) {
        if (*pp == &w) {
            *pp = w.next;
            break;
        }
    }
    pthread_mutex_unlock(&S.lock);

    if (w.error) {
        errno = w.error;
        return -1;
    }
    return 0;
}

int dmop_session_post(xendevicemodel_handle *dmod, domid_t domid,
                      uint32_t op, struct dmop_buf *buf)
{
    xentoollog_logger *lg = dmod->logger;
    /* One contiguous datagram: header, size, and the 32-byte xen_dm_op. */
    unsigned char datagram[DMOP_WIRE_REQUEST_FIXED + 4 + sizeof(struct xen_dm_op)];
    struct iovec iov;
    struct msghdr msg;
    uint32_t id;
    ssize_t n;
    int fd, e;

    pthread_mutex_lock(&S.lock);
    if (S.state != SESSION_READY || !S.posting || domid != S.domid ||
        S.version < DMOP_WIRE_VERSION_POSTING || op >= 32 ||
        !(S.posted_ops & (UINT32_C(1) << op)) ||
        buf->size > S.max_buffer_size || buf->size > sizeof(struct xen_dm_op)) {
        /* Whatever cannot be posted takes the waiting path, which also
         * reports every error as it does today. */
        pthread_mutex_unlock(&S.lock);
        return dmop_session_call(dmod, domid, 1, buf);
    }
    id = fresh_id();
    fd = S.fd;
    pthread_mutex_unlock(&S.lock);

    dmop_put32(datagram + 0, DMOP_WIRE_MAGIC);
    dmop_put16(datagram + 4, DMOP_WIRE_TYPE_REQUEST);
    dmop_put16(datagram + 6, domid);
    dmop_put32(datagram + 8, id);
    dmop_put16(datagram + 12, 1);
    dmop_put16(datagram + 14, DMOP_WIRE_REQUEST_POSTED);
    dmop_put32(datagram + DMOP_WIRE_REQUEST_FIXED, (uint32_t)buf->size);
    memcpy(datagram + DMOP_WIRE_REQUEST_FIXED + 4, buf->ptr, buf->size);
    /* Blocks while the socket's send buffer is full: the broker is behind,
     * and QEMU waits for it rather than lose an interrupt. */
    iov.iov_base = datagram;
    iov.iov_len = DMOP_WIRE_REQUEST_FIXED + 4 + buf->size;
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    n = send_all_nosignal(fd, &msg);
    if (n == (ssize_t)iov.iov_len)
        return 0;
    e = errno;
    pthread_mutex_lock(&S.lock);
    session_break(lg, "sending posted request %" PRIu32 " failed: %s", id,
                  n < 0 ? strerror(e) : "short send");
    pthread_mutex_unlock(&S.lock);
    errno = EIO;
    return -1;
}
