"""PTY: create, input, resize, kill."""
import time

from _common import check, log, sandbox, wait_until
from e2b import PtySize

with sandbox() as s:
    out = bytearray()
    h = s.pty.create(PtySize(rows=24, cols=80))
    import threading

    threading.Thread(target=lambda: h.wait(on_pty=lambda d: out.extend(d)), daemon=True).start()
    s.pty.send_stdin(h.pid, b"stty size\n")
    wait_until("the pty reports 24 80", lambda: b"24 80" in out, 15)
    s.pty.resize(h.pid, PtySize(rows=30, cols=100))
    s.pty.send_stdin(h.pid, b"stty size; echo mark$((6*7))\n")
    wait_until("the pty was resized to 30 100", lambda: b"30 100" in out, 15)
    wait_until("input runs in the shell", lambda: b"mark42" in out, 15)
    check(s.pty.kill(h.pid) is True, "pty kill")
log("PASS")
