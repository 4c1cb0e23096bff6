"""Helpers of the E2B SDK scenarios (run by crates/cli/tests/e2b.rs).

Every scenario is a plain script: it exits 0 when every check passed and
kills the sandboxes it made, even when a check fails.
"""
import contextlib
import os
import sys
import time

from e2b import Sandbox


def log(*a):
    print(*a, flush=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    log("ok:", what)


def wait_until(what, fn, secs=20.0):
    t0 = time.time()
    while time.time() - t0 < secs:
        if fn():
            log("ok:", what)
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for: {what}")


@contextlib.contextmanager
def sandbox(**kw):
    """A sandbox that is killed when the block ends, whatever happened."""
    kw.setdefault("timeout", 300)
    s = Sandbox.create(**kw)
    try:
        yield s
    finally:
        with contextlib.suppress(Exception):
            Sandbox.kill(s.sandbox_id)


def other_key():
    k = os.environ.get("E2B_API_KEY_OTHER")
    if not k:
        sys.exit("E2B_API_KEY_OTHER is not set: the test harness passes a second tenant's key")
    return k
