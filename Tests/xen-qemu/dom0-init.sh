#!/bin/sh
# SPDX-License-Identifier: MIT
# PID 1 of the Debian dom0 that scripts/xen-qemu-test boots (after the tiny
# initramfs switch_roots to the ext4 rootfs on /dev/vda).
#
# Starts the real toolstack (xenstored, xen-init-dom0, xenconsoled), then
# `xl create`s HVM guests whose device model is Debian's unmodified
# qemu-system-xen, and checks what reached Xen and how:
#   xq-plain  baseline: qemu-xen as libxl runs it, dm_restrict=1, no broker
#   xq-brk    SeaBIOS, vga="none", QEMU under dmop-qemu-wrapper
#   xq-vga    SeaBIOS, vga="stdvga", QEMU under dmop-qemu-wrapper
#   xq-nomap  like xq-brk; wrapper.conf's policy.xq-nomap gives its broker a
#             policy that lacks map_io_range_to_ioreq_server
#   xq-root   dm_restrict=0, -xen-domid-restrict in device_model_args: no
#             user for QEMU, so the wrapper must refuse to start it
# Each broker must run as uid and gid user-range-base + domid (wrapper.conf)
# with its guest's policy, and xq-nomap's broker must differ from the others
# in both.
# Results are "TEST <name> PASS|FAIL <detail>" lines in /xq-out/results.txt
# (also on the console); the host reads /xq-out from the disk image after
# the VM has powered off. XQ-END on the console marks a complete run.
# Settings arrive as kernel command-line words: xq_guests (default
# plain+brk+vga+nomap+root), xq_wait (seconds a boot may take, default 180),
# xq_xen (the Xen branch of the rootfs's xen-utils, default 4.17), xq_stack
# (the Debian release, for the log).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-${xq_xen:-4.17}/bin
OUT=/xq-out
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -o remount,rw /
dmesg -n 1
rm -rf $OUT; mkdir -p $OUT
up() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }'; }
log() { echo "XQ[$(up)] $*"; }
result() { echo "TEST $1 $2 $3" | tee -a $OUT/results.txt; }
pass() { result "$1" PASS "$2"; }
fail() { result "$1" FAIL "$2"; }
finish() {
    log "XQ-END"
    cp /var/log/xen/* $OUT/ 2>/dev/null
    sync
    reboot -f
    sleep 10
    echo b >/proc/sysrq-trigger
}
log "dom0 up, kernel $(uname -r)"

# ---- toolstack ------------------------------------------------------------
for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc; do modprobe $m || log "modprobe $m failed"; done
mkdir -p /proc/xen
mount -t xenfs xenfs /proc/xen
mkdir -p /run/xen /run/xenstored /var/log/xen /var/lib/xen
rm -f /var/log/xen/*
ip link set lo up 2>/dev/null
export XENSTORED_ROOTDIR=/run/xenstored
xenstored --pid-file /run/xenstore.pid
i=0
while ! xenstore-read -s / >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && break; sleep 0.1
done
xen-init-dom0 >/dev/null 2>&1
xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen
XV=$(xl info 2>/dev/null | awk '/^xen_version/ { print $3 }')
if [ -n "$XV" ] && [ -c /dev/xen/privcmd ]; then
    pass dom0.toolstack "xenstored, xen-init-dom0, xenconsoled up; Xen $XV; qemu $(dpkg-query -W -f='${Version}' qemu-system-xen)"
else
    fail dom0.toolstack "xl info failed or no /dev/xen/privcmd"
    finish
fi

# pid_of_dm DOMID: QEMU's pid (the wrapper execs QEMU in place: same pid).
pid_of_dm() { pgrep -f -- "^/usr/libexec/xen-qemu-system-i386 .*-xen-domid $1 " | head -1; }
# pid_of_broker DOMID
pid_of_broker() { pgrep -f -- "dmop-broker serve --domid $1 " | head -1; }
# marker DOMID REGEX: does the guest's debug output (port 0xe9) match?
marker() { xl dmesg | grep -q -E "\(d$1\).*($2)"; }

# ---- one guest --------------------------------------------------------------
# run_guest NAME WAIT EXPECT(boot|fail) BROKER(0|1): creates the guest, waits
# for "No bootable device" (or WAIT seconds), runs the checks, destroys it.
# Leaves DOMID, QPID, BPID set for extra checks run from the hook guest_hook.
run_guest() {
    name=$1 wait_s=$2 expect=$3 broker=$4 label=${5:-$1}
    cfg=/etc/xen/$name.cfg
    T=$(up)
    xl -vvv create $cfg >/var/log/xen/xl-create-$name.log 2>&1
    rc=$?
    created=$(since $T)
    DOMID=$(xl domid $name 2>/dev/null)
    if { [ $rc != 0 ] || [ -z "$DOMID" ]; } && [ "$expect" = observe ]; then
        why=$(grep -a -o -E 'SIGXFSZ|signal [0-9]+|Duplicate device ID [^ ]*|QEMU did not start properly, rc=[-0-9]*|Failed to connect to QMP socket|invalid option' \
            /var/log/xen/xl-create-$name.log /var/log/xen/qemu-dm-$name.log 2>/dev/null | cut -d: -f2- | sort -u | tr '\n' ';')
        echo "$label stock dm_restrict=1 on ${xq_stack:-bookworm}: does not boot (xl create rc=$rc: $why)" | tee -a $OUT/baseline.txt
        cp /var/log/xen/qemu-dm-$name.log /var/log/xen/xl-create-$name.log $OUT/ 2>/dev/null
        [ -n "$DOMID" ] && xl destroy $name
        return 0
    fi
    if [ $rc != 0 ] || [ -z "$DOMID" ]; then
        fail $label.create "xl create rc=$rc (log: xl-create-$name.log)"
        tail -n 20 /var/log/xen/xl-create-$name.log
        [ -n "$DOMID" ] && xl destroy $name
        return 1
    fi
    pass $label.create "domid $DOMID, xl create returned in ${created}s"
    reached=""
    while :; do
        if marker $DOMID 'No bootable device'; then reached=$(since $T); break; fi
        awk -v a="$T" -v b="$(up)" -v w="$wait_s" 'BEGIN { exit !(b - a >= w) }' && break
        xl list $name >/dev/null 2>&1 || break
        sleep 0.2
    done
    fw=$OUT/firmware-$name.log
    xl dmesg | grep "(d$DOMID)" | sed -E 's/^.*\(d[0-9]+\) //' >$fw
    lastline=$(grep -v '^\[ *[0-9.]*\] *$' $fw | tail -1)
    # The firmware ends at "No bootable device" even when QEMU serves
    # nothing (unclaimed I/O reads as all-ones): what proves QEMU served the
    # boot is SeaBIOS finding QEMU's i440fx and its PCI devices.
    served=""
    grep -q 'Running on QEMU (i440fx)' $fw && grep -q -E 'Found [1-9][0-9]* PCI devices' $fw &&
        served="$(grep -o -E 'Found [0-9]+ PCI devices' $fw | tail -1)"
    if [ "$expect" = observe ]; then
        # Stock QEMU as libxl runs it on this release: recorded, not checked.
        if [ -n "$reached" ] && [ -n "$served" ]; then how="boots (\"No bootable device\" after ${reached}s)"
        else how="does not boot ($(grep -a -o -E 'SIGXFSZ|Duplicate device ID [^ ]*|QEMU did not start properly[^\n]*|Failed to connect to QMP socket' /var/log/xen/xl-create-$name.log /var/log/xen/qemu-dm-$name.log 2>/dev/null | cut -d: -f2- | sort -u | tr '\n' ';'))"; fi
        echo "$label stock dm_restrict=1 on ${xq_stack:-bookworm}: $how" | tee -a $OUT/baseline.txt
    elif [ "$expect" = boot ]; then
        if [ -n "$reached" ] && [ -n "$served" ]; then
            # Xen's console timestamps: hvmloader's first line to the end.
            fwtime=$(awk 't = ""; { if (match($0, /^\[ *[0-9.]+\]/)) t = substr($0, RSTART + 1, RLENGTH - 2) + 0 }
                /HVM Loader/ && a == "" { a = t } /No bootable device/ && b == "" { b = t }
                END { if (a != "" && b != "") printf "%.2f", b - a }' $fw)
            pass $label.firmware "\"No bootable device\" ${reached}s after xl create (hvmloader to the end ${fwtime}s), SeaBIOS: Running on QEMU (i440fx), $served"
            echo "$label xl-create-to-no-bootable-device=${reached}s hvmloader-to-no-bootable-device=${fwtime}s" >>$OUT/boot-times.txt
        elif [ -n "$reached" ]; then
            fail $label.firmware "\"No bootable device\" after ${reached}s but SeaBIOS did not see QEMU's devices: $(grep -o -E 'Found [0-9]+ PCI devices' $fw)"
        else
            fail $label.firmware "no \"No bootable device\" within ${wait_s}s; last guest line: $lastline"
        fi
    else
        if [ -z "$served" ]; then
            pass $label.boot-fails "SeaBIOS saw no QEMU: $(grep -o -E 'Found [0-9]+ PCI devices' $fw || echo 'no PCI scan'), no \"Running on QEMU\"; last guest line: $lastline"
        else
            fail $label.boot-fails "QEMU served the boot ($served) although its broker refuses map_io_range_to_ioreq_server"
        fi
    fi
    sleep 1
    QPID=$(pid_of_dm $DOMID)
    if [ "$expect" = boot ]; then
        if [ -n "$QPID" ] && [ -d /proc/$QPID ] && xl list $name >/dev/null 2>&1; then
            pass $label.qemu-alive "pid $QPID ($(ps -o user= -p $QPID)) still running, domain $(xl list $name | awk 'NR == 2 { print $5 }')"
        else
            fail $label.qemu-alive "no QEMU for domid $DOMID"
        fi
    fi
    BPID=""
    if [ "$broker" = 1 ]; then
        BPID=$(pid_of_broker $DOMID)
        if [ -n "$QPID" ] && grep -q ' /usr/lib/x86_64-linux-gnu/dmop-broker/libxendevicemodel.so.1$' /proc/$QPID/maps; then
            pass $label.qemu-library "QEMU mapped /usr/lib/x86_64-linux-gnu/dmop-broker/libxendevicemodel.so.1"
        elif [ "$expect" = boot ]; then
            fail $label.qemu-library "QEMU (pid ${QPID:-none}) did not load the broker's libxendevicemodel"
        fi
        if [ -n "$QPID" ]; then
            filt=$(awk '/^Seccomp:/ { print $2 }' /proc/$QPID/status)
            if [ "$filt" = 2 ]; then
                pass $label.qemu-filtered "QEMU runs under the wrapper's seccomp filter (Seccomp: 2, NoNewPrivs: $(awk '/^NoNewPrivs:/ { print $2 }' /proc/$QPID/status))"
            else
                fail $label.qemu-filtered "QEMU Seccomp: ${filt:-?}"
            fi
        fi
        if [ -n "$BPID" ]; then
            st=/proc/$BPID/status
            sec=$(awk '/^Seccomp:/ { print $2 }' $st)
            uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' $st)
            buser=$(ps -o user= -p $BPID)
            pc=$(for f in /proc/$BPID/fd/*; do readlink $f; done | grep -c '^/dev/xen/privcmd$')
            if [ "$sec" = 2 ] && [ "$pc" -ge 1 ] && ! echo " $uids " | grep -q ' 0 '; then
                pass $label.broker-confined "broker pid $BPID: Seccomp 2, uids $uids ($buser), holds /dev/xen/privcmd"
            else
                fail $label.broker-confined "broker pid $BPID: Seccomp ${sec:-?}, uids ${uids:-?}, privcmd fds $pc"
            fi
            want_id=$((RANGE_BASE + DOMID))
            gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' $st)
            if [ "$uids" = "$want_id $want_id $want_id $want_id" ] && [ "$gids" = "$uids" ]; then
                pass $label.broker-uid "broker runs as uid and gid $want_id (user-range-base $RANGE_BASE + domid $DOMID)"
            else
                fail $label.broker-uid "broker uids $uids, gids $gids; want $want_id (user-range-base $RANGE_BASE + domid $DOMID)"
            fi
            echo "$label uid=${uids%% *}" >>$OUT/per-guest.txt
            ppid=$(awk '/^PPid:/ { print $2 }' $st)
            [ "$ppid" = 1 ] && pass $label.broker-detached "broker's parent is init, not QEMU" ||
                fail $label.broker-detached "broker's parent is pid $ppid"
        else
            fail $label.broker-confined "no dmop-broker serve --domid $DOMID running"
        fi
    fi
    type guest_hook >/dev/null 2>&1 && guest_hook $label
    ps -eo pid,ppid,user,etime,args | grep -E 'qemu-system|dmop-broker' | grep -v grep >$OUT/ps-$name.txt
    T=$(up)
    xl destroy $name
    destroyed=$(since $T)
    if [ "$broker" = 1 ] && [ -n "$BPID" ]; then
        i=0
        while [ -d /proc/$BPID ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
        if [ -d /proc/$BPID ]; then
            fail $label.broker-exits "broker pid $BPID still running 5 s after xl destroy (${destroyed}s)"
            kill -9 $BPID
        else
            pass $label.broker-exits "broker pid $BPID gone after xl destroy (${destroyed}s)"
        fi
    fi
    cp /var/log/xen/qemu-dm-$name.log $OUT/ 2>/dev/null
    audit_checks $name $expect $broker $label
    return 0
}

# audit_checks NAME EXPECT BROKER: what the broker said on QEMU's stderr.
audit_checks() {
    name=$1 expect=$2 broker=$3 label=${4:-$1}
    f=$OUT/qemu-dm-$name.log
    [ "$broker" = 1 ] || return 0
    # The start line: policy=PATH (quoted only when PATH needs it), the one
    # wrapper.conf gives this guest.
    case $name in
    xq-nomap) want_policy=/etc/dmop-broker/xq-nomap.policy ;;
    *) want_policy=/usr/share/dmop-broker/qemu-xen.policy ;;
    esac
    started=$(grep -m1 'starting version=' $f | sed -n 's/.* policy=\("[^"]*"\|[^ ]*\) .*/\1/p' | tr -d '"')
    if [ -n "$started" ] && [ "$started" = "$want_policy" ]; then
        pass $label.broker-policy "the broker's start line names policy=$started"
    else
        fail $label.broker-policy "the broker's start line names policy=${started:-none}; want $want_policy"
    fi
    echo "$label policy=${started:-none}" >>$OUT/per-guest.txt
    fwd=$(grep -c 'verdict=forward' $f)
    bad=$(grep 'verdict=forward' $f | grep -vc ' rc=0 ')
    ref=$(grep -c 'verdict=refuse' $f)
    # Per-op counts, for the note.
    grep -o 'op=[a-z_0-9]* verdict=[a-z]*' $f | sort | uniq -c | sort -rn |
        awk -v n=$label '{ print n, $2, $3, $1 }' >>$OUT/dmop-counts.txt
    # Time inside the broker (decision + the DMOP hypercall) per boot.
    grep 'verdict=forward' $f | sed -n 's/.* latency_us=\([0-9]*\).*/\1/p' | sort -n |
        awk -v n=$label '{ v[NR] = $1; s += $1 } END { if (NR) printf "%s forwarded=%d broker_total_ms=%.1f median_us=%d p90_us=%d max_us=%d\n", n, NR, s / 1000, v[int(NR / 2) + 1], v[int(NR * 0.9)], v[NR] }' >>$OUT/broker-latency.txt
    if [ "$expect" = boot ]; then
        if [ "$fwd" -ge 100 ] && [ "$bad" = 0 ] && grep -q 'op=create_ioreq_server verdict=forward' $f &&
            grep -q 'op=map_io_range_to_ioreq_server verdict=forward' $f; then
            pass $label.audit-forwarded "$fwd DMOPs forwarded, all rc=0 ($(grep -o 'op=[a-z_]* verdict=forward' $f | sed 's/op=//; s/ verdict=forward//' | sort | uniq -c | awk '{ printf "%s%s %s", s, $2, $1; s = ", " }'))"
        else
            fail $label.audit-forwarded "$fwd forwarded, $bad with rc!=0 (log: qemu-dm-$name.log)"
        fi
        if [ "$ref" = 0 ]; then
            pass $label.audit-no-refusal "no DMOP refused"
        else
            fail $label.audit-no-refusal "$ref refused: $(grep 'verdict=refuse' $f | grep -o 'op=[a-z_]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"
        fi
        if grep -q 'session end' $f; then
            pass $label.audit-session-end "$(grep -o 'session end: .*' $f | tail -1)"
        else
            fail $label.audit-session-end "no \"session end\" line from the broker after xl destroy"
        fi
    else
        if grep 'verdict=refuse' $f | grep -q 'op=map_io_range_to_ioreq_server'; then
            pass $label.audit-refused "refused: $(grep 'verdict=refuse' $f | grep -m1 'op=map_io_range_to_ioreq_server' | sed 's/^.*peer_pid=/peer_pid=/')"
        else
            fail $label.audit-refused "the audit log names no refused map_io_range_to_ioreq_server"
        fi
    fi
}

