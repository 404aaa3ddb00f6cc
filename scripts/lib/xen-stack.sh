# SPDX-License-Identifier: MIT
# shellcheck shell=bash
# (Variables set here are read by the scripts that source this file.)
# shellcheck disable=SC2034
# scripts/lib/xen-stack.sh - the Debian release a real-Xen harness boots.
# Sourced (bash) by scripts/xen-test, scripts/xen-qemu-test and
# scripts/xen-guest-test. One place knows, per release: the suite, the Xen
# branch, how the kernel is compressed, where its modules live, what the
# dom0 rootfs installs. Nothing here touches the host's APT sources: a suite
# that is not the host's gets a private APT state under the scratch folder.
#
# stack_select NAME SCRATCH sets (readonly in spirit):
#   STACK        bookworm | trixie
#   STACK_SUITE  the Debian suite
#   STACK_XEN    Xen branch (4.17, 4.20): package names xen-hypervisor-X-amd64,
#                xen-utils-X, /usr/lib/xen-X/bin
#   STACK_QEMU   the qemu-system-xen generation the suite ships (7.2, 10.0)
#   STACK_STOCK_DM_RESTRICT  1 when the suite's stock QEMU starts under
#                libxl with dm_restrict=1, else 0 (trixie: libxl's 256 KiB
#                RLIMIT_FSIZE ends QEMU 10 at its first display surface)
#   STACK_DIR    SCRATCH/STACK: this release's caches (guest/, rootfs/, apt/)
# Functions (each needs stack_select first): stack_apt, stack_candidate,
# stack_fetch_guest, stack_guest_paths, stack_vmlinux, stack_debootstrap,
# stack_headers, stack_install_project, stack_dom0_initrd. They print
# progress to stderr and return non-zero with a message on failure; callers
# decide whether a failure is fatal or a FAIL line.

STACKS_KNOWN="bookworm trixie"

# stack_parse VALUE: the list of stacks --stack VALUE names, or nothing.
stack_parse() {
    case "$1" in
    all) echo "$STACKS_KNOWN" ;;
    bookworm | trixie) echo "$1" ;;
    *) return 1 ;;
    esac
}

stack_select() {
    STACK="$1"
    case "$STACK" in
    bookworm) STACK_SUITE=bookworm STACK_XEN=4.17 STACK_QEMU=7.2 STACK_STOCK_DM_RESTRICT=1 ;;
    trixie) STACK_SUITE=trixie STACK_XEN=4.20 STACK_QEMU=10.0 STACK_STOCK_DM_RESTRICT=0 ;;
    *) echo "xen-stack: unknown stack '$STACK' (bookworm, trixie or all)" >&2; return 2 ;;
    esac
    STACK_DIR="$2/$STACK"
    mkdir -p "$STACK_DIR"
    STACK_LOG="${STACK_LOG:-$STACK_DIR/apt.log}"
}

# The host's own Debian mirror (the main archive, not -security).
stack_mirror() {
    [ -n "${XQ_MIRROR:-}" ] && { echo "$XQ_MIRROR"; return 0; }
    { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{ print $2 }'
        grep -hoE '^deb +(\[[^]]*\] +)?[a-z]+://[^ ]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
            awk '{ print $NF }'
    } | grep -v -- '-security' | grep -E '/debian/?$' | head -1 || true
}

stack_host_suite() { . /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}"; }

