#!/usr/bin/env bash
# Install the system packages dwell and its tests need on Debian/Ubuntu.
# Idempotent; does nothing for packages already present.
#   scripts/install-deps.sh            # the namespace runtime and the tests' tools
#   scripts/install-deps.sh --gvisor   # also gVisor's runsc (bookworm-backports)
#   scripts/install-deps.sh --print-backports-source
#       # print the bookworm-backports source --gvisor would write, and exit
#       # (reads DWELL_APT_DIR, default /etc/apt; no apt calls)
set -euo pipefail
gvisor=${DWELL_GVISOR:-}
print_backports=
for arg in "$@"; do
  case "$arg" in
    --gvisor) gvisor=1 ;;
    --print-backports-source) print_backports=1 ;;
    *) echo "install-deps.sh: unknown option $arg (use --gvisor or --print-backports-source)" >&2; exit 2 ;;
  esac
done

# The bookworm-backports source, as a deb822 stanza, on the mirror this
# machine already uses: the URIs and Signed-By of the first enabled Debian
# source (type deb, suite bookworm, component main) in $apt/sources.list,
# then $apt/sources.list.d/*.list and *.sources (one-line and deb822), so a
# local or corporate mirror keeps being used. Fails when there is none.
backports_source() {
  local apt=${DWELL_APT_DIR:-/etc/apt} f found=
  local files=()
  [ -f "$apt/sources.list" ] && files+=("$apt/sources.list")
  for f in "$apt"/sources.list.d/*.list "$apt"/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
  done
  for f in ${files[@]+"${files[@]}"}; do
    case "$f" in
      *.sources) found=$(deb822_bookworm < "$f") ;;
      *) found=$(one_line_bookworm < "$f") ;;
    esac
    if [ -n "$found" ]; then
      printf '%s\n' "$found"
      return 0
    fi
  done
  echo "install-deps.sh: no Debian bookworm source (type deb, suite bookworm, component main) in $apt/sources.list or $apt/sources.list.d/*.{list,sources}, so there is no mirror to take bookworm-backports from; add your Debian mirror (e.g. 'deb http://deb.debian.org/debian bookworm main' in $apt/sources.list) or install runsc yourself" >&2
  return 1
}

# deb822 (stdin): the first matching stanza as a backports stanza. A
# Signed-By that embeds a key keeps its continuation lines.
deb822_bookworm() {
  awk '
    function has(list, word,   n, i, a) { n = split(list, a, /[ \t]+/); for (i = 1; i <= n; i++) if (a[i] == word) return 1; return 0 }
    function flush() {
      if (!done && has(types, "deb") && has(suites, "bookworm") && has(comps, "main") && tolower(enabled) != "no" && uris != "") {
        print "Types: deb"; print "URIs: " uris; print "Suites: bookworm-backports"; print "Components: main"
        if (signed != "") print "Signed-By:" signed
        done = 1
      }
      types = suites = comps = uris = signed = enabled = ""; field = ""
    }
    /^#/ { next }
    /^[ \t]*$/ { flush(); next }
    /^[ \t]/ { if (field == "signed-by") signed = signed "\n" $0; next }
    {
      field = tolower(substr($0, 1, index($0, ":") - 1)); value = substr($0, index($0, ":") + 1)
      trimmed = value; gsub(/^[ \t]+|[ \t]+$/, "", trimmed)
      if (field == "types") types = trimmed
      else if (field == "suites") suites = trimmed
      else if (field == "components") comps = trimmed
      else if (field == "uris") uris = trimmed
      else if (field == "enabled") enabled = trimmed
      else if (field == "signed-by") signed = (trimmed == "" ? "" : " " trimmed)
    }
    END { flush() }
  '
}

# One-line format (stdin): `deb [opts] URI SUITE COMPONENT...`.
one_line_bookworm() {
  awk '
    /^[ \t]*deb[ \t]/ {
      line = $0; sub(/#.*/, "", line); sub(/^[ \t]*deb[ \t]+/, "", line); signed = ""
      if (substr(line, 1, 1) == "[") {
        opts = substr(line, 2, index(line, "]") - 2); line = substr(line, index(line, "]") + 1)
        n = split(opts, o, /[ \t]+/)
        for (i = 1; i <= n; i++) if (tolower(o[i]) ~ /^signed-by=/) signed = substr(o[i], 11)
      }
      n = split(line, w, /[ \t]+/); k = 0
      for (i = 1; i <= n; i++) if (w[i] != "") f[++k] = w[i]
      if (k < 3 || f[2] != "bookworm") next
      main = 0; for (i = 3; i <= k; i++) if (f[i] == "main") main = 1
      if (!main) next
      print "Types: deb"; print "URIs: " f[1]; print "Suites: bookworm-backports"; print "Components: main"
      if (signed != "") print "Signed-By: " signed
      exit
    }
  '
}

