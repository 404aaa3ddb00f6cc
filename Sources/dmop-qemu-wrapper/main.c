/* SPDX-License-Identifier: MIT */
/*
 * dmop-qemu-wrapper: run an unmodified QEMU with every DMOP going through a
 * per-guest dmop-broker. Usable as xl.cfg device_model_override=: libxl
 * execs it with QEMU's full argv.
 *
 *  1. Read -xen-domid N from QEMU's argv; insist on -xen-domid-restrict
 *     (QEMU's own restriction, xl.cfg dm_restrict=1) unless told otherwise,
 *     and always on a user other than root for QEMU (-runas, -run-with
 *     user=) and a broker uid apart from every QEMU uid. A probe (libxl's
 *     -machine none, -help, -version ...) runs confined, without a broker.
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
#include <pwd.h>
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
#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
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
/* libxl's XEN_RUN_DIR: restrict = self makes QEMU's chroot there. */
#define DEFAULT_RUN_DIR      "/var/run/xen"
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
    /* The broker's --audit-log=..., %n and %d expanded; NULL for stderr. */
    char *audit_channel;
    /* policy.PATTERN / user.PATTERN: PATTERN is a glob on the guest's name
     * (QEMU's -name) or a domid; the first match in file order wins. */
    struct { const char *pattern, *value; enum { RULE_POLICY, RULE_USER, RULE_RESTRICT } kind; }
        rules[MAX_GUEST_RULES];
    /* restrict = self: the wrapper restricts QEMU as libxl's dm_restrict
     * would (toolstack: the toolstack does; the default). */
    bool restrict_self;
    const char *run_dir;
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
    } else if (!strcmp(key, "restrict")) {
        if (strcmp(value, "self") && strcmp(value, "toolstack")) {
            *why = "restrict must be toolstack or self";
            return false;
        }
        c->restrict_self = !strcmp(value, "self");
    } else if (!strcmp(key, "run-dir")) {
        if (value[0] != '/' || strchr(value, ',')) {
            *why = "run-dir must be an absolute path without commas";
            return false;
        }
        c->run_dir = value;
    } else if (!strncmp(key, "policy.", 7) || !strncmp(key, "user.", 5) ||
               !strncmp(key, "restrict.", 9)) {
        int kind = key[0] == 'p' ? RULE_POLICY : key[0] == 'u' ? RULE_USER : RULE_RESTRICT;
        const char *pattern = strchr(key, '.') + 1;
        if (!*pattern) {
            *why = "give a guest name pattern or #domid after the dot";
            return false;
        }
        if (pattern[0] == '#') {
            char *end = NULL;
            long domid;
            errno = 0;
            domid = strtol(pattern + 1, &end, 10);
            if (errno || end == pattern + 1 || *end || pattern[1] < '0' || pattern[1] > '9' ||
                domid < 1 || domid >= DOMID_FIRST_RESERVED) {
                *why = "#N must name a guest domain id from 1 to 32751";
                return false;
            }
        } else if (strspn(pattern, "0123456789") == strlen(pattern)) {
            /* Once a domid, now written #N: refused rather than silently
             * turned into a name pattern. */
            *why = "a domid is written #N (for example policy.#7); a guest "
                   "named with digits only is matched by [7] or similar";
            return false;
        }
        if (kind == RULE_RESTRICT && strcmp(value, "self") && strcmp(value, "toolstack")) {
            *why = "restrict must be toolstack or self";
            return false;
        }
        if (c->n_rules >= MAX_GUEST_RULES) {
            *why = "too many per-guest settings";
            return false;
        }
        c->rules[c->n_rules].pattern = pattern;
        c->rules[c->n_rules].value = value;
        c->rules[c->n_rules].kind = kind;
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

/* ---------- QEMU's option lists ---------- */

static char *copy_of(const char *s, size_t n)
{
    char *d = strndup(s, n);
    if (!d)
        fail(EX_OSERR, "out of memory");
    return d;
}

/* A value of a QEMU option list: up to the first ',' that is not doubled;
 * ",," stands for one comma. Returns where the value ends. */
static const char *read_list_value(const char *p, char **value)
{
    size_t n = 0;
    char *out = malloc(strlen(p) + 1);
    if (!out)
        fail(EX_OSERR, "out of memory");
    for (;;) {
        if (*p == ',' && p[1] == ',') {
            out[n++] = ',';
            p += 2;
        } else if (*p == 0 || *p == ',') {
            break;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = 0;
    *value = out;
    return p;
}

/*
 * One piece of a QEMU option list ("key=value,key=value"), read as QEMU's
 * util/qemu-option.c reads it: a key runs to the first '=' or ','; a first
 * piece with no '=' before its first ',' is the value of the option's
 * implied key when it has one (-name's guest=), otherwise a flag: KEY is
 * KEY=on, noKEY is KEY=off. *implied tells which. Returns the next piece.
 */
static const char *next_list_piece(const char *p, const char *implied_key,
                                   char **key, char **value, bool *implied)
{
    size_t len = strcspn(p, "=,");
    *implied = false;
    if (p[len] == '=') {
        *key = copy_of(p, len);
        p = read_list_value(p + len + 1, value);
    } else if (implied_key) {
        *key = copy_of(implied_key, strlen(implied_key));
        *implied = true;
        p = read_list_value(p, value);
    } else {
        bool off = !strncmp(p, "no", 2);
        *key = copy_of(p + (off ? 2 : 0), len - (off ? 2 : 0));
        *value = copy_of(off ? "off" : "on", off ? 3 : 2);
        p += len;
    }
    return *p == ',' ? p + 1 : p;
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

/* -runas and -run-with user= values, at most this many. */
#define MAX_QEMU_USERS 16

struct qemu_args {
    long domid;            /* -1 when absent */
    bool restricted;
    /* The guest's name as QEMU reads -name (the last guest= of them all),
     * exactly; NULL or "" when QEMU is not given one. */
    char *name;
    bool named;
    /* Each user QEMU is told to drop to, with the option that said so:
     * QEMU takes the last, the wrapper checks them all. */
    const char *users[MAX_QEMU_USERS];
    const char *user_options[MAX_QEMU_USERS];
    int n_users;
    /* An option that only asks QEMU to print something (-help, -version,
     * -device help ...). */
    bool asks_for_help;
};

static void add_qemu_user(struct qemu_args *q, const char *option, const char *user)
{
    if (q->n_users >= MAX_QEMU_USERS)
        fail(EX_USAGE, "QEMU is told to change user more than %d times; refusing "
             "to guess which user it ends as", MAX_QEMU_USERS);
    q->users[q->n_users] = user;
    q->user_options[q->n_users] = option;
    q->n_users++;
}

/* -run-with async-teardown=on,chroot=DIR,user=USER (QEMU 9 and later):
 * QEMU takes each key's last value; every user= counts. */
static void read_run_with(struct qemu_args *q, const char *v)
{
    for (const char *p = v; *p;) {
        char *key, *value;
        bool implied;
        p = next_list_piece(p, NULL, &key, &value, &implied);
        if (!strcmp(key, "user"))
            add_qemu_user(q, "-run-with user=", value);
        else
            free(value);
        free(key);
    }
}

/*
 * -name NAME, -name guest=NAME,debug-threads=on, read as QEMU reads it
 * (",," is a comma of the name). libxl passes a domain's name as it is,
 * commas and all: "web,debug-threads=on" is to QEMU the guest "web". A bare
 * name followed by more keys is therefore refused rather than guessed at:
 * it is what libxl makes of a domain whose name has a comma in it.
 */
static void read_name(struct qemu_args *q, const char *v)
{
    bool first = true, bare = false;
    int pieces = 0;
    char *unknown = NULL;
    for (const char *p = v; *p; first = false) {
        char *key, *value;
        bool implied;
        p = next_list_piece(p, first ? "guest" : NULL, &key, &value, &implied);
        bare = bare || implied;
        pieces++;
        if (!strcmp(key, "guest")) {
            free(q->name);
            q->name = value;
        } else if (!strcmp(key, "process") || !strcmp(key, "debug-threads")) {
            free(value);
        } else {
            free(value);
            if (!unknown)
                unknown = key;
            else
                free(key);
            continue;
        }
        free(key);
    }
    if (bare && pieces > 1)
        fail(EX_USAGE, "-name '%s' is ambiguous: QEMU takes the guest's name to end "
             "at its first comma, and libxl passes a domain's name unescaped; "
             "refusing to guess (a toolstack gives -name guest=NAME,... with "
             "commas in NAME doubled)", v);
    if (unknown)
        fail(EX_USAGE, "-name '%s': QEMU's -name has no setting '%s' (guest=, "
             "process=, debug-threads=); if that is the domain's name, commas "
             "in it must be doubled", v, unknown);
    q->named = q->name && q->name[0];
}

/* Does this option only ask QEMU for its help on the value's kind:
 * -device help, -machine ?, -cpu help, -device e1000,help ...? */
static bool asks_value_help(const char *opt, const char *v)
{
    static const char *const listing[] = {
        "machine", "M", "device", "cpu", "accel", "audiodev", "display",
        "netdev", "nic", "object", "chardev", "vga", "global", NULL,
    };
    bool known = false;
    for (int k = 0; listing[k]; k++)
        known = known || !strcmp(opt, listing[k]);
    if (!known)
        return false;
    for (const char *p = v; *p;) {
        size_t n = strcspn(p, ",");
        if ((n == 4 && !strncmp(p, "help", 4)) || (n == 1 && *p == '?'))
            return true;
        p += n + (p[n] == ',');
    }
    return false;
}

static void scan_qemu_args(int argc, char **argv, int first, struct qemu_args *q)
{
    memset(q, 0, sizeof *q);
    q->domid = -1;
    for (int i = first; i < argc; i++) {
        const char *a = argv[i], *opt, *v;
        if (a[0] != '-' || a[1] == 0)
            continue;           /* a positional argument (disk image) */
        opt = a + 1;
        if (*opt == '-')
            opt++;              /* QEMU takes --opt as -opt */
        if (!strcmp(opt, "xen-domid-restrict")) {
            q->restricted = true;
            continue;
        }
        if (!strcmp(opt, "h") || !strcmp(opt, "help") || !strcmp(opt, "version") ||
            !strcmp(opt, "audio-help"))
            q->asks_for_help = true;
        if (is_flag(opt))
            continue;
        v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(opt, "xen-domid")) {
            char *end = NULL;
            long n;
            if (!v)
                fail(EX_USAGE, "-xen-domid needs a value");
            if (q->domid >= 0)
                fail(EX_USAGE, "-xen-domid is given twice; refusing to guess "
                     "which domain QEMU serves");
            errno = 0;
            n = strtol(v, &end, 10);
            if (errno || end == v || *end || n < 1 || n >= DOMID_FIRST_RESERVED)
                fail(EX_USAGE, "-xen-domid %s is not a guest domain id "
                     "(1..%u)", v, DOMID_FIRST_RESERVED - 1);
            q->domid = n;
        } else if (!v) {
            /* QEMU refuses an option without its value */
        } else if (!strcmp(opt, "name")) {
            read_name(q, v);
        } else if (!strcmp(opt, "runas")) {
            add_qemu_user(q, "-runas", v);
        } else if (!strcmp(opt, "run-with")) {
            read_run_with(q, v);
        } else if (asks_value_help(opt, v)) {
            q->asks_for_help = true;
        }
        i++;                    /* skip the option's value */
    }
}

/* ---------- QEMU's user ---------- */

/*
 * The uid and gid QEMU takes USER to mean, as QEMU's os_set_runas() does:
 * a user name in the password database first, else UID:GID. The numbers
 * are read in C's notations (QEMU's qemu_strtoul, base 0) but only plain
 * digits are taken: a sign or a space QEMU might read differently is
 * refused rather than guessed. False when QEMU would not accept USER.
 */
static bool resolve_qemu_user(const char *user, uid_t *uid, gid_t *gid)
{
    struct passwd *pw;
    const char *colon = strchr(user, ':');
    char *end;
    unsigned long u, g;

    errno = 0;
    pw = getpwnam(user);
    if (pw) {
        *uid = pw->pw_uid;
        *gid = pw->pw_gid;
        return true;
    }
    if (!colon || colon == user || !colon[1] || user[0] < '0' || user[0] > '9' ||
        colon[1] < '0' || colon[1] > '9')
        return false;
    errno = 0;
    u = strtoul(user, &end, 0);
    if (errno || end != colon || u >= (uid_t)-1)
        return false;
    g = strtoul(colon + 1, &end, 0);
    if (errno || *end || g >= (gid_t)-1)
        return false;
    *uid = (uid_t)u;
    *gid = (gid_t)g;
    return true;
}

/*
 * QEMU must stop being root: with root's uid (or group) it could open a
 * fresh /dev/xen/privcmd after start-up and issue any hypercall, going
 * around the broker. Every user QEMU's arguments name must resolve to a
 * uid and a gid other than 0, and there must be one. Sets *qemu_uid to
 * the one QEMU ends as (the last). Refuses whatever allow-unrestricted says.
 */
static void require_unprivileged_qemu(const struct qemu_args *q, uid_t *qemu_uid)
{
    if (q->n_users == 0)
        fail(EX_USAGE, "QEMU's arguments name no user to run as (-runas USER or "
             "-run-with user=USER; xl.cfg dm_restrict=1 or device_model_user): "
             "as root QEMU could reopen privcmd and make hypercalls the broker "
             "never sees; refusing to run it");
    for (int i = 0; i < q->n_users; i++) {
        uid_t uid;
        gid_t gid;
        if (!resolve_qemu_user(q->users[i], &uid, &gid))
            fail(EX_USAGE, "%s%s%s: no such user, and not UID:GID; refusing to run "
                 "QEMU", q->user_options[i],
                 !strcmp(q->user_options[i], "-runas") ? " " : "", q->users[i]);
        if (uid == 0 || gid == 0)
            fail(EX_USAGE, "%s%s%s is root (uid %u, gid %u): QEMU must run as a user "
                 "other than root; refusing to run it", q->user_options[i],
                 !strcmp(q->user_options[i], "-runas") ? " " : "", q->users[i],
                 (unsigned)uid, (unsigned)gid);
        *qemu_uid = uid;
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

/* policy.PATTERN, user.PATTERN and restrict.PATTERN: for each, the first
 * that names this guest. */
static void choose_per_guest(struct config *c, const struct qemu_args *q)
{
    bool policy_set = false, user_set = false, restrict_set = false;
    for (int i = 0; i < c->n_rules; i++) {
        const char *pattern = c->rules[i].pattern;
        /* #N names domid N; anything else is a glob on the whole name, so a
         * guest called "7" never takes domain 7's rules. */
        bool matches = pattern[0] == '#' ? strtol(pattern + 1, NULL, 10) == q->domid
                                         : q->named && fnmatch(pattern, q->name, 0) == 0;
        if (!matches)
            continue;
        if (c->rules[i].kind == RULE_POLICY && !policy_set) {
            c->policy = c->rules[i].value;
            policy_set = true;
        } else if (c->rules[i].kind == RULE_USER && !user_set) {
            c->user = c->rules[i].value;
            user_set = true;
        } else if (c->rules[i].kind == RULE_RESTRICT && !restrict_set) {
            c->restrict_self = !strcmp(c->rules[i].value, "self");
            restrict_set = true;
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
 * No audit setting: the journal when journald receives on its socket (it
 * rotates and bounds its files by itself); else, when the package's
 * /var/log/dmop-broker exists, a file there per guest, which
 * /etc/logrotate.d/dmop-broker rotates; else, when stderr is a file
 * (libxl's qemu-dm-NAME.log, which QEMU holds and can rewrite), a file of the
 * broker's own next to it; otherwise stderr (a terminal, a pipe, a test).
 * dmop-qemu-wrapper(8) says the same.
 */
static const char *default_audit(void)
{
    static const char journal_socket[] = "/run/systemd/journal/socket";
    static const char audit_directory[] = "/var/log/dmop-broker";
    static char path[PATH_MAX];
    char log[PATH_MAX];
    struct stat st;
    ssize_t n;
    char *slash;
    struct sockaddr_un journal = { .sun_family = AF_UNIX };
    int probe;

    /* A socket file outlives its daemon: only a connect says it listens. */
    if (stat(journal_socket, &st) == 0 && S_ISSOCK(st.st_mode)) {
        _Static_assert(sizeof journal_socket <= sizeof journal.sun_path, "journal socket path");
        memcpy(journal.sun_path, journal_socket, sizeof journal_socket);
        probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            int connected = connect(probe, (const struct sockaddr *)&journal, sizeof journal);
            close(probe);
            if (connected == 0)
                return "journal";
        }
    }
    if (stat(audit_directory, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(path, sizeof path, "%s/%%n.log", audit_directory);
        return path;
    }
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

/* ---------- audit file names ---------- */

/* SHA-256 (FIPS 180-4), for the suffix that keeps shortened names apart. */
static const uint32_t sha256_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha256_block(uint32_t h[8], const unsigned char *b)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 |
               (uint32_t)b[4 * i + 2] << 8 | b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(v, h, sizeof v);
    for (int i = 0; i < 64; i++) {
        uint32_t s1 = ror32(v[4], 6) ^ ror32(v[4], 11) ^ ror32(v[4], 25);
        uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        uint32_t t1 = v[7] + s1 + ch + sha256_k[i] + w[i];
        uint32_t s0 = ror32(v[0], 2) ^ ror32(v[0], 13) ^ ror32(v[0], 22);
        uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        memmove(v + 1, v, 7 * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + s0 + maj;
    }
    for (int i = 0; i < 8; i++)
        h[i] += v[i];
}

static void sha256(const void *data, size_t len, unsigned char out[32])
{
    uint32_t h[8] = { 0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                      0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19 };
    const unsigned char *p = data;
    unsigned char tail[128] = { 0 };
    size_t rest = len % 64, tail_len = rest < 56 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;

    for (size_t off = 0; off + 64 <= len; off += 64)
        sha256_block(h, p + off);
    memcpy(tail, p + len - rest, rest);
    tail[rest] = 0x80;
    for (int i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t off = 0; off < tail_len; off += 64)
        sha256_block(h, tail + off);
    for (int i = 0; i < 32; i++)
        out[i] = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
}

/*
 * The guest's name as one file name component, one to one: bytes outside
 * [A-Za-z0-9._+,=@:-] become %XX (so do '%', '/' and '~', and a leading
 * '.', so that no name gives "." or ".." or a hidden file), and a name
 * spelled like an unnamed guest's "domain-N" gets its '-' encoded.
 */
static char *encode_name(const char *name)
{
    static const char safe[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                               "0123456789._+,=@:-";
    size_t n = strlen(name), o = 0;
    bool like_unnamed = !strncmp(name, "domain-", 7) && name[7] &&
                        strspn(name + 7, "0123456789") == n - 7;
    char *out = malloc(3 * n + 1);
    if (!out)
        fail(EX_OSERR, "out of memory");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)name[i];
        if (ch && strchr(safe, ch) && !(i == 0 && ch == '.') && !(like_unnamed && i == 6))
            out[o++] = (char)ch;
        else
            o += (size_t)sprintf(out + o, "%%%02X", ch);
    }
    out[o] = 0;
    return out;
}

/* A component of at most ROOM bytes for the name: its encoding when that
 * fits, else the encoding's start (never half a %XX), '~' and 32 hex
 * digits of the name's SHA-256 ('~' is never in an encoding: shortened
 * names cannot meet whole ones). NULL when ROOM cannot hold the suffix. */
static char *shorten_name(const char *name, const char *encoded, size_t room)
{
    unsigned char digest[32];
    size_t keep;
    char *out;

    if (strlen(encoded) <= room)
        return copy_of(encoded, strlen(encoded));
    if (room < 1 + 33)
        return NULL;
    keep = room - 33;
    for (size_t i = 0; i < keep; i++)
        if (encoded[i] == '%' && i + 3 > keep) {
            keep = i;
            break;
        } else if (encoded[i] == '%') {
            i += 2;
        }
    sha256(name, strlen(name), digest);
    out = malloc(keep + 34);
    if (!out)
        fail(EX_OSERR, "out of memory");
    memcpy(out, encoded, keep);
    out[keep] = '~';
    for (int i = 0; i < 16; i++)
        sprintf(out + keep + 1 + 2 * i, "%02x", digest[i]);
    return out;
}

/*
 * audit's %n (the guest's name, encoded; "domain-N" without one) and %d
 * (domid). Each path component stays within NAME_MAX: the name is
 * shortened with a hash suffix to fit the tightest component it is in.
 * Refuses with one line a FILE whose own text leaves no room.
 */
static const char *expand_audit(const char *spec, const struct qemu_args *q)
{
    static char out[PATH_MAX];
    char domid[16], *encoded, *piece;
    size_t room = NAME_MAX, n = 0;

    snprintf(domid, sizeof domid, "%ld", q->domid);
    if (q->named) {
        encoded = encode_name(q->name);
    } else if (asprintf(&encoded, "domain-%ld", q->domid) < 0) {
        fail(EX_OSERR, "out of memory");
    }
    /* The room of the tightest component holding %n: NAME_MAX less the
     * rest of that component's text once expanded. */
    for (const char *c = spec; *c;) {
        size_t len = strcspn(c, "/"), fixed = 0;
        int names = 0;
        for (size_t i = 0; i < len; i++) {
            if (c[i] == '%' && i + 1 < len && (c[i + 1] == 'n' || c[i + 1] == 'd')) {
                if (c[i + 1] == 'n')
                    names++;
                else
                    fixed += strlen(domid);
                i++;
            } else {
                fixed++;
            }
        }
        if (names) {
            size_t r = fixed >= NAME_MAX ? 0 : (NAME_MAX - fixed) / (size_t)names;
            room = r < room ? r : room;
        } else if (fixed > NAME_MAX) {
            fail(EX_CONFIG, "audit %s: a component of the path is longer than %d "
                 "bytes", spec, NAME_MAX);
        }
        c += len + (c[len] == '/');
    }
    piece = q->named ? shorten_name(q->name, encoded, room)
                     : copy_of(encoded, strlen(encoded));
    if (!piece || strlen(piece) > room)
        fail(EX_CONFIG, "audit %s: no room for the guest's name within the %d "
             "bytes a file name may have", spec, NAME_MAX);
    for (const char *p = spec; *p; p++) {
        const char *add = NULL;
        char one[2] = { *p, 0 };
        if (p[0] == '%' && (p[1] == 'n' || p[1] == 'd')) {
            add = p[1] == 'n' ? piece : domid;
            p++;
        } else {
            add = one;
        }
        if (n + strlen(add) >= sizeof out)
            fail(EX_CONFIG, "audit %s: the path is too long for the guest's name", spec);
        memcpy(out + n, add, strlen(add));
        n += strlen(add);
    }
    out[n] = 0;
    free(encoded);
    free(piece);
    return out;
}

/* ---------- the broker's user ---------- */

/* The uid the broker's --user names, read as the broker reads it (a user
 * name, or UID:GID in decimal). False when it cannot tell: the broker then
 * refuses the user itself and says why. */
static bool broker_uid(const char *user, uid_t *uid)
{
    const char *colon = strchr(user, ':');
    struct passwd *pw;
    if (colon) {
        char *end = NULL;
        unsigned long u;
        if (user[0] < '0' || user[0] > '9')
            return false;
        errno = 0;
        u = strtoul(user, &end, 10);
        if (errno || end != colon || u >= (uid_t)-1)
            return false;
        *uid = (uid_t)u;
        return true;
    }
    pw = getpwnam(user);
    if (!pw)
        return false;
    *uid = pw->pw_uid;
    return true;
}

/*
 * A QEMU that shares its broker's uid can signal it (SIGSTOP, SIGKILL): the
 * broker must have a uid of its own, apart from this QEMU's user and from
 * the uids libxl gives QEMUs: xen-qemuuser-range-base's uid + domid for
 * every domid (another guest's QEMU), xen-qemuuser-shared, and the reaper
 * libxl kills a QEMU's uid with (xen-qemuuser-reaper, else the range base).
 */
static void require_separate_broker_uid(const struct config *c, const struct qemu_args *q,
                                        uid_t qemu_uid)
{
    static const char *const shared[] = { "xen-qemuuser-shared", "xen-qemuuser-reaper", NULL };
    struct passwd *pw;
    uid_t b;

    if (!c->user || !broker_uid(c->user, &b))
        return;
    if (b == qemu_uid)
        fail(EX_CONFIG, "domain %ld: the broker's user %s is uid %u, the user QEMU "
             "runs as (%s%s%s): QEMU could stop or kill its broker; give the broker "
             "a user of its own", q->domid, c->user, (unsigned)b,
             q->user_options[q->n_users - 1],
             !strcmp(q->user_options[q->n_users - 1], "-runas") ? " " : "",
             q->users[q->n_users - 1]);
    pw = getpwnam("xen-qemuuser-range-base");
    if (pw && b >= pw->pw_uid && b - pw->pw_uid < DOMID_FIRST_RESERVED)
        fail(EX_CONFIG, "domain %ld: the broker's user %s is uid %u, in libxl's range "
             "of QEMU uids (xen-qemuuser-range-base %u + domid, up to %u): it is "
             "the QEMU uid of domain %u; give brokers uids outside that range",
             q->domid, c->user, (unsigned)b, (unsigned)pw->pw_uid,
             (unsigned)pw->pw_uid + DOMID_FIRST_RESERVED - 1, (unsigned)(b - pw->pw_uid));
    for (int i = 0; shared[i]; i++) {
        pw = getpwnam(shared[i]);
        if (pw && pw->pw_uid == b)
            fail(EX_CONFIG, "domain %ld: the broker's user %s is uid %u, the uid of "
                 "libxl's %s: QEMUs could stop or kill the broker; give the broker "
                 "a user of its own", q->domid, c->user, (unsigned)b, shared[i]);
    }
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
    char dom[16], sfd[8], rfd[8], *guest_name = NULL;
    int i = 0, s, r;

    if (q->named && asprintf(&guest_name, "--guest-name=%s", q->name) < 0)
        _exit(EX_OSERR);

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
    /* --option=VALUE: a name or path that starts with '-' stays a value. */
    if (c->audit_channel)
        argv[i++] = c->audit_channel;
    if (guest_name)
        argv[i++] = guest_name;
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

/*
 * A probe: libxl's -machine none run, or a question such as -help,
 * -version or -device help (libvirt, XAPI). QEMU runs with its arguments
 * unchanged, confined exactly as for a guest (no_new_privs, the filter
 * refusing DM_OP, IRQFD and IOEVENTFD), but with no broker: there is no
 * guest, and Xen's own libxendevicemodel can do nothing through the
 * filter. It stays the user the toolstack ran it as, root under libxl:
 * libxl's probe needs root to open Xen's devices for accel=xen, and no
 * guest's input reaches a QEMU that serves no guest and exits once it has
 * answered. QUIET: not a word of the wrapper's, so QEMU's output is all
 * there is. Never returns.
 */
static void run_probe(const struct config *c, int argc, char **argv, int first, bool quiet)
    __attribute__((noreturn));
static void run_probe(const struct config *c, int argc, char **argv, int first, bool quiet)
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
    if (!quiet)
        note("libxl's option probe (-machine none, no -xen-domid): exec %s "
             "confined, without a broker%s", c->qemu,
             took ? "; QMP handed over as a connected socket" : "");
    execv(c->qemu, qargv);
    fail(126, "cannot exec %s: %s", c->qemu, strerror(errno));
}

/* ---------- restrict = self ---------- */

/* QEMU's version from `QEMU -version` ("QEMU emulator version 7.2.19 ..."),
 * asked of QEMU run confined as a probe. */
static void qemu_version(const char *qemu, int *major, int *minor)
{
    int out[2], status;
    char text[512];
    size_t got = 0;
    ssize_t n;
    const char *v;
    pid_t pid;

    if (pipe2(out, O_CLOEXEC) < 0)
        fail(EX_OSERR, "pipe: %s", strerror(errno));
    pid = fork();
    if (pid < 0)
        fail(EX_OSERR, "fork: %s", strerror(errno));
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        if (null < 0 || dup2(null, 0) < 0 || dup2(out[1], 1) < 0)
            _exit(EX_OSERR);
        confine();
        execl(qemu, qemu, "-version", (char *)NULL);
        _exit(126);
    }
    close(out[1]);
    while (got + 1 < sizeof text &&
           ((n = read(out[0], text + got, sizeof text - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
        if (n > 0)
            got += (size_t)n;
    text[got] = 0;
    close(out[0]);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
        ;
    v = strstr(text, "version ");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !v ||
        sscanf(v + 8, "%d.%d", major, minor) != 2)
        fail(EX_CONFIG, "restrict = self: %s -version did not say QEMU's version, so "
             "the wrapper cannot tell -run-with from -chroot and -runas", qemu);
}

/*
 * The user libxl's dm_restrict gives QEMU (libxl_dm.c): uid of
 * xen-qemuuser-range-base + domid with that user's gid, if no account has
 * that uid; else xen-qemuuser-shared; never root.
 */
static char *libxl_qemu_user(long domid)
{
    struct passwd *pw = getpwnam("xen-qemuuser-range-base");
    char *user;

    if (pw) {
        unsigned long uid = (unsigned long)pw->pw_uid + (unsigned long)domid;
        gid_t gid = pw->pw_gid;
        struct passwd *clash;
        if (uid >= (uid_t)-1)
            fail(EX_CONFIG, "restrict = self: xen-qemuuser-range-base's uid + %ld is "
                 "past the last uid", domid);
        clash = getpwuid((uid_t)uid);
        if (clash)
            fail(EX_CONFIG, "restrict = self: QEMU's uid would be %lu "
                 "(xen-qemuuser-range-base + %ld), but that is user %s", uid, domid,
                 clash->pw_name);
        if (uid == 0 || gid == 0)
            fail(EX_CONFIG, "restrict = self: xen-qemuuser-range-base + %ld is root",
                 domid);
        if (asprintf(&user, "%lu:%lu", uid, (unsigned long)gid) < 0)
            fail(EX_OSERR, "out of memory");
        return user;
    }
    pw = getpwnam("xen-qemuuser-shared");
    if (!pw)
        fail(EX_CONFIG, "restrict = self: neither xen-qemuuser-range-base nor "
             "xen-qemuuser-shared exists, so QEMU has no user to run as; create "
             "one as for xl.cfg dm_restrict");
    if (pw->pw_uid == 0 || pw->pw_gid == 0)
        fail(EX_CONFIG, "restrict = self: xen-qemuuser-shared is root");
    return copy_of("xen-qemuuser-shared", 19);
}

/*
 * restrict = self, for a toolstack that does not restrict QEMU: the
 * arguments libxl's dm_restrict adds (-xen-domid-restrict, an empty
 * per-domid chroot made as libxl makes it, QEMU's user), in the form this
 * QEMU takes: -run-with chroot= from QEMU 8.1, -run-with user= from 9.1,
 * else -chroot and -runas. Refuses arguments that already restrict QEMU
 * (the toolstack does it: restrict = toolstack). Returns the new argv,
 * argv[0] first and QEMU's arguments from 1.
 */
static char **self_restrict_arguments(const struct config *c, const struct qemu_args *q,
                                      int argc, char **argv, int first, int *new_argc)
{
    int major, minor, n = 0;
    bool run_with_chroot, run_with_user;
    char *dir, *user, **out;

    for (int i = first; i < argc; i++) {
        const char *opt = argv[i] + (argv[i][0] == '-' && argv[i][1] == '-' ? 2 : 1);
        if (argv[i][0] == '-' && (!strcmp(opt, "chroot") || !strcmp(opt, "run-with")))
            fail(EX_USAGE, "restrict = self for domain %ld, but QEMU's arguments "
                 "already have %s: the toolstack restricts this QEMU (restrict = "
                 "toolstack)", q->domid, argv[i]);
    }
    if (q->restricted || q->n_users)
        fail(EX_USAGE, "restrict = self for domain %ld, but QEMU's arguments already "
             "have %s: the toolstack restricts this QEMU (restrict = toolstack)",
             q->domid, q->restricted ? "-xen-domid-restrict" : q->user_options[0]);

    qemu_version(c->qemu, &major, &minor);
    run_with_chroot = major > 8 || (major == 8 && minor >= 1);
    run_with_user = major > 9 || (major == 9 && minor >= 1);
    user = libxl_qemu_user(q->domid);

    /* An old chroot should be empty (QEMU could not write to it): rmdir,
     * and a failure other than "not there" stops the start, as in libxl. */
    if (asprintf(&dir, "%s/qemu-root-%ld", c->run_dir ? c->run_dir : DEFAULT_RUN_DIR,
                 q->domid) < 0)
        fail(EX_OSERR, "out of memory");
    if (rmdir(dir) < 0 && errno != ENOENT)
        fail(EX_OSERR, "restrict = self: cannot remove the old chroot %s: %s", dir,
             strerror(errno));
    while (mkdir(dir, 0000) < 0)
        if (errno != EINTR)
            fail(EX_OSERR, "restrict = self: cannot create the chroot %s: %s", dir,
                 strerror(errno));

    out = calloc((size_t)(argc - first + 8), sizeof *out);
    if (!out)
        fail(EX_OSERR, "out of memory");
    out[n++] = argv[0];
    for (int i = first; i < argc; i++)
        out[n++] = argv[i];
    out[n++] = "-xen-domid-restrict";
    if (run_with_chroot) {
        out[n++] = "-run-with";
        if (asprintf(&out[n++], "chroot=%s", dir) < 0)
            fail(EX_OSERR, "out of memory");
    } else {
        out[n++] = "-chroot";
        out[n++] = dir;
    }
    if (run_with_user) {
        out[n++] = "-run-with";
        /* A user given as UID:GID or a name has no comma to double. */
        if (asprintf(&out[n++], "user=%s", user) < 0)
            fail(EX_OSERR, "out of memory");
    } else {
        out[n++] = "-runas";
        out[n++] = user;
    }
    *new_argc = n;
    note("domain %ld: restrict = self: QEMU %d.%d gets -xen-domid-restrict, %s%s and %s%s, "
         "its own mount and IPC namespaces and libxl's rlimits", q->domid, major,
         minor, run_with_chroot ? "-run-with chroot=" : "-chroot ", dir,
         run_with_user ? "-run-with user=" : "-runas ", user);
    return out;
}

/* What libxl's libxl__local_dm_preexec_restrict (libxl_linux.c) does for a
 * restricted device model: its own mount and IPC namespaces (unused by
 * QEMU), no core files, POSIX message queues, file locks or locked memory.
 * libxl's RLIMIT_FSIZE of 256 KiB is the display's limit instead (see
 * set_display_file_size_limit). Done after the broker has started, so the
 * broker keeps the host's namespaces. */
static void self_restrict_process(long domid)
{
    static const struct { int resource; const char *name; } zero[] = {
        { RLIMIT_CORE, "RLIMIT_CORE" }, { RLIMIT_MSGQUEUE, "RLIMIT_MSGQUEUE" },
        { RLIMIT_LOCKS, "RLIMIT_LOCKS" }, { RLIMIT_MEMLOCK, "RLIMIT_MEMLOCK" },
    };
    if (unshare(CLONE_NEWNS | CLONE_NEWIPC) < 0)
        fail(EX_OSERR, "domain %ld: unshare of the mount and IPC namespaces: %s", domid,
             strerror(errno));
    for (size_t i = 0; i < sizeof zero / sizeof zero[0]; i++) {
        struct rlimit none = { 0, 0 };
        if (setrlimit(zero[i].resource, &none) < 0)
            fail(EX_OSERR, "domain %ld: setrlimit(%s, 0): %s", domid, zero[i].name,
                 strerror(errno));
    }
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
    uid_t qemu_uid = 0;

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
        run_probe(&c, argc, argv, first, false);
    if (q.domid < 0 && q.asks_for_help)
        run_probe(&c, argc, argv, first, true);
    if (q.domid < 0)
        fail(EX_USAGE, "no -xen-domid in QEMU's arguments: this wrapper serves "
             "Xen device models only (and probes: libxl's -machine none, -help, "
             "-version, -device help ...)");
    choose_per_guest(&c, &q);
    if (c.restrict_self) {
        /* QEMU's arguments from here on are the ones with libxl's
         * restriction added; read again, they pass the checks below. */
        int n;
        char **restricted;
        if (access(c.qemu, X_OK) < 0)
            fail(EX_CONFIG, "cannot execute QEMU at %s: %s", c.qemu, strerror(errno));
        restricted = self_restrict_arguments(&c, &q, argc, argv, first, &n);
        argv = restricted;
        argc = n;
        first = 1;
        free(q.name);
        scan_qemu_args(argc, argv, first, &q);
        choose_per_guest(&c, &q);
    }
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
    require_unprivileged_qemu(&q, &qemu_uid);
    require_separate_broker_uid(&c, &q, qemu_uid);
    if (!c.audit)
        c.audit = default_audit();
    /* The broker opens a FILE itself, before it drops privileges: QEMU
     * never holds it (stderr is QEMU's log, which QEMU can rewrite). */
    if (c.audit && strcmp(c.audit, "stderr") != 0 &&
        asprintf(&c.audit_channel, "--audit-log=%s", expand_audit(c.audit, &q)) < 0)
        fail(EX_OSERR, "out of memory");
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
    if (c.restrict_self)
        self_restrict_process(q.domid);
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
