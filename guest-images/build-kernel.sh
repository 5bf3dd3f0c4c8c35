#!/usr/bin/env bash
# Build isol's minimal x86_64 guest kernel.
#
#   guest-images/build-kernel.sh [--out DIR] [--force] [--quiet]
#
# Source: Debian's linux-source-6.1 (/usr/src/linux-source-6.1.tar.xz).
# Config: `make tinyconfig` + guest-images/kernel/isol-guest.config
#         (merge_config.sh), then `make olddefconfig`; every required option is
#         verified to be =y afterwards.
# Output: vmlinux (ELF with the PVH note), bzImage, config, release (uname -r),
#         build.log, fragment.config, key — in the cache directory
#         ${ISOL_CACHE:-/var/cache/isol}/kernel/<key>/ where <key> hashes the
#         linux-source package version, the fragment and this script. A second
#         run with the same inputs just prints the directory. With --out DIR the
#         artifacts are also copied to DIR.
# stdout: exactly one line, the cache directory. Progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
script="$here/$(basename "${BASH_SOURCE[0]}")"
fragment="$here/kernel/isol-guest.config"
src_pkg=linux-source-6.1
src_tar=/usr/src/linux-source-6.1.tar.xz

out=""
force=0
quiet=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --out=*) out=${1#--out=}; shift ;;
        --force) force=1; shift ;;
        --quiet|-q) quiet=1; shift ;;
        -h|--help) sed -n '2,18p' "$script" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-kernel.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done

# Options that must be =y in the final .config (the issue's list).
required=(
    64BIT SMP PRINTK SERIAL_8250 SERIAL_8250_CONSOLE HYPERVISOR_GUEST PARAVIRT
    KVM_GUEST PVH BLK_DEV_INITRD BINFMT_ELF BINFMT_SCRIPT PROC_FS SYSFS DEVTMPFS
    DEVTMPFS_MOUNT TMPFS EXT4_FS OVERLAY_FS FUTEX EPOLL UNIX VIRTIO VIRTIO_MMIO
    VIRTIO_MMIO_CMDLINE_DEVICES VIRTIO_BLK VIRTIO_CONSOLE
    # --network bridge on kvm (a virtio-net NIC on a tap).
    NETDEVICES NET_CORE VIRTIO_NET
    # -v HOSTDIR:DIR on kvm (virtio-fs, served by virtiofsd).
    FUSE_FS VIRTIO_FS
    # Not in the issue's list but the guest is useless without them.
    TTY MULTIUSER SHMEM BLOCK NET X86_MPPARSE
    # The workload's capabilities/seccomp/no_new_privs, as in a container.
    SECCOMP SECCOMP_FILTER
    # /proc/sysrq-trigger for teaching lab 14 (a guest panic that ends only its VM).
    MAGIC_SYSRQ
    # --pids-limit / --memory enforced by the guest's own cgroup v2.
    CGROUPS CGROUP_PIDS MEMCG
    # An OCI bundle's /dev/mqueue (isol-runc on kvm).
    POSIX_MQUEUE
)
# Options that must be off (ACPI/PCI make a microVM boot slower, modules are
# never loaded).
forbidden=(MODULES ACPI PCI)

say() { [ "$quiet" = 1 ] || echo "build-kernel: $*" >&2; }
die() { echo "build-kernel: error: $*" >&2; exit 1; }

[ -r "$src_tar" ] || die "$src_tar not found (apt-get install $src_pkg)"
[ -r "$fragment" ] || die "$fragment not found"
for tool in make gcc flex bison bc sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install build-essential flex bison bc)"
done

src_ver=$(dpkg-query -W -f='${Version}' "$src_pkg" 2>/dev/null) || src_ver="unknown-$(stat -c %s-%Y "$src_tar")"
key=$( { echo "$src_pkg $src_ver"; sha256sum <"$fragment"; sha256sum <"$script"; } | sha256sum | cut -c1-16)
root=${ISOL_CACHE:-/var/cache/isol}/kernel
dest=$root/$key

finish() {
    if [ -n "$out" ]; then
        mkdir -p "$out"
        cp -f "$dest"/{vmlinux,bzImage,config,release} "$out"/
        say "copied to $out"
    fi
    echo "$dest"
}

if [ "$force" = 0 ] && [ -f "$dest/vmlinux" ]; then
    say "cached: $dest ($(cat "$dest/release"))"
    finish
    exit 0
fi

mkdir -p "$root"
# One build at a time per cache; a second concurrent caller waits and then
# finds the result.
exec 9>"$root/.lock"
if ! flock -n 9; then
    say "another build is running, waiting for it..."
    flock 9
fi
if [ "$force" = 0 ] && [ -f "$dest/vmlinux" ]; then
    say "cached: $dest ($(cat "$dest/release"))"
    finish
    exit 0
fi

