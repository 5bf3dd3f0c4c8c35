#!/usr/bin/env bash
# Soak: many runs of one backend, some SIGKILLed at random moments, some concurrent, then a check
# that nothing was left behind: mounts, cgroups, links and taps, nft tables and the rules in
# isol's, processes (isol's and virtiofsd), run dirs, run records, in-use marks, store
# temporaries and locks. Not part of test.sh (it takes minutes); docs/design.md, "Cleanup
# guarantees", has the latest figures.
#
#   tests/soak.sh [--backend container|kvm] [--runs N] [--kills N] [--concurrent N]
#                 [--variants LIST] [--isol PATH] [--timeout SECONDS]
#
# Defaults: container, 1000 runs, 200 killed, 100 concurrent, every variant, target/…/debug/isol,
# 120 s for each run (a hundred VMs at once on the lab's two emulated CPUs need more).
# Runs take turns over the variants (a comma-separated LIST): `plain`; `volume`, a directory
# shared read-only (-v DIR:/share:ro: a bind mount, or on kvm virtio-fs and a virtiofsd); `bridge`,
# --network bridge (a veth, or on kvm a tap; the sequential ones also publish a port, -p: a DNAT
# rule). Bridge runs on a host that runs other container tests: under flock /tmp/isol-ctr.lock.
# For kvm, run it in the lab: isol lab -- tests/soak.sh --backend kvm --isol "$PWD/target/…/isol"
# (with ISOL_KERNEL and ISOL_GUEST_INIT set as test.sh sets them).
# Exit status: 0 when every run ended as expected and nothing leaked; 1 otherwise.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

backend=container runs=1000 kills=200 concurrent=100 variants=plain,volume,bridge
isol=target/x86_64-unknown-linux-gnu/debug/isol
limit=120
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) backend=$2; shift 2 ;;
        --runs) runs=$2; shift 2 ;;
        --kills) kills=$2; shift 2 ;;
        --concurrent) concurrent=$2; shift 2 ;;
        --variants) variants=$2; shift 2 ;;
        --isol) isol=$2; shift 2 ;;
        --timeout) limit=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "soak.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" = 0 ] || { echo "soak.sh: run it as root" >&2; exit 2; }
[ -x "$isol" ] || { echo "soak.sh: no isol at $isol: build it first (cargo build --bins)" >&2; exit 2; }

IFS=, read -r -a kinds <<<"$variants"
for k in "${kinds[@]}"; do
    case "$k" in plain|volume|bridge) ;; *) echo "soak.sh: unknown variant: $k" >&2; exit 2 ;; esac
done

home=$(mktemp -d /tmp/isol-soak.XXXXXX)
share=$(mktemp -d /tmp/isol-soak-share.XXXXXX)
echo shared >"$share/file"
export ISOL_HOME=$home
failures=0
fail() { echo "soak: FAIL: $*" >&2; failures=$((failures + 1)); }
run() { timeout -k 5 "$limit" "$isol" run --backend "$backend" "$@"; }
# The options of run N's variant (-p only with `publish`: concurrent runs would share ports).
variant() {
    case "${kinds[$(($1 % ${#kinds[@]}))]}" in
        plain) ;;
        volume) echo "-v $share:/share:ro" ;;
        bridge) echo "--network bridge${2:+ -p $((20000 + $1 % 1000)):80}" ;;
    esac
}
# The workload's check of its variant: the share's file, or eth0.
probe() {
    case "${kinds[$(($1 % ${#kinds[@]}))]}" in
        plain) echo "true" ;;
        volume) echo "grep -qx shared /share/file" ;;
        bridge) echo "test -e /sys/class/net/eth0" ;;
    esac
}

# What isol may leave on this host, one line per thing, sorted.
snapshot() {
    {
        grep -E 'isol' /proc/self/mountinfo | grep -v -F "$home/" | awk '{print "mount " $5}'
        find /sys/fs/cgroup -maxdepth 3 -path '*/isol/*' -type d 2>/dev/null | sed 's/^/cgroup /'
        ip -o link show 2>/dev/null | awk -F': ' '$2 ~ /^(veth|isol|tap)/ && $2 !~ /^isol0$/ {print "link " $2}'
        nft list tables 2>/dev/null | grep -i isol | sed 's/^/nft /'
        # The rules in isol's table: published ports (DNAT) go with their run.
        nft list table ip isol 2>/dev/null | grep -E 'dnat|masquerade|accept|drop|jump' |
            sed 's/^[[:space:]]*/nft-rule /'
        # Zombies are dead; reaping them is their new parent's business (the host's init).
        ps -eo stat=,comm= | awk '$1 !~ /^Z/ && $2 ~ /^(isol|virtiofsd)/ {print "process " $2}'
        ls -A "$home/containers" 2>/dev/null | grep -v '^net$' | sed 's/^/run-dir /'
        ls -A "$home/containers/net/addr" 2>/dev/null | sed 's/^/address /'
        ls -A "$home/vms" 2>/dev/null | sed 's/^/vm-run-dir /'
        ls -A "$home/runs" 2>/dev/null | grep -v '^\.lock$' | sed 's/^/run-record /'
        ls -A "$home/in-use" 2>/dev/null | sed 's/^/in-use-mark /'
        find "$home" -maxdepth 3 -name '.tmp-*' 2>/dev/null | sed 's/^/store-tmp /'
    } | sort
}

