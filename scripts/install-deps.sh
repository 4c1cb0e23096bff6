#!/usr/bin/env bash
# Install the system packages dwell and its tests need on Debian/Ubuntu.
# Idempotent; does nothing for packages already present.
#   scripts/install-deps.sh            # the namespace runtime and the tests' tools
#   scripts/install-deps.sh --gvisor   # also gVisor's runsc (bookworm-backports)
set -euo pipefail
gvisor=${DWELL_GVISOR:-}
for arg in "$@"; do
  case "$arg" in
    --gvisor) gvisor=1 ;;
    *) echo "install-deps.sh: unknown option $arg (the only one is --gvisor)" >&2; exit 2 ;;
  esac
done
pkgs=(
  e2fsprogs   # mkfs.ext4 for sandbox volumes
  util-linux  # losetup, unshare, nsenter (tests and diagnostics)
  iproute2    # veth pairs for --net sandboxes
  nftables    # NAT and isolation rules for --net sandboxes
  procps      # ps, pkill (tests)
  python3     # probes inside sandboxes (tests)
  bubblewrap  # the baseline of the benchmark
  busybox-static  # a tiny static userland for the OCI image import test
  zstd        # the `tar | zstd` baseline of the snapshot benchmark
  xfsprogs    # reflink-capable data dirs: the snapshot freeze test and benchmark
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]}; install them as root: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# A real S3-compatible server for the snapshot store's S3 tests (moto's
# server mode, from PyPI).
if ! command -v moto_server >/dev/null 2>&1; then
  python3 -m pip install -q 'moto[server]' 2>/dev/null \
    || python3 -m pip install -q --break-system-packages 'moto[server]'
fi

# The official E2B Python SDK, for the E2B-compatibility tests
# (crates/cli/tests/e2b.rs), pinned to the version they were written against.
E2B_SDK_VERSION=2.63.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('e2b') != '$E2B_SDK_VERSION')" 2>/dev/null; then
  python3 -m pip install -q "e2b==$E2B_SDK_VERSION" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "e2b==$E2B_SDK_VERSION"
fi

# The npm E2B SDK for the one Node scenario, when Node is there (pinned in
# crates/cli/tests/e2b/js/package.json).
if command -v npm >/dev/null 2>&1 && [ ! -e crates/cli/tests/e2b/js/node_modules/e2b/package.json ]; then
  (cd "$(dirname "$0")/../crates/cli/tests/e2b/js" && npm ci --no-audit --no-fund -q)
fi

# gVisor's runsc, only when gVisor is wanted (--gvisor; the tests want it):
# from bookworm-backports, pinned low so nothing else is taken from there.
if [ -n "$gvisor" ] && ! command -v runsc >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && grep -q bookworm /etc/os-release; then
  if [ ! -e /etc/apt/sources.list.d/bookworm-backports.sources ]; then
    cat > /etc/apt/sources.list.d/bookworm-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat > /etc/apt/preferences.d/bookworm-backports-low <<'PIN'
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100
PIN
  fi
  apt-get update -q
  apt-get install -y -q -t bookworm-backports runsc
fi
