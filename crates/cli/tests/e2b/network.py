"""E2B network behaviour (what E2B's test_network.py and
test_internet_access.py check against public addresses) against a fake
internet: run by crates/cli/tests/egress.rs inside a private network
namespace whose "outside" serves a greeting on NET_SERVICE_PORT of
NET_ALLOWED, NET_DENIED and NET_OTHER. NET_PROXY is the daemon's port proxy
(plain HTTP on loopback).

Egress rules (allow with deny-all, deny one address, deny all, allow wins
over deny), allow_internet_access true/false/left out, update_network
applying and clearing rules, allow_public_traffic false/true through
get_host, mask_request_host (the server in the sandbox sees the masked
Host) and the 400s for a bad mask and for network.rules transforms.
"""
import http.client
import os
import time

from e2b import Sandbox, SandboxNetworkOpts

from _common import check, log, sandbox

ALLOWED = os.environ["NET_ALLOWED"]
DENIED = os.environ["NET_DENIED"]
OTHER = os.environ["NET_OTHER"]
SERVICE_PORT = int(os.environ["NET_SERVICE_PORT"])
PROXY = os.environ["NET_PROXY"]
ALL = "0.0.0.0/0"

# Connects from inside the sandbox; always exits 0 (the SDK raises on
# other exit codes): `connected GREETING` or `failed WHY`.
PROBE = """python3 -c "
import socket,sys
try:
  s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=3); s.settimeout(3)
  print('connected', s.recv(64).decode().strip())
except OSError as e: print('failed', e)
" """


def probe(sb, ip):
    return sb.commands.run(f"{PROBE} {ip} {SERVICE_PORT}", timeout=30).stdout.strip()


def reaches(sb, ip, what):
    out = probe(sb, ip)
    check(out == f"connected hello-from-{ip}", f"{what}: {ip} is reachable ({out})")


def blocked(sb, ip, what):
    out = probe(sb, ip)
    check(out.startswith("failed"), f"{what}: {ip} is not reachable ({out})")


def refused_400(what, says, **kw):
    try:
        s = Sandbox.create(timeout=60, **kw)
    except Exception as e:  # the SDK's exception for a 400
        msg = str(e)
        check(says in msg, f"{what} is refused with a clear message ({msg})")
        return
    Sandbox.kill(s.sandbox_id)
    raise AssertionError(f"{what} was accepted")


def proxied(host, headers=None):
    """GET / through the port proxy as a client of `host` would."""
    c = http.client.HTTPConnection(PROXY, timeout=15)
    try:
        c.request("GET", "/", headers={"Host": host, **(headers or {})})
        r = c.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        c.close()


# Serves GET once per request: answers 200 with the Host header it saw.
ECHO_HOST = """python3 -c "
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b=('host=' + self.headers.get('Host','')).encode()
        self.send_response(200); self.send_header('Content-Length', str(len(b))); self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a): pass
http.server.HTTPServer(('', 8080), H).serve_forever()
" """


def serve_host_echo(sb):
    sb.commands.run(ECHO_HOST, background=True)
    host = sb.get_host(8080)
    t0 = time.time()
    while time.time() - t0 < 20:
        status, _ = proxied(host, {"e2b-traffic-access-token": sb.traffic_access_token or ""})
        if status == 200:
            return host
        time.sleep(0.3)
    raise AssertionError("the server in the sandbox did not come up on 8080")


# test_network.py::test_allow_specific_ip_with_deny_all
with sandbox(network=SandboxNetworkOpts(allow_out=[ALLOWED], deny_out=[ALL])) as sb:
    reaches(sb, ALLOWED, "allowed address with deny-all")
    blocked(sb, DENIED, "another address with deny-all")

# test_deny_specific_ip
with sandbox(network=SandboxNetworkOpts(deny_out=[DENIED])) as sb:
    blocked(sb, DENIED, "a denied address")
    reaches(sb, ALLOWED, "an address not denied")