echo "soak: $backend, $runs runs, $kills killed, $concurrent concurrent, variants $variants; store $home" >&2
# One run of each variant first: what the first run of a kind makes for good (the image, the
# bridge, isol's nft table) is in the snapshot taken before.
for i in "${!kinds[@]}"; do
    # shellcheck disable=SC2046 # the variant's options, split on purpose
    run $(variant "$i") busybox sh -c "$(probe "$i")" >/dev/null ||
        { echo "soak: the first ${kinds[$i]} run failed" >&2; exit 1; }
done
before=$(snapshot)
start=$(date +%s)

# 1. Sequential runs: each must end with the workload's own status.
for i in $(seq 1 "$runs"); do
    # shellcheck disable=SC2046
    out=$(run $(variant "$i" publish) busybox sh -c "$(probe "$i") && echo run-$i; exit $((i % 7))" 2>&1)
    rc=$?
    [ "$rc" = $((i % 7)) ] && [ "$out" = "run-$i" ] || fail "run $i: rc $rc, output ${out:0:200}"
done
t1=$(date +%s)
echo "soak: $runs sequential runs in $((t1 - start)) s" >&2

# 2. SIGKILL isol at a random moment between 0 and 300 ms after its start; the next run's sweep
#    must clear what it left, and no workload may outlive it.
for i in $(seq 1 "$kills"); do
    # shellcheck disable=SC2046
    "$isol" run --backend "$backend" $(variant "$i") busybox sh -c 'echo start; sleep 5' >/dev/null 2>&1 &
    pid=$!  # isol itself, not a wrapper
    sleep "0.$(printf '%03d' $((RANDOM % 300)))"
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
done
sleep 1
run busybox true >/dev/null 2>&1 || fail "the run after the kills failed"
t2=$(date +%s)
echo "soak: $kills runs SIGKILLed at random moments in $((t2 - t1)) s" >&2

# 3. Concurrent runs.
pids=()
for i in $(seq 1 "$concurrent"); do
    # shellcheck disable=SC2046
    (out=$(run $(variant "$i") busybox sh -c "$(probe "$i") && echo c-$i" 2>&1); [ "$out" = "c-$i" ] || { echo "concurrent $i: $out" >&2; exit 1; }) &
    pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent run"; done
t3=$(date +%s)
echo "soak: $concurrent concurrent runs in $((t3 - t2)) s" >&2

# The leak check, after one more run's sweep.
run busybox true >/dev/null 2>&1 || fail "the last run failed"
after=$(snapshot)
leaks=$(comm -13 <(echo "$before") <(echo "$after"))
if [ -n "$leaks" ]; then
    fail "left behind on the host:"
    echo "$leaks" >&2
    # What holds them: the run records' owners, the processes that hold a mark open, isol's
    # and virtiofsd processes.
    for r in "$home"/runs/*.json; do [ -e "$r" ] && echo "record $r: $(cat "$r")" >&2; done
    for m in "$home"/in-use/*; do
        [ -e "$m" ] || continue
        echo "mark $m: $(cat "$m")" >&2
        for fd in /proc/[0-9]*/fd/*; do
            [ "$(readlink "$fd" 2>/dev/null)" = "$m" ] && echo "  held by ${fd%/fd/*}: $(tr '\0' ' ' <"${fd%/fd/*}/cmdline")" >&2
        done
    done
    ps -eo pid,ppid,stat,etimes,comm,args | awk 'NR == 1 || $5 ~ /^(isol|virtiofsd)/' >&2
fi
if [ -e "$home/lock" ] && awk '{print $6}' /proc/locks | grep -q ":$(stat -c %i "$home/lock")\$"; then
    fail "the store lock is still held"
fi
rm -rf "$home" "$share"
echo "soak: $backend ($variants): $runs + $kills killed + $concurrent concurrent runs, $((t3 - start)) s, $failures failures" >&2
[ "$failures" = 0 ]
