#!/bin/sh
# SPDX-License-Identifier: MIT
# PID 1 of the Linux HVM guest of scripts/xen-guest-test (busybox initramfs,
# the release's own kernel). It runs the workload and reports on hvc0, the
# Xen PV console (xenconsoled logs it in dom0; no ioreq per character):
#   XG PHASE <name>     a phase starts (dom0 attributes DMOPs from here on)
#   XG RESULT <k>=<v>   a figure or checksum for the harness
#   XG DONE             the workload is complete
# Phases: probe (drivers), disk (IDE with INTx/ISA interrupts, NVMe with
# MSI-X: write then read back xg_mb MiB, md5 compared), net (e1000 on dom0's
# bridge: xg_net_mb MiB down over HTTP and up over nc, md5 on both ends:
# busybox wget cannot post binary data), display (stdvga via
# bochs-drm: draw the test picture on /dev/fb0, dom0's VNC client compares),
# sr (rounds of xg_sr_mb MiB on each disk it has during which dom0 saves,
# restores and migrates the guest). At each phase, the kernel's new log
# lines as XG DMESG lines. With xg_workload=sr (the guest without NVMe
# that dom0 saves and restores) only probe and sr run.
# Settings arrive as kernel command-line words: xg_mb, xg_net_mb, xg_rounds,
# xg_workload (full or sr).
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
up() { cut -d' ' -f1 /proc/uptime; }
say() { echo "XG $*"; }
result() { say "RESULT $*"; }
T_PHASE=""
phase() {
    [ -n "$T_PHASE" ] && result "time.$P_NAME=$(awk -v a="$T_PHASE" -v b="$(up)" 'BEGIN { printf "%.2f", b - a }')"
    P_NAME=$1
    # the kernel's log so far (its timestamps show where a phase's time went)
    dmesg -c 2>/dev/null | sed 's/^/XG DMESG /'
    # dom0 polls the console log: give it time to mark the phase boundary
    say "PHASE $1"
    sleep 1
    T_PHASE=$(up)
}
md5() { md5sum | cut -d' ' -f1; }
net_up() {
    ip link set lo up
    ip link set eth0 up
    ip addr add 10.9.0.2/24 dev eth0
    i=0
    while ! ping -c 1 -W 1 10.9.0.1 >/dev/null 2>&1 && [ $i -lt 30 ]; do i=$((i + 1)); done
    result "net.link=ping-after-$i-retries"
}
MB=${xg_mb:-16}
SR_MB=${xg_sr_mb:-4}
NET_MB=${xg_net_mb:-4}
ROUNDS=${xg_rounds:-0}
WORKLOAD=${xg_workload:-full}
say "INIT kernel=$(uname -r) uptime=$(up)"
result "boot.uptime=$(up)"

phase probe
failed=""
for m in $(cat /lib/modules/order); do
    t0=$(up)
    insmod /lib/modules/$m 2>/dev/null || failed="$failed$m,"
    say "INSMOD $m $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2fs", b - a }')"
done
result "probe.insmod-failed=${failed:-none}"
i=0
while [ $i -lt 100 ]; do
    [ -b /dev/sda ] && { [ -b /dev/nvme0n1 ] || [ "$WORKLOAD" = sr ]; } && [ -e /sys/class/net/eth0 ] && [ -e /dev/fb0 ] && break
    sleep 0.2; i=$((i + 1))
done
for d in /sys/bus/pci/devices/*; do
    drv=$(basename "$(readlink $d/driver)" 2>/dev/null)
    say "PCI $(basename $d) $(cat $d/vendor):$(cat $d/device) driver=${drv:-none} irq=$(cat $d/irq) msi=$(ls $d/msi_irqs 2>/dev/null | wc -l)"
done
result "probe.devices=$(ls /sys/block | tr '\n' ',')$(ls /sys/class/net | tr '\n' ',')$(ls /dev/fb* 2>/dev/null | tr '\n' ',')"

dd if=/dev/urandom of=/tmp/pat bs=1M count=$MB iflag=fullblock 2>/dev/null
SUM=$(md5 </tmp/pat)
# disk_round DEV MIB: write the pattern's first MIB MiB, read them back.
disk_round() {
    dd if=/tmp/pat of=$1 bs=1M count=$2 oflag=direct conv=fsync 2>/dev/null
    echo 3 >/proc/sys/vm/drop_caches
    got=$(dd if=$1 bs=1M count=$2 iflag=direct 2>/dev/null | md5)
    want=$(head -c $(($2 * 1048576)) /tmp/pat | md5)
    [ "$got" = "$want" ] && echo match || echo "mismatch:$got"
}
if [ "$WORKLOAD" = full ]; then
    phase disk
    for dev in /dev/sda /dev/nvme0n1; do
        n=$(basename $dev)
        if [ -b $dev ]; then
            t0=$(up)
            r=$(disk_round $dev $MB)
            result "disk.$n=$r ${MB}MiB $(awk -v a="$t0" -v b="$(up)" 'BEGIN { printf "%.2fs", b - a }')"
        else
            result "disk.$n=absent"
        fi
    done
    grep -E 'ata_piix|nvme' /proc/interrupts | tr -s ' ' | sed 's/^/XG INTERRUPTS /'

    phase net
    net_up
    down=$(timeout 300 wget -q -O - http://10.9.0.1:8080/blob | md5)
    result "net.down=$down"
    head -c $((NET_MB * 1048576)) /tmp/pat >/tmp/up
    result "net.up-sent=$(md5 </tmp/up)"
    timeout 300 nc 10.9.0.1 8081 </tmp/up
    i=0
    until got=$(wget -q -O - http://10.9.0.1:8080/up.md5 2>/dev/null) || [ $i -ge 30 ]; do sleep 1; i=$((i + 1)); done
    result "net.up-received=$got"
    grep -E 'eth0' /proc/interrupts | tr -s ' ' | sed 's/^/XG INTERRUPTS /'

    phase display
    for v in /sys/class/vtconsole/vtcon*; do
        # the framebuffer console would draw its cursor over the test picture
        grep -q 'frame buffer' $v/name 2>/dev/null && echo 0 >$v/bind
    done
    fbsize="$(cat /sys/class/graphics/fb0/virtual_size 2>/dev/null) $(cat /sys/class/graphics/fb0/stride 2>/dev/null)"
    result "display.mode=$(echo $fbsize | tr ' ' ',')"
    # dom0's VNC client connects on "PHASE display"
    sleep 3
    dd if=/lib/picture of=/dev/fb0 bs=65536 2>/dev/null
    sync
    result "display.drawn=$(head -c $(wc -c </lib/picture) /dev/fb0 | md5)"
    say "DRAWN"
    sleep 4
fi

if [ "$ROUNDS" -gt 0 ]; then
    # Rounds go on until dom0 has saved, restored and migrated the guest
    # (it then serves sr-done), at most ROUNDS of them.
    [ "$WORKLOAD" = sr ] && net_up
    SR_DISKS=/dev/sda
    [ -b /dev/nvme0n1 ] && SR_DISKS="/dev/nvme0n1 $SR_DISKS"
    phase sr
    k=1
    while [ $k -le "$ROUNDS" ]; do
        r=""
        for dev in $SR_DISKS; do r="$r${r:+/}$(disk_round $dev $SR_MB)"; done
        result "sr.round$k=$r"
        wget -q -O /dev/null http://10.9.0.1:8080/sr-done 2>/dev/null && break
        k=$((k + 1))
    done
    result "sr.net-after=$(wget -q -O - http://10.9.0.1:8080/blob | md5)"
fi
phase end
say DONE
sleep 1
poweroff -f
