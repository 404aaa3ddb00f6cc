/* SPDX-License-Identifier: MIT */
/*
 * dmop-qemu-wrapper: run an unmodified QEMU with every DMOP going through a
 * per-guest dmop-broker. Usable as xl.cfg device_model_override=: libxl
 * execs it with QEMU's full argv.
 *
 *  1. Read -xen-domid N from QEMU's argv; insist on -xen-domid-restrict
 *     (QEMU's own restriction, xl.cfg dm_restrict=1) unless told otherwise.
 *  2. socketpair; start `dmop-broker serve --domid N --socket-fd 3
 *     --ready-fd 4 --policy P [--user U] ...` detached (it is not QEMU's
 *     child) and wait for its "ready\n"; fail closed on timeout or exit.
 *  3. no_new_privs, then a seccomp filter that refuses with EPERM the
 *     privcmd ioctls that would go around the broker: DM_OP, IRQFD and
 *     IOEVENTFD, on any fd. Everything else is left to the kernel.
 *  4. exec QEMU with the broker's library first on LD_LIBRARY_PATH and
 *     DMOP_BROKER_FD naming QEMU's end of the socketpair. When QEMU exits,
 *     the socket hangs up and the broker exits by itself.
 *
 * See dmop-qemu-wrapper(8).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include <seccomp.h>

#include <xen/xen.h>
#include <xen/sys/privcmd.h>

#include "privcmd_eventfd.h"

#define DEFAULT_CONFIG       "/etc/dmop-broker/wrapper.conf"
#define DEFAULT_QEMU         "/usr/libexec/xen-qemu-system-i386"
#define DEFAULT_LIBRARY_DIR  DMOP_LIBRARY_DIR
#define DEFAULT_READY_TIMEOUT_MS 10000
#define LIBRARY_SONAME       "libxendevicemodel.so.1"
#define MAX_BROKER_ARGS      32
#define MAX_GUEST_RULES      64

/* The broker's fds, fixed so its command line never names a stray fd. */
#define BROKER_SOCKET_FD 3
#define BROKER_READY_FD  4

struct config {
    const char *qemu;
    const char *broker;
    const char *policy;
    const char *user;
    const char *library_dir;
    int ready_timeout_ms;
    bool allow_unrestricted;
    const char *broker_args[MAX_BROKER_ARGS];
    int n_broker_args;
    /* audit = stderr|journal|syslog|FILE (%n guest name, %d domid). */
    const char *audit;
    /* policy.PATTERN / user.PATTERN: PATTERN is a glob on the guest's name
     * (QEMU's -name) or a domid; the first match in file order wins. */
    struct { const char *pattern, *value; bool is_policy; } rules[MAX_GUEST_RULES];
    int n_rules;
    /* user-range-base = N: the broker runs as uid and gid N + domid. */
    long user_range_base;
};

/* One message, one fprintf: the broker shares this stderr (libxl's
 * qemu-dm-<name>.log), and a message written in pieces lets its audit lines
 * land in the middle of ours. */
static void say(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
static void say(const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "dmop-qemu-wrapper: %s\n", msg);
}

static void fail(int status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
static void fail(int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
    exit(status);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    say(fmt, ap);
    va_end(ap);
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: dmop-qemu-wrapper [wrapper options] [--] QEMU-ARGS...\n"
        "\n"
        "Starts a dmop-broker for the domain named by QEMU's -xen-domid, confines\n"
        "QEMU's privcmd ioctls with seccomp and execs QEMU with the broker's\n"
        "libxendevicemodel. Wrapper options (before QEMU's arguments; they override\n"
        DEFAULT_CONFIG " or --config):\n"
        "  --config FILE            configuration file (key = value lines)\n"
        "  --qemu PATH              QEMU to exec (default " DEFAULT_QEMU ")\n"
        "  --broker PATH            dmop-broker (default: next to this program)\n"
        "  --policy FILE            broker policy (required)\n"
        "  --user NAME              user the broker drops to\n"
        "  --library-dir DIR        directory holding " LIBRARY_SONAME "\n"
        "                           (default " DEFAULT_LIBRARY_DIR ")\n"
        "  --ready-timeout SECONDS  wait this long for the broker (default 10)\n"
        "  --broker-arg ARG         one more argument for dmop-broker serve\n"
        "  --audit stderr|journal|syslog|FILE\n"
        "                           the broker's audit channel (FILE: %%n guest name,\n"
        "                           %%d domid; opened by the broker, never QEMU)\n"
        "  --allow-unrestricted     run QEMU without -xen-domid-restrict (unsafe)\n"
        "  --help, --version\n");
}

/* ---------- configuration ---------- */

static bool parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0")) {
        *out = false;
        return true;
    }
    return false;
}

static bool parse_timeout(const char *v, int *ms)
{
    char *end = NULL;
    double s;
    errno = 0;
    s = strtod(v, &end);
    if (errno || end == v || *end || !(s > 0) || s > 3600)
        return false;
    *ms = (int)(s * 1000);
    if (*ms < 1)
        *ms = 1;
    return true;
}

/* Applies one key = value setting; returns false for an unknown key or a
 * bad value, with *why set. */
