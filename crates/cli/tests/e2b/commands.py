"""commands: foreground, envs and cwd, non-zero exit, streaming callbacks,
background with wait, stdin, kill, list."""
import time

from _common import check, log, sandbox, wait_until
from e2b.sandbox.commands.command_handle import CommandExitException

with sandbox(envs={"FROM_CREATE": "yes"}) as s:
    r = s.commands.run("echo out; echo err >&2; echo $FROM_CREATE $X; pwd", envs={"X": "1"}, cwd="/tmp")
    check(r.exit_code == 0, "exit 0")
    check(r.stdout == "out\nyes 1\n/tmp\n", f"stdout, env and cwd: {r.stdout!r}")
    check(r.stderr == "err\n", f"stderr: {r.stderr!r}")

    try:
        s.commands.run("echo bad >&2; exit 3")
        check(False, "a non-zero exit raises")
    except CommandExitException as e:
        check(e.exit_code == 3 and "bad" in e.stderr, f"CommandExitException with code 3: {e}")

    # Streaming: callbacks fire while the command runs, not only at its end.
    seen = []
    t0 = time.time()
    r = s.commands.run(
        "for i in 1 2 3; do echo line$i; sleep 0.4; done",
        on_stdout=lambda line: seen.append((line, time.time() - t0)),
    )
    check([l.strip() for l, _ in seen] == ["line1", "line2", "line3"], f"on_stdout lines: {seen}")
    check(seen[0][1] < seen[-1][1] - 0.5, f"callbacks stream ({seen})")

    # Background, then wait.
    h = s.commands.run("sleep 0.5; echo done", background=True)
    check(h.pid > 0, f"background pid {h.pid}")
    check(h.wait().stdout == "done\n", "wait returns the output")

    # stdin.
    h = s.commands.run("head -n 2", background=True, stdin=True)
    s.commands.send_stdin(h.pid, "a\n")
    s.commands.send_stdin(h.pid, "b\n")
    check(h.wait().stdout == "a\nb\n", "stdin reaches the command")
    h = s.commands.run("cat", background=True, stdin=True)
    s.commands.send_stdin(h.pid, "to eof\n")
    s.commands.close_stdin(h.pid)
    check(h.wait().stdout == "to eof\n", "close_stdin ends cat")

    # list and kill.
    h = s.commands.run("sleep 600", background=True)
    wait_until("commands.list shows the sleep", lambda: h.pid in [p.pid for p in s.commands.list()], 10)
    check(s.commands.kill(h.pid) is True, "kill")
    try:
        h.wait()
        check(False, "a killed command does not exit 0")
    except CommandExitException as e:
        log("ok: killed command ends:", e.exit_code)
    check(s.commands.kill(h.pid) is False, "kill of a gone pid is False")
log("PASS")
