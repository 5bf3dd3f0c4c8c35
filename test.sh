#!/usr/bin/env bash
# Runs isol's whole test suite:
#  1. on this host: unit tests, and integration tests that really clone namespaces, mount, set
#     cgroup limits and wire networks (they need root);
#  2. in the lab (a QEMU VM with a real /dev/kvm and a pure cgroup v2 host, see docs/lab.md):
#     the KVM backend's boot tests, the kvm CLI tests, and the container tests again on cgroup v2.
#
# Run it as root:
#   ./test.sh            everything
#   ./test.sh --host     only the host part
#   ./test.sh --lab      only the lab part
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

part=all
case "${1:-}" in
    "") ;;
    --host) part=host ;;
    --lab) part=lab ;;
    *) echo "test.sh: unknown argument: $1 (use --host, --lab or nothing)" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the integration tests create namespaces, mounts and cgroups: run it as root (su -, then ./test.sh)" >&2
    exit 1
fi
command -v busybox >/dev/null || { echo "test.sh: run ./setup.sh first (busybox-static is missing)" >&2; exit 1; }

# The guest init and isol itself must exist as binaries for the kvm tests.
cargo build --workspace --bins --locked
[ "$part" != lab ] && cargo test --workspace --locked

[ "$part" = host ] && exit 0

# The lab part. The guest kernel is cached by its inputs; building it the first time takes minutes.
kernel_dir=$(guest-images/build-kernel.sh --quiet)
export ISOL_KERNEL_DIR="$kernel_dir" ISOL_KERNEL="$kernel_dir/vmlinux" ISOL_REQUIRE_KVM=1
bin=target/x86_64-unknown-linux-gnu/debug
export ISOL_GUEST_INIT="$PWD/$bin/isol-guest-init"

# Test executables, by cargo's own account of what it built.
test_exe() {  # package, test target kind:name
    cargo test --locked -p "$1" --no-run --message-format=json 2>/dev/null |
        python3 -c '
import json, sys
want_kind, want_name = sys.argv[1].split(":")
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"] \
       and m["target"]["name"] == want_name and want_kind in m["target"]["kind"]:
        print(m["executable"])
' "$2"
}

# One lab run. The lab's nested KVM (kvm_amd on QEMU's emulated SVM) now and then freezes for
# good (docs/lab.md, "Known fault"): either the whole lab (isol lab notices its heartbeat stop
# and ends with "the lab froze" after 2 minutes) or one vCPU thread inside it (a soft lockup:
# the lab lives on, the suite never ends; a run that makes no progress for 10 minutes - every
# suite here takes under 4 - is stopped, isol lab stopping its VM on SIGTERM), or the lab kernel
# dies of it (a vCPU thread's stack overflowing in exc_page_fault; isol lab says "the lab kernel
# panicked"), or a test that retries the lab's faults itself says this lab is worn (they come in
# clusters). Each time the run is tried again in a fresh lab, up to three attempts, saying so.
lab_fault="^isol lab: error: the lab (froze|kernel panicked)|^(parity|boot): the lab's nested KVM failed every attempt"
lab() {
    local rc err
    err=$(mktemp)
    for attempt in 1 2 3; do
        rc=0
        timeout -k 30 "${LAB_LIMIT:-600}" "$bin/isol" lab -- "$@" 2> >(tee "$err" >&2) || rc=$?
        wait  # for tee
        if [ "$rc" = 124 ]; then
            echo "test.sh: the lab hung (attempt $attempt: no end after ${LAB_LIMIT:-600} s); see docs/lab.md" >&2
        elif [ "$rc" != 0 ] && grep -qE "$lab_fault" "$err"; then
            echo "test.sh: the lab failed (attempt $attempt: $(grep -m1 -oE "$lab_fault" "$err")); see docs/lab.md" >&2
        else
            rm -f "$err"
            return "$rc"
        fi
    done
    rm -f "$err"
    return "$rc"
}
# The first lab run on a machine fetches and unpacks the lab kernel (cached, with progress); do it
# outside the suites' time bound. No nested guest runs here.
echo "== lab: boot it once (prepares its cache on a fresh machine)" >&2
"$bin/isol" lab -- true
echo "== lab: isol lab itself (its freeze watch)" >&2
# These boot labs themselves, so a lab fault shows in a failed assertion's message rather than on
# isol lab's own stderr: a failure that names it is run again, as lab() does.
lab_tests_ok=0
for attempt in 1 2 3; do
    out=$(mktemp)
    if ISOL_LAB_TESTS=1 cargo test --locked --test lab -- --test-threads=1 2>&1 | tee "$out"; then
        lab_tests_ok=1
    elif grep -qE "isol lab: error: the lab (froze|kernel panicked)" "$out"; then
        echo "test.sh: the lab failed (attempt $attempt: the isol lab tests met the lab's fault); see docs/lab.md" >&2
        rm -f "$out"
        continue
    fi
    rm -f "$out"
    break