static bool apply_setting(struct config *c, const char *key, const char *value,
                          const char **why)
{
    if (!strcmp(key, "qemu"))
        c->qemu = value;
    else if (!strcmp(key, "broker"))
        c->broker = value;
    else if (!strcmp(key, "policy"))
        c->policy = value;
    else if (!strcmp(key, "user"))
        c->user = value;
    else if (!strcmp(key, "library-dir"))
        c->library_dir = value;
    else if (!strcmp(key, "ready-timeout")) {
        if (!parse_timeout(value, &c->ready_timeout_ms)) {
            *why = "ready-timeout must be a number of seconds in (0, 3600]";
            return false;
        }
    } else if (!strcmp(key, "allow-unrestricted")) {
        if (!parse_bool(value, &c->allow_unrestricted)) {
            *why = "allow-unrestricted must be yes or no";
            return false;
        }
    } else if (!strcmp(key, "audit")) {
        if (!*value) {
            *why = "audit must be stderr, journal, syslog or a file path";
            return false;
        }
        c->audit = value;
    } else if (!strncmp(key, "policy.", 7) || !strncmp(key, "user.", 5)) {
        bool is_policy = key[0] == 'p';
        const char *pattern = key + (is_policy ? 7 : 5);
        if (!*pattern) {
            *why = "give a guest name pattern or a domid after the dot";
            return false;
        }
        if (c->n_rules >= MAX_GUEST_RULES) {
            *why = "too many per-guest settings";
            return false;
        }
        c->rules[c->n_rules].pattern = pattern;
        c->rules[c->n_rules].value = value;
        c->rules[c->n_rules].is_policy = is_policy;
        c->n_rules++;
    } else if (!strcmp(key, "user-range-base")) {
        char *end = NULL;
        errno = 0;
        c->user_range_base = strtol(value, &end, 10);
        if (errno || end == value || *end || c->user_range_base < 1 ||
            c->user_range_base > 0x7fffffffL - DOMID_FIRST_RESERVED) {
            *why = "user-range-base must be a uid from 1 to 2147450879";
            return false;
        }
    } else if (!strcmp(key, "broker-arg")) {
        if (c->n_broker_args >= MAX_BROKER_ARGS) {
            *why = "too many broker-arg settings";
            return false;
        }
        c->broker_args[c->n_broker_args++] = value;
    } else {
        *why = "unknown setting";
        return false;
    }
    return true;
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = 0;
    return s;
}

/* Reads FILE; a missing default file is fine, a missing named one is not.
 * The strings live for the program's life (it execs or exits). */
static void read_config(struct config *c, const char *path, bool required)
{
    FILE *f = fopen(path, "re");
    char *line = NULL;
    size_t cap = 0;
    unsigned lineno = 0;

    if (!f) {
        if (errno == ENOENT && !required)
            return;
        fail(EX_CONFIG, "cannot read %s: %s", path, strerror(errno));
    }
    while (getline(&line, &cap, f) >= 0) {
        char *s, *eq, *key, *value;
        const char *why = NULL;
        lineno++;
        s = trim(line);
        if (*s == 0 || *s == '#')
            continue;
        eq = strchr(s, '=');
        if (!eq)
            fail(EX_CONFIG, "%s:%u: expected key = value", path, lineno);
        *eq = 0;
        key = trim(s);
        value = trim(eq + 1);
        if (*value == 0)
            fail(EX_CONFIG, "%s:%u: %s has no value", path, lineno, key);
        value = strdup(value);
        key = strdup(key);
        if (!value || !key)
            fail(EX_OSERR, "out of memory");
        if (!apply_setting(c, key, value, &why))
            fail(EX_CONFIG, "%s:%u: %s: %s", path, lineno, key, why);
    }
    free(line);
    fclose(f);
}

/* The wrapper's own options come first; the first argument that is not
 * one of them (or "--") starts QEMU's arguments. Returns that index. */
static int parse_wrapper_options(struct config *c, int argc, char **argv,
                                 bool apply)
{
    int i = 1;
    while (i < argc) {
        const char *a = argv[i], *value = NULL, *key;
        const char *why = NULL;
        size_t klen;

        if (!strcmp(a, "--")) {
            i++;
            break;
        }
        if (!strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        }
        if (strncmp(a, "--", 2) != 0)
            break;
        key = a + 2;
        klen = strcspn(key, "=");
        if (!((klen == 6 && !strncmp(key, "config", 6)) ||
              (klen == 4 && !strncmp(key, "qemu", 4)) ||
              (klen == 6 && !strncmp(key, "broker", 6)) ||
              (klen == 6 && !strncmp(key, "policy", 6)) ||
              (klen == 4 && !strncmp(key, "user", 4)) ||
              (klen == 11 && !strncmp(key, "library-dir", 11)) ||
              (klen == 13 && !strncmp(key, "ready-timeout", 13)) ||
              (klen == 10 && !strncmp(key, "broker-arg", 10)) ||
              (klen == 5 && !strncmp(key, "audit", 5)) ||
              (klen == 18 && !strncmp(key, "allow-unrestricted", 18))))
            break;  /* not ours: QEMU's (QEMU also takes --option) */

        if (klen == 18) {
            if (key[klen] == '=')
                fail(EX_USAGE, "--allow-unrestricted takes no value");
            if (apply)
                c->allow_unrestricted = true;
            i++;
            continue;
        }
        if (key[klen] == '=') {
            value = key + klen + 1;
            i++;
        } else {
            if (i + 1 >= argc)
                fail(EX_USAGE, "%s needs a value", a);
            value = argv[i + 1];
            i += 2;
        }
        if (klen == 6 && !strncmp(key, "config", 6))
            continue;   /* read before the others apply */
        if (apply) {
            char k[32];
            memcpy(k, key, klen);
            k[klen] = 0;
            if (!apply_setting(c, k, value, &why))
                fail(EX_USAGE, "--%s: %s", k, why);
        }
    }
    return i;
}

