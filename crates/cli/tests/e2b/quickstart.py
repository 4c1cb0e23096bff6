"""The issue's one-liner: create, run, write, pause, connect, read, kill."""
from _common import check, log
from e2b import Sandbox

s = Sandbox.create(timeout=300, metadata={"who": "me"})
try:
    out = s.commands.run("echo hi && python3 --version").stdout
    log(out)
    check(out.startswith("hi\n") and "Python 3" in out, "commands.run prints hi and the python version")
    s.files.write("/home/user/a.txt", "persist me")
    check(s.pause() is True, "pause")
    s2 = Sandbox.connect(s.sandbox_id)
    check(s2.files.read("/home/user/a.txt") == "persist me", "the file survives pause and connect")
    check(s2.kill() is True, "kill")
finally:
    Sandbox.kill(s.sandbox_id)
