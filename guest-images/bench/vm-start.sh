#!/usr/bin/env bash
# VM start-up benchmark: isol's VMM vs QEMU -M microvm (and a Firecracker you built), same guests,
# 1 vCPU, 128 MiB, interleaved runs; prints a Markdown table (docs/benchmarks-vm.md).
#
#   guest-images/bench/vm-start.sh [--runs N] [--warmup N] [--rss-runs N] [--memory MIB]
#                                  [--image NAME] [--kernel FILE] [--qemu PATH]
#                                  [--firecracker PATH] [--subjects LIST] [--isol-b PATH]
#
# On the host it builds what it needs (release isol, guest init, the bench binary,
# the guest kernel) and re-runs itself in the lab (`isol lab`), where /dev/kvm is
# real; in the lab it runs the bench (bench/benches/vm_start.rs) directly.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
rel=target/x86_64-unknown-linux-gnu/release

if [ "$(hostname)" != isol-lab ]; then
    cargo build --release -p isol -p isol-guest-init >&2
    cargo bench -p isol-bench --bench vm_start --no-run >&2
    guest-images/build-kernel.sh --quiet >/dev/null
    exec "$rel/isol" lab -- "$0" "$@"
fi

bin=$(ls -t "$rel"/deps/vm_start-* 2>/dev/null | grep -v '\.d$' | head -n1 || true)
[ -n "$bin" ] || { echo "vm-start: bench binary not built; run: cargo bench -p isol-bench --bench vm_start --no-run" >&2; exit 1; }
echo "vm-start: $(date -u +%F), $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(qemu-system-x86_64 --version | head -n1)"
exec "$bin" "$@"
