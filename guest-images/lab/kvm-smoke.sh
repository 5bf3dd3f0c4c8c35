#!/usr/bin/env bash
# KVM smoke test + boot-time measurement for the isol guest kernel.
#
#   guest-images/lab/kvm-smoke.sh [--runs N] [--kernel FILE] [--cpus N] [--memory SIZE] [--verbose]
#
# Meant to run where /dev/kvm works, i.e. in the lab:
#   isol lab guest-images/lab/kvm-smoke.sh
# Boots the guest kernel (default: vmlinux from guest-images/build-kernel.sh's
# cache, built if missing) under `qemu-system-x86_64 -accel kvm -M microvm`
# with a busybox initramfs whose /init prints the uptime and `uname -r` and
# reboots (reboot=t + -no-reboot: QEMU exits). Prints, per run, the time from
# QEMU start to the /init line and to QEMU's exit, plus the guest's uptime
# (--verbose: and the guest's console, with printk timestamps).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runs=3
kernel=""
cpus=1
memory=128M
append="quiet"
verbose=0
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --cpus) cpus=$2; shift 2 ;;
        --memory) memory=$2; shift 2 ;;
        --verbose) verbose=1; append="printk.time=1"; shift ;;
        -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "kvm-smoke: unknown argument $1" >&2; exit 2 ;;
    esac
done

[ -c /dev/kvm ] || { echo "kvm-smoke: no /dev/kvm here (run it in the lab: isol lab $0)" >&2; exit 1; }
if [ -z "$kernel" ]; then
    kernel=$("$here/../build-kernel.sh" --quiet)/vmlinux
fi
busybox=${ISOL_LAB_BUSYBOX:-/bin/busybox}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root/bin" "$tmp/root/proc"
cp "$busybox" "$tmp/root/bin/busybox"
for a in sh mount cut uname reboot echo; do ln -s busybox "$tmp/root/bin/$a"; done
cat >"$tmp/root/init" <<'EOF'
#!/bin/busybox sh
mount -t proc proc /proc
echo "GUEST_INIT uptime=$(cut -d' ' -f1 /proc/uptime)s release=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo)"
reboot -f
EOF
chmod +x "$tmp/root/init"
(cd "$tmp/root" && find . | cpio -o -H newc --quiet) >"$tmp/initramfs.cpio"

now() { date +%s.%N; }
echo "kvm-smoke: kernel $kernel, $cpus vCPU, $memory, qemu -accel kvm -M microvm"
for i in $(seq 1 "$runs"); do
    t0=$(now)
    line=""
    t_init=""
    while IFS= read -r l; do
        case "$l" in
            *GUEST_INIT*) t_init=$(now); line=${l#*GUEST_INIT } ;;
        esac
        printf '%s\n' "$l" >>"$tmp/console.$i"
    done < <(qemu-system-x86_64 -accel kvm -cpu host -smp "$cpus" -m "$memory" \
        -M microvm,x-option-roms=off,rtc=off,acpi=off,pic=off,pit=off,isa-serial=on \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial stdio -kernel "$kernel" -initrd "$tmp/initramfs.cpio" \
        -append "console=ttyS0 reboot=t panic=-1 $append" 2>&1)
    t1=$(now)
    if [ -z "$t_init" ]; then
        echo "kvm-smoke: run $i: the guest never reached /init; console:" >&2
        cat "$tmp/console.$i" >&2
        exit 1
    fi
    [ "$verbose" = 0 ] || cat "$tmp/console.$i"
    printf 'kvm-smoke: run %d: /init after %.3fs, QEMU exited after %.3fs (guest: %s)\n' \
        "$i" "$(echo "$t_init - $t0" | bc)" "$(echo "$t1 - $t0" | bc)" "$line"
done
