#!/usr/bin/env bash
# Run E2B's own sync Python SDK test suite against dwell, reached as the SDK
# reaches E2B: over HTTPS by host name (api.D, sandbox.D, PORT-ID.D), with
# only E2B_DOMAIN and E2B_API_KEY set.
#
#   scripts/e2b-suite.sh PATH/TO/E2B [pytest args...]   # e.g. -n 3, -k watch
#
# PATH/TO/E2B is a checkout of github.com/e2b-dev/E2B (not part of this
# repo). Its SDK (packages/python-sdk, the version the suite pins) and the
# suite's test tools go into a venv under target/e2b-suite/. dwell comes
# from target/debug (PROFILE=dev scripts/build.sh); ISO=gvisor runs the
# sandboxes on gVisor.
#
# Everything runs in a private network and mount namespace, so the host is
# never changed: IPv4 forwarding is switched on there (sandboxes get
# internet access by default, as on E2B), a throwaway CA and a wildcard
# certificate for $DOMAIN are trusted there only (bind mounts over the CA
# bundles), a small DNS responder answers *.$DOMAIN with 127.0.0.1, and
# dwell's port proxy serves TLS on 443. The files that reach public
# addresses are left out (--ignore); run nothing here that needs them. The
# template tests that build from_image("ubuntu:22.04") fail here: they need
# docker.io, which this namespace cannot reach (add -k 'not ...' to skip).
set -euo pipefail
if [ -z "${DWELL_E2B_SUITE_INNER:-}" ]; then
  [ $# -ge 1 ] && [ -d "$1/packages/python-sdk/tests/sync" ] || {
    echo "usage: $0 PATH/TO/E2B [pytest args...] (a checkout of e2b-dev/E2B)" >&2
    exit 2
  }
  [ "$(id -u)" = 0 ] || { echo "$0: run as root (namespaces, mounts)" >&2; exit 1; }
  root=$(cd "$(dirname "$0")/.." && pwd)
  sdk=$(cd "$1/packages/python-sdk" && pwd)
  venv=$root/target/e2b-suite/venv
  if [ ! -x "$venv/bin/pytest" ] || [ "$sdk/pyproject.toml" -nt "$venv/.installed" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -e "$sdk" 'pytest>=9.0.3,<10' 'pytest-xdist>=3.3.1,<4' \
      'python-dotenv>=1,<2' 'pytest-dotenv>=0.5.2,<0.6' 'pytest-asyncio>=1.3.0,<2' 'pytest-timeout>=2.4.0,<3'
    touch "$venv/.installed"
  fi
  shift
  exec unshare --net --mount --propagation private \
    env DWELL_E2B_SUITE_INNER=1 ROOT="$root" SDK="$sdk" VENV="$venv" "$0" "$@"
fi

ip link set lo up
echo 1 > /proc/sys/net/ipv4/ip_forward   # this namespace's own setting
BIN=${BIN:-$ROOT/target/debug/dwell}
# The static agent scripts/build.sh makes (target/<triple>/debug; the copy
# beside dwell is replaced by a dynamic one whenever cargo builds it all).
if [ -z "${AGENT:-}" ]; then
  for a in "$ROOT"/target/*-linux-*/debug/dwell-agent; do [ -x "$a" ] && AGENT=$a && break; done
fi
[ -x "${AGENT:-}" ] || { echo "no static dwell-agent under $ROOT/target/<triple>/debug: run PROFILE=dev scripts/build.sh (or set AGENT)" >&2; exit 1; }
ISO=${ISO:-namespace}
DOMAIN=${DOMAIN:-dwell.test}
D=$(mktemp -d /tmp/dwell-e2b-suite-XXXX)
API=127.0.0.1:3000
daemon= dns=
cleanup() {
  set +e
  if [ -n "$daemon" ]; then
    DWELL_SOCKET=$D/s.sock "$BIN" ls -q 2>/dev/null | xargs -r env DWELL_SOCKET=$D/s.sock "$BIN" rm -f >/dev/null 2>&1
    kill "$daemon"; wait "$daemon"
  fi
  [ -n "$dns" ] && kill "$dns" 2>/dev/null
  echo "logs (daemon.log, pytest.log, junit.xml) in $D"
}
trap cleanup EXIT

mkdir -p "$D/tls"
(
  cd "$D/tls"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -days 2 -subj "/CN=dwell e2b-suite CA" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out csr.pem \
    -subj "/CN=$DOMAIN" 2>/dev/null
  printf 'subjectAltName=DNS:*.%s,DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
    "$DOMAIN" "$DOMAIN" > ext.cnf
  openssl x509 -req -in csr.pem -CA ca.pem -CAkey ca.key -CAcreateserial -out cert.pem -days 2 \
    -extfile ext.cnf 2>/dev/null
)
cat /etc/ssl/certs/ca-certificates.crt "$D/tls/ca.pem" > "$D/bundle.pem"
mount --bind "$D/bundle.pem" /etc/ssl/certs/ca-certificates.crt
certifi=$("$VENV/bin/python" -c 'import certifi; print(certifi.where())' 2>/dev/null || true)
[ -n "$certifi" ] && [ -f "$certifi" ] && mount --bind "$D/bundle.pem" "$certifi"
export SSL_CERT_FILE=$D/bundle.pem

# *.$DOMAIN -> 127.0.0.1; any other name: NXDOMAIN.
cat > "$D/dns.py" <<'PY'
import socket, struct, sys
dom = sys.argv[1].lower().rstrip(".")
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
while True:
    q, peer = s.recvfrom(4096)
    try:
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        i += 1
        qtype, _ = struct.unpack(">HH", q[i:i + 4])
        i += 4
    except (IndexError, struct.error):
        continue
    name = ".".join(labels).lower()
    ours = name == dom or name.endswith("." + dom)
    a = ours and qtype == 1
    flags = 0x8180 | (q[2] & 0x01) << 8 | (0 if ours else 3)
    out = q[:2] + struct.pack(">HHHHH", flags, 1, 1 if a else 0, 0, 0) + q[12:i]
    if a:
        out += struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + socket.inet_aton("127.0.0.1")
    s.sendto(out, peer)
PY
python3 "$D/dns.py" "$DOMAIN" > "$D/dns.log" 2>&1 &
dns=$!
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:2\n' > "$D/resolv.conf"
mount --bind "$D/resolv.conf" /etc/resolv.conf

# One SDK process keeps a connection per sandbox host, all from 127.0.0.1.
DWELL_ALLOWED_REGISTRIES=loopback "$BIN" serve --data-dir "$D/data" --socket "$D/s.sock" \
  --agent "$AGENT" --default-isolation "$ISO" --e2b-listen "$API" \
  --proxy-listen 127.0.0.1:443 --domain "$DOMAIN" --proxy-e2b-api \
  --proxy-tls-cert "$D/tls/cert.pem" --proxy-tls-key "$D/tls/key.pem" \
  --proxy-max-per-ip 4096 > "$D/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 300); do
  DWELL_SOCKET=$D/s.sock "$BIN" ls -q >/dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { echo "dwell serve exited:" >&2; cat "$D/daemon.log" >&2; daemon=; exit 1; }
  sleep 0.1
done
key=$(DWELL_SOCKET=$D/s.sock "$BIN" tenant create e2b-suite | head -n1)
unset E2B_SANDBOX_URL E2B_API_URL E2B_DEBUG HTTPS_PROXY https_proxy HTTP_PROXY http_proxy ALL_PROXY all_proxy
export E2B_DOMAIN=$DOMAIN E2B_API_KEY=e2b_${key#dwk_}
cd "$SDK"
"$VENV/bin/pytest" tests/sync -p no:cacheprovider \
  --ignore=tests/sync/sandbox_sync/test_network.py \
  --ignore=tests/sync/sandbox_sync/test_internet_access.py \
  --ignore=tests/sync/template_sync/test_stacktrace.py \
  -rA --junitxml="$D/junit.xml" "$@" 2>&1 | tee "$D/pytest.log" | tail -60