# While xq-brk runs: a stand-in for QEMU under the same wrapper tries the DMOP
# directly (must be EPERM) and through the library (must reach Xen); the same
# binary run directly in dom0 is the control (direct must work there).
guest_hook() {
    [ "$1" = xq-brk ] || return 0
    ctl=$(/usr/local/lib/xq/dmop-standin -xen-domid $DOMID direct)
    if echo "$ctl" | grep -q 'direct rc=0 '; then
        pass standin.control "unwrapped in dom0: $ctl"
    else
        fail standin.control "unwrapped in dom0: ${ctl:-no output} (the direct DMOP should work here)"
    fi
    out=$(dmop-qemu-wrapper --qemu /usr/local/lib/xq/dmop-standin -xen-domid $DOMID -xen-domid-restrict \
        -runas xen-qemuuser-shared direct library 2>$OUT/standin-wrapper.log)
    echo "$out" >$OUT/standin.txt
    if echo "$out" | grep -q 'direct rc=-1 errno=1 '; then
        pass standin.direct-dmop-eperm "under dmop-qemu-wrapper: $(echo "$out" | grep direct)"
    else
        fail standin.direct-dmop-eperm "under dmop-qemu-wrapper: ${out:-no output} (stderr: $(tail -3 $OUT/standin-wrapper.log | tr '\n' ' '))"
    fi
    if echo "$out" | grep -q 'library rc=0 ' && grep -q 'op=set_isa_irq_level verdict=forward.* rc=0 ' $OUT/standin-wrapper.log; then
        pass standin.library-dmop "under dmop-qemu-wrapper: $(echo "$out" | grep library), broker forwarded it"
    else
        fail standin.library-dmop "under dmop-qemu-wrapper: ${out:-no output} (stderr: $(tail -3 $OUT/standin-wrapper.log | tr '\n' ' '))"
    fi
}

