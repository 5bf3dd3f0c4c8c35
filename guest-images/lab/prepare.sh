#!/usr/bin/env bash
# Prepare the isol lab VM: a Debian 6.1 kernel + an initramfs that loads KVM
# (nested SVM on QEMU TCG) and runs a command on the host's files.
#
#   guest-images/lab/prepare.sh [--init FILE]
#
# Fetches the linux-image-6.1.0-*-amd64 package that linux-image-amd64
# depends on (`apt-get download`, no install), extracts vmlinuz (and
# decompresses it to vmlinux, which boots faster through PVH) and the
# modules the lab needs (+ their dependencies, via `modinfo -F depends`) into
#   ${ISOL_CACHE:-/var/cache/isol}/lab/<kernel-version>/
# and builds an uncompressed initramfs there from busybox-static, those
# modules and the lab init (default: init next to this script; `isol lab`
# passes its embedded copy), cached as initramfs-<hash>.cpio.
#
# stdout: "version=<kernel version>", "kernel=<path>", "initrd=<path>",
#         "modules=<module tree for /lib/modules/<version> in the lab>".
# stderr: progress lines "isol-lab: ...", errors "isol-lab: error: ...".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init=$here/init
while [ $# -gt 0 ]; do
    case "$1" in
        --init) init=${2:?--init needs a file}; shift 2 ;;
        -h|--help) sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "isol-lab: error: prepare.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

say() { echo "isol-lab: $*" >&2; }
die() { echo "isol-lab: error: $*" >&2; exit 1; }

# Modules the lab loads, in addition to the dependencies modinfo reports.
# kvm_amd: QEMU TCG's `-cpu max` has SVM; virtio_pci: transport for the 9p
# and virtio-serial devices; 9p + 9pnet_virtio: the host's root file system;
# overlay: writable view of it; virtio_console: stdout/stderr/status ports.
roots=(virtio_pci virtio_console 9pnet_virtio 9p overlay kvm_amd)

root=${ISOL_CACHE:-/var/cache/isol}/lab
busybox=${ISOL_LAB_BUSYBOX:-/bin/busybox}
[ -r "$init" ] || die "lab init script $init not found"
"$busybox" --list >/dev/null 2>&1 && ! ldd "$busybox" >/dev/null 2>&1 \
    || die "$busybox is not a static busybox (apt-get install busybox-static)"

mkdir -p "$root"
exec 9>"$root/.lock"
flock -n 9 || { say "waiting for another isol lab preparation"; flock 9; }

# Which kernel: the one linux-image-amd64 currently depends on. Offline /
# without apt metadata: the newest one already cached.
# (apt-cache takes ~1s here: remember its answer until the apt lists change.)
stamp="$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)"
pkg=$(sed -n "s/^$stamp //p" "$root/.resolved" 2>/dev/null || true)
if [ -z "$pkg" ]; then
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1 || true)
    [ -z "$pkg" ] || echo "$stamp $pkg" >"$root/.resolved"