# stack_apt CMD ARGS...: apt-get or apt-cache (CMD) for this release. The
# host's suite uses the host's APT; another suite gets a private sources
# list, lists and cache under STACK_DIR/apt (updated once per run).
stack_apt() {
    local cmd="$1"
    shift
    if [ "$STACK_SUITE" = "$(stack_host_suite)" ]; then
        "$cmd" "$@"
        return
    fi
    local a="$STACK_DIR/apt" mirror
    if [ -z "${STACK_APT_READY:-}" ] || [ "$STACK_APT_READY" != "$STACK" ]; then
        mirror="$(stack_mirror)"
        [ -n "$mirror" ] || { echo "xen-stack: no Debian mirror found; set XQ_MIRROR" >&2; return 1; }
        mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/etc/preferences.d" "$a/etc/sources.list.d"
        : >"$a/status"
        cat >"$a/sources.list" <<EOS
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $STACK_SUITE main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $STACK_SUITE-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] ${mirror%/debian}/debian-security $STACK_SUITE-security main
EOS
        STACK_APT_OPTS=(-o "Dir::Etc::SourceList=$a/sources.list" -o "Dir::Etc::SourceParts=$a/etc/sources.list.d"
            -o "Dir::Etc::Preferences=$a/etc/preferences" -o "Dir::Etc::PreferencesParts=$a/etc/preferences.d"
            -o "Dir::State::Lists=$a/lists" -o "Dir::State::status=$a/status" -o "Dir::Cache=$a/cache"
            -o "APT::Architecture=amd64" -o "APT::Sandbox::User=root" -o "Debug::NoLocking=1")
        # A day-old index is good enough for a test run; refresh otherwise.
        if [ -z "$(find "$a/lists" -maxdepth 1 -name "*_dists_${STACK_SUITE}_InRelease" -mmin -1440 2>/dev/null)" ]; then
            echo "xen-stack: apt-get update for $STACK_SUITE (private lists in $a)" >&2
            apt-get "${STACK_APT_OPTS[@]}" update -q >>"$STACK_LOG" 2>&1 ||
                { echo "xen-stack: apt-get update for $STACK_SUITE failed (log: $STACK_LOG)" >&2; return 1; }
        fi
        STACK_APT_READY="$STACK"
    fi
    "$cmd" "${STACK_APT_OPTS[@]}" "$@"
}

# stack_candidate PKG: the version apt would install from this release.
stack_candidate() {
    stack_apt apt-cache show --no-all-versions "$1" 2>/dev/null | awk '/^Version:/ { print $2; exit }'
}

# stack_kernel_pkg: the linux-image-VERSION-amd64 that linux-image-amd64 names.
stack_kernel_pkg() {
    stack_apt apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
        sed -n 's/^Depends: \(linux-image-[^ ,]*\).*/\1/p' | head -1
}

# stack_download DIR PKG...: the .debs of PKG into DIR.
stack_download() {
    local dir="$1"
    shift
    mkdir -p "$dir"
    (cd "$dir" && stack_apt apt-get download "$@") >>"$STACK_LOG" 2>&1 ||
        { echo "xen-stack: apt-get download $* ($STACK_SUITE) failed (log: $STACK_LOG)" >&2; return 1; }
}

# stack_fetch_guest TAR-PATTERN...: Xen and the dom0 kernel of this release
# unpacked under STACK_DIR/guest (only the files matching the patterns, which
# are relative to the kernel's module folder, plus vmlinuz and xen-*.gz).
# Cached per package version. Sets GUEST (the folder).
stack_fetch_guest() {
    GUEST="$STACK_DIR/guest"
    mkdir -p "$GUEST/debs"
    local kpkg pkg want pat pats
    kpkg="$(stack_kernel_pkg)"
    # The host's own lists may never have been fetched (a fresh machine).
    if [ -z "$kpkg" ] && [ "$STACK_SUITE" = "$(stack_host_suite)" ]; then
        apt-get -o DPkg::Lock::Timeout=600 update -q >>"$STACK_LOG" 2>&1 || true
        kpkg="$(stack_kernel_pkg)"
    fi
    [ -n "$kpkg" ] || { echo "xen-stack: apt knows no linux-image-amd64 in $STACK_SUITE (log: $STACK_LOG)" >&2; return 1; }
    for pkg in "$kpkg" "xen-hypervisor-$STACK_XEN-amd64"; do
        want="$pkg $(stack_candidate "$pkg")"
        [ "$want" != "$pkg " ] || { echo "xen-stack: apt knows no $pkg in $STACK_SUITE" >&2; return 1; }
        [ "$(cat "$GUEST/.$pkg" 2>/dev/null)" = "$want" ] && continue
        echo "xen-stack: fetching $want ($STACK_SUITE)" >&2
        rm -f "$GUEST/debs/${pkg}_"*.deb
        stack_download "$GUEST/debs" "$pkg" || return 1
        # Modules are under lib/modules (bookworm) or usr/lib/modules (trixie).
        pats=('./boot/vmlinuz-*' './boot/xen-*.gz')
        for pat in "$@"; do pats+=("./lib/modules/*/$pat" "./usr/lib/modules/*/$pat"); done
        dpkg-deb --fsys-tarfile "$GUEST/debs/${pkg}_"*.deb |
            tar -x -C "$GUEST" --wildcards "${pats[@]}" 2>>"$STACK_LOG" || true
        rm -f "$GUEST/debs/${pkg}_"*.deb
        echo "$want" >"$GUEST/.$pkg"
    done
}