# xq-root: dm_restrict=0 with -xen-domid-restrict smuggled in through
# device_model_args, so libxl passes no user: the wrapper must refuse to run
# QEMU as root, start no broker, and say why in qemu-dm-xq-root.log.
run_root_refusal() {
    xl -vvv create /etc/xen/xq-root.cfg >/var/log/xen/xl-create-xq-root.log 2>&1
    rc=$?
    DOMID=$(xl domid xq-root 2>/dev/null)
    line=$(grep -m1 'dmop-qemu-wrapper: .*name no user to run as' /var/log/xen/qemu-dm-xq-root.log 2>/dev/null)
    brokers=$(pgrep -f -- 'dmop-broker serve' | wc -l)
    qemus=$(pgrep -f -- '^/usr/libexec/xen-qemu-system-i386 .*xq-root' | wc -l)
    # libxl -vvv lists the device model's arguments: the restriction was there.
    smuggled=no
    grep -q -- '-xen-domid-restrict' /var/log/xen/xl-create-xq-root.log && smuggled=yes
    if [ $rc != 0 ] && [ -n "$line" ] && [ "$brokers" = 0 ] && [ "$qemus" = 0 ] && [ $smuggled = yes ]; then
        pass xq-root.refused "xl create rc=$rc; no QEMU, no broker; qemu-dm-xq-root.log: ${line#*dmop-qemu-wrapper: }"
    else
        fail xq-root.refused "xl create rc=$rc, wrapper line '${line:-none}', brokers $brokers, QEMUs $qemus, -xen-domid-restrict passed: $smuggled (log: qemu-dm-xq-root.log)"
    fi
    [ -n "$DOMID" ] && xl destroy xq-root 2>/dev/null
    cp /var/log/xen/qemu-dm-xq-root.log /var/log/xen/xl-create-xq-root.log $OUT/ 2>/dev/null
}

