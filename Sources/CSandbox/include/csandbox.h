/* SPDX-License-Identifier: MIT */
/* What the sandbox needs and Swift cannot import: prctl (variadic), the
 * setres*id/getres*id family and close_range (GNU-only declarations), and
 * the SIGSYS reporter of --seccomp trap, kept in C so that it is plainly
 * async-signal-safe (write(2) and _exit(2) only, no allocation, no Swift
 * runtime). The csandbox_probe_* calls exist for dmop-seccomp-probe only:
 * raw system calls that glibc exposes only through variadic functions. */
#ifndef DMOP_CSANDBOX_H
#define DMOP_CSANDBOX_H
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Each returns 0 or -1 with errno. */
int csandbox_set_no_new_privs(void);
/* 1, 0, or -1 with errno. */
int csandbox_get_no_new_privs(void);
int csandbox_set_dumpable(int value);
int csandbox_get_dumpable(void);
/* PR_SET_NAME: the process's comm (what /proc/PID/comm and journald's
 * _COMM show), at most 15 bytes. */
int csandbox_set_name(const char *name);

int csandbox_setresuid(uid_t uid);
int csandbox_setresgid(gid_t gid);
int csandbox_getresuid(uid_t *r, uid_t *e, uid_t *s);
int csandbox_getresgid(gid_t *r, gid_t *e, gid_t *s);
/* setgroups(0, NULL): no supplementary groups. */
int csandbox_drop_supplementary_groups(void);

/* close_range(2) of [first, last] (no flags). */
int csandbox_close_range(unsigned int first, unsigned int last);

/* Installs the SIGSYS handler of --seccomp trap: it writes
 * "<prefix>forbidden system call <nr> (<name>)\n" to fd 2 with one write(2)
 * and _exit()s with exit_code. names[nr] (nr < count) must stay valid for
 * the life of the process; NULL entries print as "?". */
int csandbox_install_sigsys_reporter(const char *const *names, size_t count, int exit_code);

/* Restores SIG_DFL for the crash signals (SIGILL, SIGTRAP, SIGABRT, SIGBUS,
 * SIGFPE, SIGSEGV, SIGQUIT), taking them from the Swift runtime's
 * backtracer, whose handler makes system calls the filter forbids. */
int csandbox_reset_crash_handlers(void);

/* Probe helpers: each makes exactly one raw system call. */
long csandbox_probe_ptrace_traceme(void);
long csandbox_probe_kill(pid_t pid, int sig);
long csandbox_probe_clone3(void);
long csandbox_probe_fork(void);
long csandbox_probe_raw_write(int fd, const void *buf, size_t len);
#endif