static const char *find_config_option(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strncmp(argv[i], "--config=", 9))
            return argv[i] + 9;
        if (!strcmp(argv[i], "--config"))
            return i + 1 < argc ? argv[i + 1] : NULL;
        if (strncmp(argv[i], "--", 2) != 0)
            break;
    }
    return NULL;
}

/* ---------- QEMU's argv ---------- */

/*
 * QEMU options that take no argument (qemu-options.hx entries without
 * HAS_ARG). Every other option is taken to consume the next word, so a
 * value such as a guest called "-xen-domid-restrict" is never mistaken for
 * the option. An unlisted no-argument option before -xen-domid-restrict
 * makes the check fail closed (refusal), never open.
 */
static const char *const qemu_flags[] = {
    "S", "s", "h", "help", "version", "nodefaults", "no-user-config",
    "nodefconfig", "no-shutdown", "no-reboot", "nographic", "daemonize",
    "xen-domid-restrict", "xen-attach", "xen-create", "usb", "no-hpet",
    "no-acpi", "no-fd-bootchk", "enable-kvm", "no-kvm", "localtime",
    "full-screen", "snapshot", "mem-prealloc", "audio-help", "win2k-hack",
    "rtc-td-hack", "alt-grab", "ctrl-grab", "no-quit", "portrait",
    "singlestep", "preconfig", "only-migratable", "enable-fips",
    "semihosting", "no-frame", "old-param", "enable-sync-profile",
    "no-kvm-irqchip", "no-kvm-pit", "no-kvm-pit-reinjection", "curses",
    "sdl", NULL,
};

static bool is_flag(const char *opt)
{
    for (int i = 0; qemu_flags[i]; i++)
        if (!strcmp(opt, qemu_flags[i]))
            return true;
    return false;
}

struct qemu_args {
    long domid;            /* -1 when absent */
    bool restricted;
    /* -name's guest part (before any ",key=value"), or NULL. */
    char name[256];
    bool named;
};

static void scan_qemu_args(int argc, char **argv, int first, struct qemu_args *q)
{
    q->domid = -1;
    q->restricted = false;
    q->named = false;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *opt;
        if (a[0] != '-' || a[1] == 0)
            continue;           /* a positional argument (disk image) */
        opt = a + 1;
        if (*opt == '-')
            opt++;              /* QEMU takes --opt as -opt */
        if (!strcmp(opt, "xen-domid-restrict")) {
            q->restricted = true;
            continue;
        }
        if (!strcmp(opt, "xen-domid")) {
            char *end = NULL;
            long v;
            if (i + 1 >= argc)
                fail(EX_USAGE, "-xen-domid needs a value");
            if (q->domid >= 0)
                fail(EX_USAGE, "-xen-domid is given twice; refusing to guess "
                     "which domain QEMU serves");
            errno = 0;
            v = strtol(argv[i + 1], &end, 10);
            if (errno || end == argv[i + 1] || *end || v < 1 ||
                v >= DOMID_FIRST_RESERVED)
                fail(EX_USAGE, "-xen-domid %s is not a guest domain id "
                     "(1..%u)", argv[i + 1], DOMID_FIRST_RESERVED - 1);
            q->domid = v;
            i++;
            continue;
        }
        if (!strcmp(opt, "name") && i + 1 < argc) {
            /* -name NAME, -name guest=NAME,debug-threads=on */
            const char *v = argv[i + 1];
            if (!strncmp(v, "guest=", 6))
                v += 6;
            snprintf(q->name, sizeof q->name, "%.*s", (int)strcspn(v, ","), v);
            for (char *p = q->name; *p; p++)
                if (*p == '/')
                    *p = '_';   /* a file name, never a path */
            q->named = q->name[0] != 0;
            i++;
            continue;
        }
        if (!is_flag(opt))
            i++;                /* skip the option's value */
    }
}

/* A policy named without a '/' is looked up: the local copy in
 * /etc/dmop-broker wins over the package's default in /usr/share/dmop-broker
 * (dmop-broker.policy(5)). A path is used as it is. */
static const char *find_policy(const char *name)
{
    static const char *const dirs[] = { "/etc/dmop-broker", "/usr/share/dmop-broker" };
    static char path[PATH_MAX];
    if (strchr(name, '/'))
        return name;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        if (access(path, R_OK) == 0)
            return path;
    }
    fail(EX_CONFIG, "no policy %s: neither %s/%s nor %s/%s is readable",
         name, dirs[0], name, dirs[1], name);
}

/* policy.PATTERN and user.PATTERN: the first that names this guest. */
static void choose_per_guest(struct config *c, const struct qemu_args *q)
{
    bool policy_set = false, user_set = false;
    char domid[16];
    snprintf(domid, sizeof domid, "%ld", q->domid);
    for (int i = 0; i < c->n_rules; i++) {
        const char *pattern = c->rules[i].pattern;
        bool matches = !strcmp(pattern, domid) ||
                       (q->named && fnmatch(pattern, q->name, 0) == 0);
        if (!matches)
            continue;
        if (c->rules[i].is_policy && !policy_set) {
            c->policy = c->rules[i].value;
            policy_set = true;
        } else if (!c->rules[i].is_policy && !user_set) {
            c->user = c->rules[i].value;
            user_set = true;
        }
    }
    if (c->user_range_base > 0 && !user_set) {
        static char ids[32];
        long id = c->user_range_base + q->domid;
        snprintf(ids, sizeof ids, "%ld:%ld", id, id);
        c->user = ids;
    }
}

