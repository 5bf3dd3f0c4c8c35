#!/usr/bin/env bash
# Sets isol up on a fresh Debian 12 (bookworm) x86_64 machine and runs the main job:
# the built-in busybox image in a container and in a microVM (in the lab where the host's
# /dev/kvm cannot run guests). Run it as root.
#
#   ./setup.sh            install packages, build isol, build the guest kernel, run busybox
#   ./setup.sh --no-run   everything but the final run (what CI uses)
#
# Slow artifacts (the guest kernel, the lab kernel) are cached under /var/cache/isol, keyed by
# their inputs, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

run_demo=1
for a in "$@"; do
    case "$a" in
        --no-run) run_demo=0 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "setup.sh: unknown argument: $a" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh: installs packages and builds kernels: run it as root (su -, then ./setup.sh)" >&2
    exit 1
fi

# Debian packages: what isol uses at run time, what builds the guest kernel and the lab, and
# the peers the benchmarks compare against.
packages=(
    busybox-static            # the built-in default image
    iproute2 nftables iptables iputils-ping procps util-linux   # container networking, tests
    e2fsprogs cpio xz-utils kmod   # images for the VM, the lab's initramfs
    qemu-system-x86           # the lab (TCG) and the QEMU microvm peer
    linux-source-6.1 bc flex bison libelf-dev libssl-dev build-essential   # guest kernel
    crun runc hyperfine       # benchmark peers
    containerd                # a real OCI client of isol-runc (tests/containerd.rs)
    containernetworking-plugins   # the CNI bridge of the pod that tests/cri.rs runs through CRI
    protobuf-compiler         # protoc, for the k8s-cri crate's generated CRI client (tests/cri.rs)
    podman                    # another one, through conmon (tests/podman.rs)
    netavark                  # podman's other network backend (tests/oci_vm.rs)
    docker.io                 # and dockerd's `runtimes` (tests/docker.rs)
    chromium                  # renders the benchmark report in its test
    libseccomp-dev libcap-ng-dev   # to build virtiofsd (below)
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    # docker.io's package starts the machine's own dockerd, whose docker0 and iptables rules
    # (FORWARD policy DROP) would change what isol's own networks see; tests/docker.rs starts
    # a dockerd of its own. Installed here just now, it is stopped and left disabled.
    if [[ " ${missing[*]} " == *" docker.io "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
    fi
fi

# virtiofsd serves `-v DIR:DIR` on --backend kvm (virtio-fs; docs/devices.md): the virtio-fs
# project's release from crates.io, pinned (isol uses --fd, --sandbox namespace, --readonly),
# built once (~5 minutes on 2 cores).
virtiofsd_version=1.14.0
if [ "$(/usr/local/bin/virtiofsd --version 2>/dev/null | awk '{print $2}')" != "$virtiofsd_version" ]; then
    echo "setup: building virtiofsd $virtiofsd_version" >&2
    cargo install --locked --quiet --root /usr/local virtiofsd --version "$virtiofsd_version"
fi

echo "setup: building isol" >&2
cargo build --release --locked -p isol -p isol-guest-init
# isol finds its helpers beside itself: the container init, the VMM it execs for --backend kvm,
# the guest init; isol-runc is the OCI runtime for containerd, podman and docker (docs/oci.md).
release=target/x86_64-unknown-linux-gnu/release
install -m 0755 "$release/isol" "$release/isol-init" "$release/isol-runc" "$release/isol-vmm" "$release/isol-guest-init" \
    /usr/local/bin/
# isol-runc under the VM runtime's name runs bundles in microVMs by default (docs/oci.md,
# "The kvm backend").
ln -sf isol-runc /usr/local/bin/isol-runc-vm

if [ -x guest-images/build-kernel.sh ]; then
    echo "setup: guest kernel (cached after the first build, ~4 minutes on 2 cores)" >&2
    guest-images/build-kernel.sh >/dev/null
fi

if [ "$run_demo" = 1 ]; then
    demo='echo "hello from $(hostname), pid $$, kernel $(uname -r)"; ps'
    echo "setup: the built-in busybox image in a container:" >&2
    isol run --hostname demo busybox -- sh -c "$demo"
    echo "setup: the same in a microVM:" >&2
    if isol doctor --json | grep -A1 '"area": "kvm"' | grep -q '"level": "ok"'; then
        isol run --backend kvm --hostname demo busybox -- sh -c "$demo"
    else
        echo "setup: (this host's /dev/kvm cannot run guests in hardware: booting the lab first)" >&2
        isol lab -- isol run --backend kvm --hostname demo busybox -- sh -c "$demo"
    fi
fi
