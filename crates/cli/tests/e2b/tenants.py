"""Two API keys (two tenants) never see each other's sandboxes."""
from _common import check, log, other_key, sandbox
from e2b import Sandbox, SandboxState
from e2b.exceptions import NotFoundException

other = other_key()
with sandbox(metadata={"owner": "a"}) as s:
    sid = s.sandbox_id
    check(sid in [x.sandbox_id for x in Sandbox.list().next_items()], "the owner lists it")
    check(sid not in [x.sandbox_id for x in Sandbox.list(api_key=other).next_items()], "the other tenant does not list it")
    for what, call in [
        ("get_info", lambda: Sandbox.get_info(sid, api_key=other)),
        ("connect", lambda: Sandbox.connect(sid, api_key=other)),
        ("pause", lambda: Sandbox.pause(sid, api_key=other)),
        ("set_timeout", lambda: Sandbox.set_timeout(sid, 10, api_key=other)),
        ("get_metrics", lambda: Sandbox.get_metrics(sid, api_key=other)),
    ]:
        try:
            call()
            check(False, f"{what} by the other tenant fails")
        except NotFoundException:
            log(f"ok: {what} by the other tenant is NotFound")
    check(Sandbox.kill(sid, api_key=other) is False, "the other tenant cannot kill it")
    check(Sandbox.get_info(sid).state == SandboxState.RUNNING, "it still runs")
    check(s.commands.run("echo still here").stdout == "still here\n", "and answers")
log("PASS")
