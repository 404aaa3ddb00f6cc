#!/bin/sh
# SPDX-License-Identifier: MIT
# PID 1 of the dom0 that scripts/xen-guest-test boots. Starts the toolstack,
# a bridge with an HTTP server for the guest's network phase, then runs the
# Linux HVM guest of guest-init.sh twice: xg-plain (QEMU as libxl runs it,
# the baseline: dm_restrict=1, or 0 where stock restricted QEMU cannot
# start) and xg-brk (QEMU under dmop-qemu-wrapper, dm_restrict=1), both
# saved mid-workload when their cfg gives them save/restore rounds (the
# host's --nvme-save) and xg-brk then restored and migrated; and
# xg-sr, the brokered guest without NVMe (whose state QEMU cannot save):
# IDE, e1000 and stdvga, booted into the save/restore rounds only, saved,
# restored (the restored QEMU with posting off, DMOP_POSTED=0: each DMOP
# waits for its reply) and migrated to this same host mid-workload.
# The guests' disks are loop devices (libxl's RLIMIT_FSIZE for QEMU bounds
# regular files, not devices); their network a bridge with an HTTP server
# (dom0 to guest) and an nc listener (guest to dom0).
# Both QEMUs run with dmop-calltrace.so preloaded (qemu-traced), so what
# QEMU asked of libxendevicemodel can be held against the broker's audit.
# Writes /xg-out: results.txt ("TEST <name> PASS|FAIL <detail>"), phase
# marks and traces for the host-side report; XG-END on the console.
# Settings (kernel command line): xg_guests (default plain+brk+sr), xg_wait
# (seconds per guest, default 600), xg_migrate (1: also xl migrate),
# xg_net_mb (MiB each way, default 4; the guests' cfg names the same),
# xg_posting (0: no QEMU posts).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/xen-${xg_xen:-4.17}/bin
OUT=/xg-out
XG=/var/lib/xen/xg
for m in proc:/proc sysfs:/sys devtmpfs:/dev devpts:/dev/pts tmpfs:/dev/shm tmpfs:/run tmpfs:/tmp; do
    mkdir -p ${m#*:}
    mount -t ${m%%:*} ${m%%:*} ${m#*:} 2>/dev/null
done
mount -o remount,rw /
dmesg -n 1
rm -rf $OUT
mkdir -p $OUT
# (xg_posting=0: every QEMU of the run with DMOP_POSTED=0, see qemu-traced)
[ "${xg_posting:-1}" = 0 ] && touch /run/xg-posting-off
up() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }'; }
say() { echo "XG[$(up)] $*"; }
result() { echo "TEST $1 $2 $3" | tee -a $OUT/results.txt; }
fail() { result "$1" FAIL "$2"; }
check() { # check NAME STATUS DETAIL: PASS when STATUS is 0
    if [ "$2" = 0 ]; then result "$1" PASS "$3"; else fail "$1" "$3"; fi
}
end_run() {
    say "XG-END"
    cp -a /var/log/xen/. $OUT/ 2>/dev/null
    sync
    reboot -f
    sleep 10
    echo b >/proc/sysrq-trigger
}

for m in xen-privcmd xenfs xen-evtchn xen-gntdev xen-gntalloc tun bridge loop; do
    modprobe $m || say "modprobe $m failed"
done
mkdir -p /proc/xen /run/xen /run/xenstored /var/log/xen
mount -t xenfs xenfs /proc/xen
rm -f /var/log/xen/*
ip link set lo up
XENSTORED_ROOTDIR=/run/xenstored xenstored --pid-file /run/xenstored.pid
n=0
until xenstore-read -s / >/dev/null 2>&1 || [ $n -ge 300 ]; do n=$((n + 1)); sleep 0.1; done
xen-init-dom0 >/dev/null 2>&1
xenconsoled --pid-file /run/xenconsoled.pid --log=guest --log-dir=/var/log/xen
XENVERSION=$(xl info 2>/dev/null | sed -n 's/^xen_version *: *//p')
if [ -z "$XENVERSION" ]; then
    fail dom0.toolstack "xl info failed"
    end_run
fi
result dom0.toolstack PASS "Xen $XENVERSION, qemu-system-xen $(dpkg-query -W -f='${Version}' qemu-system-xen)"
echo "qemu-system-xen $(dpkg-query -W -f='${Version}' qemu-system-xen), Xen $XENVERSION" >$OUT/versions.txt
RANGE_BASE=$(sed -n 's/^user-range-base *= *//p' /etc/dmop-broker/wrapper.conf)
# The disks: QEMU opens them before it drops its privileges.
for d in ide nvme; do
    dev=$(losetup -f --show $XG/$d.img) && ln -sf $dev /dev/xg-$d || fail dom0.loop "losetup $XG/$d.img failed"
done
export LIBXL_DEVICE_MODEL_START_TIMEOUT=600

# The guests' network: a bridge, the guest's tap joins it when QEMU creates it.
ip link add xgbr0 type bridge
ip addr add 10.9.0.1/24 dev xgbr0
ip link set xgbr0 up
mkdir -p $XG/www
head -c $((${xg_net_mb:-4} * 1048576)) /dev/urandom >$XG/www/blob
BLOB=$(md5sum <$XG/www/blob | cut -d' ' -f1)
busybox httpd -p 10.9.0.1:8080 -h $XG/www
# listen_upload: one guest-to-dom0 transfer on port 8081 (net-receive).
listen_upload() {
    rm -f $XG/upload.bin $XG/www/up.md5
    [ -n "${NC_PID:-}" ] && kill $NC_PID 2>/dev/null
    busybox nc -l -p 8081 -e /usr/local/lib/xg/net-receive </dev/null >/dev/null 2>&1 &
    NC_PID=$!
}
join_taps() {
    for tap in /sys/class/net/tap*; do
        [ -e "$tap" ] || continue
        [ -e "$tap/master" ] && continue
        ip link set "$(basename "$tap")" master xgbr0 && ip link set "$(basename "$tap")" up
    done
}

dm_pid() { pgrep -f -- "^/usr/libexec/xen-qemu-system-i386 .*-xen-domid $1 " | head -1; }
broker_pid() { pgrep -f -- "dmop-broker serve --domid $1 " | head -1; }
# (after xl migrate the console log of the received domain is named after
# its name while it was being received)
console() { cat /var/log/xen/guest-$1.log /var/log/xen/guest-$1--incoming.log 2>/dev/null | tr -d '\r'; }
guest_result() { console "$1" | sed -n "s/^XG RESULT $2=//p" | tail -1; }

# confinement NAME DOMID: QEMU filtered with the broker's library, the broker
# confined on the real privcmd.
confinement() {
    q=$(dm_pid $2)
    b=$(broker_pid $2)
    qsec=$(awk '/^Seccomp:/ { print $2 }' /proc/$q/status 2>/dev/null)
    lib=$(grep -o ' /[^ ]*/dmop-broker/libxendevicemodel.so.1$' /proc/$q/maps 2>/dev/null | head -1)
    check $1.qemu-confined $([ "$qsec" = 2 ] && [ -n "$lib" ]; echo $?) \
        "QEMU pid ${q:-none} ($(ps -o user= -p ${q:-1} 2>/dev/null)) Seccomp ${qsec:-?}, the broker's library mapped:${lib:- none}"
    if [ -z "$b" ]; then
        fail $1.broker-confined "no dmop-broker serve --domid $2"
        return
    fi
    bsec=$(awk '/^Seccomp:/ { print $2 }' /proc/$b/status)
    uids=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' /proc/$b/status)
    pc=$(for f in /proc/$b/fd/*; do readlink $f; done | grep -c '^/dev/xen/privcmd$')
    gids=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' /proc/$b/status)
    want=$((RANGE_BASE + $2))
    check $1.broker-confined $(
        [ "$bsec" = 2 ] && [ "$pc" -ge 1 ] && [ "$uids" = "$want $want $want $want" ] && [ "$gids" = "$uids" ]
        echo $?
    ) "broker pid $b for domid $2: Seccomp $bsec, uids $uids, gids $gids (want user-range-base $RANGE_BASE + domid), $pc privcmd fd"
    echo "$b" >>$OUT/brokers-$1.txt
}

# save_restore NAME BROKER(0|1): xl save mid-workload, xl restore (a new
# domid, so the wrapper starts a new broker), then for a brokered guest xl
# migrate to this host. The baseline (xg-plain) is saved and restored too:
# when its save fails, stock QEMU cannot be saved either, and xg-brk's
# failure is a NOTE naming the cause, not the broker's fault; xg-sr's is a
# failure. xg-sr's restored QEMU runs with posting off (qemu-traced reads
# /run/xg-posting-off); after each move the guest reports whole disk rounds
# before it goes on. QEMU's side of the other guests' saves is traced
# (strace) to show how it ends. Returns 2 when the save failed and
# the guest cannot go on (its QEMU is gone, xl could not resume it, or the
# restored guest cannot run), with STOP_WHY.
save_restore() {
    name=$1 broker=$2
    t=$(sr_test $name)
    old=$(xl domid $name)
    oldb=$(broker_pid $old)
    q=$(dm_pid $old)
    sleep 2
    # (not xg-sr's, whose save must succeed: strace stops QEMU at each of its
    # syscalls, and under TCG the guest then misses libxl's 60 s suspend wait)
    st=""
    if [ $name != xg-sr ]; then
        strace -f -tt -p $q -o /var/log/xen/strace-save-$name.log 2>/dev/null &
        st=$!
        sleep 1
    fi
    T=$(up)
    xl save $name $XG/$name.save >/var/log/xen/xl-save-$name.log 2>&1
    rc=$?
    took=$(since $T)
    sleep 1
    [ -n "$st" ] && kill $st 2>/dev/null
    if [ $rc != 0 ]; then
        how=$(grep -E '^[0-9]+ +[0-9:.]+ (\+\+\+ (killed|exited)|--- SIG)' /var/log/xen/strace-save-$name.log | tail -3 | tr -s ' ' | tr '\n' ';')
        # (a guest that does not suspend says why on its console: the
        # kernel's soft-lockup and hung-task reports name the worker)
        stuck=$(console $name | grep -E 'soft lockup|blocked for more than|Freezing|suspend' | tail -4 | cut -c1-160 | tr '\n' ';')
        what="xl save of domid $old rc=$rc in ${took}s: $(grep -m1 -E 'error' /var/log/xen/xl-save-$name.log | cut -c1-160); QEMU ${q:-?}: ${how:-no end seen}; guest console: ${stuck:-nothing about the suspend} (logs xl-save-$name.log, strace-save-$name.log, console-$name.txt)"
        echo "$name save-failed $what" >>$OUT/save-outcomes.txt
        if [ "$broker" = 0 ]; then
            echo "NOTE $t.save stock QEMU (no broker): $what" | tee -a $OUT/notes.txt
        elif [ $name = xg-brk ] && grep -q '^xg-plain save-failed' $OUT/save-outcomes.txt; then
            echo "NOTE $t.save as with stock QEMU (xg-plain), the save fails: $what" | tee -a $OUT/notes.txt
        else
            fail $t.save "$what"
        fi
        # (xl resumes a guest whose save failed; when that fails too, the
        # guest never runs again)
        [ -n "$(dm_pid $old)" ] && ! grep -q -E 'xc_domain_resume failed|Failed to resume device model' \
            /var/log/xen/xl-save-$name.log && return 1
        STOP_WHY="the failed xl save (see NOTE)"
        return 2
    fi
    echo "$name saved" >>$OUT/save-outcomes.txt
    result $t.save PASS "xl save of domid $old in ${took}s ($(du -m $XG/$name.save 2>/dev/null | cut -f1) MiB; log xl-save-$name.log)"
    if [ "$broker" = 1 ]; then
        n=0
        while [ -n "$oldb" ] && [ -d /proc/$oldb ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
        check $t.old-broker-exits $([ -z "$oldb" ] || [ ! -d /proc/$oldb ]; echo $?) "broker ${oldb:-none} of the saved domid $old gone"
    fi
    [ $name = xg-sr ] && touch /run/xg-posting-off
    move_guest $t.restore "$old" xl restore $XG/$name.save
    rc=$?
    [ "${xg_posting:-1}" = 0 ] || rm -f /run/xg-posting-off
    if [ $rc != 0 ]; then
        # (a guest whose restore failed never runs again)
        STOP_WHY="the failed xl restore (test $t.restore)"
        return 2
    fi
    rm -f $XG/$name.save
    [ $name = xg-sr ] && wait_rounds 1
    [ "$broker" = 1 ] && [ "${xg_migrate:-1}" = 1 ] || return 0
    [ $name = xg-sr ] || sleep 3
    # Live migration to this host: with -s "" xl runs its last argument as
    # the receiving side's command (no ssh), here this dom0's own xl. The
    # guest keeps its disk rounds going, so QEMU reports the memory its IDE
    # DMA writes while libxl has log-dirty on (modified_memory). For xg-sr
    # a failure fails the test; for xg-brk, never reached while its save
    # fails as stock QEMU's does, a NOTE says what stopped it.
    [ $name = xg-sr ] || MOVE_FAILED=note
    from=$(xl domid $name)
    fromb=$(broker_pid $from)
    move_guest $t.migrate "$from" xl -v migrate -s "" $name "xl migrate-receive"
    rc=$?
    MOVE_FAILED=""
    if [ $rc != 0 ]; then
        # (xl resumes the guest where it was when the migration fails)
        [ -n "$(xl domid $name 2>/dev/null)" ] && return 1
        STOP_WHY="the failed xl migrate (test $t.migrate)"
        return 2
    fi
    n=0
    while [ -n "$fromb" ] && [ -d /proc/$fromb ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n + 1)); done
    check $t.migrate.old-broker-exits $([ -z "$fromb" ] || [ ! -d /proc/$fromb ]; echo $?) "broker ${fromb:-none} of the migrated domid $from gone"
    [ $name = xg-sr ] && wait_rounds 1
    return 0
}

# sr_test NAME: the prefix of the guest's save/restore test lines.
sr_test() {
    case $1 in xg-plain) echo sr-plain ;; xg-sr) echo sr-ide ;; *) echo sr ;; esac
}
# rounds: the sr disk rounds the guest has reported so far.
rounds() { console $name | grep -c '^XG RESULT sr.round'; }
# wait_rounds N: until the guest reports N more rounds (at most 180 s).
wait_rounds() {
    r0=$(rounds) n=0
    while [ $(($(rounds) - r0)) -lt $1 ] && [ $n -lt 360 ]; do sleep 0.5; n=$((n + 1)); done
}

# move_guest TEST OLD-DOMID COMMAND...: xl restore or xl migrate; the guest
# must come back under a new domid with a new, confined broker.
move_guest() {
    test=$1 old=$2
    shift 2
    T=$(up)
    "$@" >/var/log/xen/$test.log 2>&1
    rc=$?
    took=$(since $T)
    new=$(xl domid $name 2>/dev/null)
    # (xl restore returns 0 when QEMU could not resume the guest, which then
    # stays paused: libxl's errors in the log and a paused guest fail too)
    errs=$(grep -a 'libxl: error' /var/log/xen/$test.log | head -3 | sed 's/^libxl: error: //' | cut -c1-200 | tr '\n' ';')
    state=$(xl list $name 2>/dev/null | awk 'NR == 2 { print $5 }')
    ok=1
    [ $rc = 0 ] && [ -z "$errs" ] && [ -n "$new" ] && [ "$new" != "$old" ] && ! echo "$state" | grep -q p && ok=0
    if [ -n "${MOVE_FAILED:-}" ] && [ $ok != 0 ]; then
        echo "NOTE $test failed, rc=$rc, state ${state:-none}: ${errs:-$(grep -i -E 'error|fail|cannot' /var/log/xen/$test.log | head -4 | tr '\n' ' ')}" | tee -a $OUT/notes.txt
        return 1
    fi
    check $test $ok "$* rc=$rc in ${took}s: domid $old -> ${new:-none}, state ${state:-none} (log $test.log)${errs:+; libxl errors: $errs}$([ $rc = 0 ] || grep -i -m2 -E 'error|fail' /var/log/xen/$test.log | sed 's/^/: /' | tr '\n' ' ')"
    [ $ok = 0 ] || return 1
    # (the last field: the sr rounds the guest had reported by then)
    echo "$test $old $new $(up) $(rounds)" >>$OUT/domids.txt
    join_taps
    [ "$broker" = 1 ] && confinement $test $new
    return 0
}

# full_checks NAME: the disk, network and display phases' checksums.
full_checks() {
    for d in sda nvme0n1; do
        r=$(guest_result $1 disk.$d)
        check $1.disk-$d $(case "$r" in match*) echo 0 ;; *) echo 1 ;; esac) "write + read back: ${r:-no result}"
    done
    r=$(guest_result $1 net.down)
    check $1.net-down $([ "$r" = "$BLOB" ]; echo $?) "dom0 -> guest ${xg_net_mb:-4} MiB over e1000: guest md5 ${r:-none}, dom0 md5 $BLOB"
    s=$(guest_result $1 net.up-sent)
    g=$(guest_result $1 net.up-received)
    d=$(md5sum <$XG/upload.bin 2>/dev/null | cut -d' ' -f1)
    check $1.net-up $([ -n "$s" ] && [ "$s" = "$g" ] && [ "$s" = "$d" ]; echo $?) "guest -> dom0 ${xg_net_mb:-4} MiB: guest sent md5 ${s:-none}, dom0 received $(wc -c <$XG/upload.bin 2>/dev/null) bytes md5 ${d:-none}, guest read back dom0's md5 ${g:-none}"
    rm -f $XG/upload.bin
    want=$(cat /lib/xg-picture.md5)
    drawn=$(guest_result $1 display.drawn)
    frame=$(md5sum <$OUT/frame-$1.raw 2>/dev/null | cut -d' ' -f1)
    check $1.display $([ "$drawn" = "$want" ] && [ "$frame" = "$want" ]; echo $?) "mode $(guest_result $1 display.mode): picture md5 $want, guest fb0 ${drawn:-none}, VNC frame ${frame:-none} ($(cat $OUT/vnc-$1.txt 2>/dev/null | tr '\n' ' '))"
}

# run_guest NAME BROKER(0|1): the workload from xl create to power-off.
run_guest() {
    name=$1 broker=$2
    : >$OUT/phases-$name.txt
    T0=$(up)
    xl -vvv create /etc/xen/$name.cfg >/var/log/xen/xl-create-$name.log 2>&1
    rc=$?
    domid=$(xl domid $name 2>/dev/null)
    if [ $rc != 0 ] || [ -z "$domid" ]; then
        fail $name.create "xl create rc=$rc (log xl-create-$name.log)"
        tail -n 20 /var/log/xen/xl-create-$name.log
        return
    fi
    how="QEMU under dmop-qemu-wrapper"
    [ "$broker" = 1 ] || how="stock QEMU, no broker (the baseline)"
    result $name.create PASS "domid $domid, xl create returned in $(since $T0)s; $how, dm_restrict=$(sed -n 's/^dm_restrict = //p' /etc/xen/$name.cfg)"
    echo "create - $domid $T0" >$OUT/domids.txt
    listen_upload
    seen=" " vnc="" size="" n=0 stopped=0
    while :; do
        # Little work per turn: dom0 has one vCPU, which its QEMU needs.
        sleep 0.5
        n=$((n + 1))
        now=$(stat -c %s /var/log/xen/guest-$name.log /var/log/xen/guest-$name--incoming.log 2>/dev/null | tr '\n' +)
        if [ "$now" = "$size" ] && [ $((n % 20)) != 0 ]; then continue; fi
        size=$now
        join_taps
        log=$(console $name)
        for p in $(echo "$log" | sed -n 's/^XG PHASE //p'); do
            case "$seen" in *" $p "*) continue ;; esac
            seen="$seen$p "
            echo "$p $(up)" >>$OUT/phases-$name.txt
            say "[$name] phase $p"
            case $p in
            probe) [ "$broker" = 1 ] && confinement $name $domid ;;
            display)
                vnc-watch 127.0.0.1 5900 $OUT/frame-$name.raw >$OUT/vnc-$name.txt 2>&1 &
                vnc=$!
                ;;
            sr)
                save_restore $name $broker
                [ $? = 2 ] && stopped=1
                touch $XG/www/sr-done
                ;;
            esac
        done
        if [ -n "$vnc" ] && echo "$log" | grep -q '^XG DRAWN'; then
            sleep 3
            kill $vnc
            wait $vnc
            vnc=""
        fi
        echo "$log" | grep -q '^XG DONE' && break
        [ $stopped = 1 ] && break
        xl list $name >/dev/null 2>&1 || break
        if xl list $name 2>/dev/null | awk 'NR == 2 { exit $5 !~ /c/ }'; then
            fail $name.finished "the guest crashed; last console lines: $(echo "$log" | grep -v '^ *$' | tail -3 | tr '\n' ' ')"
            break
        fi
        awk -v a="$T0" -v b="$(up)" -v w="${xg_wait:-600}" 'BEGIN { exit !(b - a >= w) }' && {
            fail $name.finished "no XG DONE within ${xg_wait:-600}s; last console line: $(echo "$log" | tail -1)"
            break
        }
    done
    echo "DONE $(up)" >>$OUT/phases-$name.txt
    # CPU time per process: how much of the run dom0's QEMU and broker used
    ps -eo pid,user,etime,time,args | grep -E 'qemu-system|dmop-broker|xenconsoled' | grep -v grep >$OUT/ps-$name.txt
    [ -n "$vnc" ] && kill $vnc
    log=$(console $name)
    echo "$log" | grep -q '^XG DONE' && result $name.finished PASS "workload complete $(since $T0)s after xl create"
    if [ $stopped = 1 ]; then
        # (xl save failed with QEMU gone or the guest not resumed: it waits forever)
        result $name.finished PASS "workload complete up to the save $(since $T0)s after xl create; $STOP_WHY left it unable to go on"
        xl destroy $name
    fi
    # The guest powers off (on_poweroff = destroy): QEMU and the brokers go.
    n=0
    while xl list $name >/dev/null 2>&1 && [ $n -lt 100 ]; do sleep 0.2; n=$((n + 1)); done
    xl list $name >/dev/null 2>&1 && xl destroy $name
    if [ "$broker" = 1 ]; then
        sleep 2
        left=$(for b in $(cat $OUT/brokers-*.txt 2>/dev/null); do [ -d /proc/$b ] && echo $b; done)
        all=$(pgrep -f 'dmop-broker serve' | tr '\n' ' ')
        check $name.brokers-exit $([ -z "$left$all" ]; echo $?) "brokers $(cat $OUT/brokers-*.txt 2>/dev/null | tr '\n' ' ')gone after the domain ended${all:+; still running: $all}"
    fi
    mv $OUT/domids.txt $OUT/domids-$name.txt
    cp -a /var/log/xen/. $OUT/ 2>/dev/null
    sync
    cp /var/log/xen/guest-$name.log $OUT/console-$name.txt 2>/dev/null
    # The guest's own checks, from its console.
    r=$(guest_result $name probe.insmod-failed)
    check $name.drivers $([ "$r" = none ]; echo $?) "modules that failed to load: ${r:-no result}; devices: $(guest_result $name probe.devices)"
    # (xg-sr runs the save/restore rounds only)
    [ $name = xg-sr ] || full_checks $name
    # (xg-plain and xg-brk have save/restore rounds only with --nvme-save)
    if [ $stopped = 0 ] && case "$seen" in *" sr "*) true ;; *) false ;; esac; then
        t=$(sr_test $name)
        bad=$(echo "$log" | sed -n 's/^XG RESULT sr.round[0-9]*=//p' | grep -vc '^match\(/match\)*$')
        rounds=$(echo "$log" | grep -c '^XG RESULT sr.round')
        # rounds the guest reported after its last move (all when it never moved)
        after=$(awk -v r="$rounds" 'NR > 1 { m = $5 } END { print r - m }' $OUT/domids-$name.txt)
        check $t.workload $([ "$rounds" -gt 0 ] && [ "$bad" = 0 ] && [ "$after" -gt 0 ]; echo $?) "$rounds disk rounds across save/restore/migrate ($after after the last move), $bad mismatched"
        r=$(guest_result $name sr.net-after)
        check $t.network $([ "$r" = "$BLOB" ]; echo $?) "network after save/restore/migrate: guest md5 ${r:-none}, dom0 md5 $BLOB"
    fi
    rm -f $XG/www/sr-done
}

for g in $(echo "${xg_guests:-plain+brk+sr}" | tr + ' '); do
    case $g in
    plain) run_guest xg-plain 0 ;;
    brk) run_guest xg-brk 1 ;;
    sr) run_guest xg-sr 1 ;;
    *) fail dom0.guests "unknown guest $g" ;;
    esac
done
echo "XG-COUNT $(grep -c . $OUT/results.txt)" | tee $OUT/count.txt
end_run
