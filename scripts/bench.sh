#!/usr/bin/env bash
# Benchmark dwell side by side with bwrap, nsenter and the raw cgroup
# freezers, and rewrite the generated block of BENCHMARKS.md.
#   scripts/bench.sh                     # full run (a few minutes)
#   scripts/bench.sh --iterations 20     # extra flags go to dwell-bench (--help)
#   SKIP_BUILD=1 scripts/bench.sh        # reuse target/release binaries
#   SKIP_BUILD=1 BENCH_BIN_DIR=target/debug scripts/bench.sh ...  # debug binaries
#                                        # (a quick check: timings are only indicative)
#   DWELL_LOG=debug scripts/bench.sh     # keep a debug log of the daemon
#                                        # (and of the cluster nodes)
#   scripts/bench.sh --only-density yes --density-ns 50 --density-gvisor 5
#                                        # a quick density run, printed only
#   scripts/bench.sh --only-cluster yes --cluster-move-mib 64
#                                        # a quick cluster run, printed only
# Needs root, bubblewrap and util-linux; the web console's case needs
# chromium and chromium-driver (skipped, saying why, without them). Starts
# a private daemon with its own data dir and socket under a temp dir (it
# also listens on a free loopback port, where it serves the console); on
# exit (also on failure or Ctrl-C) it deletes every sandbox that daemon has,
# stops it and removes the temp dir.
# When `dwell serve` has --cluster (and no other --only-* case is asked for),
# it also starts a private PostgreSQL server (Debian's postgresql, run as the
# postgres user in a dir of its own), moto_server (pip install 'moto[server]')
# with a bucket, and two cluster nodes n1 and n2 for the cluster case; the
# same exit path removes their sandboxes and stops them all. Without
# PostgreSQL, moto_server or boto3 the cluster case is skipped, saying why.
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
# The cluster case: two nodes (n2 has more memory, so placement puts the
# sandboxes there; n1 forwards to it), their PostgreSQL server and moto.
n1_sock=$tmp/n1.sock
n1_log=$tmp/n1.log
n1_daemon=
n2_sock=$tmp/n2.sock
n2_log=$tmp/n2.log
n2_daemon=
pg_bin=
pg_dir=
moto=
# moto's credentials, for the nodes and the bench's raw S3 transfers.
s3_env=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1)

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

