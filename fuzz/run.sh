#!/usr/bin/env bash
# Runs each cargo-fuzz target for N executions (default 10 000 000) on its corpus in
# fuzz/corpus/<target>/ and prints the counts. See docs/fuzzing.md.
#
#   fuzz/run.sh [-n RUNS] [-t SECONDS] [-j JOBS] [-s SANITIZER] [TARGET...]
#
#   -n RUNS     executions per target (libFuzzer -runs=RUNS; default 10000000)
#   -t SECONDS  also stop a target after this long (libFuzzer -max_total_time; default none)
#   -j JOBS     targets fuzzed at once (default 1)
#   -s SANITIZER  cargo fuzz's sanitizer: address (default) or none (several times faster;
#               Rust's own bounds, overflow and debug-assertion checks stay on; built into
#               target-none/)
#   RSS_LIMIT_MB (environment) libFuzzer's -rss_limit_mb (default 8192, not libFuzzer's 2048:
#               ASan's runtime keeps ~200-700 bytes for every thread ever created, and the
#               console's writer threads are two an execution: docs/fuzzing.md)
#   TARGET      queue block console mmio net import oci_config seccomp_profile control
#               (default: all)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`); on a stable toolchain
# RUSTC_BOOTSTRAP=1 lets rustc accept the nightly flags cargo-fuzz passes. Everything runs
# under `nice -n 19`. New corpus entries land in a scratch directory; `fuzz/run.sh -m`
# merges (minimizes) them into fuzz/corpus/<target>/ afterwards. Crashes are written to
# fuzz/artifacts/<target>/. Logs: fuzz/logs/<target>.log.
set -euo pipefail

cd "$(dirname "$0")"
RUNS=10000000
TIME=0
JOBS=1
MERGE=0
SAN=address
while getopts "n:t:j:s:m" o; do
    case $o in
        n) RUNS=$OPTARG ;;
        t) TIME=$OPTARG ;;
        j) JOBS=$OPTARG ;;
        s) SAN=$OPTARG ;;
        m) MERGE=1 ;;
        *) sed -n '2,23p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(queue block console mmio net import oci_config seccomp_profile control)

export RUSTC_BOOTSTRAP=1
# The import target writes temporary stores: keep them in memory.
export TMPDIR=${TMPDIR:-/dev/shm}
case $SAN in
    address) TARGET_DIR=target ;;
    none) TARGET_DIR=target-none ;;
    *) echo "run.sh: -s takes address or none, not $SAN" >&2; exit 2 ;;
esac
nice -n 19 cargo fuzz build -O -s "$SAN" --target-dir "$TARGET_DIR"
BIN=$TARGET_DIR/x86_64-unknown-linux-gnu/release
mkdir -p logs

if [ $MERGE = 1 ]; then
    for t in "${TARGETS[@]}"; do
        mkdir -p "corpus/$t" "scratch/$t"
        mkdir -p "merged/$t"
        nice -n 19 "$BIN/$t" -merge=1 "merged/$t" "corpus/$t" "scratch/$t" >"logs/$t.merge.log" 2>&1
        rm -rf "corpus/$t" && mv "merged/$t" "corpus/$t"
        echo "$t: corpus $(ls "corpus/$t" | wc -l) files, $(du -sb "corpus/$t" | cut -f1) bytes"
    done
    rmdir merged 2>/dev/null || true
    exit 0
fi

fuzz_one() {
    local t=$1
    mkdir -p "corpus/$t" "scratch/$t" "artifacts/$t"
    local start=$SECONDS
    local rc=0
    nice -n 19 "$BIN/$t" -runs="$RUNS" -max_total_time="$TIME" -print_final_stats=1 -timeout="${TIMEOUT:-10}" \
        -rss_limit_mb="${RSS_LIMIT_MB:-8192}" \
        -artifact_prefix="artifacts/$t/" "scratch/$t" "corpus/$t" >"logs/$t.log" 2>&1 || rc=$?
    local execs
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "$t: $execs executions in $((SECONDS - start)) s, exit $rc, corpus" \
        "$(cat "corpus/$t"/* "scratch/$t"/* 2>/dev/null | wc -c) bytes in" \
        "$(ls "corpus/$t" "scratch/$t" | grep -vc ':$\|^$') files (before merging)," \
        "crashes: $(ls "artifacts/$t" | wc -l)"
}

running=0
for t in "${TARGETS[@]}"; do
    fuzz_one "$t" &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n
        running=$((running - 1))
    fi
done
wait