fi
if [ -n "$pkg" ]; then
    kver=${pkg#linux-image-}
else
    kver=$(ls -1 "$root" 2>/dev/null | grep -E '^6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n1 || true)
    [ -n "$kver" ] || die "cannot tell which kernel linux-image-amd64 depends on (run apt-get update)"
    say "apt has no linux-image-amd64; using cached $kver"
fi
dir=$root/$kver

tmp=""
cleanup() { rc=$?; trap - EXIT INT TERM HUP; [ -z "$tmp" ] || rm -rf "$tmp"; exit $rc; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# extract_vmlinux BZIMAGE OUT: the ELF kernel inside an xz-compressed bzImage
# (like the kernel's scripts/extract-vmlinux, for the one format Debian uses).
extract_vmlinux() {
    local off
    for off in $(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$1" | cut -d: -f1); do
        tail -c +$((off + 1)) "$1" | xz -dcq >"$2" 2>/dev/null || true
        if [ "$(head -c4 "$2" | od -An -c | tr -d ' ')" = '177ELF' ]; then
            return 0
        fi
    done
    rm -f "$2"
    return 1
}

if [ ! -f "$dir/vmlinux" ] || [ ! -f "$dir/modules.load" ] || [ ! -f "$dir/tree/lib/modules/$kver/modules.dep" ]; then
    tmp=$(mktemp -d "$root/.prepare.XXXXXX")
    say "downloading $pkg"
    (cd "$tmp" && apt-get download -q "$pkg" >"$tmp/apt.log" 2>&1) \
        || { cat "$tmp/apt.log" >&2; die "apt-get download $pkg failed (apt-get update?)"; }
    say "extracting $pkg"
    dpkg-deb -x "$tmp"/*.deb "$tmp/x"
    mdir=$tmp/x/lib/modules/$kver
    [ -f "$tmp/x/boot/vmlinuz-$kver" ] || die "$pkg has no /boot/vmlinuz-$kver"
    stage=$tmp/stage
    mkdir -p "$stage/modules"
    cp "$tmp/x/boot/vmlinuz-$kver" "$stage/vmlinuz"
    cp "$tmp/x/boot/config-$kver" "$stage/config"

    # name -> path of every module in the package (names use '_', files
    # may use '-'; .ko may be compressed).
    declare -A path=()
    while IFS= read -r f; do
        n=$(basename "$f"); n=${n%%.ko*}; path[${n//-/_}]=$f
    done < <(find "$mdir" -name '*.ko*')
    # Depth-first: dependencies before dependants.
    declare -A seen=()
    order=()
    visit() {
        local n=${1//-/_} d
        [ -z "${seen[$n]:-}" ] || return 0
        seen[$n]=1
        if [ -z "${path[$n]:-}" ]; then
            grep -qE "/${n//_/[-_]}\.ko" "$mdir/modules.builtin" && return 0
            die "module $n is neither in $pkg nor built in"
        fi
        for d in $(modinfo -F depends "${path[$n]}" | tr ',' ' '); do visit "$d"; done
        order+=("$n")
    }
    for r in "${roots[@]}"; do visit "$r"; done
    for n in "${order[@]}"; do
        f=${path[$n]}
        case "$f" in
            *.ko.xz) xz -dc "$f" >"$stage/modules/$n.ko" ;;
            *.ko.zst) zstd -qdc "$f" >"$stage/modules/$n.ko" ;;
            *.ko.gz) gzip -dc "$f" >"$stage/modules/$n.ko" ;;
            *) cp "$f" "$stage/modules/$n.ko" ;;
        esac
    done
    printf '%s\n' "${order[@]}" >"$stage/modules.load"
    # The rest of the modules, for modprobe inside the lab (veth, bridge,
    # nf_tables, loop, ...: the container backend needs them). The lab
    # bind-mounts this tree at /lib/modules/<version>. Hardware driver
    # families a VM never has are left out (~215 MB).
    say "installing the module tree"
    mkdir -p "$stage/tree/lib/modules"
    mv "$mdir" "$stage/tree/lib/modules/$kver"
    (cd "$stage/tree/lib/modules/$kver/kernel" && rm -rf drivers/gpu drivers/media sound \
        drivers/net/wireless drivers/net/ethernet drivers/infiniband drivers/staging \
        drivers/iio drivers/usb drivers/bluetooth net/bluetooth drivers/hid drivers/input)
    depmod -b "$stage/tree" "$kver" || die "depmod failed"
    # The uncompressed ELF vmlinux boots straight through its PVH entry
    # point: ~3s sooner under TCG than having the bzImage decompress itself.
    say "decompressing the kernel"
    extract_vmlinux "$stage/vmlinuz" "$stage/vmlinux"
    dpkg-deb -f "$tmp"/*.deb Version >"$stage/package-version"
    say "modules: ${order[*]}"
    rm -rf "$dir"
    mv "$stage" "$dir"
    rm -rf "$tmp"; tmp=""
fi

# The initramfs, keyed by everything that goes into it.
ikey=$( { sha256sum <"$init"; sha256sum <"$busybox"; cat "$dir/modules.load"; } | sha256sum | cut -c1-16)
initrd=$dir/initramfs-$ikey.cpio
if [ ! -f "$initrd" ]; then
    say "building initramfs"
    tmp=$(mktemp -d "$root/.initramfs.XXXXXX")
    r=$tmp/root
    mkdir -p "$r"/{bin,sbin,dev,proc,sys,run,mnt/lower,mnt/rw,mnt/root,lib/modules}
    cp "$busybox" "$r/bin/busybox"
    for a in $("$busybox" --list); do
        [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
    done
    cp "$dir"/modules/*.ko "$r/lib/modules/"
    cp "$dir/modules.load" "$r/lib/modules/modules.load"
    install -m 0755 "$init" "$r/init"
    (cd "$r" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet -R 0:0) >"$tmp/initramfs.cpio"
    # Initramfs builds of other init versions, unused for a while.
    find "$dir" -maxdepth 1 -name 'initramfs-*.cpio' -mtime +7 -delete
    mv "$tmp/initramfs.cpio" "$initrd"
    rm -rf "$tmp"; tmp=""
fi

echo "version=$kver"
echo "kernel=$dir/vmlinux"
echo "initrd=$initrd"
echo "modules=$dir/tree/lib/modules/$kver"
