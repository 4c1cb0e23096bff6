"""files: write, read, list, exists, get_info, rename, remove, make_dir,
watch_dir."""
import time

from _common import check, log, sandbox, wait_until
from e2b import FileType
from e2b.exceptions import NotFoundException

with sandbox() as s:
    info = s.files.write("/home/user/dir/a.txt", "hello")
    check(info.path == "/home/user/dir/a.txt", f"write returns the entry {info}")
    check(s.files.read("/home/user/dir/a.txt") == "hello", "read text")
    s.files.write("/home/user/dir/b.bin", b"\x00\x01\xff")
    check(bytes(s.files.read("/home/user/dir/b.bin", format="bytes")) == b"\x00\x01\xff", "read bytes")
    names = sorted(e.name for e in s.files.list("/home/user/dir"))
    check(names == ["a.txt", "b.bin"], f"list: {names}")
    check(s.files.exists("/home/user/dir/a.txt") and not s.files.exists("/home/user/dir/nope"), "exists")
    i = s.files.get_info("/home/user/dir/a.txt")
    check(i.type == FileType.FILE and i.size == 5, f"get_info: {i}")
    check(s.files.make_dir("/home/user/dir/sub") is True, "make_dir")
    check(s.files.make_dir("/home/user/dir/sub") is False, "make_dir of an existing dir is False")
    s.files.rename("/home/user/dir/a.txt", "/home/user/dir/sub/c.txt")
    check(s.files.read("/home/user/dir/sub/c.txt") == "hello" and not s.files.exists("/home/user/dir/a.txt"), "rename")
    deep = [e.path for e in s.files.list("/home/user/dir", depth=2)]
    check("/home/user/dir/sub/c.txt" in deep, f"list depth 2: {deep}")
    s.files.remove("/home/user/dir/sub/c.txt")
    check(not s.files.exists("/home/user/dir/sub/c.txt"), "remove")
    try:
        s.files.read("/home/user/dir/sub/c.txt")
        check(False, "reading a removed file raises")
    except NotFoundException:
        log("ok: reading a removed file raises NotFound")
    # Files written by commands are visible to files.read and back.
    s.commands.run("echo from-shell > /home/user/dir/sh.txt")
    check(s.files.read("/home/user/dir/sh.txt") == "from-shell\n", "a command's file is readable")

    w = s.files.watch_dir("/home/user/dir")
    s.files.write("/home/user/dir/new.txt", "x")
    s.commands.run("rm /home/user/dir/b.bin")
    events = []

    def got():
        events.extend(w.get_new_events())
        names = {(e.name, e.type.name) for e in events}
        return ("new.txt", "CREATE") in names and ("b.bin", "REMOVE") in names

    wait_until("watch_dir reports the create and the remove", got, 15)
    w.stop()
log("PASS")
