/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
#include "csandbox.h"
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/sched.h>

int csandbox_set_no_new_privs(void) { return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); }
int csandbox_get_no_new_privs(void) { return prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); }
int csandbox_set_dumpable(int value) { return prctl(PR_SET_DUMPABLE, value, 0, 0, 0); }
int csandbox_get_dumpable(void) { return prctl(PR_GET_DUMPABLE, 0, 0, 0, 0); }
int csandbox_set_name(const char *name) { return prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

int csandbox_setresuid(uid_t uid) { return setresuid(uid, uid, uid); }
int csandbox_setresgid(gid_t gid) { return setresgid(gid, gid, gid); }
int csandbox_getresuid(uid_t *r, uid_t *e, uid_t *s) { return getresuid(r, e, s); }
int csandbox_getresgid(gid_t *r, gid_t *e, gid_t *s) { return getresgid(r, e, s); }
int csandbox_drop_supplementary_groups(void) { return setgroups(0, NULL); }

int csandbox_close_range(unsigned int first, unsigned int last) {
    return (int)syscall(SYS_close_range, first, last, 0);
}

static const char *const *sigsys_names;
static size_t sigsys_count;
static int sigsys_exit_code;

static size_t append(char *buf, size_t at, size_t cap, const char *s) {
    while (*s != '\0' && at < cap) buf[at++] = *s++;
    return at;
}

static size_t append_unsigned(char *buf, size_t at, size_t cap, unsigned long value) {
    char digits[24];
    size_t n = 0;
    do { digits[n++] = (char)('0' + value % 10); value /= 10; } while (value != 0 && n < sizeof digits);
    while (n > 0 && at < cap) buf[at++] = digits[--n];
    return at;
}

static void on_sigsys(int sig, siginfo_t *info, void *context) {
    (void)sig;
    (void)context;
    char line[192];
    size_t n = 0;
    int nr = info->si_syscall;
    n = append(line, n, sizeof line - 1, "dmop-broker: seccomp: forbidden system call ");
    if (nr < 0) {
        n = append(line, n, sizeof line - 1, "-");
        n = append_unsigned(line, n, sizeof line - 1, (unsigned long)(-(long)nr));
    } else {
        n = append_unsigned(line, n, sizeof line - 1, (unsigned long)nr);
    }
    n = append(line, n, sizeof line - 1, " (");
    const char *name = (nr >= 0 && (size_t)nr < sigsys_count && sigsys_names[nr] != NULL) ? sigsys_names[nr] : "?";
    n = append(line, n, sizeof line - 1, name);
    n = append(line, n, sizeof line - 1, "), arch 0x");
    /* si_arch tells a foreign-ABI call (i386, x32) from a native one. */
    static const char hex[] = "0123456789abcdef";
    unsigned int arch = info->si_arch;
    for (int shift = 28; shift >= 0; shift -= 4) {
        if (n < sizeof line - 1) line[n++] = hex[(arch >> shift) & 0xf];
    }
    line[n++] = '\n';
    ssize_t ignored = write(2, line, n);
    (void)ignored;
    _exit(sigsys_exit_code);
}

int csandbox_install_sigsys_reporter(const char *const *names, size_t count, int exit_code) {
    sigsys_names = names;
    sigsys_count = count;
    sigsys_exit_code = exit_code;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sigfillset(&sa.sa_mask);
    /* SA_RESETHAND: should the handler itself trap, the second SIGSYS kills. */
    sa.sa_flags = SA_SIGINFO | SA_RESETHAND;
    if (sigaction(SIGSYS, &sa, NULL) != 0) return -1;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGSYS);
    /* A blocked SIGSYS would make the kernel kill instead of reporting. */
    return sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int csandbox_reset_crash_handlers(void) {
    static const int signals[] = { SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGQUIT };
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = SIG_DFL;
        sigemptyset(&sa.sa_mask);
        if (sigaction(signals[i], &sa, NULL) != 0) return -1;
    }
    return 0;
}

long csandbox_probe_ptrace_traceme(void) { return syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0); }
long csandbox_probe_kill(pid_t pid, int sig) { return syscall(SYS_kill, pid, sig); }

long csandbox_probe_clone3(void) {
    /* A fork-like clone3 (safe to run where the filter lets it through, as
     * in log mode): the child exits at once. */
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.exit_signal = SIGCHLD;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0) _exit(0);
    return pid;
}

long csandbox_probe_fork(void) {
    long pid = syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    return pid;
}

long csandbox_probe_raw_write(int fd, const void *buf, size_t len) { return syscall(SYS_write, fd, buf, len); }