/*
 * No audit setting: when stderr is a file (libxl's qemu-dm-NAME.log, which
 * QEMU holds and can rewrite), a file of the broker's own next to it;
 * otherwise stderr (a terminal, a pipe, a test).
 */
static const char *default_audit(void)
{
    static char path[PATH_MAX];
    char log[PATH_MAX];
    struct stat st;
    ssize_t n;
    char *slash;

    if (fstat(2, &st) < 0 || !S_ISREG(st.st_mode))
        return NULL;
    n = readlink("/proc/self/fd/2", log, sizeof log - 1);
    if (n <= 0 || log[0] != '/')
        return NULL;
    log[n] = 0;
    slash = strrchr(log, '/');
    *slash = 0;
    if (snprintf(path, sizeof path, "%s/dmop-broker-%%n.log", log[0] ? log : "") >= (int)sizeof path)
        return NULL;
    return path;
}

/* audit's %n (guest name, or "domain-N") and %d (domid). */
static const char *expand_audit(const char *spec, const struct qemu_args *q)
{
    static char out[PATH_MAX];
    size_t n = 0;
    for (const char *p = spec; *p && n + 1 < sizeof out; p++) {
        char piece[300];
        if (p[0] == '%' && (p[1] == 'n' || p[1] == 'd')) {
            if (p[1] == 'd' || !q->named)
                snprintf(piece, sizeof piece, p[1] == 'd' ? "%ld" : "domain-%ld", q->domid);
            else
                snprintf(piece, sizeof piece, "%s", q->name);
            p++;
        } else {
            piece[0] = *p;
            piece[1] = 0;
        }
        n += (size_t)snprintf(out + n, sizeof out - n, "%s", piece);
        if (n >= sizeof out)
            fail(EX_CONFIG, "audit path is too long");
    }
    out[n] = 0;
    return out;
}

/* ---------- the broker ---------- */

static const char *default_broker(void)
{
    static char path[PATH_MAX];
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    char *slash;

    if (n <= 0)
        return "/usr/sbin/dmop-broker";
    self[n] = 0;
    slash = strrchr(self, '/');
    if (!slash)
        return "/usr/sbin/dmop-broker";
    *slash = 0;
    snprintf(path, sizeof path, "%s/dmop-broker", self);
    return path;
}

static void close_from(int lowfd)
{
    if (syscall(SYS_close_range, (unsigned)lowfd, ~0U, 0) == 0)
        return;
    /* Kernels before 5.9: close one by one. */
    for (long fd = lowfd, max = sysconf(_SC_OPEN_MAX); fd < max; fd++)
        close((int)fd);
}

/* In the grandchild: fds 3 and 4, nothing else above stderr, then exec. */
/*
 * libxl's RLIMIT_FSIZE (256 KiB for a restricted device model) is meant for
 * QEMU. Inherited by the broker, it would fill the audit file within about a
 * thousand lines, after which the broker refuses every DMOP and the guest
 * stops. The broker sets its own limit when it confines itself (the audit
 * file's size at start plus a margin, dmop-broker(8)). Raising the hard
 * limit needs root, which the broker has until then; without it the
 * inherited limit stays and the broker says so when its file fills.
 */
static void lift_file_size_limit(void)
{
    struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };

    if (setrlimit(RLIMIT_FSIZE, &unlimited) < 0)
        fprintf(stderr, "dmop-qemu-wrapper: cannot lift the file-size limit "
                "for dmop-broker: %s\n", strerror(errno));
}

static void exec_broker(const struct config *c, const struct qemu_args *q, int sock, int ready)
{
    const char *argv[24 + MAX_BROKER_ARGS];
    long domid = q->domid;
    char dom[16], sfd[8], rfd[8];
    int i = 0, s, r;

    s = fcntl(sock, F_DUPFD, 10);
    r = fcntl(ready, F_DUPFD, 10);
    if (s < 0 || r < 0 || dup2(s, BROKER_SOCKET_FD) < 0 ||
        dup2(r, BROKER_READY_FD) < 0)
        _exit(EX_OSERR);
    close_from(BROKER_READY_FD + 1);

    snprintf(dom, sizeof dom, "%ld", domid);
    snprintf(sfd, sizeof sfd, "%d", BROKER_SOCKET_FD);
    snprintf(rfd, sizeof rfd, "%d", BROKER_READY_FD);
    argv[i++] = c->broker;
    argv[i++] = "serve";
    argv[i++] = "--domid";
    argv[i++] = dom;
    argv[i++] = "--socket-fd";
    argv[i++] = sfd;
    argv[i++] = "--ready-fd";
    argv[i++] = rfd;
    argv[i++] = "--policy";
    argv[i++] = c->policy;
    if (c->user) {
        argv[i++] = "--user";
        argv[i++] = c->user;
    }
    if (c->audit && strcmp(c->audit, "stderr") != 0) {
        /* The broker opens a FILE itself, before it drops privileges: QEMU
         * never holds it (stderr is QEMU's log, which QEMU can rewrite). */
        argv[i++] = "--audit-log";
        argv[i++] = expand_audit(c->audit, q);
    }
    if (q->named) {
        argv[i++] = "--guest-name";
        argv[i++] = q->name;
    }
    for (int k = 0; k < c->n_broker_args; k++)
        argv[i++] = c->broker_args[k];
    argv[i] = NULL;
    lift_file_size_limit();
    execv(c->broker, (char *const *)argv);
    fprintf(stderr, "dmop-qemu-wrapper: cannot exec %s: %s\n", c->broker,
            strerror(errno));
    _exit(127);
}

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * Starts the broker detached (a grandchild that init adopts: it is not
 * QEMU's child, so it never lingers as QEMU's zombie) and waits for it.
 * Returns QEMU's end of the socketpair.
 */