# stack_guest_paths: after stack_fetch_guest, sets KV, VMLINUZ, XENGZ,
# MODDIR (the folder holding KV/), XENVER (the hypervisor package's version).
stack_guest_paths() {
    MODDIR="$GUEST/lib/modules"
    [ -d "$GUEST/usr/lib/modules" ] && MODDIR="$GUEST/usr/lib/modules"
    KV="$(find "$MODDIR" -mindepth 1 -maxdepth 1 -name '*-amd64' -printf '%f\n' 2>/dev/null | sort -V | tail -1)"
    VMLINUZ="$GUEST/boot/vmlinuz-$KV"
    XENGZ="$(ls -1 "$GUEST"/boot/xen-"$STACK_XEN"*-amd64.gz 2>/dev/null | sort -V | tail -1)"
    XENVER="$(cut -d' ' -f2 "$GUEST/.xen-hypervisor-$STACK_XEN-amd64" 2>/dev/null || true)"
    [ -n "$KV" ] && [ -r "$VMLINUZ" ] || { echo "xen-stack: no $STACK_SUITE amd64 kernel under $GUEST" >&2; return 1; }
    [ -n "$XENGZ" ] || { echo "xen-stack: no Xen $STACK_XEN under $GUEST/boot" >&2; return 1; }
}

# stack_vmlinux CACHE-DIR: the kernel's ELF, unpacked from the bzImage once
# per kernel file (Xen would unpack it itself at TCG speed). bookworm's
# payload is xz, trixie's zstd. Sets VMLINUX.
stack_vmlinux() {
    VMLINUX="$1/vmlinux-$STACK-$KV-$(stat -c %Y-%s "$VMLINUZ")"
    [ -s "$VMLINUX" ] && return 0
    rm -f "$1/vmlinux-$STACK-"*
    local off magic unpack
    # (awk reads to the end: head would SIGPIPE grep and trip pipefail)
    for magic in xz zstd; do
        case $magic in
        xz) off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | awk -F: 'NR == 1 { print $1 }')" unpack="xz -dcq" ;;
        zstd) off="$(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$VMLINUZ" | awk -F: 'NR == 1 { print $1 }')" unpack="zstd -dcq" ;;
        esac
        [ -n "$off" ] || continue
        # Both stop at the end of the stream and complain about what follows.
        tail -c +$((off + 1)) "$VMLINUZ" | $unpack >"$VMLINUX.tmp" 2>/dev/null || true
        if [ "$(head -c 4 "$VMLINUX.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
            mv "$VMLINUX.tmp" "$VMLINUX"
            return 0
        fi
    done
    rm -f "$VMLINUX.tmp"
    echo "xen-stack: no ELF vmlinux (xz or zstd payload) in $VMLINUZ" >&2
    return 1
}

# stack_module KO-PATH OUT: a module file, decompressed when it is .ko.xz.
stack_module() {
    case "$1" in
    *.ko) cp "$1" "$2" ;;
    *.ko.xz) xz -dc "$1" >"$2" ;;
    *.ko.zst) zstd -dcq "$1" >"$2" ;;
    *) echo "xen-stack: unexpected module file $1" >&2; return 1 ;;
    esac
}

# What the dom0 rootfs of xen-qemu-test / xen-guest-test installs besides
# xen-utils (pinned to the hypervisor's version: the suite's main archive
# may be older than its -security, and the utils must match the hypervisor).
stack_rootfs_packages() {
    echo "xen-utils-$STACK_XEN=$XENVER xen-utils-common qemu-system-xen seabios libseccomp2 kmod procps iproute2 strace systemd-standalone-sysusers"
}

