#!/bin/bash
# virtio-bench.sh [--runs N] [--size MIB] [--console-mib MIB]
#
# Run it in the lab (it needs a fast /dev/kvm):  isol lab -- guest-images/bench/virtio-bench.sh
#
# Side by side, in one run, medians of N runs (docs/devices.md, "Measured"):
#   * virtio-blk: sequential 1 MiB and random 4 KiB O_DIRECT reads of a raw disk of random
#     data, in an isol guest (`isol run --backend kvm -v DISK:/dev/isolbench:ro`), in a QEMU
#     `-M microvm` guest with the same kernel and the same disk file on its virtio-mmio bus,
#     and on the lab host (the same file, page cache);
#   * stdout throughput: `head -c MIB /dev/zero` in the workload, counted on the host from the
#     first byte to EOF, through isol's virtio-console, a container's pipe, and QEMU's
#     virtserialport (virtio-serial-device → a FIFO), plus a plain host pipe.
# The reader and the counter are virtio-bench.c, built static here.
set -euo pipefail

runs=5
size=128
console_mib=64
while [ $# -gt 0 ]; do
    case "$1" in
        --runs) runs=$2; shift 2 ;;
        --size) size=$2; shift 2 ;;
        --console-mib) console_mib=$2; shift 2 ;;
        *) echo "usage: $0 [--runs N] [--size MIB] [--console-mib MIB]" >&2; exit 2 ;;
    esac
done

