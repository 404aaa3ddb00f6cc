/* SPDX-License-Identifier: MIT */
/*
 * posted.c: the drop-in library's posting (protocol 2) against a real
 * dmop-broker on the simulated hypervisor, through Xen's own
 * <xendevicemodel.h>:
 *   - several threads interleave posted interrupt calls with synchronous
 *     calls; each posted call returns 0 at once, and the simulated record
 *     holds every call, each thread's in its own order;
 *   - a posted call the policy refuses is logged by the library, and the
 *     next call that waits returns its own result;
 *   - a posted call for another domid fails at once, as privcmd would;
 *   - DMOP_POSTED=0 turns posting off: the refusal comes back at once.
 * Usage: posted BROKER POLICY WORKDIR (POLICY: Tests/clib/posted.policy).
 */
#include "clib_common.h"  /* first: it defines _GNU_SOURCE */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <xen/xen.h>
#include <xen/hvm/dm_op.h>
#include <xendevicemodel.h>

#define DOMID 5
#define THREADS 3
#define ROUNDS 2000

static const char *broker, *policy, *workdir;
static char record[4096];
static xendevicemodel_handle *shared;

/* Each thread's calls, in the order it made them (op numbers). */
static uint32_t sequence[THREADS][ROUNDS];
/* Each thread's posted op and synchronous op: distinct across threads, so
 * the record can be split by thread. */
static const uint32_t posted_op[THREADS] = {
    XEN_DMOP_set_isa_irq_level, XEN_DMOP_set_pci_intx_level, XEN_DMOP_inject_msi };
static const uint32_t sync_op[THREADS] = {
    XEN_DMOP_nr_vcpus, XEN_DMOP_set_pci_link_route, XEN_DMOP_track_dirty_vram };

static void *worker(void *arg)
{
    unsigned t = (unsigned)(uintptr_t)arg;
    unsigned long bitmap[1];
    unsigned int vcpus;
    int rc;

    for (int k = 0; k < ROUNDS; k++) {
        bool sync = k % 10 == 9;
        if (sync) {
            switch (t) {
            case 0: rc = xendevicemodel_nr_vcpus(shared, DOMID, &vcpus); break;
            case 1: rc = xendevicemodel_set_pci_link_route(shared, DOMID, 1, 5); break;
            default: rc = xendevicemodel_track_dirty_vram(shared, DOMID, 0x1000 + (uint64_t)k, 64, bitmap); break;
            }
        } else {
            switch (t) {
            case 0: rc = xendevicemodel_set_isa_irq_level(shared, DOMID, (uint8_t)(k % 16), k & 1); break;
            case 1: rc = xendevicemodel_set_pci_intx_level(shared, DOMID, 0, 0, 3, 0, k & 1); break;
            default: rc = xendevicemodel_inject_msi(shared, DOMID, 0xfee00000, 0x4041); break;
            }
        }
        CHECK(rc == 0, "thread %u call %d (%s): rc %d errno %d", t, k, sync ? "sync" : "posted", rc, errno);
        sequence[t][k] = sync ? sync_op[t] : posted_op[t];
    }
    return NULL;
}

/* The op of every record line, in order; returns the count. */
static int record_ops(uint32_t *ops, int max)
{
    FILE *f = fopen(record, "re");
    char line[512];
    int n = 0;
    if (!f)
        return 0;
    while (n < max && fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "\"op\":");
        ops[n++] = p ? (uint32_t)strtoul(p + 5, NULL, 10) : UINT32_MAX;
    }
    fclose(f);
    return n;
}

