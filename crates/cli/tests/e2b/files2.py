"""files2: the E2B file API details E2B's own suite checks: entry info
(mode without type bits, permissions, symlinks), list depth, file metadata
(X-Metadata-* on write, in get_info/list/rename, cleared on overwrite, set
as user.e2b.* xattrs inside the sandbox, refused when out of bounds), gzip
both ways, an expired signed URL, removing/renaming what does not exist,
watch events (entry info, recursive, a directory made later, the three
events of a new file, a secured envd), and an upload refused early (a
paused sandbox, too much metadata) reaching the SDK as that error."""
import gzip
import json
import os
import urllib.error
import urllib.parse
import urllib.request

from _common import check, log, sandbox, wait_until
from e2b import FileType, FilesystemEventType
from e2b.exceptions import (
    FileNotFoundException,
    InvalidArgumentException,
    SandboxException,
)

D = f"/tmp/files2-{os.getpid()}"
BIG = b"x" * (48 << 20)


def events_until(w, pred, secs=15):
    got = []

    def poll():
        got.extend(w.get_new_events())
        return pred(got)

    wait_until("watch events arrive", poll, secs)
    return got


with sandbox() as s:
    # Entry info: modes as E2B encodes them, symlinks typed by their target.
    s.files.make_dir(f"{D}/d")
    di = s.files.get_info(f"{D}/d")
    check(di.mode == 0o755 and di.permissions == "drwxr-xr-x", f"a 0755 dir is mode 493: {di}")
    fi = s.files.write(f"{D}/d/a.txt", "hello")
    fi = s.files.get_info(f"{D}/d/a.txt")
    check(fi.mode == 0o644 and fi.permissions == "-rw-r--r--", f"a new file is 0644: {fi}")
    check(fi.owner and fi.group, f"owner and group are names: {fi.owner}:{fi.group}")
    s.commands.run("ln -s a.txt link", cwd=f"{D}/d")
    li = s.files.get_info(f"{D}/d/link")
    # SDKs since 2.6x show the link itself as SYMLINK (from isSymlink);
    # older ones show envd's type, the target's (FILE): both from one answer.
    check(li.type in (FileType.SYMLINK, FileType.FILE), f"a symlink: {li}")
    check(li.symlink_target == f"{D}/d/a.txt", f"its target is absolute: {li.symlink_target}")
    raw = s.files._envd_api.post("/filesystem.Filesystem/Stat", json={"path": f"{D}/d/link"},
                                 headers={"Content-Type": "application/json"}).json()["entry"]
    check(raw["type"] == "FILE_TYPE_FILE" and raw["isSymlink"] is True,
          f"on the wire: the target's type and isSymlink: {raw}")

    # list depth.
    s.files.make_dir(f"{D}/d/sub/deeper")
    one = sorted(e.name for e in s.files.list(f"{D}/d"))
    two = sorted(e.path for e in s.files.list(f"{D}/d", depth=2))
    three = [e.path for e in s.files.list(f"{D}/d", depth=3)]
    check(one == ["a.txt", "link", "sub"], f"depth 1: {one}")
    check(f"{D}/d/sub/deeper" in two and len(two) == 4, f"depth 2: {two}")
    check(len(three) == 4, f"depth 3 (nothing deeper): {three}")

    # Metadata.
    meta = {"author": "mish", "purpose": "upload"}
    w = s.files.write(f"{D}/m.txt", "m", metadata=meta)
    check(w.metadata == meta, f"write returns the metadata: {w.metadata}")
    check(s.files.get_info(f"{D}/m.txt").metadata == meta, "get_info surfaces it")
    w = s.files.write(f"{D}/o.txt", "o", metadata=meta, use_octet_stream=True)
    check(w.metadata == meta, "an octet-stream write carries it too")
    infos = s.files.write_files(
        [{"path": f"{D}/w1.txt", "data": "1"}, {"path": f"{D}/w2.txt", "data": "2"}],
        metadata={"source": "files2"},
    )
    check(all(s.files.get_info(i.path).metadata == {"source": "files2"} for i in infos),
          "write_files applies it to every file")
    listed = {e.name: e.metadata for e in s.files.list(D)}
    check(listed["m.txt"] == meta and listed["d"] is None, f"list surfaces it: {listed}")
    r = s.files.rename(f"{D}/m.txt", f"{D}/m2.txt")
    check(r.metadata == meta, "rename keeps it")
    s.files.write(f"{D}/m2.txt", "again")
    check(s.files.get_info(f"{D}/m2.txt").metadata is None, "an overwrite without metadata clears it")
    s.files.write(f"{D}/x.txt", "x")
    s.commands.run(f"python3 -c \"import os; os.setxattr('{D}/x.txt', 'user.e2b.Author', b'mish'); os.setxattr('{D}/x.txt', 'user.other', b'no')\"")
    check(s.files.get_info(f"{D}/x.txt").metadata == {"Author": "mish"},
          "user.e2b.* attributes set in the sandbox are metadata (others are not)")
    # A sandbox's own attributes are read within bounds: at most 64, none
    # over 4 KiB (the big one may not fit the file system at all).
    s.files.write(f"{D}/many-attrs.txt", "x")
    s.commands.run(
        "python3 -c \"import os\n"
        f"p='{D}/many-attrs.txt'\n"
        "for i in range(80): os.setxattr(p, 'user.e2b.k%02d' % i, b'v')\n"
        "try: os.setxattr(p, 'user.e2b.big', b'b' * 5000)\n"
        "except OSError: pass\n\"")
    got = s.files.get_info(f"{D}/many-attrs.txt").metadata
    check(len(got) == 64 and "big" not in got, f"a sandbox's 80 attributes: {len(got)} reported")
    try:
        s.files.write(f"{D}/bad.txt", "x", metadata={"bad key": "v"})
        check(False, "a bad key is refused")
    except InvalidArgumentException:
        log("ok: a bad metadata key is refused")
    too_many = {f"k{i}": "v" for i in range(65)}
    try:
        s.files.write(f"{D}/many.txt", BIG, metadata=too_many)
        check(False, "65 metadata keys are refused")
    except InvalidArgumentException as e:
        check("at most 64" in str(e), f"65 keys on a 48 MiB upload: the server's refusal reaches the SDK: {e}")
    check(not s.files.exists(f"{D}/many.txt"), "the refused upload made no file")

    # On the root file system: metadata, or (gVisor's gofer root has no
    # user extended attributes) a clear refusal and no file left.
    try:
        r = s.files.write("/home/user/files2-meta.txt", "r", metadata={"a": "b"})
        check(r.metadata == {"a": "b"}, "metadata on the root file system")
    except InvalidArgumentException as e:
        check("does not support user extended attributes" in str(e), f"no xattrs there: a clear error: {e}")
        check(not s.files.exists("/home/user/files2-meta.txt"), "and no file left behind")

    # gzip both ways.
    s.files.write(f"{D}/g.txt", "zipped " * 1000, gzip=True)
    check(s.files.read(f"{D}/g.txt", gzip=True) == "zipped " * 1000, "gzip upload and download")
    check(s.files.read(f"{D}/g.txt") == "zipped " * 1000, "gzip upload, plain download")
    # A plain client, so that nothing decodes it on the way.
    api = s.files._envd_api
    hdrs = {k: v for k, v in api.headers.items() if k.lower() in ("x-access-token", "e2b-sandbox-id")}
    hdrs.setdefault("E2b-Sandbox-Id", s.sandbox_id)
    req = urllib.request.Request(
        f"{str(api.base_url).rstrip('/')}/files?path={urllib.parse.quote(D + '/g.txt')}",
        headers={**hdrs, "Accept-Encoding": "gzip"})
    with urllib.request.urlopen(req) as resp:
        enc, body = resp.headers.get("Content-Encoding"), resp.read()
    check(enc == "gzip" and gzip.decompress(body) == b"zipped " * 1000 and len(body) < 1000,
          f"Accept-Encoding: gzip gets a gzip body ({enc}, {len(body)} bytes)")

    # Removing and renaming what does not exist.
    s.files.remove(f"{D}/nope")
    log("ok: removing a missing path is no error")
    try:
        s.files.rename(f"{D}/nope", f"{D}/nope2")
        check(False, "renaming a missing file raises")
    except FileNotFoundException:
        log("ok: renaming a missing file is FileNotFound")

    # Watch: a new file gives create, chmod, write; entries carry info.
    s.files.make_dir(f"{D}/w")
    h = s.files.watch_dir(f"{D}/w", include_entry=True)
    s.files.write(f"{D}/w/n.txt", "new")
    evs = events_until(h, lambda g: any(e.type == FilesystemEventType.WRITE for e in g))
    kinds = [e.type.name for e in evs]
    check(kinds == ["CREATE", "CHMOD", "WRITE"], f"a new file: create, chmod, write: {kinds}")
    ent = evs[-1].entry
    check(ent is not None and ent.path == f"{D}/w/n.txt" and ent.type == FileType.FILE,
          f"the event carries the entry: {ent}")
    h.stop()
    # Recursive, with a directory made after the watch started.
    h = s.files.watch_dir(f"{D}/w", recursive=True)
    s.files.make_dir(f"{D}/w/later")
    s.files.write(f"{D}/w/later/f.txt", "f")
    evs = events_until(h, lambda g: any(e.name == "later/f.txt" and e.type == FilesystemEventType.WRITE for e in g))
    check(any(e.name == "later" and e.type == FilesystemEventType.CREATE for e in evs),
          f"recursive: the new directory and the file in it: {[(e.name, e.type.name) for e in evs]}")
    h.stop()

    # Paused: an upload refused before its body is read reaches the SDK as that error.
    s.pause()
    try:
        s.files.write(f"{D}/paused.bin", BIG)
        check(False, "an upload to a paused sandbox fails")
    except SandboxException as e:
        check("paused" in str(e) or "not running" in str(e) or "was not found" in str(e),
              f"a 48 MiB upload to a paused sandbox gets the refusal, not a broken pipe: {type(e).__name__}: {e}")

with sandbox(secure=True) as s:
    s.files.make_dir(D)
    h = s.files.watch_dir(D)
    s.files.write(f"{D}/s.txt", "secured")
    evs = events_until(h, lambda g: any(e.name == "s.txt" for e in g))
    log("ok: watch through a secured envd")
    h.stop()
    url = s.download_url(f"{D}/s.txt", use_signature_expiration=-120)
    try:
        urllib.request.urlopen(url)
        check(False, "an expired signed URL is refused")
    except urllib.error.HTTPError as e:
        body = json.loads(e.read().decode())
        check(e.code == 401 and body == {"code": 401, "message": "signature is already expired"},
              f"an expired signed URL: E2B's answer: {e.code} {body}")
log("PASS")
