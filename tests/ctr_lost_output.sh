#!/usr/bin/env bash
# The `ctr run --rm` lost-output race (docs/oci.md, "The lost output"), faster than the ignored
# soak in tests/containerd.rs: LOOPS loops of RUNS `ctr run --rm … sh -c "echo run N; exit N%4"`
# side by side, LOAD busy loops beside them, one containerd in a temp dir, the runtimes given
# taking turns run by run (so that two runtimes see the same load). Prints one line per run
# whose output or status was wrong, then the counts per runtime. Not part of test.sh.
# The loss is `ctr`'s own (docs/oci.md, "The lost output"): --nice N runs each `ctr` at
# nice N, so that its FIFO-opening thread waits longer for a CPU, and runc loses output too;
# --hold makes it happen on nearly every run: strace holds the two threads of `ctr` that open
# its stdout and stderr FIFOs (their open returns a second late), whatever the runtime.
#
#   flock /tmp/isol-ctr.lock tests/ctr_lost_output.sh [--loops 2] [--runs 250] [--load 1]
#       [--nice N] [--hold] RUNTIME...
#
# e.g. tests/ctr_lost_output.sh "$PWD/target/x86_64-unknown-linux-gnu/debug/isol-runc" /usr/sbin/runc
# Needs root, containerd 1.6 and ctr (setup.sh installs them) and a static /usr/bin/busybox;
# --hold needs strace.
# Exit status: 0 when no run lost anything, 1 otherwise, 2 on bad usage.
set -uo pipefail

loops=2 runs=250 load=1 nice=0 hold=0
while [ $# -gt 0 ]; do
    case "$1" in
        --loops) loops=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --load) load=$2; shift 2 ;;
        --nice) nice=$2; shift 2 ;;
        --hold) hold=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "ctr_lost_output.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
        *) break ;;
    esac
done
[ $# -gt 0 ] || { echo "ctr_lost_output.sh: give at least one runtime binary (see --help)" >&2; exit 2; }
runtimes=("$@")
[ "$(id -u)" = 0 ] || { echo "ctr_lost_output.sh: run it as root" >&2; exit 2; }
tools=(containerd ctr /usr/bin/busybox)
[ "$hold" = 1 ] && tools+=(strace)
for t in "${tools[@]}"; do
    command -v "$t" >/dev/null || { echo "ctr_lost_output.sh: $t is missing: run ./setup.sh" >&2; exit 2; }
done

# No "isol" in these names: the suites' leftover checks must not see this run's mounts.
tmp=$(mktemp -d /tmp/ctr-lost-output.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    [ -n "${daemon:-}" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    pkill -KILL -f "containerd-shim.*$tmp" 2>/dev/null
    grep -o " $tmp[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$tmp"
    # The runtimes remove each container's cgroup, not the namespace's parent of them.
    rmdir /sys/fs/cgroup/lost-output /sys/fs/cgroup/*/lost-output 2>/dev/null
}
trap cleanup EXIT

# A one-layer image: the host's static busybox.
mkdir -p "$tmp/rootfs/bin" "$tmp/image"
cp /usr/bin/busybox "$tmp/rootfs/bin/"
ln -s busybox "$tmp/rootfs/bin/sh"
tar -C "$tmp/rootfs" -cf "$tmp/image/layer.tar" .
layer=$(sha256sum "$tmp/image/layer.tar" | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"],"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$layer" >"$tmp/image/config.json"
config=$(sha256sum "$tmp/image/config.json" | cut -d' ' -f1)
mv "$tmp/image/config.json" "$tmp/image/$config.json"
printf '[{"Config":"%s.json","RepoTags":["lost-output/busybox:1"],"Layers":["layer.tar"]}]' \
    "$config" >"$tmp/image/manifest.json"
tar -C "$tmp/image" -cf "$tmp/busybox.tar" .

printf 'version = 2\nroot = "%s/root"\nstate = "%s/state"\n[grpc]\n  address = "%s/sock"\n' \
    "$tmp" "$tmp" "$tmp" >"$tmp/config.toml"
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
daemon=$!
ctr=(ctr --address "$tmp/sock" --namespace lost-output)
for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
"${ctr[@]}" image import "$tmp/busybox.tar" >/dev/null || { echo "ctr_lost_output.sh: image import failed" >&2; exit 1; }

for _ in $(seq "$load"); do ( while :; do :; done ) & pids+=($!); done
# The threads of `ctr` (pid $1) blocked in openat(…, O_RDONLY|O_CLOEXEC): its stdout and
# stderr FIFO openers, waiting for the shim's writer. strace attaches to those two threads
# only and makes their open return a second late, long after the container ended and `ctr`
# began deleting its task.
hold_fifo_openers() {
    local pid=$1 t held=()
    for _ in $(seq 1000); do
        held=()
        for t in /proc/"$pid"/task/*; do
            read -r nr _ _ flags _ <"$t/syscall" 2>/dev/null || continue
            [ "$nr" = 257 ] && [ "$flags" = 0x80000 ] && held+=(-p "${t##*/}")
        done
        [ ${#held[@]} -ge 4 ] && break
        kill -0 "$pid" 2>/dev/null || return
        sleep 0.002
    done
    [ ${#held[@]} -gt 0 ] || return
    timeout 10 strace -qq -e trace=openat -e inject=openat:delay_exit=1000000 "${held[@]}" \
        >/dev/null 2>&1 &
}
loop() {
    local first=$1 i rt out rc
    for ((i = first; i < first + runs; i++)); do
        rt=${runtimes[$((i % ${#runtimes[@]}))]}
        nice -n "$nice" "${ctr[@]}" run --rm --runc-binary "$rt" docker.io/lost-output/busybox:1 \
            "c$i" sh -c "echo run $i; exit $((i % 4))" </dev/null >"$tmp/out.$i" 2>"$tmp/err.$i" &
        local c=$!
        [ "$hold" = 1 ] && hold_fifo_openers "$c"
        wait "$c"
        rc=$?
        out=$(cat "$tmp/out.$i")
        if [ "$out" != "run $i" ] || [ "$rc" != $((i % 4)) ]; then
            echo "LOST $rt run $i: status $rc (want $((i % 4))), stdout [$out], stderr [$(cat "$tmp/err.$i")]"
        fi
        echo "$rt" >>"$tmp/ran"
        rm -f "$tmp/out.$i" "$tmp/err.$i"
    done
}
touch "$tmp/lost" "$tmp/ran"
workers=()
start=$(date +%s)
for w in $(seq 0 $((loops - 1))); do loop $((w * 100000)) >>"$tmp/lost" & workers+=($!); done
wait "${workers[@]}"
cat "$tmp/lost"
lost=0
for rt in "${runtimes[@]}"; do
    n=$(grep -c -x -F "$rt" "$tmp/ran")
    l=$(grep -c -F "LOST $rt run" "$tmp/lost")
    echo "$rt: $l of $n runs lost their output or status"
    lost=$((lost + l))
done
echo "$((loops * runs)) runs in $(($(date +%s) - start)) s"
[ "$lost" = 0 ]