RANGE_BASE=$(sed -n 's/^user-range-base *= *//p' /etc/dmop-broker/wrapper.conf)
for g in $(echo "${xq_guests:-plain+brk+vga+nomap+root}" | tr + ' '); do
    case $g in
    # Stock dm_restrict does not boot on trixie (SIGXFSZ): there it is the baseline.
    plain) run_guest xq-plain "${xq_wait:-180}" "$([ "${xq_stack:-bookworm}" = bookworm ] && echo boot || echo observe)" 0 ;;
    brk) run_guest xq-brk "${xq_wait:-180}" boot 1 ;;
    vga) run_guest xq-vga "${xq_wait:-180}" boot 1 ;;
    nomap) run_guest xq-nomap "${xq_wait:-180}" fail 1 ;;
    root) run_root_refusal ;;
    repeat)
        # xq_repeat consecutive creations of xq-brk, each checked in full.
        ok=0 n=${xq_repeat:-10}
        for r in $(seq 1 $n); do
            before=$(grep -c FAIL $OUT/results.txt)
            run_guest xq-brk "${xq_wait:-180}" boot 1 xq-repeat-$r
            [ "$(grep -c FAIL $OUT/results.txt)" = "$before" ] && grep -q "^TEST xq-repeat-$r.firmware PASS" $OUT/results.txt && ok=$((ok + 1))
        done
        if [ $ok = $n ]; then pass xq-repeat.consecutive "$ok of $n consecutive xq-brk creations booted with every check passing"
        else fail xq-repeat.consecutive "$ok of $n consecutive xq-brk creations booted with every check passing"; fi ;;
    *) fail dom0.guests "unknown guest $g" ;;
    esac
