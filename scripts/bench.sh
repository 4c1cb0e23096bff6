#!/usr/bin/env bash
# Benchmark dwell side by side with bwrap, nsenter and the raw cgroup
# freezers, and rewrite the generated block of BENCHMARKS.md.
#   scripts/bench.sh                     # full run (a few minutes)
#   scripts/bench.sh --iterations 20     # extra flags go to dwell-bench (--help)
#   SKIP_BUILD=1 scripts/bench.sh        # reuse target/release binaries
#   SKIP_BUILD=1 BENCH_BIN_DIR=target/debug scripts/bench.sh ...  # debug binaries
#                                        # (a quick check: timings are only indicative)
#   DWELL_LOG=debug scripts/bench.sh     # keep a debug log of the daemon
#   scripts/bench.sh --only-density yes --density-ns 50 --density-gvisor 5
#                                        # a quick density run, printed only
# Needs root, bubblewrap and util-linux. Starts a private daemon with its own
# data dir and socket under a temp dir; on exit (also on failure or Ctrl-C)
# it deletes every sandbox that daemon has, stops it and removes the temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "$(id -u)" != 0 ]; then
  echo "bench.sh: run as root (the daemon makes mounts, cgroups and loop devices)" >&2
  exit 1
fi
for tool in bwrap nsenter unshare; do
  command -v "$tool" >/dev/null || {
    echo "bench.sh: $tool is missing; install bubblewrap / util-linux" >&2
    exit 1
  }
done

# build.sh copies from target/: keep a caller's CARGO_TARGET_DIR out of it.
if [ -z "${SKIP_BUILD:-}" ]; then
  env -u CARGO_TARGET_DIR scripts/build.sh
  env -u CARGO_TARGET_DIR cargo build --release -p dwell-bench
fi
bin=${BENCH_BIN_DIR:-$root/target/release}
for f in dwell dwell-agent dwell-bench; do
  [ -x "$bin/$f" ] || { echo "bench.sh: $bin/$f is missing; run without SKIP_BUILD" >&2; exit 1; }
done

tmp=$(mktemp -d /tmp/dwell-bench.XXXXXX)
data=$tmp/data
sock=$tmp/dwell.sock
log=$tmp/daemon.log
daemon=
bench=
# A second daemon without a warm gVisor pool: the cold column of the density
# case's gVisor create to first exec (only when `serve` has --gvisor-pool).
cold_data=$tmp/cold-data
cold_sock=$tmp/cold.sock
cold_log=$tmp/cold-daemon.log
cold_daemon=

# Delete every sandbox of the daemon (pid $1, socket $2, log $3), stop it
# and remove its cgroup parents.
stop_daemon() {
  local pid=$1 s=$2 l=$3 ids parent d
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    ids=$("$bin/dwell" --socket "$s" ls -q 2>/dev/null)
    if [ -n "$ids" ]; then
      echo "bench.sh: removing $(echo "$ids" | wc -w) leftover sandboxes of $s" >&2
      # shellcheck disable=SC2086
      "$bin/dwell" --socket "$s" rm -f $ids >/dev/null
    fi
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null
  fi
  # The daemon's own cgroup parents (empty once every sandbox is gone).
  parent=$(sed -n 's/.*cgroup parent \(dwell-[0-9a-f]*\)).*/\1/p' "$l" 2>/dev/null | head -n1)
  if [ -n "$parent" ]; then
    for d in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/*/"$parent-gvisor" /sys/fs/cgroup/"$parent-gvisor"; do
      [ -d "$d" ] && rmdir "$d" 2>/dev/null
    done
  fi
}

cleanup() {
  local rc=$?
  set +e
  # Deleting a thousand sandboxes takes a while: a second Ctrl-C must not
  # leave them behind half-way.
  trap - EXIT
  trap '' INT TERM
  if [ -n "$bench" ] && kill -0 "$bench" 2>/dev/null; then
    kill -TERM "$bench"
    wait "$bench" 2>/dev/null
  fi
  stop_daemon "$daemon" "$sock" "$log"
  stop_daemon "$cold_daemon" "$cold_sock" "$cold_log"
  if [ -n "${DWELL_LOG:-}" ] && [ -f "$log" ]; then
    cp "$log" /tmp/dwell-bench-daemon.log && echo "bench.sh: daemon log kept in /tmp/dwell-bench-daemon.log" >&2
  fi
  # Never rm -r through a mount a failed sandbox may have left.
  if findmnt -rn -o TARGET | grep -q "^$tmp"; then
    echo "bench.sh: mounts remain under $tmp; not removing it (umount them, then rm -r $tmp)" >&2
    rc=1
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The port proxy on a free loopback port (its overhead is a case).
proxy_addr=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# The E2B listeners (E2B create to first command is a case).
e2b_addr=127.0.0.1:$(free_port)
envd_addr=127.0.0.1:$(free_port)
# The density case holds 1,000 sandboxes at once: lift the default tenant's
# quota (1,000 sandboxes, 64 vCPUs per host CPU, ...) and raise the open-file
# limit to its hard limit (each sandbox holds a few descriptors).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
quota=(--default-max-sandboxes none --default-max-vcpus none --default-max-memory none
  --default-max-storage none)
# Wait until the daemon (pid $1, log $3) answers on socket $2.
wait_ready() {
  for _ in $(seq 300); do
    "$bin/dwell" --socket "$2" ls -q >/dev/null 2>&1 && return 0
    kill -0 "$1" 2>/dev/null || { echo "bench.sh: the daemon exited:" >&2; cat "$3" >&2; exit 1; }
    sleep 0.1
  done
}
# Each daemon runs in a session of its own: a Ctrl-C in the terminal (SIGINT
# to the whole foreground process group) must not stop it before the cleanup
# has deleted its sandboxes, which outlive a stopped daemon.
DWELL_LOG=${DWELL_LOG:-info} setsid "$bin/dwell" serve --data-dir "$data" --socket "$sock" \
  --proxy-listen "$proxy_addr" --domain dwell.bench "${quota[@]}" \
  --e2b-listen "$e2b_addr" --e2b-sandbox-listen "$envd_addr" 2>"$log" &
daemon=$!
wait_ready "$daemon" "$sock" "$log"
cold=()
if grep -q -- --gvisor-pool <<<"$("$bin/dwell" serve --help)"; then
  DWELL_LOG=${DWELL_LOG:-info} setsid "$bin/dwell" serve --data-dir "$cold_data" --socket "$cold_sock" \
    --gvisor-pool 0 "${quota[@]}" 2>"$cold_log" &
  cold_daemon=$!
  wait_ready "$cold_daemon" "$cold_sock" "$cold_log"
  cold=(--cold-socket "$cold_sock")
fi

# In the background, waited for: a signal runs the cleanup at once (bash
# defers traps until a foreground command ends), which stops it first.
"$bin/dwell-bench" --socket "$sock" --data-dir "$data" --dwell "$bin/dwell" \
  --daemon-pid "$daemon" --proxy "$proxy_addr" --proxy-domain dwell.bench \
  --e2b "$e2b_addr" --e2b-envd "$envd_addr" --e2b-key-file "$data/admin.key" \
  "${cold[@]}" --out "$root/BENCHMARKS.md" "$@" &
bench=$!
wait "$bench"