static int start_broker(const struct config *c, const struct qemu_args *q)
{
    int sv[2], rp[2], pp[2];
    pid_t mid, broker = -1;
    int status, pidfd = -1;
    char buf[16];
    size_t got = 0;
    struct timespec t0;

    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        fail(EX_OSERR, "socketpair: %s", strerror(errno));
    if (pipe2(rp, O_CLOEXEC) < 0 || pipe2(pp, O_CLOEXEC) < 0)
        fail(EX_OSERR, "pipe: %s", strerror(errno));

    mid = fork();
    if (mid < 0)
        fail(EX_OSERR, "fork: %s", strerror(errno));
    if (mid == 0) {
        pid_t b;
        /* Out of QEMU's session and process group: signals meant for QEMU
         * do not reach the broker; it ends when its socket hangs up. */
        setsid();
        b = fork();
        if (b == 0) {
            close(sv[1]);
            exec_broker(c, q, sv[0], rp[1]);
        }
        if (b > 0 && write(pp[1], &b, sizeof b) != (ssize_t)sizeof b)
            _exit(EX_OSERR);
        _exit(b > 0 ? 0 : EX_OSERR);
    }
    close(sv[0]);
    close(rp[1]);
    close(pp[1]);
    while (waitpid(mid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 ||
        read(pp[0], &broker, sizeof broker) != (ssize_t)sizeof broker)
        fail(EX_OSERR, "could not start dmop-broker");
    close(pp[0]);
    /* A handle that cannot point at a recycled pid, to kill it on failure. */
    pidfd = (int)syscall(SYS_pidfd_open, broker, 0);

    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        long left = c->ready_timeout_ms - elapsed_ms(&t0);
        struct pollfd pfd = { rp[0], POLLIN, 0 };
        ssize_t n;
        int pr;

        if (left <= 0) {
            if (pidfd >= 0)
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            fail(EX_UNAVAILABLE, "dmop-broker (pid %d) was not ready within "
                 "%d ms; killed it; not starting QEMU", (int)broker,
                 c->ready_timeout_ms);
        }
        pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        n = read(rp[0], buf + got, sizeof buf - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (pidfd >= 0)
                syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
            fail(EX_UNAVAILABLE, "dmop-broker (pid %d) exited or closed its "
                 "ready fd before it was ready (its log says why); not "
                 "starting QEMU", (int)broker);
        }
        got += (size_t)n;
        buf[got] = 0;
        if (strchr(buf, '\n') || got >= sizeof buf - 1)
            break;
    }
    if (strcmp(buf, "ready\n") != 0) {
        if (pidfd >= 0)
            syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
        fail(EX_UNAVAILABLE, "dmop-broker wrote \"%s\" instead of \"ready\"; "
             "not starting QEMU", buf);
    }
    close(rp[0]);
    if (pidfd >= 0)
        close(pidfd);
    note("domain %ld: dmop-broker pid %d ready (policy %s)", q->domid,
         (int)broker, c->policy);
    return sv[1];
}

/* ---------- confinement ---------- */

/* The ioctls that would let QEMU issue a DMOP without the broker. */
static const struct {
    unsigned long cmd;
    const char *name;
} refused_ioctls[] = {
    { IOCTL_PRIVCMD_DM_OP, "IOCTL_PRIVCMD_DM_OP" },
    /* IRQFD replays a registered DMOP from kernel context on every eventfd
     * signal; IOEVENTFD completes ioreqs in the kernel. */
    { DMOP_IOCTL_PRIVCMD_IRQFD, "IOCTL_PRIVCMD_IRQFD" },
    { DMOP_IOCTL_PRIVCMD_IOEVENTFD, "IOCTL_PRIVCMD_IOEVENTFD" },
};

static void confine(void)
{
    scmp_filter_ctx ctx;
    int rc, fd;

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        fail(EX_OSERR, "prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));

    /* Default allow: this filter takes three ioctls away, nothing else;
     * QEMU's own -sandbox can narrow further. A syscall of another
     * architecture (32-bit int 0x80, x32) would get around the ioctl rules,
     * so it kills the whole process: libseccomp's default bad-architecture
     * action kills only the calling thread. */
    ctx = seccomp_init(SCMP_ACT_ALLOW);
    if (!ctx)
        fail(EX_OSERR, "seccomp_init failed");
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    if (rc < 0)
        fail(EX_OSERR, "seccomp bad-architecture action: %s", strerror(-rc));
    for (size_t i = 0; i < sizeof refused_ioctls / sizeof refused_ioctls[0]; i++) {
        /* The kernel reads ioctl's cmd as unsigned int: compare the low 32
         * bits only, so junk in the upper half cannot slip past. */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                              SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffu,
                                      refused_ioctls[i].cmd));
        if (rc < 0)
            fail(EX_OSERR, "seccomp rule for %s: %s", refused_ioctls[i].name,
                 strerror(-rc));
    }
    rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0)
        fail(EX_OSERR, "seccomp_load: %s", strerror(-rc));

    /* Prove it took: on /dev/null these would be ENOTTY without it. */
    fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        fail(EX_OSERR, "open /dev/null: %s", strerror(errno));
    for (size_t i = 0; i < sizeof refused_ioctls / sizeof refused_ioctls[0]; i++) {
        errno = 0;
        if (ioctl(fd, refused_ioctls[i].cmd, NULL) != -1 || errno != EPERM)
            fail(EX_SOFTWARE, "the seccomp filter does not refuse %s; not "
                 "starting QEMU", refused_ioctls[i].name);
    }
    close(fd);
}

