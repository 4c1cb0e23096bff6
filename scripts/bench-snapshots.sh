#!/usr/bin/env bash
# Snapshot benchmark, side by side in one run: a running sandbox with 1 GiB
# of data is snapshotted through the daemon (full, then after changing
# 10 MiB), restored in place and forked, on an ext4 data dir (this host's
# disk) and on an XFS data dir (a loop-mounted file, where the freeze
# reflinks the image instead of reading it). Baselines on the same volume:
# `tar -S | zstd -1 -T2` (and back) and `cp --reflink=auto` of the image.
# Rewrites the block between the snapshot markers of BENCHMARKS.md.
#
#   scripts/bench-snapshots.sh   (as root; SKIP_BUILD=1 reuses the binaries,
#                                 PROFILE=dev runs debug builds to try it)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "$(id -u)" = 0 ] || { echo "bench-snapshots.sh: run as root" >&2; exit 1; }
for tool in zstd tar mkfs.xfs; do
  command -v "$tool" >/dev/null || {
    echo "bench-snapshots.sh: $tool is missing; run scripts/install-deps.sh" >&2
    exit 1
  }
done
profile=${PROFILE:-release}
dir=$([ "$profile" = dev ] && echo debug || echo "$profile")
if [ -z "${SKIP_BUILD:-}" ]; then
  env -u CARGO_TARGET_DIR PROFILE="$profile" scripts/build.sh
fi
bin=$root/target/$dir
export DWELL_AGENT="$root/target/$(rustc -vV | sed -n 's/^host: //p')/$dir/dwell-agent"
[ -x "$bin/dwell" ] && [ -x "$DWELL_AGENT" ] || {
  echo "bench-snapshots.sh: release binaries missing; run without SKIP_BUILD" >&2
  exit 1
}

tmp=$(mktemp -d /var/tmp/dwell-bench-snap.XXXXXX)
daemon=
sock=
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_daemon
  mountpoint -q "$tmp/xfs" && umount "$tmp/xfs"
  if findmnt -rn -o TARGET | grep -q "^$tmp"; then
    echo "bench-snapshots.sh: mounts remain under $tmp; not removing it" >&2
    rc=1
  else
    rm -rf "$tmp"
  fi
  exit "$rc"
}
stop_daemon() {
  if [ -n "$daemon" ] && kill -0 "$daemon" 2>/dev/null; then
    ids=$("$bin/dwell" --socket "$sock" ls -q 2>/dev/null)
    # shellcheck disable=SC2086
    [ -n "$ids" ] && "$bin/dwell" --socket "$sock" rm -f $ids >/dev/null
    kill -TERM "$daemon"
    wait "$daemon" 2>/dev/null
  fi
  daemon=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }
d() { "$bin/dwell" --socket "$sock" "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

rows=()
row() { rows+=("| $1 | $2 | $3 | $4 |"); }

# Snapshot the running sandbox `sb` as $1; a row named $2.
snap() {
  local t0 t1 out freeze stored
  t0=$(now); out=$(d snapshot create sb --name "$1" --json); t1=$(now)
  freeze=$(echo "$out" | json "['freeze_us']/1000")
  stored=$(echo "$out" | json "['uploaded_bytes']>>20")
  row "$fs" "$2" "$(ms "$t0" "$t1") ms" "freeze $freeze ms, $stored MiB new"
}

# One data dir: a daemon, a sandbox with 1 GiB, the dwell operations and
# the baselines on its volume.
run() {
  local fs=$1 data=$2
  sock=$tmp/$fs.sock
  "$bin/dwell" serve --data-dir "$data" --socket "$sock" 2>"$tmp/$fs.log" &
  daemon=$!
  for _ in $(seq 300); do d ls -q >/dev/null 2>&1 && break; sleep 0.1; done
  d create --name sb --persistent --disk 2G --memory 1G >/dev/null
  d exec sb -- sh -c 'head -c 1073741824 /dev/urandom > /root/big && sync'
  # A writer keeps running while the snapshots are taken.
  d exec sb -- sh -c 'while :; do date >> /root/log; sleep 0.01; done >/dev/null 2>&1 &'
  local id vol t0 t1 size
  id=$(d inspect sb --json | json "['id']")
  vol=$data/volumes/$id

  snap full "dwell snapshot, full (1 GiB)"
  d exec sb -- dd if=/dev/urandom of=/root/big bs=1M count=10 seek=500 conv=notrunc status=none
  snap incr "dwell snapshot after changing 10 MiB"
  t0=$(now); d restore sb full >/dev/null; t1=$(now)
  row "$fs" "dwell restore in place (1 GiB, verified, restarted)" "$(ms "$t0" "$t1") ms" ""
  t0=$(now); d create --from full --name fork >/dev/null; t1=$(now)
  row "$fs" "dwell create --from (1 GiB fork, running)" "$(ms "$t0" "$t1") ms" ""
  d rm -f fork >/dev/null

  # Baselines on the same data, the sandbox stopped (no freeze needed).
  d stop sb >/dev/null
  mkdir -p "$tmp/mnt"
  mount -o loop,ro "$vol/volume.img" "$tmp/mnt"
  t0=$(now)
  tar -S -C "$tmp/mnt" -cf - . | zstd -q -1 -T2 -o "$data/baseline.tar.zst"
  sync -f "$data"; t1=$(now)
  size=$(stat -c %s "$data/baseline.tar.zst")
  row "$fs" "\`tar -S | zstd -1 -T2\` of the volume" "$(ms "$t0" "$t1") ms" "$((size >> 20)) MiB"
  umount "$tmp/mnt"
  mkdir -p "$data/untar"
  t0=$(now)
  zstd -q -d -c "$data/baseline.tar.zst" | tar -C "$data/untar" -xf -
  sync -f "$data"; t1=$(now)
  row "$fs" "\`zstd -d | tar -x\` (restore)" "$(ms "$t0" "$t1") ms" ""
  rm -rf "$data/untar" "$data/baseline.tar.zst"
  t0=$(now); cp --reflink=auto "$vol/volume.img" "$data/copy.img"; sync -f "$data"; t1=$(now)
  row "$fs" "\`cp --reflink=auto\` of the image + sync" "$(ms "$t0" "$t1") ms" ""
  rm -f "$data/copy.img"
  stop_daemon
}

run ext4 "$tmp/ext4"
mkdir -p "$tmp/xfs"
truncate -s 16G "$tmp/xfs.img"
mkfs.xfs -q -m reflink=1 "$tmp/xfs.img"
mount -o loop "$tmp/xfs.img" "$tmp/xfs"
run xfs "$tmp/xfs/data"

{
  echo "<!-- snapshots:begin (generated by scripts/bench-snapshots.sh; edits inside are overwritten) -->"
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Page cache warm (the data was just written); every write path ends durable."
  echo
  echo "| data dir | operation | time | notes |"
  echo "|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo "<!-- snapshots:end -->"
} >"$tmp/block.md"
python3 - "$root/BENCHMARKS.md" "$tmp/block.md" <<'EOF'
import re, sys
path, block = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
pat = re.compile(r"<!-- snapshots:begin.*?<!-- snapshots:end -->", re.S)
if pat.search(text):
    text = pat.sub(lambda _: block, text)
else:
    text = text.rstrip("\n") + "\n\n## Snapshots\n\n" + block + "\n"
open(path, "w").write(text)
EOF
cat "$tmp/block.md"
