#!/usr/bin/env bash
# The test suite: system packages, a dev build of dwell and its static
# agent, then every crate's tests (unit, integration, end to end). Run as
# root: the tests create real namespaces, cgroups, mounts and loop devices
# (and clean them up).
set -euo pipefail
cd "$(dirname "$0")/.."
# The gVisor runtime's suites need runsc.
scripts/install-deps.sh --gvisor
cargo fmt --all -- --check
PROFILE=dev scripts/build.sh
# The static agent (cargo test rebuilds target/debug/dwell-agent dynamically).
export DWELL_AGENT="$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/debug/dwell-agent"
cargo test --workspace --no-fail-fast 2>&1