root=$(cd "$(dirname "$0")/../.." && pwd)
tgt=$root/target/x86_64-unknown-linux-gnu
isol=${ISOL:-$tgt/release/isol}
[ -x "$isol" ] || isol=$tgt/debug/isol
[ -x "$(dirname "$isol")/isol-guest-init" ] || {
    echo "virtio-bench: no isol-guest-init beside $isol; cargo build --release -p isol -p isol-guest-init" >&2
    exit 1
}
kernel=${ISOL_KERNEL:-$(ls -t /var/cache/isol/kernel/*/vmlinux 2>/dev/null | head -1)}
[ -f "$kernel" ] || { echo "virtio-bench: no guest kernel; run guest-images/build-kernel.sh" >&2; exit 1; }
export ISOL_KERNEL=$kernel
# On the lab's tmpfs: the container backend's overlay cannot stack on the lab's overlay root.
export ISOL_HOME=${ISOL_HOME:-/run/isol-bench-home}
[ -w /dev/kvm ] || { echo "virtio-bench: no /dev/kvm; run it in the lab: isol lab -- $0" >&2; exit 1; }

tmp=$(mktemp -d /run/virtio-bench.XXXXXX 2>/dev/null || mktemp -d)
trap 'rm -rf "$tmp"' EXIT
log() { echo "virtio-bench: [$(cut -d" " -f1 /proc/uptime)s] $*" >&2; }

gcc -O2 -static -o "$tmp/vb" "$root/guest-images/bench/virtio-bench.c"
head -c "${size}M" /dev/urandom >"$tmp/disk.img"
mkdir "$tmp/tools"
cp "$tmp/vb" "$tmp/tools/vb"
truncate -s 8M "$tmp/tools.ext4"
mkfs.ext4 -q -F -d "$tmp/tools" "$tmp/tools.ext4"
seq_count=$size          # the whole disk once, 1 MiB at a time
rand_count=10000         # 4 KiB reads at random block offsets

# QEMU's guest: busybox + the reader as an initramfs; /init does what the cmdline says.
mkdir -p "$tmp/q/bin" "$tmp/q/proc" "$tmp/q/sys" "$tmp/q/dev"  # mount points
cp /bin/busybox "$tmp/q/bin/busybox"
cp "$tmp/vb" "$tmp/q/bin/vb"
for a in sh mount cat head reboot sleep; do ln -s busybox "$tmp/q/bin/$a"; done
cat >"$tmp/q/init" <<INIT
#!/bin/busybox sh
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
case "\$(cat /proc/cmdline)" in
*bench=blk*)
    echo "SEQ \$(vb read /dev/vda seq 1048576 $seq_count)"
    echo "RAND \$(vb read /dev/vda rand 4096 $rand_count)" ;;
*bench=con*)
    # The ports are announced by control messages the driver handles in a workqueue:
    # they may appear after init starts (isol's init waits the same way).
    port=
    i=0
    while [ -z "\$port" ] && [ \$i -lt 1000 ]; do
        for p in /sys/class/virtio-ports/*; do
            [ -e "\$p/name" ] && [ "\$(cat \$p/name)" = isol.stdout ] && [ -e /dev/\${p##*/} ] &&
                port=/dev/\${p##*/}
        done
        [ -n "\$port" ] || { sleep 0.01; i=\$((i + 1)); }
    done
    [ -n "\$port" ] || echo "no virtio-console port isol.stdout"
    head -c $((console_mib << 20)) /dev/zero >"\$port" ;;
esac
reboot -f
INIT
chmod +x "$tmp/q/init"
(cd "$tmp/q" && find . | cpio -o -H newc --quiet) >"$tmp/q.cpio"

qemu() {
    qemu-system-x86_64 -accel kvm -cpu host -smp 1 -m 256 \
        -M microvm,x-option-roms=off,rtc=off,acpi=off,pic=off,pit=off,isa-serial=on \
        -nodefaults -no-user-config -display none -no-reboot \
        -serial stdio -kernel "$kernel" -initrd "$tmp/q.cpio" \
        -append "console=ttyS0 reboot=t panic=-1 quiet $1" "${@:2}"
}

# field NAME "k=v k=v": the value of NAME.
field() { printf '%s\n' "$2" | tr ' ' '\n' | sed -n "s/^$1=//p" | head -1; }
declare -A results
add() { results[$1]="${results[$1]:-} $2"; }

bench_cmd='mkdir -p /t && mount -o ro /dev/isoltools /t &&
    echo "SEQ $(/t/vb read /dev/isolbench seq 1048576 '$seq_count')" &&
    echo "RAND $(/t/vb read /dev/isolbench rand 4096 '$rand_count')"'

"$isol" run --backend container busybox true >/dev/null  # the image, unpacked
"$isol" run --backend kvm busybox true >/dev/null        # and its VM disk, built

# The reference: what the lab host reads from the file. Every block leg must read the same bytes
# (the same checksum over the same blocks in the same order) and, in a guest, with O_DIRECT.
ref_seq=$(field sum "$("$tmp/vb" read "$tmp/disk.img" seq 1048576 "$seq_count")")
ref_rand=$(field sum "$("$tmp/vb" read "$tmp/disk.img" rand 4096 "$rand_count")")
# check_read LEG seq|rand "OUTPUT LINE" [direct]: the line says it read the whole request,
# the reference bytes (and with O_DIRECT, when asked); otherwise the bench stops.
check_read() {
    local want_sum want_bytes
    if [ "$2" = seq ]; then want_sum=$ref_seq want_bytes=$((seq_count << 20))
    else want_sum=$ref_rand want_bytes=$((rand_count * 4096)); fi
    [ "$(field sum "$3")" = "$want_sum" ] && [ "$(field bytes "$3")" = "$want_bytes" ] &&
        { [ -z "${4:-}" ] || [ "$(field direct "$3")" = 1 ]; } ||
        { log "$1 $2 read is wrong: got '$3', want bytes=$want_bytes sum=$want_sum${4:+ direct=1}"; exit 1; }
}
# check_bytes LEG "sink output": every byte of the stream arrived.
check_bytes() {
    [ "$(field bytes "$2")" = $((console_mib << 20)) ] || { log "$1 stdout lost bytes: $2"; exit 1; }
}

# bounded COMMAND...: runs it with a time limit per leg. A leg that has not ended by then (the lab's
# nested KVM can stall a guest: docs/lab.md, "Known fault") gets its threads' states printed (a
# thread in state R inside KVM_RUN is a vCPU that never leaves the lab's KVM; all S is a guest
# waiting for something), is killed, and exits 124; the caller drops that sample and says so.
leg_limit=${VIRTIO_BENCH_LEG_LIMIT:-150}
stalls=0
bounded() {
    "$@" &
    local pid=$! n=0 t
    while kill -0 "$pid" 2>/dev/null && [ "$n" -lt $((leg_limit * 5)) ]; do sleep 0.2; n=$((n + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
        log "stalled: no end after ${leg_limit}s: $*"
        for t in /proc/"$pid"/task/*; do
            log "  thread $(cat "$t/comm"): state $(cut -d' ' -f3 "$t/stat"), wchan $(cat "$t/wchan"), syscall $(cut -d' ' -f1 "$t/syscall" 2>/dev/null)"
        done
        kill -KILL "$pid"
        wait "$pid" || true
        return 124
    fi
    wait "$pid"
}
# stalled LEG: whether the leg just run (status $rc) was stopped by `bounded`; if so, counts and says it.
stalled() {
    [ "$rc" = 124 ] || return 1
    stalls=$((stalls + 1))
    log "$1: sample dropped (stalled)"
}

for i in $(seq 1 "$runs"); do
    log "run $i/$runs"
    # Block: isol.
    rc=0
    out=$(bounded "$isol" run --backend kvm -v "$tmp/disk.img:/dev/isolbench:ro" \
        -v "$tmp/tools.ext4:/dev/isoltools:ro" busybox -- sh -c "$bench_cmd") || rc=$?
    if ! stalled "isol block"; then
        check_read isol seq "$(grep ^SEQ <<<"$out")" direct
        check_read isol rand "$(grep ^RAND <<<"$out")" direct
        add blk_seq_isol "$(field MBps "$(grep ^SEQ <<<"$out")")"
        add blk_rand_isol "$(field iops "$(grep ^RAND <<<"$out")")"
    fi
    # Block: QEMU microvm, same kernel, same disk file.
    log "block: QEMU"
    rc=0
    out=$(bounded qemu bench=blk -drive id=d0,file="$tmp/disk.img",format=raw,if=none,readonly=on \
        -device virtio-blk-device,drive=d0 2>&1 | tr -d '\r') || rc=$?  # the serial console's CRLF
    if ! stalled "QEMU block"; then
        grep -q '^RAND MBps=' <<<"$out" || { log "the QEMU guest did not read the disk; it said:"; echo "$out" >&2; exit 1; }
        check_read qemu seq "$(grep ^SEQ <<<"$out")" direct
        check_read qemu rand "$(grep ^RAND <<<"$out")" direct
        add blk_seq_qemu "$(field MBps "$(grep ^SEQ <<<"$out")")"
        add blk_rand_qemu "$(field iops "$(grep ^RAND <<<"$out")")"
    fi
    # Block: the lab host, the same file.
    out=$("$tmp/vb" read "$tmp/disk.img" seq 1048576 "$seq_count")
    check_read host seq "$out"
    add blk_seq_host "$(field MBps "$out")"
    out=$("$tmp/vb" read "$tmp/disk.img" rand 4096 "$rand_count")
    check_read host rand "$out"
    add blk_rand_host "$(field iops "$out")"

    # Console: isol kvm, container, QEMU, host pipe.
    log "stdout: isol"
    rc=0
    out=$(bounded "$isol" run --backend kvm busybox -- head -c $((console_mib << 20)) /dev/zero | "$tmp/vb" sink) || rc=$?
    stalled "isol stdout" || { check_bytes kvm "$out"; add con_isol "$(field MBps "$out")"; }
    log "stdout: container"
    rc=0
    out=$(bounded "$isol" run --backend container busybox -- head -c $((console_mib << 20)) /dev/zero | "$tmp/vb" sink) || rc=$?
    stalled "container stdout" || { check_bytes container "$out"; add con_container "$(field MBps "$out")"; }
    log "stdout: QEMU"
    rm -f "$tmp/qo"; mkfifo "$tmp/qo"
    "$tmp/vb" sink <"$tmp/qo" >"$tmp/qo.res" &
    sink=$!
    rc=0
    bounded qemu bench=con -device virtio-serial-device -chardev file,id=o,path="$tmp/qo" \
        -device virtserialport,chardev=o,name=isol.stdout >"$tmp/qemu.log" 2>&1 || rc=$?
    wait "$sink"
    out=$(cat "$tmp/qo.res")
    if ! stalled "QEMU stdout"; then
        [ "$(field bytes "$out")" = $((console_mib << 20)) ] ||
            { log "qemu stdout lost bytes: $out; QEMU and its guest said:"; cat "$tmp/qemu.log" >&2; exit 1; }
        add con_qemu "$(field MBps "$out")"
    fi
    out=$(head -c $((console_mib << 20)) /dev/zero | "$tmp/vb" sink)
    check_bytes "host pipe" "$out"
    add con_host "$(field MBps "$out")"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }
m() { median <<<"${results[$1]}"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "virtio-bench: n=$runs rounds, $stalls leg(s) stalled and dropped (per-cell n below), medians; disk ${size} MiB random data, console ${console_mib} MiB, kernel $kernel"
echo
echo "| what | isol (kvm) | QEMU microvm | lab host | container | isol / QEMU | isol / host |"
echo "|---|---|---|---|---|---|---|"
echo "| virtio-blk sequential 1 MiB reads, MB/s | $(m blk_seq_isol) | $(m blk_seq_qemu) | $(m blk_seq_host) | — | $(ratio "$(m blk_seq_isol)" "$(m blk_seq_qemu)") | $(ratio "$(m blk_seq_isol)" "$(m blk_seq_host)") |"
echo "| virtio-blk random 4 KiB reads, IOPS | $(m blk_rand_isol) | $(m blk_rand_qemu) | $(m blk_rand_host) | — | $(ratio "$(m blk_rand_isol)" "$(m blk_rand_qemu)") | $(ratio "$(m blk_rand_isol)" "$(m blk_rand_host)") |"
echo "| stdout throughput, MB/s | $(m con_isol) | $(m con_qemu) | $(m con_host) (pipe) | $(m con_container) | $(ratio "$(m con_isol)" "$(m con_qemu)") | $(ratio "$(m con_isol)" "$(m con_host)") |"
echo
echo "raw samples:"
for k in $(printf '%s\n' "${!results[@]}" | sort); do echo "  $k:${results[$k]}"; done