# test_deny_all_traffic (the SDK's selector form)
with sandbox(network=SandboxNetworkOpts(deny_out=lambda ctx: [ctx.all_traffic])) as sb:
    blocked(sb, ALLOWED, "deny all")
    blocked(sb, DENIED, "deny all")

# test_allow_takes_precedence_over_deny
with sandbox(
    network=SandboxNetworkOpts(deny_out=lambda ctx: [ctx.all_traffic], allow_out=[ALLOWED, DENIED])
) as sb:
    reaches(sb, ALLOWED, "allow wins over deny-all")
    reaches(sb, DENIED, "allow wins over deny-all")
    blocked(sb, OTHER, "not allowed, denied")

# test_internet_access.py
with sandbox(allow_internet_access=True) as sb:
    reaches(sb, OTHER, "allow_internet_access=True")
    check(sb.get_info().network is not None, "get_info has the network settings")
with sandbox(allow_internet_access=False) as sb:
    blocked(sb, OTHER, "allow_internet_access=False")
# Left out, the SDK sends nothing: internet, as on E2B, where the host
# routes (this namespace forwards).
with sandbox() as sb:
    reaches(sb, OTHER, "allow_internet_access left out: internet, as on E2B")

# test_update_network_applies_restrictions / _clears_existing_rules
with sandbox(allow_internet_access=True) as sb:
    reaches(sb, DENIED, "before the update")
    sb.update_network({"deny_out": [DENIED]})
    blocked(sb, DENIED, "update_network denied it")
    reaches(sb, ALLOWED, "update_network left others reachable")
    sb.update_network({"allow_out": [ALLOWED], "deny_out": [ALL]})
    reaches(sb, ALLOWED, "update_network allow with deny-all")
    blocked(sb, OTHER, "update_network allow with deny-all")
    sb.update_network({"allow_internet_access": False})
    blocked(sb, ALLOWED, "update_network allow_internet_access=False")
    sb.update_network({})
    reaches(sb, ALLOWED, "update_network({}) cleared the rules")
    reaches(sb, DENIED, "update_network({}) cleared the rules")

# test_allow_public_traffic_false / _true through get_host
with sandbox(network=SandboxNetworkOpts(allow_public_traffic=False)) as sb:
    check(sb.traffic_access_token is not None, "a private sandbox has a traffic token")
    host = serve_host_echo(sb)
    status, body = proxied(host)
    check(status == 401, f"without the token: {status}")
    status, body = proxied(host, {"e2b-traffic-access-token": sb.traffic_access_token})
    check(status == 200, f"with the token: {status} {body}")
    check(
        sb.get_info().network.get("allow_public_traffic") is False,
        "get_info says allow_public_traffic False",
    )
with sandbox(network=SandboxNetworkOpts(allow_public_traffic=True)) as sb:
    host = serve_host_echo(sb)
    status, body = proxied(host)
    check(status == 200, f"public traffic without a token: {status} {body}")
    check(body.startswith("host=8080-"), f"the client's Host is passed on unmasked ({body})")

# test_mask_request_host
mask = "custom-host.example.com:${PORT}"
with sandbox(network=SandboxNetworkOpts(mask_request_host=mask)) as sb:
    host = serve_host_echo(sb)
    status, body = proxied(host)
    check(status == 200, f"masked request: {status}")
    check(
        body == "host=custom-host.example.com:8080",
        f"the server sees the masked Host, the port filled in ({body})",
    )
    info = sb.get_info().network
    check(info.get("mask_request_host") == mask, f"get_info shows the mask ({info})")
refused_400(
    "a mask that is no host",
    "maskRequestHost",
    network=SandboxNetworkOpts(mask_request_host="bad host/${PORT}"),
)
refused_400(
    "a too long mask",
    "maskRequestHost",
    network=SandboxNetworkOpts(mask_request_host="a" * 300 + ".com"),
)

# network.rules (per-host transforms) are not available on dwell
refused_400(
    "network.rules transforms",
    "network.rules",
    network=SandboxNetworkOpts(
        allow_out=["api.example.com"],
        rules={"api.example.com": [{"transform": {"headers": {"X-Test": "1"}}}]},
    ),
)

log("network: all checks passed")