# stack_debootstrap ROOTFS REBUILD EXTRA-PKGS: a minbase rootfs of this release
# with the toolstack, QEMU and SeaBIOS, users xen-qemuuser-shared and
# dmop-broker. Cached: rebuilt when REBUILD=1 or its package list changed.
stack_debootstrap() {
    local rootfs="$1" rebuild="$2" pkgs mirror key log="$STACK_DIR/rootfs.log"
    mirror="$(stack_mirror)"
    [ -n "$mirror" ] || { echo "xen-stack: no Debian mirror found; set XQ_MIRROR" >&2; return 1; }
    pkgs="$(stack_rootfs_packages) ${3:-}"
    key="$STACK_SUITE minbase $mirror $pkgs"
    if [ "$rebuild" != 1 ] && [ "$(cat "$rootfs.key" 2>/dev/null)" = "$key" ] &&
        [ -x "$rootfs/usr/libexec/xen-qemu-system-i386" ]; then
        return 0
    fi
    echo "xen-stack: debootstrap $STACK_SUITE into $rootfs" >&2
    rm -rf "$rootfs" "$rootfs.key"
    debootstrap --variant=minbase "$STACK_SUITE" "$rootfs" "$mirror" >"$log" 2>&1 ||
        { tail -20 "$log" >&2; echo "xen-stack: debootstrap failed (log: $log)" >&2; return 1; }
    # No service may start in the chroot.
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod +x "$rootfs/usr/sbin/policy-rc.d"
    cat >"$rootfs/etc/apt/sources.list" <<EOS
deb $mirror $STACK_SUITE main
deb $mirror $STACK_SUITE-updates main
deb ${mirror%/debian}/debian-security $STACK_SUITE-security main
EOS
    # (xen-utils' postinst says it cannot find the hypervisor in sysfs: harmless)
    chroot "$rootfs" /bin/sh -c "export DEBIAN_FRONTEND=noninteractive; apt-get update -q &&
        apt-get install -y -q --no-install-recommends $pkgs && apt-get clean" >>"$log" 2>&1 ||
        { tail -20 "$log" >&2; echo "xen-stack: apt in the $STACK_SUITE rootfs failed (log: $log)" >&2; return 1; }
    local u
    for u in xen-qemuuser-shared dmop-broker; do
        chroot "$rootfs" useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
    done
    rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/man" "$rootfs/usr/share/locale" "$rootfs/var/cache/apt"/*.bin
    echo "$key" >"$rootfs.key"
}

# stack_dom0_modules ROOTFS: the dom0 kernel's modules a full dom0 needs
# (xen, virtio, block, ext4), depmod'ed inside the rootfs.
stack_dom0_modules() {
    local rootfs="$1" dest
    rm -rf "$rootfs/lib/modules/$KV" "$rootfs/usr/lib/modules/$KV"
    dest="$rootfs/lib/modules/$KV"
    mkdir -p "$dest"
    (cd "$MODDIR/$KV" && cp --parents -r kernel/drivers/xen kernel/drivers/block kernel/drivers/virtio \
        kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/mbcache.ko* kernel/lib kernel/crypto \
        modules.order modules.builtin modules.builtin.modinfo "$dest/") 2>>"$STACK_LOG" || true
    depmod -b "$rootfs" "$KV"
}

# The dom0 modules' tar patterns for stack_fetch_guest.
STACK_DOM0_MODULE_PATTERNS=('kernel/drivers/xen/*' 'kernel/drivers/block/*' 'kernel/drivers/virtio/*'
    'kernel/fs/ext4/*' 'kernel/fs/jbd2/*' 'kernel/fs/mbcache.ko*' 'kernel/lib/*' 'kernel/crypto/*'
    'modules.order' 'modules.builtin' 'modules.builtin.modinfo')

