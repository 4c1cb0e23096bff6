"""The control plane: info, metadata, envs, list filters and paging,
pause/connect status codes, timeouts (kill and autoPause), metrics,
snapshots as templates, kill, and errors."""
import datetime
import os
import time

from _common import check, log, sandbox, wait_until
from e2b import Sandbox, SandboxQuery, SandboxState
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException

tag = f"run-{os.getpid()}"

# Create with metadata, inspect, list by metadata and state, page.
made = [Sandbox.create(timeout=300, metadata={"suite": tag, "n": str(i)}) for i in range(3)]
try:
    info = made[0].get_info()
    check(info.state == SandboxState.RUNNING, "a new sandbox runs")
    check(info.metadata == {"suite": tag, "n": "0"}, "metadata is kept")
    check(info.template_id == "base", "template base")
    check(info.cpu_count >= 1 and info.memory_mb > 0, "resources reported")
    left = (info.end_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    check(250 < left <= 301, f"endAt is the timeout from now ({left:.0f}s)")
    check(info.lifecycle and info.lifecycle["on_timeout"] == "kill", "on_timeout kill by default")

    ids = []
    pager = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}), limit=2)
    pages = 0
    while pager.has_next:
        items = pager.next_items()
        pages += 1
        ids += [x.sandbox_id for x in items]
    check(pages == 2, f"3 sandboxes in pages of 2 are 2 pages ({pages})")
    check(sorted(ids) == sorted(s.sandbox_id for s in made), "paging returns each sandbox once")
    one = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "n": "1"})).next_items()
    check([x.sandbox_id for x in one] == [made[1].sandbox_id], "a metadata filter with two keys")

    check(made[2].pause() is True, "pause answers 204")
    check(Sandbox.pause(made[2].sandbox_id) is False, "pausing a paused sandbox answers 409")
    paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
    check([x.sandbox_id for x in paused] == [made[2].sandbox_id], "state filter paused")
    running = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING])).next_items()
    check(len(running) == 2, "state filter running")
    Sandbox.connect(made[2].sandbox_id, timeout=120)
    check(Sandbox.get_info(made[2].sandbox_id).state == SandboxState.RUNNING, "connect resumes")

    m = made[0].get_metrics()
    check(len(m) == 1 and m[0].mem_used > 0 and m[0].mem_total > 0 and m[0].disk_total > 0, f"metrics from cgroups: {m}")
finally:
    for s in made:
        Sandbox.kill(s.sandbox_id)

# Kill answers 404 (False) the second time; info then raises.
with sandbox() as s:
    check(s.kill() is True, "kill")
    check(Sandbox.kill(s.sandbox_id) is False, "kill of a gone sandbox")
    try:
        Sandbox.get_info(s.sandbox_id)
        check(False, "info of a killed sandbox raises")
    except NotFoundException:
        log("ok: info of a killed sandbox raises NotFound")

# set_timeout: the sandbox is killed when it expires.
with sandbox(timeout=300) as s:
    s.set_timeout(2)
    left = (s.get_info().end_at - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    check(left <= 3, f"set_timeout shortens the deadline ({left:.1f}s)")

    def gone():
        try:
            Sandbox.get_info(s.sandbox_id)
            return False
        except NotFoundException:
            return True

    wait_until("the sandbox is killed at its timeout", gone, 30)

# autoPause: the timeout pauses instead, and connect brings it back with its files.
with sandbox(timeout=2, lifecycle={"on_timeout": "pause"}) as s:
    check(s.get_info().lifecycle["on_timeout"] == "pause", "on_timeout pause")
    wait_until(
        "the timeout pauses an autoPause sandbox",
        lambda: Sandbox.get_info(s.sandbox_id).state == SandboxState.PAUSED,
        30,
    )
    time.sleep(2)
    check(Sandbox.get_info(s.sandbox_id).state == SandboxState.PAUSED, "it stays paused")
    Sandbox.connect(s.sandbox_id, timeout=60)
    check(Sandbox.get_info(s.sandbox_id).state == SandboxState.RUNNING, "connect resumes it")

# Snapshots: capture, list, create a sandbox from one, delete.
with sandbox() as s:
    snap = s.create_snapshot(name=f"snap-{os.getpid()}")
    check(snap.snapshot_id and snap.names == [f"snap-{os.getpid()}"], f"snapshot {snap}")
    listed = Sandbox.list_snapshots(sandbox_id=s.sandbox_id).next_items()
    check([x.snapshot_id for x in listed] == [snap.snapshot_id], "list_snapshots by sandbox")
    with sandbox(template=snap.snapshot_id) as t:
        check(t.get_info().template_id == snap.snapshot_id, "a snapshot is a template")
    check(Sandbox.delete_snapshot(snap.snapshot_id) is True, "delete_snapshot")
    check(Sandbox.delete_snapshot(snap.snapshot_id) is False, "delete_snapshot of a gone one")

# Errors.
try:
    Sandbox.create(template="no-such-template")
    check(False, "an unknown template fails")
except SandboxException as e:
    check("no-such-template" in str(e), f"an unknown template fails with a helpful message: {e}")
try:
    Sandbox.create(api_key="dwk_not_a_key")
    check(False, "a bad key fails")
except AuthenticationException as e:
    check("401" in str(e), f"a bad key raises AuthenticationException: {e}")
try:
    Sandbox.connect("nosuchsandbox000000")
    check(False, "connect to an unknown id fails")
except NotFoundException:
    log("ok: connect to an unknown id raises NotFound")
log("PASS")
