#!/bin/sh
# SPDX-License-Identifier: MIT
# /init of the dom0 initramfs that scripts/xen-test boots under Xen.
#
# Plays a host with one HVM guest: the fixture creates an empty HVM domain
# (the toolstack's part), dmop-broker serves it confined as in production,
# and the C client plays QEMU against it. Results go to the console as
# "TEST <name> PASS|FAIL <detail>" lines; scripts/xen-test collects them
# from the serial log. "XT-END" marks a complete run.
#
# Settings arrive as kernel command-line words (the kernel hands name=value
# words it does not know to init as environment variables):
#   xt_broker=1       the broker is in the image and must be tested
#   xt_inject=fail    deliberate regression: check the broker's restriction
#                     against the wrong domid (the run must fail)
#   xt_inject=hang    deliberate hang before the end (the run must time out)
export PATH=/bin
X=/xt
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp
mount -t tmpfs tmpfs /run
# Keep kernel messages off the console the results share.
dmesg -n 1
echo "XT-START uptime=$(cut -d' ' -f1 /proc/uptime)"

# mark WHAT: a timing line (builtins only: no process to start).
mark() {
    read -r up _ </proc/uptime
    echo "XT-MARK $1 uptime=$up"
}
pass() { echo "TEST $1 PASS $2"; }
fail() { echo "TEST $1 FAIL $2"; }
# check NAME DETAIL COMMAND...: PASS when COMMAND succeeds.
check() {
    name=$1 detail=$2
    shift 2
    if "$@"; then pass "$name" "$detail"; else fail "$name" "$detail"; fi
}
finish() {
    echo "XT-END uptime=$(cut -d' ' -f1 /proc/uptime)"
    # Dom0 reboot makes Xen reset the machine; qemu -no-reboot then exits.
    reboot -f
    sleep 10
    echo b > /proc/sysrq-trigger
}

# --- the toolstack's part, then the errno table ----------------------------
# Sets XV (Xen's version) and D (the test domain); fails when there is none.
setup() {
    insmod /lib/modules/xen-privcmd.ko || fail dom0.insmod "insmod xen-privcmd failed"
    check dom0.privcmd "/dev/xen/privcmd present" test -c /dev/xen/privcmd

    XV=$($X/domain-fixture xen-version)
    check dom0.xen-version "Xen $XV" test -n "$XV"

    # An empty HVM domain with 2 vCPUs: never started, but a real DMOP target.
    VCPUS=2
    D=$($X/domain-fixture create --vcpus $VCPUS)
    if [ -z "$D" ]; then
        fail fixture.create "no domain"
        return 1
    fi
    pass fixture.create "domid=$D vcpus=$VCPUS"

    # privcmd and Xen without the broker.
    $X/domain-fixture raw "$D"
    mark fixture-done
}

