"""pause/connect three times: every file written before each pause is still
there after each connect, and so is a process (memory is kept)."""
from _common import check, log, sandbox
from e2b import Sandbox, SandboxState

with sandbox() as s:
    sid = s.sandbox_id
    h = s.commands.run("sleep 3600", background=True)
    for cycle in range(1, 4):
        s.files.write(f"/home/user/cycle{cycle}.txt", f"data {cycle}")
        s.commands.run(f"dd if=/dev/urandom of=/home/user/blob{cycle} bs=64k count=4 2>/dev/null; sha256sum /home/user/blob{cycle} > /home/user/blob{cycle}.sum")
        check(s.pause() is True, f"pause #{cycle}")
        check(Sandbox.get_info(sid).state == SandboxState.PAUSED, f"paused #{cycle}")
        s = Sandbox.connect(sid, timeout=300)
        check(Sandbox.get_info(sid).state == SandboxState.RUNNING, f"running after connect #{cycle}")
        for c in range(1, cycle + 1):
            check(s.files.read(f"/home/user/cycle{c}.txt") == f"data {c}", f"cycle{c}.txt after resume #{cycle}")
            s.commands.run(f"sha256sum -c /home/user/blob{c}.sum")
        check(h.pid in [p.pid for p in s.commands.list()], f"the background process lives on after resume #{cycle}")
log("PASS")
