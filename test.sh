#!/usr/bin/env bash
# Runs isol's whole test suite: unit tests, and integration tests that really clone namespaces,
# mount, set cgroup limits and wire networks (they need root).
#
#   sudo ./test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the integration tests create namespaces, mounts and cgroups: run as root (sudo ./test.sh)" >&2
    exit 1
fi
command -v busybox >/dev/null || { echo "test.sh: run ./setup.sh first (busybox-static is missing)" >&2; exit 1; }

cargo test --workspace --locked "$@"