if [ -n "$print_backports" ]; then
  backports_source
  exit
fi
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
  chromium    # headless browser: port proxy screenshots, the web console's tests and benchmark
  chromium-driver  # chromedriver: WebDriver for the web console's tests and benchmark (testkit browser)
  curl        # requests through the port proxy (tests)
  openssl     # the test CA and certificates of the TLS port proxy (tests, e2b-suite.sh)
  openssh-client  # ssh, scp, sftp, ssh-keygen: the SSH gateway's tests
  docker-registry # a real OCI registry (distribution v2) for the pull tests
  skopeo      # pushes test images to it, and reads exported images back
  sudo        # the host-user image's passwordless sudo (E2B's base template)
  python-is-python3  # `python` in sandboxes on the host images, as E2B's base has
  systemd     # systemd-analyze verify checks the units in deploy/systemd (tests)
  postgresql  # initdb + pg_ctl: the cluster's store tests start their own server in a temp dir
)
# Node.js and npm bundle the web console at build time (crates/console/
# build.rs). A Node.js of another origin (e.g. NodeSource's, which bundles
# npm and conflicts with Debian's npm package) is used as it is.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  pkgs+=(nodejs npm)
fi
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

# schemathesis, which tries the REST API from its OpenAPI document
# (crates/cli/tests/schemathesis.rs), pinned to the version that test was
# written against.
SCHEMATHESIS_VERSION=4.32.5
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
  python3 -m pip install -q "schemathesis==$SCHEMATHESIS_VERSION" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi
# Under pyenv a new console script is on PATH only once its shim exists;
# without it the test would skip instead of run.
if ! command -v schemathesis >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  pyenv rehash
fi
if ! command -v schemathesis >/dev/null 2>&1; then
  echo "install-deps.sh: schemathesis is installed for $(python3 -c 'import sys; print(sys.executable)') but not on PATH; add that Python's bin directory to PATH" >&2
  exit 1
fi

# kubernetes-validate, which checks the manifests in deploy/kubernetes
# against the Kubernetes schemas it carries (no network once installed;
# crates/cli/tests/deploy.rs), pinned to the version they were checked with.
KUBERNETES_VALIDATE_VERSION=1.37.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  python3 -m pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
if ! command -v kubernetes-validate >/dev/null 2>&1 && command -v pyenv >/dev/null 2>&1; then
  pyenv rehash
fi
if ! command -v kubernetes-validate >/dev/null 2>&1; then
  echo "install-deps.sh: kubernetes-validate is installed for $(python3 -c 'import sys; print(sys.executable)') but not on PATH; add that Python's bin directory to PATH" >&2
  exit 1
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
    source=$(backports_source)
    printf '%s\n' "$source" > /etc/apt/sources.list.d/bookworm-backports.sources
    cat > /etc/apt/preferences.d/bookworm-backports-low <<'PIN'
Package: *
Pin: release n=bookworm-backports
Pin-Priority: 100
PIN
  fi
  apt-get update -q
  apt-get install -y -q -t bookworm-backports runsc
fi
