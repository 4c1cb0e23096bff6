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
# The control plane stays readable: no import cycle of more than two files.
python3 scripts/module-cycles.py crates/control
PROFILE=dev scripts/build.sh
# The static agent (cargo test rebuilds target/debug/dwell-agent dynamically).
export DWELL_AGENT="$PWD/target/$(rustc -vV | sed -n 's/^host: //p')/debug/dwell-agent"
status=0
# A hung test fails the run with what it printed instead of holding CI
# until its own limit (the harness also kills any one CLI call after 300 s).
cargo_test() { timeout --kill-after=30s "$1" cargo test "${@:2}" 2>&1; }
cargo_test 50m --workspace --no-fail-fast || status=$?
# The runtime-agnostic end-to-end suites once more, with gVisor as the
# daemon's default isolation (the same tests, parametrised).
if command -v runsc >/dev/null 2>&1; then
  DWELL_TEST_ISOLATION=gvisor cargo_test 15m -p dwell --no-fail-fast \
    --test lifecycle --test exec_files || status=$?
else
  echo "SKIP: the gVisor pass of the lifecycle and exec_files suites (no runsc)"
fi
exit $status
