#!/usr/bin/env bash
# Quickstart on the embedded defaults: build dwell, start the daemon (unless
# one already serves the socket), and show a persistent sandbox keeping its
# files across stop/start, pause/resume, and an ephemeral one vanishing.
# Needs root. Leaves the daemon running if it was already running; stops
# the one it started, and removes the demo sandboxes either way.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
dwell=$PWD/target/release/dwell
export DWELL_SOCKET=${DWELL_SOCKET:-/run/dwell/dwell.sock}
started=""
if ! "$dwell" ls >/dev/null 2>&1; then
  log=$(mktemp /tmp/dwell-serve.XXXXXX.log)
  "$dwell" serve >"$log" 2>&1 &
  started=$!
  for _ in $(seq 100); do "$dwell" ls >/dev/null 2>&1 && break; sleep 0.1; done
  echo "# started dwell serve (pid $started, log $log)"
fi
cleanup() {
  "$dwell" rm -f qs-work qs-tmp >/dev/null 2>&1 || true
  [ -n "$started" ] && kill "$started" 2>/dev/null && wait "$started" 2>/dev/null || true
}
trap cleanup EXIT
run() { echo "\$ dwell $*"; "$dwell" "$@"; }

run create --name qs-work --persistent --memory 512M --cpus 1 --disk 4G
run exec qs-work -- sh -c 'echo hello > /root/notes.txt && mkdir -p /opt/tool && echo v1 > /opt/tool/VERSION'
run stop qs-work
run start qs-work
run exec qs-work -- cat /root/notes.txt /opt/tool/VERSION
run exec -d --tag counter qs-work -- sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/n; sleep 0.1; done'
run pause qs-work
sleep 1
run resume qs-work
run exec qs-work -- cat /tmp/n
echo hi-from-host > /tmp/qs-local.txt
run cp /tmp/qs-local.txt qs-work:/root/
run exec qs-work -- ls -l /root
run ls
run inspect qs-work
run create --name qs-tmp --ephemeral --disk 256M
run exec qs-tmp -- sh -c 'echo scratch > /root/x'
run stop qs-tmp
run ls
echo "# quickstart done: persistent files survived stop/start; the ephemeral sandbox is gone."
echo "# the web console: start the daemon with 'dwell serve --listen 127.0.0.1:7070', then 'dwell ui' prints a login URL"