# --- one broker per policy, confined as in production ---------------------
# session LABEL POLICY VCPUS|denied allowed|denied(irq ops)
session() {
    label=$1 policy=$2 expect_vcpus=$3 expect_irq=$4
    log=/run/broker-$label.log
    rm -f /run/dmop.sock /run/ready
    mkfifo /run/ready
    # uid 65534 for the broker, 1000 for "QEMU": what the toolstack would pick.
    SWIFT_BACKTRACE=enable=no TZ=UTC \
    $X/dmop-broker serve --hypervisor privcmd --domid "$D" --listen /run/dmop.sock \
        --policy "$policy" --user 65534:65534 --peer-uid 1000 --ready-fd 3 --audit-forwards each \
        3>/run/ready </dev/null >"$log" 2>&1 &
    bpid=$!
    ready=$(timeout 30 cat /run/ready)
    if [ "$ready" != ready ]; then
        kill -KILL $bpid 2>/dev/null
        wait $bpid
        fail "$label.broker-ready" "no readiness (got '$ready'), exit status $?"
        sed "s/^/BROKER-LOG $label: /" "$log"
        return
    fi
    pass "$label.broker-ready" "pid $bpid"
    mark "$label-broker-ready"

    # Confinement and the kernel restriction of its privcmd fd, seen from outside.
    target=$D
    [ "$xt_inject" = fail ] && target=$((D + 1))
    $X/domain-fixture check-broker $bpid "$target" 65534:65534 "$label"

    mark "$label-checked"
    # The toolstack hands the socket to QEMU's uid (the broker binds it 0600).
    chown 1000:1000 /run/dmop.sock
    $X/dmop-client --as 1000:1000 --socket /run/dmop.sock --domid "$D" --label "$label" \
        --vcpus "$expect_vcpus" --irq "$expect_irq" --xen-version "$XV" >/run/client.out
    rc=$?
    cat /run/client.out
    check "$label.client-exit" "rc=$rc" test $rc -eq 0
    # After a protocol error the broker still listens; a peer with another uid is refused.
    $X/dmop-client --socket /run/dmop.sock --domid "$D" --label "$label" --expect-peer-refused
    # And QEMU can come back.
    $X/dmop-client --as 1000:1000 --socket /run/dmop.sock --domid "$D" --label "$label-reconnect" \
        --vcpus "$expect_vcpus" --irq "$expect_irq" --xen-version "$XV" >/run/reconnect.out
    rc=$?
    check "$label.reconnect" "second session rc=$rc, $(grep -c '^TEST .* PASS' /run/reconnect.out) checks passed" \
        test $rc -eq 0
    grep '^TEST .* FAIL' /run/reconnect.out

    mark "$label-clients-done"
    check "$label.broker-alive" "still serving before SIGTERM" kill -0 $bpid
    kill -TERM $bpid
    wait $bpid
    rc=$?
    check "$label.broker-exit" "exit status $rc after SIGTERM" test $rc -eq 0

    # The broker's own account. Its start-up line comes after RESTRICT and
    # the self-test (a HYPERCALL that must fail with EPERM); a failed
    # self-test exits with status 68 before it.
    check "$label.broker-log-start" "$(grep -m1 "domid=$D hypervisor=privcmd" "$log" | cut -c1-160)" \
        grep -q "domid=$D hypervisor=privcmd" "$log"
    # Before restricting, the broker checked the running release against its table.
    check "$label.broker-xen-release" "$(grep -m1 'xen release ' "$log" | cut -d' ' -f3- | cut -c1-120)" \
        grep -q "info xen release $XV: DMOP ABI checked for this build" "$log"
    # Every request the clients saw answered has its audit line, with the same verdict.
    # (One awk for all four counts: each process costs under TCG.)
    set -- $(awk -v audit="$log" '
        FILENAME != audit && /^OBSERVED .* origin=1 / { sr++ }
        FILENAME != audit && /^OBSERVED .* origin=0 / { sf++ }
        FILENAME == audit && /verdict=refuse/ { lr++ }
        FILENAME == audit && /verdict=forward/ { lf++ }
        END { print sr + 0, sf + 0, lr + 0, lf + 0 }' /run/client.out /run/reconnect.out "$log")
    sent_refused=$1 sent_forwarded=$2 log_refused=$3 log_forwarded=$4
    check "$label.audit-refusals" "log $log_refused, client saw $sent_refused" \
        test "$log_refused" -eq "$sent_refused" -a "$sent_refused" -gt 0
    check "$label.audit-forwards" "log $log_forwarded, client saw $sent_forwarded" \
        test "$log_forwarded" -eq "$sent_forwarded" -a "$sent_forwarded" -gt 0
    check "$label.audit-peer-refused" "$(grep -c 'peer refused' "$log") line(s)" grep -q 'peer refused' "$log"
    sed "s/^/BROKER-LOG $label: /" "$log"
}

main() {
    setup || return
    if [ "$xt_broker" = 1 ]; then
        if [ -x $X/dmop-broker ]; then
            session qemu-xen $X/qemu-xen.policy denied allowed
            session xen-test $X/xen-test.policy $VCPUS denied
        else
            fail broker.present "xt_broker=1 but no $X/dmop-broker in the image"
        fi
    fi

    [ "$xt_inject" = hang ] && { echo "XT: injected hang"; sleep 100000; }

    $X/domain-fixture destroy "$D"
    rc=$?
    check fixture.destroy "domid=$D rc=$rc" test $rc -eq 0
    # The domain is gone: destroying it again finds no such domain.
    out=$($X/domain-fixture destroy "$D" 2>&1)
    check fixture.gone "$out" test -n "$(echo "$out" | grep ESRCH)"
}

# Everything main prints also goes to /run/all.out, so the host can tell
# that it received every result line (XT-COUNT).
main 2>&1 | tee /run/all.out
echo "XT-COUNT $(grep -c '^TEST ' /run/all.out)"
finish