# What a stopped cluster node (data dir $1, log $2) left on the host although
# its records are gone (a sandbox a move did not free on its old node, say):
# its processes are killed, its mounts unmounted, its loop devices detached
# and its cgroups removed, saying so, since that is a bug of dwell's.
sweep_node() {
  local dir=$1 l=$2 parent ids id d m
  parent=$(sed -n 's/.*cgroup parent \(dwell-[0-9a-f]*\)).*/\1/p' "$l" 2>/dev/null | head -n1)
  ids=$(ls "$dir/sandboxes" 2>/dev/null)
  m=$(findmnt -rn -o TARGET | grep -c "^$dir/")
  [ -n "$parent" ] && { [ -n "$ids" ] || [ "$m" != 0 ]; } || return 0
  echo "bench.sh: node data dir $dir still holds sandbox(es) [$(echo $ids)] and $m mount(s) that no record explains (a dwell bug); removing them" >&2
  for id in $ids; do
    # A frozen process dies only once thawed.
    d=/sys/fs/cgroup/freezer/$parent/$id
    [ -f "$d/freezer.state" ] && echo THAWED >"$d/freezer.state"
    for d in /sys/fs/cgroup/unified/$parent/$id /sys/fs/cgroup/$parent/$id; do
      [ -f "$d/cgroup.freeze" ] && echo 0 >"$d/cgroup.freeze"
    done
    for _ in $(seq 50); do
      m=$(cat /sys/fs/cgroup/*/"$parent/$id"/cgroup.procs /sys/fs/cgroup/"$parent/$id"/cgroup.procs 2>/dev/null | sort -u)
      [ -z "$m" ] && break
      # shellcheck disable=SC2086
      kill -9 $m 2>/dev/null
      sleep 0.1
    done
  done
  findmnt -rn -o TARGET | grep "^$dir/" | sort -r | while read -r m; do umount "$m"; done
  losetup -a | grep -F "($dir/" | cut -d: -f1 | while read -r d; do losetup -d "$d"; done
  for d in /sys/fs/cgroup/*/"$parent" /sys/fs/cgroup/"$parent"; do
    [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
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
  # n1 first: it lists the whole cluster's sandboxes and removes them
  # through their owners, n2 among them.
  stop_daemon "$n1_daemon" "$n1_sock" "$n1_log"
  stop_daemon "$n2_daemon" "$n2_sock" "$n2_log"
  sweep_node "$tmp/n1-data" "$n1_log"
  sweep_node "$tmp/n2-data" "$n2_log"
  if [ -n "$moto" ] && kill -0 "$moto" 2>/dev/null; then
    kill -TERM "$moto"
    wait "$moto" 2>/dev/null
  fi
  if [ -n "$pg_dir" ]; then
    if [ -f "$pg_dir/data/postmaster.pid" ]; then
      runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1
    fi
    rm -rf "$pg_dir"
  fi
  if [ -n "${DWELL_LOG:-}" ] && [ -f "$log" ]; then
    cp "$log" /tmp/dwell-bench-daemon.log && echo "bench.sh: daemon log kept in /tmp/dwell-bench-daemon.log" >&2
  fi
  for n in n1 n2; do
    if [ -n "${DWELL_LOG:-}" ] && [ -f "$tmp/$n.log" ]; then
      cp "$tmp/$n.log" "/tmp/dwell-bench-$n.log" && echo "bench.sh: cluster node $n's log kept in /tmp/dwell-bench-$n.log" >&2
    fi
  done
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
# The REST API on TCP, where the daemon serves the web console at /ui/
# (measured in headless Chromium during the density case).
listen_addr=127.0.0.1:$(free_port)
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
  --proxy-listen "$proxy_addr" --domain dwell.bench --listen "$listen_addr" "${quota[@]}" \
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

# The cluster case: wanted when `serve` has --cluster, unless another
# --only-* case is asked for.
cluster_wanted() {
  local a
  grep -qE -- '--cluster[ =<]' <<<"$("$bin/dwell" serve --help)" || return 1
  for a in "$@"; do
    case $a in
      --only-cluster) return 0 ;;
      --only-*) return 1 ;;
    esac
  done
  return 0
}
# Why the cluster case cannot run here (nothing when it can).
cluster_missing() {
  if [ ! -x "$pg_bin/initdb" ] || ! id postgres >/dev/null 2>&1; then
    echo "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb or no postgres user; apt-get install postgresql)"
  elif ! command -v moto_server >/dev/null; then
    echo "moto_server is not installed (pip install 'moto[server]')"
  elif ! python3 -c 'import boto3' 2>/dev/null; then
    echo "python3 has no boto3 (pip install boto3)"
  fi
}
# A private PostgreSQL server on a free loopback port with the database
# `dwell` (trust auth for the role dwell); sets pg_port. The server refuses
# root: it runs as postgres in a dir of its own, in its own session (pg_ctl
# detaches it) so that a Ctrl-C leaves it to the cleanup.
start_postgres() {
  pg_dir=$(mktemp -d /tmp/dwell-bench-pg.XXXXXX)
  chown postgres:postgres "$pg_dir"
  runuser -u postgres -- "$pg_bin/initdb" -D "$pg_dir/data" -U dwell -A trust -E UTF8 \
    --no-sync >"$pg_dir/initdb.log" 2>&1 || {
    echo "bench.sh: initdb failed:" >&2
    cat "$pg_dir/initdb.log" >&2
    exit 1
  }
  pg_port=$(free_port)
  setsid runuser -u postgres -- "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w -t 60 \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1" start >/dev/null || {
    echo "bench.sh: PostgreSQL did not start:" >&2
    cat "$pg_dir/log" >&2
    exit 1
  }
  "$pg_bin/createdb" -h 127.0.0.1 -p "$pg_port" -U dwell dwell
}
# moto_server on a free loopback port with the bucket dwell-bench; sets
# moto_url.
start_moto() {
  local port
  port=$(free_port)
  moto_url=http://127.0.0.1:$port
  setsid moto_server -H 127.0.0.1 -p "$port" >"$tmp/moto.log" 2>&1 &
  moto=$!
  for _ in $(seq 300); do
    curl -s -o /dev/null "$moto_url/" && break
    kill -0 "$moto" 2>/dev/null || { echo "bench.sh: moto_server exited:" >&2; cat "$tmp/moto.log" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf -X PUT "$moto_url/dwell-bench" >/dev/null || {
    echo "bench.sh: moto_server at $moto_url did not make the bucket dwell-bench:" >&2
    cat "$tmp/moto.log" >&2
    exit 1
  }
}
# Node $1 with --node-capacity memory $2; sets node_pid.
start_node() {
  local port
  port=$(free_port)
  env "${s3_env[@]}" DWELL_LOG="${DWELL_LOG:-info}" setsid "$bin/dwell" serve \
    --data-dir "$tmp/$1-data" --socket "$tmp/$1.sock" \
    --cluster "postgres://dwell@127.0.0.1:$pg_port/dwell" --node-name "$1" \
    --advertise "127.0.0.1:$port" --node-listen "127.0.0.1:$port" \
    --cluster-secret-file "$tmp/cluster.key" --node-capacity "vcpus=8,memory=$2,disk=100G" \
    --object-store s3://dwell-bench/nodes --s3-endpoint "$moto_url" \
    --snapshot-key "$tmp/snapshot.key" "${nopool[@]}" 2>"$tmp/$1.log" &
  node_pid=$!
}
cluster=()
if cluster_wanted "$@"; then
  pg_bin=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -n1)
  why=$(cluster_missing)
  if [ -n "$why" ]; then
    case " $* " in
      *" --only-cluster "*) echo "bench.sh: cannot run the cluster case: $why" >&2; exit 1 ;;
    esac
    echo "bench.sh: skipping the cluster case: $why" >&2
  else
    start_postgres
    start_moto
    (umask 077 && head -c 32 /dev/urandom >"$tmp/cluster.key" && head -c 32 /dev/urandom >"$tmp/snapshot.key")
    nopool=()
    grep -q -- --gvisor-pool <<<"$("$bin/dwell" serve --help)" && nopool=(--gvisor-pool 0)
    start_node n1 4G
    n1_daemon=$node_pid
    start_node n2 16G
    n2_daemon=$node_pid
    wait_ready "$n1_daemon" "$n1_sock" "$n1_log"
    wait_ready "$n2_daemon" "$n2_sock" "$n2_log"
    # Both nodes registered before the first placement.
    for _ in $(seq 100); do
      "$bin/dwell" --socket "$n1_sock" node ls --json 2>/dev/null | grep -q '"n2"' && break
      sleep 0.1
    done
    cluster=(--cluster-direct "$n2_sock" --cluster-forwarded "$n1_sock" --cluster-s3 "$moto_url"
      --cluster-bucket dwell-bench --cluster-scratch "$tmp")
  fi
fi

# In the background, waited for: a signal runs the cleanup at once (bash
# defers traps until a foreground command ends), which stops it first.
env "${s3_env[@]}" "$bin/dwell-bench" --socket "$sock" --data-dir "$data" --dwell "$bin/dwell" \
  --daemon-pid "$daemon" --proxy "$proxy_addr" --proxy-domain dwell.bench \
  --e2b "$e2b_addr" --e2b-envd "$envd_addr" --e2b-key-file "$data/admin.key" \
  --console "$listen_addr" \
  "${cold[@]}" "${cluster[@]}" --out "$root/BENCHMARKS.md" "$@" &
bench=$!
wait "$bench"