static void test_threads(void)
{
    static uint32_t ops[THREADS * ROUNDS + 16];
    pthread_t th[THREADS];
    int n, t;

    for (t = 0; t < THREADS; t++)
        if (pthread_create(&th[t], NULL, worker, (void *)(uintptr_t)t))
            die("pthread_create");
    for (t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    /* A barrier: every posted call is served once this one returns. */
    {
        unsigned int vcpus = 0;
        CHECK_OK(xendevicemodel_nr_vcpus(shared, DOMID, &vcpus), "barrier nr_vcpus");
    }
    n = record_ops(ops, (int)(sizeof ops / sizeof ops[0]));
    CHECK(n == THREADS * ROUNDS + 1, "record has %d calls, %d were made", n, THREADS * ROUNDS + 1);
    for (t = 0; t < THREADS; t++) {
        int k = 0, mismatches = 0;
        for (int i = 0; i < n; i++) {
            if (ops[i] != posted_op[t] && ops[i] != sync_op[t])
                continue;
            if (t == 0 && i == n - 1)
                break;  /* the barrier */
            if (k >= ROUNDS || ops[i] != sequence[t][k])
                mismatches++;
            k++;
        }
        CHECK(k == ROUNDS && mismatches == 0,
              "thread %d: %d of its calls in the record, %d out of order", t, k, mismatches);
    }
}

static void test_failure_delivery(xendevicemodel_handle *h)
{
    unsigned int vcpus = 0;
    int rc;

    /* isa_irq 20 fails the policy's condition: posted, so 0 at once. */
    rc = xendevicemodel_set_isa_irq_level(h, DOMID, 20, 1);
    CHECK_OK(rc, "posted set_isa_irq_level(20)");
    rc = xendevicemodel_inject_msi(h, DOMID, 0xfee00000, 0x4041);
    CHECK_OK(rc, "posted inject_msi after it");
    /* The next call that waits carries the failure to the library, which
     * logs it; the call itself returns its own result. */
    vcpus = 0;
    rc = xendevicemodel_nr_vcpus(h, DOMID, &vcpus);
    CHECK(rc == 0 && vcpus > 0, "nr_vcpus after a refused posted call: rc %d errno %d vcpus %u",
          rc, errno, vcpus);
    rc = xendevicemodel_nr_vcpus(h, DOMID, &vcpus);
    CHECK_OK(rc, "nr_vcpus once the failure was delivered");
    /* Another domid: privcmd's EPERM at once, never posted. */
    rc = xendevicemodel_set_isa_irq_level(h, DOMID + 1, 1, 1);
    CHECK_ERR(rc, EPERM, "set_isa_irq_level for another domid");
    /* set_irq_level is allowed but not posted: it waits (Xen on x86 has
     * no such interrupt line: EOPNOTSUPP from the simulated Xen). */
    rc = xendevicemodel_set_irq_level(h, DOMID, 33, 1);
    CHECK_ERR(rc, EOPNOTSUPP, "set_irq_level, not posted");
}

static void test_posting_off(const char *const extra[])
{
    pid_t pid, child;
    int fd, st;

    fd = spawn_broker(broker, DOMID, policy, extra, &pid);
    child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        char num[16];
        xendevicemodel_handle *h;
        int rc;
        snprintf(num, sizeof num, "%d", fd);
        setenv("DMOP_BROKER_FD", num, 1);
        setenv("DMOP_POSTED", "0", 1);
        h = xendevicemodel_open(NULL, 0);
        CHECK(h != NULL, "open with DMOP_POSTED=0: errno %d", errno);
        if (h) {
            rc = xendevicemodel_set_isa_irq_level(h, DOMID, 20, 1);
            CHECK_ERR(rc, EPERM, "DMOP_POSTED=0: the refusal comes back at once");
            rc = xendevicemodel_set_isa_irq_level(h, DOMID, 4, 1);
            CHECK_OK(rc, "DMOP_POSTED=0: set_isa_irq_level(4)");
        }
        _exit(clib_failures ? 1 : 0);
    }
    close(fd);
    CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
          "DMOP_POSTED=0 child: status 0x%x", st);
    st = wait_exit(pid, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "broker (DMOP_POSTED=0) status 0x%x", st);
}

int main(int argc, char **argv)
{
    const char *extra[8];
    pid_t pid;
    int fd, st;
    char num[16];

    if (argc != 4)
        die("usage: posted BROKER POLICY WORKDIR");
    broker = argv[1];
    policy = argv[2];
    workdir = argv[3];
    snprintf(record, sizeof record, "%s/record.jsonl", workdir);
    unlink(record);
    extra[0] = "--hypervisor";
    extra[1] = "simulated";
    extra[2] = "--simulated-record";
    extra[3] = record;
    extra[4] = getuid() == 0 ? "--allow-root" : NULL;
    extra[5] = NULL;

    /* First, while this process has no session a child could inherit. */
    extra[2] = "--audit-forwards";
    extra[3] = "each";
    test_posting_off(extra);
    extra[2] = "--simulated-record";
    extra[3] = record;

    fd = spawn_broker(broker, DOMID, policy, extra, &pid);
    snprintf(num, sizeof num, "%d", fd);
    setenv("DMOP_BROKER_FD", num, 1);
    shared = xendevicemodel_open(NULL, 0);
    if (!shared)
        die("xendevicemodel_open");
    test_threads();
    test_failure_delivery(shared);
    xendevicemodel_close(shared);
    shutdown(fd, SHUT_RDWR);
    st = wait_exit(pid, 10000);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "broker status 0x%x", st);
    return clib_finish("posted");
}