done
[ "$lab_tests_ok" = 1 ] || exit 1
echo "== lab: VMM boot tests" >&2
lab "$(test_exe isol-vmm test:boot)" --test-threads=1
echo "== lab: virtio devices, guest against host file" >&2
lab "$(test_exe isol-vmm test:virtio)" --test-threads=1
echo "== lab: kvm backend through the CLI" >&2
lab "$(test_exe isol test:kvm)" --test-threads=1
lab "$(test_exe isol test:kvm_tty)" --test-threads=1
echo "== lab: isol exec into a running microVM (the exec channel; nothing left)" >&2
lab "$(test_exe isol test:kvm_exec)" --test-threads=1
echo "== lab: the VMM's jail (namespaces, root, user, capabilities, cgroup; nothing left)" >&2
lab "$(test_exe isol test:kvm_jail)" --test-threads=1
echo "== lab: named and detached runs, ps/stop/exec, the namespace flags (cgroup v2; a detached microVM)" >&2
lab "$(test_exe isol test:namespaces)" --test-threads=1
echo "== lab: --network bridge on kvm (virtio-net on a tap on isol0, with a container; nothing left)" >&2
lab "$(test_exe isol test:kvm_net)" --test-threads=1
echo "== lab: --network ns:PATH on kvm (a VM on a CNI pod's network: tap + tc redirect; nothing left)" >&2
lab "$(test_exe isol test:pod_net)" --test-threads=1
echo "== lab: -v DIR:DIR on kvm (virtio-fs served by virtiofsd; both ways, :ro, nothing left)" >&2
lab "$(test_exe isol test:kvm_fs)" --test-threads=1
echo "== lab: the teaching labs (docs/labs/): lab 12's KVM program, the container labs on cgroup v2" >&2
lab "$(test_exe isol-vmm test:labs)" --test-threads=1
lab "$(test_exe isol test:labs)" --test-threads=1
echo "== lab: the same workloads on both backends, byte for byte" >&2
lab "$(test_exe isol test:parity)" --test-threads=1 --skip a_100_mib_stdout_stream_arrives_whole
# The 100 MiB stdout stream, in a lab of its own (50-200 s a run there). Its kvm side is watched:
# inside the lab a run that met one of the lab's own faults - a guest triple fault, or a vCPU
# spinning inside the lab's KVM (30 s without output, the guest's RIP the lab kernel's own KVM
# code) - is run again, up to 5 attempts, then in a fresh lab (lab() above), saying so; a stall
# of any other kind fails at once (lab/src/watch.rs, docs/devices.md "Tests"). Hence a
# longer bound than the suites'.
echo "== lab: a 100 MiB stdout stream on both backends, byte for byte" >&2
LAB_LIMIT=1200 lab "$(test_exe isol test:parity)" --test-threads=1 --exact a_100_mib_stdout_stream_arrives_whole
echo "== lab: isol bench with every start subject (isol, crun, runc, QEMU microvm)" >&2
lab "$(test_exe isol test:bench)" --test-threads=1 in_the_lab
echo "== lab: isol bench's density, isol's microVMs beside QEMU microvm's" >&2
lab "$(test_exe isol test:bench)" --test-threads=1 --exact lab_density_starts_isols_and_qemus_vms
echo "== lab: cgroup v2, for real" >&2
lab "$(test_exe isol-container lib:isol_container)" --test-threads=1 cgroups
# The container suite runs on this host above; in the lab, the parts cgroup v2 changes.
lab "$(test_exe isol test:container)" --test-threads=1 \
    memory cpus pids_limit json_report killing every_namespace mounts concurrent
# The device cgroup is an eBPF program on cgroup v2.
lab "$(test_exe isol test:container_security)" --test-threads=1 devices
# isol-runc's lifecycle (create/start/kill/delete, exec, limits, device rules, pause/resume,
# update, hooks, shared PID namespaces) on cgroup v2. The 100 short workloads' output test
# checks no cgroup feature and would take minutes there: it runs on the host only.
lab "$(test_exe isol test:oci)" --test-threads=1 --skip a_short_workloads_output_reaches_the_pipes
echo "== lab: isol-runc's kvm backend (a bundle in a microVM: lifecycle, kill, mounts; ctr run; nothing left)" >&2
# containerd's overlay snapshots cannot sit on the lab's overlay root: its temp dirs go on /run.
lab env TMPDIR=/run "$(test_exe isol test:oci_vm)" --test-threads=1
echo "== lab: Kubernetes' CRI on isol-runc on cgroup v2 (UpdateContainerResources: memory.max, cpuset.cpus)" >&2
lab env TMPDIR=/run "$(test_exe isol test:cri)" --test-threads=1
echo "== lab: Kubernetes' CRI with two handlers, a pod in containers and one in microVMs (ExecSync, pod networking; nothing left)" >&2
lab env TMPDIR=/run "$(test_exe isol test:cri_vm)" --test-threads=1