# Build in a temp dir on the same filesystem as the cache, so the final
# rename is atomic. Removed on any exit/interrupt; a failed build's log is
# kept as $root/last-failed-build.log.
tmp=$(mktemp -d "$root/.build.XXXXXX")
status_line=0
cleanup() {
    rc=$?
    trap - EXIT INT TERM HUP
    [ "$status_line" = 1 ] && printf '\r\033[K' >&2
    if [ $rc -ne 0 ] && [ -f "$tmp/build.log" ]; then
        cp -f "$tmp/build.log" "$root/last-failed-build.log" 2>/dev/null || true
        echo "build-kernel: failed (exit $rc); log: $root/last-failed-build.log" >&2
    fi
    rm -rf "$tmp"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

log=$tmp/build.log
: >"$log"
start=$SECONDS

# run STEP CMD...: run a build step, output to the log. On a terminal, show
# the latest line of output as a one-line status.
run() {
    local step=$1; shift
    echo "### $step: $*" >>"$log"
    if [ "$quiet" = 0 ] && [ -t 2 ]; then
        status_line=1
        local cols=${COLUMNS:-$(tput cols 2>/dev/null || echo 80)}
        local rc
        set +e
        "$@" 2>&1 | tee -a "$log" | while IFS= read -r line; do
            printf '\r\033[K[%3ds] %s: %s' $((SECONDS - start)) "$step" "${line:0:$((cols - 20))}" >&2
        done
        rc=${PIPESTATUS[0]}
        set -e
        printf '\r\033[K' >&2
        status_line=0
        [ "$rc" = 0 ] || { tail -n 30 "$log" >&2; return "$rc"; }
    else
        "$@" >>"$log" 2>&1 || { tail -n 30 "$log" >&2; return 1; }
    fi
}

say "building $key from $src_pkg $src_ver (cache: $dest)"
say "extracting $src_tar"
run extract tar -C "$tmp" -xJf "$src_tar"
ksrc=$tmp/linux-source-6.1
[ -d "$ksrc" ] || die "unexpected tarball layout (no linux-source-6.1/)"

export ARCH=x86_64
mk=(make -C "$ksrc" ARCH=x86_64)
say "configuring: tinyconfig + $(basename "$fragment")"
run tinyconfig "${mk[@]}" tinyconfig
run merge_config bash -c 'cd "$1" && ARCH=x86_64 scripts/kconfig/merge_config.sh -m .config "$2"' _ "$ksrc" "$fragment"
run olddefconfig "${mk[@]}" olddefconfig

missing=()
for opt in "${required[@]}"; do
    grep -qx "CONFIG_$opt=y" "$ksrc/.config" || missing+=("CONFIG_$opt")
done
for opt in "${forbidden[@]}"; do
    grep -qx "CONFIG_$opt=y" "$ksrc/.config" && missing+=("CONFIG_$opt (must be off)")
done
if [ ${#missing[@]} -ne 0 ]; then
    echo "build-kernel: error: the final .config does not have these as required:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    echo "(fragment options Kconfig dropped, from merge_config's point of view:)" >&2
    # Show what Kconfig did to the fragment: value requested vs. value obtained.
    grep -E '^(# )?CONFIG_' "$fragment" | while IFS= read -r want; do
        opt=$(echo "$want" | grep -oE 'CONFIG_[A-Za-z0-9_]+')
        got=$(grep -E "^(# )?$opt[= ]" "$ksrc/.config" || echo "# $opt is not present")
        [ "$want" = "$got" ] || echo "  requested: $want   got: $got" >&2
    done
    exit 1
fi
say "config verified (${#required[@]} required options =y)"

jobs=$(nproc)
say "make -j$jobs vmlinux bzImage (about 3-4 min on 2 cores)"
run make "${mk[@]}" -j"$jobs" vmlinux bzImage

readelf -n "$ksrc/vmlinux" 2>/dev/null | grep -q 'Xen.*0x00000012\|Unknown note type: (0x00000012)\|PHYS32_ENTRY' \
    || { readelf -n "$ksrc/vmlinux" >>"$log" 2>&1; die "vmlinux has no PVH note (XEN_ELFNOTE_PHYS32_ENTRY)"; }

stage=$tmp/out
mkdir "$stage"
cp "$ksrc/vmlinux" "$ksrc/arch/x86/boot/bzImage" "$stage"/
cp "$ksrc/.config" "$stage/config"
"${mk[@]}" -s kernelrelease >"$stage/release"
cp "$fragment" "$stage/fragment.config"
echo "$key" >"$stage/key"
{ echo "source: $src_pkg $src_ver"; echo "built: $(date -Is)"; echo "seconds: $((SECONDS - start))"; } >"$stage/info"
cp "$log" "$stage/build.log"

# Atomic publish: rename the finished dir into place (replacing a previous
# --force build by renaming it away first).
if [ -e "$dest" ]; then
    mv "$dest" "$tmp/old"
fi
mv "$stage" "$dest"
say "done in $((SECONDS - start))s: $dest ($(cat "$dest/release"), vmlinux $(du -h "$dest/vmlinux" | cut -f1), bzImage $(du -h "$dest/bzImage" | cut -f1))"
finish
