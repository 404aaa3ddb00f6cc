/* SPDX-License-Identifier: MIT */
/*
 * xentest.h - shared bits of the real-Xen fixtures (domain-fixture.c and
 * dmop-client.c): the result line format that scripts/xen-test parses, and
 * errno names for readable details.
 *
 * Every check prints exactly one line "TEST <name> PASS|FAIL <detail>".
 * Lines are flushed at once: the dom0 console is shared with the kernel and
 * with the other programs of the run, and a crash must not lose results.
 */
#ifndef XENTEST_H
#define XENTEST_H

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int xt_passed, xt_failed;

static const char *xt_errname(int e)
{
    if (e < 0)
        e = -e;
    switch (e) {
    case 0: return "0";
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case ESRCH: return "ESRCH";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case E2BIG: return "E2BIG";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case EACCES: return "EACCES";
    case EFAULT: return "EFAULT";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case ENODEV: return "ENODEV";
    case EINVAL: return "EINVAL";
    case ENOTTY: return "ENOTTY";
    case ENOSPC: return "ENOSPC";
    case ENOSYS: return "ENOSYS";
    case ENODATA: return "ENODATA";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    default: return "E?";
    }
}

/* One check: prints the TEST line and counts it. Returns ok. */
__attribute__((format(printf, 3, 4)))
static int xt_check(const char *name, int ok, const char *fmt, ...)
{
    char detail[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    /* A detail must stay on its line: the parser is line based. */
    for (char *p = detail; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    printf("TEST %s %s %s\n", name, ok ? "PASS" : "FAIL", detail);
    fflush(stdout);
    if (ok)
        xt_passed++;
    else
        xt_failed++;
    return ok;
}

#endif