done
# One wrapper.conf, two brokers set apart: xq-nomap's and a booting guest's.
if grep -q '^xq-nomap ' $OUT/per-guest.txt 2>/dev/null && grep -q -E '^xq-(brk|vga) ' $OUT/per-guest.txt; then
    other=$(grep -m1 -o -E '^xq-(brk|vga)' $OUT/per-guest.txt)
    a=$(grep "^xq-nomap " $OUT/per-guest.txt | cut -d' ' -f2 | sort | paste -s -d' ')
    b=$(grep "^$other " $OUT/per-guest.txt | cut -d' ' -f2 | sort | paste -s -d' ')
    ua=$(echo "$a" | grep -o 'uid=[0-9]*') ub=$(echo "$b" | grep -o 'uid=[0-9]*')
    pa=$(echo "$a" | grep -o 'policy=[^ ]*') pb=$(echo "$b" | grep -o 'policy=[^ ]*')
    if [ -n "$ua" ] && [ -n "$ub" ] && [ "$ua" != "$ub" ] && [ -n "$pa" ] && [ "$pa" != "$pb" ]; then
        pass per-guest.differ "one wrapper.conf: xq-nomap's broker $a, $other's $b"
    else
        fail per-guest.differ "xq-nomap's broker $a, $other's $b: want both uid and policy to differ"
    fi
fi
echo "XQ-COUNT $(grep -c . $OUT/results.txt)" | tee $OUT/count.txt
finish