# stack_headers DIR: this release's libxen-dev and libseccomp-dev unpacked
# into DIR (DIR/usr/include is then an include folder for a second build).
# Cached per version. Prints the include folder.
stack_headers() {
    local dir="$1" want
    want="libxen-dev $(stack_candidate libxen-dev) libseccomp-dev $(stack_candidate libseccomp-dev)"
    if [ "$(cat "$dir/.versions" 2>/dev/null)" != "$want" ]; then
        rm -rf "$dir"
        mkdir -p "$dir/debs"
        stack_download "$dir/debs" libxen-dev libseccomp-dev || return 1
        local d
        for d in "$dir"/debs/*.deb; do dpkg-deb -x "$d" "$dir"; done
        rm -rf "$dir/debs"
        echo "$want" >"$dir/.versions"
    fi
    echo "$dir/usr/include"
}

# stack_install_project ROOTFS BIN POLICY-DIR: the project installed as users
# install it: the Debian package (scripts/package, from the release build
# whose products are in BIN, relinked without SwiftPM's RUNPATH) installed with
# apt-get install ./dmop-broker_VERSION_amd64.deb in the rootfs. The package
# ships the policies (POLICY-DIR is the source of both). The one place the
# harnesses install the project into a dom0 rootfs.
stack_install_project() {
    local rootfs="$1" bin="$2" root deb name log="$STACK_DIR/install.log"
    root="$(cd "$3/.." && pwd)"
    deb="$(cd "$root" && DMOP_SWIFT_SCRATCH="$(cd "$bin/../.." && pwd)" scripts/package 2>"$log")" ||
        { tail -20 "$log" >&2; echo "xen-stack: scripts/package failed (log: $log)" >&2; return 1; }
    name="$(basename "$deb")"
    # A clean install each run: the previous run's package and files go first.
    chroot "$rootfs" dpkg --purge dmop-broker >>"$log" 2>&1 || true
    rm -rf "$rootfs/etc/dmop-broker"
    cp "$deb" "$rootfs/tmp/$name"
    chroot "$rootfs" /bin/sh -c "export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -q --no-install-recommends ./tmp/$name || { apt-get update -q && apt-get install -y -q --no-install-recommends ./tmp/$name; }" \
        >>"$log" 2>&1 ||
        { tail -20 "$log" >&2; echo "xen-stack: apt-get install ./$name in the $STACK_SUITE rootfs failed (log: $log)" >&2; return 1; }
    rm -f "$rootfs/tmp/$name"
    chroot "$rootfs" /usr/sbin/dmop-qemu-wrapper --version >&2 ||
        { echo "xen-stack: the installed dmop-qemu-wrapper does not run" >&2; return 1; }
}

# stack_dom0_initrd ROOTFS INIT OUT: the dom0's initramfs (busybox, gzip
# cpio) into OUT: it loads virtio-blk and ext4 from ROOTFS's modules for
# $KV, mounts /dev/vda (the image made of ROOTFS) and runs INIT there as
# PID 1. Xen's multiboot loader hands the kernel no root= disk of its own.
stack_dom0_initrd() {
    local rootfs="$1" init="$2" out="$3" r mods="" m f b
    r="$(mktemp -d)" || return 1
    mkdir -p "$r"/{bin,proc,sys,dev,newroot,lib/modules}
    cp /bin/busybox "$r/bin/"
    for b in sh mount insmod switch_root sleep echo cat; do ln -s busybox "$r/bin/$b"; done
    for m in virtio_pci virtio_blk crc32c_generic ext4; do
        for f in $(modprobe -d "$rootfs" -S "$KV" --show-depends $m | awk '/^insmod/ { print $2 }'); do
            b=$(basename "$f" | sed -E 's/\.(xz|zst)$//')
            case " $mods " in *" $b "*) continue ;; esac
            stack_module "$f" "$r/lib/modules/$b" || { rm -rf "$r"; return 1; }
            mods="$mods $b"
        done
    done
    cat >"$r/init" <<EOS
#!/bin/sh
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $mods; do insmod /lib/modules/\$m || echo "INITRD: insmod \$m failed"; done
i=0; while [ ! -b /dev/vda ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "INITRD: mount failed"; echo o > /proc/sysrq-trigger; }
mount --move /dev /newroot/dev; umount /proc /sys
exec switch_root /newroot $init
EOS
    chmod +x "$r/init"
    (cd "$r" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$out"
    local rc=$?
    rm -rf "$r"
    return $rc
}

# stack_run_all SCRIPT-NAME STACKS -- CMD...: runs CMD once per stack with
# "--stack S" appended, each closing on its own "N passed, N failed"; then
# prints the total. Exit 0 only when every stack passed.
stack_run_all() {
    local name="$1" stacks="$2" s rc=0 p f tp=0 tf=0 out
    shift 3
    for s in $stacks; do
        echo "==== $name: stack $s ===="
        out="$(mktemp)"
        "$@" --stack "$s" | tee "$out" || rc=1
        read -r p f < <(awk '/^[0-9]+ passed, [0-9]+ failed$/ { p = $1; f = $3 } END { print p + 0, f + 0 }' "$out")
        # A run that died before its summary counts as one failure.
        grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$out" || f=$((f + 1))
        rm -f "$out"
        tp=$((tp + p)) tf=$((tf + f))
    done
    echo "==== $name: all stacks ($stacks) ===="
    echo "total: $tp passed, $tf failed"
    [ "$rc" = 0 ] && [ "$tf" = 0 ]
}