/* ---------- libxl's option probe (Xen 4.20 and later) ---------- */

/* Does QEMU's argv ask for "-machine none" (or -M none): no guest, no
 * -xen-domid, as libxl__spawn_local_dm's probe runs it? */
static bool asks_machine_none(int argc, char **argv, int first)
{
    for (int i = first; i + 1 < argc; i++) {
        const char *opt = argv[i];
        if (opt[0] != '-')
            continue;
        opt += opt[1] == '-' ? 2 : 1;
        if (strcmp(opt, "machine") && strcmp(opt, "M"))
            continue;
        const char *v = argv[i + 1];
        if (!strncmp(v, "type=", 5))
            v += 5;
        if (!strncmp(v, "none", 4) && (v[4] == 0 || v[4] == ','))
            return true;
    }
    return false;
}

/* One option of a -chardev value: does "socket,...,KEY=...,..." hold KEY
 * (KEY given with its '=' or alone)? */
static bool chardev_option_is(const char *opt, size_t len, const char *key)
{
    size_t k = strlen(key);
    return len >= k && !strncmp(opt, key, k) && (len == k || opt[k] == '=');
}

/*
 * libxl hands QEMU its QMP socket already listening (fd=N,server=on). QEMU
 * unlinks the path of a listening Unix socket when it closes it (it asks
 * the fd for its address), and libxl binds the same path for the real
 * device model while the probe is still exiting: the real start then finds
 * no socket ("Failed to connect to QMP socket"). So the wrapper accepts
 * libxl's connection itself, closes the listening fd and gives QEMU the
 * connected fd as a client chardev: QEMU never holds the listener, and
 * never unlinks anything. Returns false when there was no such chardev.
 */
static bool take_over_qmp_listeners(int argc, char **argv, int first, int timeout_ms)
{
    bool took = false;
    for (int i = first; i + 1 < argc; i++) {
        const char *opt = argv[i], *v = argv[i + 1], *p;
        long listen_fd = -1;
        bool server = false;
        int on = 0, conn, pr;
        socklen_t len = sizeof on;
        struct pollfd pfd;
        char *out, *o;

        if (strcmp(opt, "-chardev") && strcmp(opt, "--chardev"))
            continue;
        if (strncmp(v, "socket,", 7))
            continue;
        for (p = v + 7; *p;) {
            size_t n = strcspn(p, ",");
            if (chardev_option_is(p, n, "fd") && n > 3) {
                char *end = NULL;
                errno = 0;
                listen_fd = strtol(p + 3, &end, 10);
                if (errno || end != p + n || listen_fd < 0 || listen_fd > INT_MAX)
                    listen_fd = -1;
            } else if (chardev_option_is(p, n, "server")) {
                server = n == 6 || !strncmp(p, "server=on", n) || !strncmp(p, "server=yes", n);
            }
            p += n + (p[n] == ',');
        }
        if (listen_fd < 0 || !server)
            continue;
        if (getsockopt((int)listen_fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) < 0 || !on)
            fail(EX_USAGE, "probe: -chardev %s names fd %ld, which is not a listening "
                 "socket", v, listen_fd);
        pfd.fd = (int)listen_fd;
        pfd.events = POLLIN;
        do
            pr = poll(&pfd, 1, timeout_ms);
        while (pr < 0 && errno == EINTR);
        if (pr <= 0)
            fail(EX_UNAVAILABLE, "probe: libxl did not connect to its QMP socket "
                 "(fd %ld) within %d ms", listen_fd, timeout_ms);
        do
            conn = accept4((int)listen_fd, NULL, NULL, 0);
        while (conn < 0 && errno == EINTR);
        if (conn < 0)
            fail(EX_OSERR, "probe: accept on fd %ld: %s", listen_fd, strerror(errno));
        close((int)listen_fd);

        /* The same options without fd=, server and wait, then fd=CONN. */
        out = malloc(strlen(v) + 24);
        if (!out)
            fail(EX_OSERR, "out of memory");
        o = stpcpy(out, "socket");
        for (p = v + 7; *p;) {
            size_t n = strcspn(p, ",");
            if (!chardev_option_is(p, n, "fd") && !chardev_option_is(p, n, "server") &&
                !chardev_option_is(p, n, "wait") && !chardev_option_is(p, n, "nowait")) {
                *o++ = ',';
                memcpy(o, p, n);
                o += n;
            }
            p += n + (p[n] == ',');
        }
        sprintf(o, ",fd=%d", conn);
        argv[i + 1] = out;
        took = true;
    }
    return took;
}

/* libxl's probe: QEMU confined exactly as for a guest (no_new_privs, the
 * filter refusing DM_OP, IRQFD and IOEVENTFD), but with no broker: there
 * is no guest yet, and Xen's own libxendevicemodel can do nothing through
 * the filter. Never returns. */
static void run_probe(const struct config *c, int argc, char **argv, int first)
    __attribute__((noreturn));
