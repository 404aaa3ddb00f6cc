/* SPDX-License-Identifier: MIT */
/*
 * clib_common.h: helpers shared by the C test programs of the
 * libxendevicemodel replacement. Header-only so each test is one cc call.
 */
#ifndef CLIB_COMMON_H
#define CLIB_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int clib_failures;
static int clib_checks;

/* Every check counts; a failed one prints where and why. Atomic: the
 * concurrency tests check from several threads. */
#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        __atomic_fetch_add(&clib_checks, 1, __ATOMIC_RELAXED);               \
        if (!(cond)) {                                                       \
            __atomic_fetch_add(&clib_failures, 1, __ATOMIC_RELAXED);         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
        }                                                                    \
    } while (0)

/* rc == 0 */
#define CHECK_OK(rc, what)                                                   \
    CHECK((rc) == 0, "%s: rc=%d errno=%d (%s)", what, (int)(rc), errno,      \
          strerror(errno))

/* rc == -1 and errno == e */
#define CHECK_ERR(rc, e, what)                                               \
    do {                                                                     \
        int saved_errno_ = errno;                                            \
        CHECK((rc) == -1 && saved_errno_ == (e),                             \
              "%s: rc=%d errno=%d (%s), expected -1/%d (%s)", what,          \
              (int)(rc), saved_errno_, strerror(saved_errno_), (e),          \
              strerror(e));                                                  \
    } while (0)

static int clib_finish(const char *name)
{
    /* The plain closing line the CI reads. */
    printf("%s: %d passed, %d failed\n", name, clib_checks - clib_failures,
           clib_failures);
    return clib_failures ? 1 : 0;
}

static __attribute__((unused)) void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FATAL: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno));
    va_end(ap);
    exit(2);
}

/*
 * Starts `dmop-broker serve` and waits until it wrote "ready\n". With
 * listen_path NULL it serves one end of a fresh socketpair and the other
 * end is returned, connected; else it listens on listen_path and -1 is
 * returned. extra is a NULL-terminated list of further broker arguments.
 * *pid gets its pid.
 */
static __attribute__((unused)) int spawn_broker_at(const char *broker, unsigned domid,
                                                   const char *policy, const char *listen_path,
                                                   const char *const extra[], pid_t *pid)
{
    int sv[2], rp[2];
    char ready[16];
    ssize_t n;
    size_t got = 0;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    if (pipe2(rp, O_CLOEXEC) < 0)
        die("pipe2");
    *pid = fork();
    if (*pid < 0)
        die("fork");
    if (*pid == 0) {
        const char *argv[64];
        char dom[16], sfd[16], rfd[16];
        int i = 0, j;
        /* The broker's ends stay open across exec, nothing else of ours. */
        fcntl(sv[0], F_SETFD, 0);
        fcntl(rp[1], F_SETFD, 0);
        snprintf(dom, sizeof dom, "%u", domid);
        snprintf(sfd, sizeof sfd, "%d", sv[0]);
        snprintf(rfd, sizeof rfd, "%d", rp[1]);
        argv[i++] = broker;
        argv[i++] = "serve";
        argv[i++] = "--domid";
        argv[i++] = dom;
        if (listen_path) {
            argv[i++] = "--listen";
            argv[i++] = listen_path;
        } else {
            argv[i++] = "--socket-fd";
            argv[i++] = sfd;
        }
        argv[i++] = "--ready-fd";
        argv[i++] = rfd;
        argv[i++] = "--policy";
        argv[i++] = policy;
        for (j = 0; extra && extra[j] && i < 62; j++)
            argv[i++] = extra[j];
        argv[i] = NULL;
        execv(broker, (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", broker, strerror(errno));
        _exit(127);
    }
    close(sv[0]);
    close(rp[1]);
    while (got < sizeof ready - 1) {
        n = read(rp[0], ready + got, sizeof ready - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
        if (memchr(ready, '\n', got))
            break;
    }
    ready[got] = 0;
    close(rp[0]);
    if (strcmp(ready, "ready\n") != 0) {
        int st = 0;
        waitpid(*pid, &st, 0);
        errno = 0;
        die("broker did not become ready (read \"%s\", exit status 0x%x)",
            ready, st);
    }
    if (listen_path) {
        close(sv[1]);
        return -1;
    }
    return sv[1];
}

static __attribute__((unused)) int spawn_broker(const char *broker, unsigned domid,
                                                const char *policy, const char *const extra[],
                                                pid_t *pid)
{
    return spawn_broker_at(broker, domid, policy, NULL, extra, pid);
}

/* Waits up to ms for pid to exit; returns its wait status or -1. */
static __attribute__((unused)) int wait_exit(pid_t pid, int ms)
{
    int st;
    for (int i = 0; i < ms; i += 10) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        usleep(10000);
    }
    return -1;
}

#endif /* CLIB_COMMON_H */
