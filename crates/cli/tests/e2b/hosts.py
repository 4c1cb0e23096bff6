"""The SDK reaching sandboxes as it does on E2B: over HTTPS by host name
through dwell's TLS port proxy, WITHOUT E2B_SANDBOX_URL or E2B_API_URL.

Run by crates/cli/tests/e2b.rs with E2B_DOMAIN=DOMAIN:PORT (the proxy
listens on a free port, not 443) and SSL_CERT_FILE naming the test's own
CA, which every transport of the SDK reads (httpx; pyqwest, whose
rustls-native-certs loads SSL_CERT_FILE). Names under DOMAIN exist in no
DNS: this process sends its HTTPS through a CONNECT forwarder of its own
(HTTPS_PROXY) that takes any DOMAIN host to the proxy on 127.0.0.1, so TLS
(SNI, certificate names) is still end to end with the real host names.

Checks: the control plane at https://api.DOMAIN, commands and files over
https://49983-ID.DOMAIN, get_host(port) serving a python http.server,
sandbox.DOMAIN routed by E2b-Sandbox-Id/E2b-Sandbox-Port, a wrong or
missing envd token refused, a sandbox killed under a running command
(E2B's TimeoutException), and auto-resume by an HTTPS request.
"""
import contextlib
import os
import socket
import struct
import threading
import time

import httpx

DOMAIN_PORT = os.environ["E2B_DOMAIN"]
DOMAIN, _, PORT = DOMAIN_PORT.rpartition(":")
PORT = int(PORT)
for v in ("E2B_SANDBOX_URL", "E2B_API_URL"):
    if os.environ.get(v):
        raise SystemExit(f"{v} is set: this scenario is about reaching dwell without it")


def _pipe(a, b):
    """Copies a to b; a reset of a is passed on to b as a reset (the SDK
    reads a reset as "the sandbox is gone", an end of stream as a broken
    response), the other direction woken without a byte sent."""
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except ConnectionResetError:
        with contextlib.suppress(OSError):
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            b.shutdown(socket.SHUT_RD)
        return
    except OSError:
        pass
    with contextlib.suppress(OSError):
        b.shutdown(socket.SHUT_WR)


def _serve(c):
    with c:
        head = b""
        while b"\r\n\r\n" not in head:
            d = c.recv(4096)
            if not d or len(head) > 16384:
                return
            head += d
        method, target = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
        host, _, port = target.rpartition(":")
        ours = host == DOMAIN or host.endswith("." + DOMAIN)
        if method != "CONNECT" or not ours or port != str(PORT):
            c.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        with socket.create_connection(("127.0.0.1", PORT)) as u:
            c.sendall(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            t = threading.Thread(target=_pipe, args=(c, u), daemon=True)
            t.start()
            _pipe(u, c)
            t.join()


def _forwarder():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=_serve, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


os.environ["HTTPS_PROXY"] = f"http://127.0.0.1:{_forwarder()}"
for v in ("NO_PROXY", "no_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(v, None)

from _common import check, log, sandbox, wait_until  # noqa: E402
from e2b import Sandbox, SandboxState, TimeoutException  # noqa: E402

base = f"https://{{}}.{DOMAIN_PORT}"

with sandbox() as s:
    check(s.sandbox_domain == DOMAIN_PORT, f"the domain reported is the proxy's ({s.sandbox_domain})")
    check(s.envd_api_url == base.format(f"49983-{s.sandbox_id}"), f"envd over https by host name: {s.envd_api_url}")
    r = s.commands.run("echo over-tls")
    check(r.stdout == "over-tls\n", "commands.run over https")
    s.files.write("/tmp/tls.txt", "hello tls")
    check(s.files.read("/tmp/tls.txt") == "hello tls", "files write/read over https")

    # get_host(port): a server in the sandbox over https.
    cmd = s.commands.run("cd /tmp && python3 -m http.server 8001", background=True)
    url = f"https://{s.get_host(8001)}/tls.txt"
    check(url == base.format(f"8001-{s.sandbox_id}") + "/tls.txt", f"get_host names the proxy: {url}")
    got = {}

    def served():
        with contextlib.suppress(httpx.HTTPError):
            got["r"] = httpx.get(url, timeout=10)
        return "r" in got and got["r"].status_code == 200

    wait_until("get_host(8001) answers over https", served, secs=30)
    check(got["r"].text == "hello tls", "the server's file comes back")
    check(got["r"].http_version == "HTTP/1.1", "HTTP/1.1 (the proxy offers only it)")
    cmd.kill()

    # sandbox.DOMAIN with E2B's routing headers, and the envd token.
    token = s._envd_access_token
    sbx = base.format("sandbox")
    route = {"E2b-Sandbox-Id": s.sandbox_id, "E2b-Sandbox-Port": "49983"}
    r = httpx.get(f"{sbx}/health", headers={**route, "X-Access-Token": token}, timeout=10)
    check(r.status_code == 204, f"health through sandbox.DOMAIN ({r.status_code})")
    r = httpx.get(
        f"{sbx}/files",
        params={"path": "/tmp/tls.txt"},
        headers={**route, "X-Access-Token": token},
        timeout=10,
    )
    check(r.status_code == 200 and r.text == "hello tls", f"a file read through sandbox.DOMAIN ({r.status_code})")
    for bad in ({}, {"X-Access-Token": "0" * 64}):
        r = httpx.get(f"{sbx}/files", params={"path": "/tmp/tls.txt"}, headers={**route, **bad}, timeout=10)
        check(r.status_code == 401, f"a {'wrong' if bad else 'missing'} token is refused ({r.status_code})")
    r = httpx.get(
        base.format(f"49983-{s.sandbox_id}") + "/files",
        params={"path": "/tmp/tls.txt"},
        headers={"X-Access-Token": "0" * 64},
        timeout=10,
    )
    check(r.status_code == 401, "a wrong token on 49983-ID.DOMAIN is refused")
    r = httpx.get(
        base.format("49983-" + "a" * 20) + "/files",
        params={"path": "/tmp/tls.txt"},
        headers={"X-Access-Token": token},
        timeout=10,
    )
    check(r.status_code == 401, "an id that does not exist answers as a wrong token does")
    r = httpx.get(f"{sbx}/health", timeout=10)
    check(r.status_code == 400 and "E2b-Sandbox-Id" in r.text, "sandbox.DOMAIN without headers says what to send")

# A sandbox killed under a running command, over the TLS proxy: the
# stream's connection is reset beneath TLS, so the SDK reports E2B's error
# kind and words.
with sandbox() as s:
    cmd = s.commands.run("sleep 60", background=True)
    s.kill()
    try:
        cmd.wait()
        check(False, "waiting on a command of a killed sandbox raises")
    except TimeoutException as e:
        check("sandbox was killed or reached its end of life" in str(e), f"E2B's words over TLS ({e})")

# Auto-resume: a paused sandbox wakes on an HTTPS request to its port.
with sandbox(timeout=3, lifecycle={"on_timeout": "pause", "auto_resume": True}) as s:
    s.commands.run("cd /tmp && python3 -m http.server 8000", background=True)
    wait_until(
        "the sandbox pauses at its timeout",
        lambda: Sandbox.get_info(s.sandbox_id).state == SandboxState.PAUSED,
        secs=30,
    )
    r = httpx.get(f"https://{s.get_host(8000)}", timeout=30)
    check(r.status_code == 200, f"an https request wakes it ({r.status_code})")
    check(s.get_info().state == SandboxState.RUNNING, "running again")

log("PASS")
