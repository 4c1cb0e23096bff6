"""The sandbox lifecycle as E2B's SDK drives it, one case per gap E2B's own
suite found: paging over running and paused sandboxes together (newest
first without an order), the list and refresh routes older SDKs call,
connect's tokens and routing headers, timeouts that fire within a second
of their time (the daemon sweeps only every minute here), set_timeout
shortening down to 0, metrics over a time range, `lifecycle` options
(on_timeout pause with and without memory, a filesystem-only pause that
reboots on connect), fork (one, many, by id, of a killed sandbox), the
SDK's MCP gateway start failing without leaving a sandbox, and a command
stream ended by a kill."""
import datetime
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

from _common import check, log, other_key, sandbox, wait_until
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import SandboxException, SandboxNotFoundException, TimeoutException

tag = f"lc-{os.getpid()}"
API = os.environ["E2B_API_URL"]
KEY = os.environ["E2B_API_KEY"]


def api(method, path, body=None):
    """(status, parsed JSON or None) of one control-plane request."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method)
    req.add_header("X-API-KEY", KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            raw = r.read()
            return r.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def boot_id(s):
    return s.files.read("/proc/sys/kernel/random/boot_id").strip()


def gone_within(s, deadline, slack, what):
    """`s` stops running within `slack` s of `deadline` (time.time())."""
    while time.time() < deadline + slack:
        if not s.is_running():
            late = time.time() - deadline
            check(late <= slack, f"{what} ({late:+.2f}s from its deadline)")
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: still running {slack}s after its deadline")


# Paging over running and paused sandboxes together, newest first.
q = {"suite": tag, "case": "paging"}
older = Sandbox.create(timeout=300, metadata=q)
newer = Sandbox.create(timeout=300, metadata=q)
try:
    newer.pause()
    pager = Sandbox.list(query=SandboxQuery(metadata=q, state=[SandboxState.RUNNING, SandboxState.PAUSED]), limit=1)
    first = pager.next_items()
    check([(x.sandbox_id, x.state) for x in first] == [(newer.sandbox_id, SandboxState.PAUSED)],
          "page 1 of running+paused without an order: the newest (paused) one")
    check(pager.has_next, "a second page follows")
    second = pager.next_items()
    check([(x.sandbox_id, x.state) for x in second] == [(older.sandbox_id, SandboxState.RUNNING)],
          "page 2: the older (running) one")
    check(not pager.has_next, "and no third")
    asc = Sandbox.list(query=SandboxQuery(metadata=q), order="asc").next_items()
    check([x.sandbox_id for x in asc] == [older.sandbox_id, newer.sandbox_id], "order=asc is oldest first")
    # The list route before v2: the running ones, newest first.
    st, items = api("GET", "/sandboxes?metadata=" + urllib.parse.quote(f"suite={tag}&case=paging"))
    check(st == 200 and [x["sandboxID"] for x in items] == [older.sandbox_id],
          f"GET /sandboxes lists the running ones ({st} {items})")
    # Metrics of many sandboxes at once (running ones only).
    st, m = api("GET", f"/sandboxes/metrics?sandbox_ids={older.sandbox_id},{newer.sandbox_id}")
    check(st == 200 and list(m["sandboxes"]) == [older.sandbox_id], f"GET /sandboxes/metrics ({st} {m})")
finally:
    Sandbox.kill(older.sandbox_id)
    Sandbox.kill(newer.sandbox_id)

# Connect: the same token, no traffic token for a public sandbox, the
# routing headers of the sandbox, and requests through it work.
with sandbox(metadata={"suite": tag}) as s:
    c = Sandbox.connect(s.sandbox_id)
    check(c._envd_access_token == s._envd_access_token, "connect returns the sandbox's envd token")
    check(c.traffic_access_token is None, "no traffic token for a public sandbox (null normalised to None)")
    h = c.connection_config.sandbox_headers
    check(h.get("E2b-Sandbox-Id") == s.sandbox_id and h.get("X-Access-Token") == s._envd_access_token,
          "connect sets the sandbox's routing headers")
    c.files.write("/tmp/through-connect", "yes")
    check(s.files.read("/tmp/through-connect") == "yes", "requests through the connected handle reach it")
    # Logs: the sandbox's lifecycle events, v1 and v2.
    st, logs = api("GET", f"/sandboxes/{s.sandbox_id}/logs")
    check(st == 200 and logs["logs"] and len(logs["logs"]) == len(logs["logEntries"]),
          f"GET /sandboxes/{{id}}/logs has its events ({st})")
    st, v2 = api("GET", f"/v2/sandboxes/{s.sandbox_id}/logs?direction=backward&limit=1")
    check(st == 200 and len(v2["logs"]) == 1 and v2["logs"][0]["message"] == logs["logEntries"][-1]["message"],
          "v2 backward, limit 1: the newest event")
    st, v2 = api("GET", f"/v2/sandboxes/{s.sandbox_id}/logs?level=error")
    check(st == 200 and all(e["level"] == "error" for e in v2["logs"]), "v2 level=error: errors only")
    # Refresh (older SDKs): extends, never shortens.
    end0 = s.get_info().end_at
    st, _ = api("POST", f"/sandboxes/{s.sandbox_id}/refreshes", {"duration": 10})
    check(st == 204 and s.get_info().end_at == end0, "a refresh shorter than the timeout keeps it")
    st, _ = api("POST", f"/sandboxes/{s.sandbox_id}/refreshes", {"duration": 3600})
    check(st == 204 and s.get_info().end_at > end0, "a longer refresh extends it")

# Timeouts fire within a second of their time, shortened or not.
with sandbox(timeout=3, metadata={"suite": tag}) as s:
    gone_within(s, time.time() + 3, 1.5, "a 3 s timeout fires on time")
with sandbox(timeout=300, metadata={"suite": tag}) as s:
    s.set_timeout(2)
    gone_within(s, time.time() + 2, 1.5, "set_timeout shortens 300 s to 2 s")
with sandbox(timeout=300, metadata={"suite": tag}) as s:
    t = time.time()
    s.set_timeout(0)
    gone_within(s, t, 1.5, "set_timeout(0) times it out now")

# Metrics over a time range.
with sandbox(metadata={"suite": tag}) as s:
    t0 = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=5)
    m = []
    wait_until("a sample in the range up to now", lambda: bool(m.extend(s.get_metrics(start=t0, end=datetime.datetime.now(datetime.timezone.utc))) or m))
    check(all(t0.timestamp() - 10 <= x.timestamp.timestamp() <= time.time() + 10 for x in m), "samples fall in the range")
    past = s.get_metrics(start=t0 - datetime.timedelta(hours=1), end=t0 - datetime.timedelta(minutes=30))
    check(past == [], "nothing for a range before the sandbox")
    future = s.get_metrics(start=t0 + datetime.timedelta(hours=1), end=t0 + datetime.timedelta(hours=2))
    check(future == [], "nothing for a range in the future")

# lifecycle: on_timeout pause keeping memory (keep_memory None = full):
# connect resumes it in place, the same boot.
with sandbox(timeout=60, metadata={"suite": tag},
             lifecycle={"on_timeout": {"action": "pause", "keep_memory": None}}) as s:
    check(s.get_info().lifecycle["on_timeout"] == "pause", "on_timeout pause")
    before = boot_id(s)
    s.files.write("/tmp/in-memory-fs", "kept")
    s.set_timeout(0)
    wait_until("the timeout paused it", lambda: not s.is_running(), 5)
    check(s.get_info().state == SandboxState.PAUSED, "shown paused")
    r = s.connect()
    check(boot_id(r) == before, "resumed in place: the same boot id")
    check(r.files.read("/tmp/in-memory-fs") == "kept", "its tmp files too")

# keep_memory False: the timeout's pause keeps the files only; connect
# boots it again.
with sandbox(timeout=3, metadata={"suite": tag},
             lifecycle={"on_timeout": {"action": "pause", "keep_memory": False}}) as s:
    s.files.write("/home/user/marker.txt", "fs-only")
    before = boot_id(s)
    gone_within(s, time.time() + 3, 1.5, "the filesystem-only auto-pause fires on time")
    check(s.get_info().state == SandboxState.PAUSED, "shown paused")
    r = s.connect()
    check(r.files.read("/home/user/marker.txt") == "fs-only", "its files survive")
    check(boot_id(r) != before, "connect booted it again (a new boot id)")

# pause(keep_memory=False) explicitly: the same.
with sandbox(metadata={"suite": tag}) as s:
    s.files.write("/home/user/marker.txt", "explicit")
    before = boot_id(s)
    check(s.pause(keep_memory=False) is True, "a filesystem-only pause")
    check(not s.is_running(), "not running after it")
    r = s.connect()
    check(r.files.read("/home/user/marker.txt") == "explicit" and boot_id(r) != before,
          "connect boots it again with its files")
    check(r.pause() is True and r.connect().is_running(), "a memory pause of it still works")

# Fork: one (warm or cold copy), many, by id; a killed one is not found.
with sandbox(metadata={"suite": tag, "case": "fork"}) as s:
    s.files.write("/home/user/state.txt", "before fork")
    # Under gVisor a fork is a warm copy: its processes go on in the fork.
    warm = os.environ.get("DWELL_TEST_ISOLATION") == "gvisor"
    if warm:
        s.commands.run("sleep 1234", background=True)
    forks = s.fork()
    check(len(forks) == 1 and isinstance(forks[0], Sandbox), f"one fork ({forks})")
    f = forks[0]
    try:
        check(f.sandbox_id != s.sandbox_id and s.is_running() and f.is_running(), "both run")
        check(f.files.read("/home/user/state.txt") == "before fork", "the fork has the files")
        f.files.write("/home/user/state.txt", "in fork")
        check(s.files.read("/home/user/state.txt") == "before fork", "and is independent")
        check(f.get_info().metadata.get("case") == "fork", "the fork keeps the metadata")
        if warm:
            ps = f.commands.run("ps -eo args").stdout
            check("sleep 1234" in ps, f"a warm fork has the source's processes ({ps})")
            check(s.get_info().state == SandboxState.RUNNING, "the source runs again after the fork")
    finally:
        f.kill()
    many = Sandbox.fork(s.sandbox_id, count=2, timeout=60)
    try:
        ids = {x.sandbox_id for x in many if isinstance(x, Sandbox)}
        check(len(ids) == 2 and s.sandbox_id not in ids, f"two forks by id ({many})")
    finally:
        for x in many:
            if isinstance(x, Sandbox):
                x.kill()
    try:
        Sandbox.fork(s.sandbox_id, api_key=other_key())
        check(False, "another tenant cannot fork it")
    except SandboxNotFoundException:
        log("ok: another tenant's fork of it is not found")
    st, body = api("POST", f"/sandboxes/{s.sandbox_id}/fork", {"count": 0})
    check(st == 400, f"count 0 is refused ({st} {body})")
    left = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "case": "fork"})).next_items()
    check([x.sandbox_id for x in left] == [s.sandbox_id], "no fork left behind")
    st, snaps = api("GET", f"/snapshots?sandboxID={s.sandbox_id}")
    check(st == 200 and snaps == [], f"no snapshot left behind by a cold copy ({snaps})")
dead = Sandbox.create(timeout=60, metadata={"suite": tag})
dead.kill()
try:
    dead.fork()
    check(False, "forking a killed sandbox raises")
except SandboxNotFoundException:
    log("ok: forking a killed sandbox is not found")

# MCP: the SDK starts the gateway itself; its failure kills the sandbox.
mq = {"suite": tag, "case": str(uuid.uuid4())}
try:
    # (Without a template the SDK asks for its "mcp-gateway" one, which
    # dwell does not have: a 404 before anything is made.)
    Sandbox.create("base", timeout=60, metadata=mq, mcp={"invalid_server": {}})
    check(False, "a failed MCP gateway start raises")
except SandboxException as e:
    check("Failed to start MCP gateway" in str(e), f"the SDK's MCP error ({e})")
left = Sandbox.list(query=SandboxQuery(metadata=mq)).next_items()
check(left == [], "no sandbox left after the MCP gateway failed")

# A sandbox killed under a running command: E2B's error kind and words.
with sandbox(metadata={"suite": tag}) as s:
    cmd = s.commands.run("sleep 60", background=True)
    s.kill()
    try:
        cmd.wait()
        check(False, "waiting on a command of a killed sandbox raises")
    except TimeoutException as e:
        check("sandbox was killed or reached its end of life" in str(e), f"E2B's words ({e})")

log("PASS")