static void run_probe(const struct config *c, int argc, char **argv, int first)
{
    char **qargv;
    bool took;

    if (access(c->qemu, X_OK) < 0)
        fail(EX_CONFIG, "cannot execute QEMU at %s: %s", c->qemu, strerror(errno));
    took = take_over_qmp_listeners(argc, argv, first, c->ready_timeout_ms);
    confine();
    if (unsetenv("DMOP_BROKER_FD") < 0 || unsetenv("DMOP_BROKER_SOCKET") < 0)
        fail(EX_OSERR, "unsetenv: %s", strerror(errno));
    qargv = calloc((size_t)(argc - first + 2), sizeof *qargv);
    if (!qargv)
        fail(EX_OSERR, "out of memory");
    qargv[0] = (char *)c->qemu;
    for (int i = first; i < argc; i++)
        qargv[i - first + 1] = argv[i];
    note("libxl's option probe (-machine none, no -xen-domid): exec %s "
         "confined, without a broker%s", c->qemu,
         took ? "; QMP handed over as a connected socket" : "");
    execv(c->qemu, qargv);
    fail(126, "cannot exec %s: %s", c->qemu, strerror(errno));
}

/* ---------- the file-size limit for QEMU's display surface ---------- */

/* QEMU's console starts on a 640x480 placeholder surface, 4 bytes a pixel. */
#define PLACEHOLDER_SURFACE_BYTES (640ULL * 480 * 4)
/* What QEMU gives a display device whose size the argv does not set. */
#define DEFAULT_VRAM_MB 16ULL

/* The largest VRAM (MiB) a display device of QEMU's argv has: the sizes in
 * -device ...,vgamem_mb=N / vram_size_mb=N / ram_size_mb=N and -global
 * X.vgamem_mb=N; a -vga or display -device without one counts as QEMU's
 * default. 0 when QEMU has no display device. */
static unsigned long long display_vram_mb(int argc, char **argv, int first)
{
    unsigned long long best = 0;
    for (int i = first; i + 1 < argc; i++) {
        const char *opt = argv[i], *v = argv[i + 1];
        bool display = false, sized = false;
        if (opt[0] != '-')
            continue;
        opt += opt[1] == '-' ? 2 : 1;
        if (!strcmp(opt, "vga")) {
            if (strcmp(v, "none"))
                best = best > DEFAULT_VRAM_MB ? best : DEFAULT_VRAM_MB;
            i++;
            continue;
        }
        if (!strcmp(opt, "device")) {
            static const char *const displays[] = {
                "VGA", "cirrus-vga", "qxl-vga", "qxl", "secondary-vga",
                "bochs-display", "ati-vga", "virtio-vga", NULL,
            };
            size_t n = strcspn(v, ",");
            for (int d = 0; displays[d]; d++)
                if (strlen(displays[d]) == n && !strncmp(v, displays[d], n))
                    display = true;
        } else if (strcmp(opt, "global")) {
            continue;
        }
        for (const char *p = v; *p;) {
            size_t n = strcspn(p, ",");
            const char *eq = memchr(p, '=', n);
            if (eq) {
                size_t klen = (size_t)(eq - p);
                const char *key = p;
                const char *dot = memchr(p, '.', klen);
                if (dot) { /* -global DRIVER.PROP=VALUE */
                    klen -= (size_t)(dot + 1 - p);
                    key = dot + 1;
                }
                if ((klen == 9 && !strncmp(key, "vgamem_mb", 9)) ||
                    (klen == 12 && !strncmp(key, "vram_size_mb", 12)) ||
                    (klen == 11 && !strncmp(key, "ram_size_mb", 11))) {
                    char *end = NULL;
                    unsigned long long mb;
                    errno = 0;
                    mb = strtoull(eq + 1, &end, 10);
                    if (errno || end != p + n || mb > 1024)
                        fail(EX_USAGE, "display memory '%.*s' is not a size in MiB "
                             "up to 1024", (int)n, p);
                    best = best > mb ? best : mb;
                    sized = true;
                }
            }
            p += n + (p[n] == ',');
        }
        if (display && !sized)
            best = best > DEFAULT_VRAM_MB ? best : DEFAULT_VRAM_MB;
        i++;
    }
    return best;
}

/*
 * libxl limits a restricted device model's RLIMIT_FSIZE to 256 KiB, and
 * QEMU 10 backs each display surface with a memfd it ftruncates to the
 * surface's size, so it dies of SIGXFSZ on the first 640x480 placeholder.
 * The limit QEMU gets is the largest surface its display can ask for: the
 * placeholder, and with VRAM V, 4 bytes for each of at most 2V pixels (a
 * 4-bit VBE mode holds 2 pixels per byte of VRAM). It also bounds every
 * other file QEMU writes (its log, a serial file): larger than libxl's,
 * never unlimited. See dmop-qemu-wrapper(8).
 */
static unsigned long long display_file_size_limit(int argc, char **argv, int first)
{
    unsigned long long vram = display_vram_mb(argc, argv, first) << 20;
    unsigned long long need = vram * 2 * 4;
    return need > PLACEHOLDER_SURFACE_BYTES ? need : PLACEHOLDER_SURFACE_BYTES;
}

static void set_display_file_size_limit(int argc, char **argv, int first, long domid)
{
    struct rlimit rl;
    unsigned long long limit = display_file_size_limit(argc, argv, first);

    rl.rlim_cur = rl.rlim_max = (rlim_t)limit;
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
        fail(EX_OSERR, "setrlimit(RLIMIT_FSIZE, %llu) for QEMU's display "
             "surface: %s", limit, strerror(errno));
    note("domain %ld: RLIMIT_FSIZE %llu bytes (QEMU's largest display surface)",
         domid, limit);
}

