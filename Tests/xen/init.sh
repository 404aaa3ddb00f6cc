#!/bin/sh
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

for m in xen-privcmd xen-evtchn; do
    insmod /lib/modules/$m.ko || fail dom0.insmod-$m "insmod failed"
done
check dom0.privcmd "/dev/xen/privcmd present" test -c /dev/xen/privcmd

XV=$($X/domain-fixture xen-version)
check dom0.xen-version "Xen $XV" test -n "$XV"

# --- the toolstack's part: an empty HVM domain with 2 vCPUs ---------------
VCPUS=2
D=$($X/domain-fixture create --vcpus $VCPUS)
if [ -z "$D" ]; then
    fail fixture.create "no domain"
    finish
fi
pass fixture.create "domid=$D vcpus=$VCPUS"

# --- privcmd and Xen without the broker: the errno table -----------------
$X/domain-fixture raw "$D"

# --- one broker per policy, confined as in production ---------------------
# session LABEL POLICY VCPUS|denied
session() {
    label=$1 policy=$2 expect_vcpus=$3
    log=/run/broker-$label.log
    rm -f /run/dmop.sock /run/ready
    mkfifo /run/ready
    # uid 65534 for the broker, 1000 for "QEMU": what the toolstack would pick.
    SWIFT_BACKTRACE=enable=no TZ=UTC \
    $X/dmop-broker serve --hypervisor privcmd --domid "$D" --listen /run/dmop.sock \
        --policy "$policy" --user 65534:65534 --peer-uid 1000 --ready-fd 3 \
        3>/run/ready </dev/null >"$log" 2>&1 &
    bpid=$!
    ready=$(timeout 30 cat /run/ready)
    if [ "$ready" != ready ]; then
        fail "$label.broker-ready" "no readiness (got '$ready')"
        sed "s/^/BROKER-LOG $label: /" "$log"
        kill -KILL $bpid 2>/dev/null
        wait $bpid
        return
    fi
    pass "$label.broker-ready" "pid $bpid"

    # Confinement, seen from outside.
    st=/proc/$bpid/status
    uids=$(grep '^Uid:' $st | tr -s '\t ' ' ' | cut -d' ' -f2-)
    gids=$(grep '^Gid:' $st | tr -s '\t ' ' ' | cut -d' ' -f2-)
    check "$label.broker-uid" "Uid: $uids" test "$uids" = "65534 65534 65534 65534"
    check "$label.broker-gid" "Gid: $gids" test "$gids" = "65534 65534 65534 65534"
    groups=$(grep '^Groups:' $st | cut -f2 | tr -d ' ')
    check "$label.broker-groups" "Groups: '$groups'" test -z "$groups"
    nnp=$(grep '^NoNewPrivs:' $st | cut -f2)
    check "$label.broker-no-new-privs" "NoNewPrivs: $nnp" test "$nnp" = 1
    sc=$(grep '^Seccomp:' $st | cut -f2)
    check "$label.broker-seccomp" "Seccomp: $sc (2 = filter)" test "$sc" = 2
    capeff=$(grep '^CapEff:' $st | cut -f2)
    capprm=$(grep '^CapPrm:' $st | cut -f2)
    check "$label.broker-no-caps" "CapEff: $capeff CapPrm: $capprm" \
        test "$capeff" = 0000000000000000 -a "$capprm" = 0000000000000000
    # Beyond stdio, only the privcmd fd and sockets may stay open.
    extra=""
    for f in /proc/$bpid/fd/*; do
        n=${f##*/}
        [ "$n" -le 2 ] && continue
        t=$(readlink "$f")
        case "$t" in
        /dev/xen/privcmd | socket:*) ;;
        *) extra="$extra $n->$t" ;;
        esac
    done
    check "$label.broker-fds" "unexpected:${extra:- none}" test -z "$extra"
    # The kernel restriction of the broker's privcmd fd, proven from outside.
    target=$D
    [ "$xt_inject" = fail ] && target=$((D + 1))
    $X/domain-fixture check-restricted $bpid "$target" | sed "s/^TEST broker\./TEST $label.broker-/"

    # The toolstack hands the socket to QEMU's uid (the broker binds it 0600).
    chown 1000:1000 /run/dmop.sock
    $X/dmop-client --as 1000:1000 --socket /run/dmop.sock --domid "$D" --label "$label" \
        --vcpus "$expect_vcpus" --xen-version "$XV" >/run/client.out
    rc=$?
    cat /run/client.out
    check "$label.client-exit" "rc=$rc" test $rc -eq 0
    # After a protocol error the broker still listens; a peer with another uid is refused.
    $X/dmop-client --socket /run/dmop.sock --domid "$D" --label "$label" --expect-peer-refused
    # And QEMU can come back.
    $X/dmop-client --as 1000:1000 --socket /run/dmop.sock --domid "$D" --label "$label-reconnect" \
        --vcpus "$expect_vcpus" --xen-version "$XV" >/run/reconnect.out
    rc=$?
    check "$label.reconnect" "second session rc=$rc, $(grep -c '^TEST .* PASS' /run/reconnect.out) checks passed" \
        test $rc -eq 0
    grep '^TEST .* FAIL' /run/reconnect.out

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
    # Every request the clients saw answered has its audit line, with the same verdict.
    sent_refused=$(cat /run/client.out /run/reconnect.out | grep -c '^OBSERVED .* origin=1 ')
    sent_forwarded=$(cat /run/client.out /run/reconnect.out | grep -c '^OBSERVED .* origin=0 ')
    log_refused=$(grep -c 'verdict=refuse' "$log")
    log_forwarded=$(grep -c 'verdict=forward' "$log")
    check "$label.audit-refusals" "log $log_refused, client saw $sent_refused" \
        test "$log_refused" -eq "$sent_refused" -a "$sent_refused" -gt 0
    check "$label.audit-forwards" "log $log_forwarded, client saw $sent_forwarded" \
        test "$log_forwarded" -eq "$sent_forwarded" -a "$sent_forwarded" -gt 0
    check "$label.audit-peer-refused" "$(grep -c 'peer refused' "$log") line(s)" grep -q 'peer refused' "$log"
    sed "s/^/BROKER-LOG $label: /" "$log"
}

if [ "$xt_broker" = 1 ]; then
    if [ -x $X/dmop-broker ]; then
        session qemu-xen $X/qemu-xen.policy denied
        session xen-test $X/xen-test.policy $VCPUS
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

finish