/* QEMU 9 and later with -xen-domid-restrict exit with "Duplicate device ID
 * 'xen-vkbd-0'" when the guest has libxl's default PV keyboard. libxl
 * passes -run-with only to a QEMU that has it (9 and later). */
static void hint_vkbd(int argc, char **argv, int first, const struct qemu_args *q)
{
    bool run_with = false;
    for (int i = first; i < argc; i++)
        if (!strcmp(argv[i], "-run-with") || !strcmp(argv[i], "--run-with"))
            run_with = true;
    if (q->restricted && run_with)
        note("domain %ld: if QEMU exits with \"Duplicate device ID 'xen-vkbd-0'\", "
             "set vkb_device = 0 in the guest's xl.cfg (QEMU 9 and later with "
             "-xen-domid-restrict)", q->domid);
}

/* ---------- main ---------- */

int main(int argc, char **argv)
{
    struct config c;
    struct qemu_args q;
    const char *config_path;
    char fdtext[16], libfile[PATH_MAX];
    const char *old_ldpath;
    char *ldpath;
    int first, fd;
    char **qargv;
    struct stat st;

    memset(&c, 0, sizeof c);
    c.qemu = DEFAULT_QEMU;
    c.library_dir = DEFAULT_LIBRARY_DIR;
    c.ready_timeout_ms = DEFAULT_READY_TIMEOUT_MS;

    /* The version is answered even when the configuration is broken. */
    if (argc == 2 && !strcmp(argv[1], "--version")) {
        printf("dmop-qemu-wrapper %s\n", DMOP_BROKER_VERSION);
        return 0;
    }

    /* Configuration file first, then flags on top of it. */
    config_path = find_config_option(argc, argv);
    read_config(&c, config_path ? config_path : DEFAULT_CONFIG, config_path != NULL);
    first = parse_wrapper_options(&c, argc, argv, true);
    if (!c.broker)
        c.broker = default_broker();

    scan_qemu_args(argc, argv, first, &q);
    if (q.domid < 0 && asks_machine_none(argc, argv, first))
        run_probe(&c, argc, argv, first);
    if (q.domid < 0)
        fail(EX_USAGE, "no -xen-domid in QEMU's arguments: this wrapper serves "
             "Xen device models only (and libxl's -machine none probe)");
    if (!q.restricted) {
        if (!c.allow_unrestricted)
            fail(EX_USAGE, "QEMU's arguments lack -xen-domid-restrict (xl.cfg "
                 "dm_restrict=1). Without it QEMU keeps an unrestricted privcmd "
                 "and can make hypercalls the broker never sees; refusing to run "
                 "(allow-unrestricted = yes overrides this)");
        note("WARNING: running QEMU without -xen-domid-restrict because "
             "allow-unrestricted is set: QEMU's privcmd stays unrestricted and "
             "IOCTL_PRIVCMD_HYPERCALL is not filtered");
    }
    choose_per_guest(&c, &q);
    if (!c.audit)
        c.audit = default_audit();
    if (!c.policy)
        fail(EX_CONFIG, "no policy: set policy = FILE in %s or pass --policy",
             config_path ? config_path : DEFAULT_CONFIG);
    c.policy = find_policy(c.policy);
    snprintf(libfile, sizeof libfile, "%s/%s", c.library_dir, LIBRARY_SONAME);
    if (stat(libfile, &st) < 0 || !S_ISREG(st.st_mode))
        fail(EX_CONFIG, "%s is missing: without it QEMU would load Xen's own "
             "libxendevicemodel", libfile);
    if (access(c.qemu, X_OK) < 0)
        fail(EX_CONFIG, "cannot execute QEMU at %s: %s", c.qemu, strerror(errno));

    fd = start_broker(&c, &q);
    set_display_file_size_limit(argc, argv, first, q.domid);
    hint_vkbd(argc, argv, first, &q);
    confine();

    /* QEMU's end of the socket survives exec; the library adopts it and sets
     * close-on-exec again. */
    if (fcntl(fd, F_SETFD, 0) < 0)
        fail(EX_OSERR, "fcntl: %s", strerror(errno));
    snprintf(fdtext, sizeof fdtext, "%d", fd);
    if (setenv("DMOP_BROKER_FD", fdtext, 1) < 0 || unsetenv("DMOP_BROKER_SOCKET") < 0)
        fail(EX_OSERR, "setenv: %s", strerror(errno));
    old_ldpath = getenv("LD_LIBRARY_PATH");
    if (asprintf(&ldpath, "%s%s%s", c.library_dir,
                 old_ldpath && *old_ldpath ? ":" : "",
                 old_ldpath && *old_ldpath ? old_ldpath : "") < 0 ||
        setenv("LD_LIBRARY_PATH", ldpath, 1) < 0)
        fail(EX_OSERR, "setenv: %s", strerror(errno));

    qargv = calloc((size_t)(argc - first + 2), sizeof *qargv);
    if (!qargv)
        fail(EX_OSERR, "out of memory");
    qargv[0] = (char *)c.qemu;
    for (int i = first; i < argc; i++)
        qargv[i - first + 1] = argv[i];
    note("domain %ld: exec %s with DMOP_BROKER_FD=%d; privcmd DM_OP, IRQFD and "
         "IOEVENTFD ioctls are refused", q.domid, c.qemu, fd);
    execv(c.qemu, qargv);
    fail(126, "cannot exec %s: %s", c.qemu, strerror(errno));
}
