"""The default account (issue 15): the `base` template runs requests that
name no user as `user` (uid 1000, home /home/user) with passwordless sudo;
relative paths, `~` and the default working directory are its home, and
what it writes is its own. Naming root still works. `base` exists as a
template, and a template built from it copies a wildcard source into a
directory, with steps running as user in /home/user.
"""
import os
import shutil
import tempfile

from e2b import Template
from e2b.exceptions import BuildException

from _common import check, log, sandbox

with sandbox() as s:
    r = s.commands.run("id -un; id -u; id -gn; pwd; echo $HOME")
    check(r.stdout == "user\n1000\nuser\n/home/user\n/home/user\n", f"commands run as user in its home: {r.stdout!r}")
    check(s.commands.run("sudo -n id -u").stdout.strip() == "0", "passwordless sudo gives root")
    check(s.commands.run("sudo -n true").exit_code == 0, "sudo -n true")
    check(s.commands.run("python --version").exit_code == 0, "python is there (python-is-python3)")
    check(s.commands.run("whoami", user="root").stdout == "root\n", "user=root still runs as root")
    for call in (
        lambda: s.commands.run("whoami", user="root123"),
        lambda: s.files.write("/tmp/x.txt", "x", user="root123"),
    ):
        try:
            call()
            raise AssertionError("a request as a missing user ran")
        except Exception as e:  # the SDK's AuthenticationException
            check("invalid username: 'root123'" in str(e), f"a missing user is refused, never root: {e}")
    check(not s.files.exists("/tmp/x.txt"), "nothing was written for the missing user")

    info = s.files.write("note.txt", "mine")
    check(info.path == "/home/user/note.txt", f"a relative path is in user's home: {info.path}")
    e = s.files.get_info("/home/user/note.txt")
    check((e.owner, e.group) == ("user", "user"), f"a file written without a user is user's: {e.owner}:{e.group}")
    check(s.files.read("~/note.txt") == "mine", "~ is user's home")
    check(s.commands.run("stat -c %U:%G note.txt").stdout == "user:user\n", "owned by user on disk")
    s.files.make_dir("made")
    check(s.files.get_info("made").owner == "user", "a directory made without a user is user's")
    home = s.files.get_info("/home/user")
    check(home.owner == "user", "/home/user is owned by user")
    sudoers = s.commands.run("sudo -n stat -c %a /etc/sudoers.d/user").stdout.strip()
    check(sudoers == "440", f"the sudoers drop-in has mode 0440: {sudoers}")

    s.files.write("/tmp/by-root.txt", "r", user="root")
    check(s.files.get_info("/tmp/by-root.txt").owner == "root", "user=root writes as root")

check(Template.exists("base"), "the base template exists")

ctx = tempfile.mkdtemp(prefix="e2b-account-")
try:
    os.makedirs(os.path.join(ctx, "folder"))
    for n in ("a.txt", "b.txt"):
        with open(os.path.join(ctx, "folder", n), "w") as f:
            f.write(n)
    name = f"account-{os.getpid()}"
    tpl = (
        Template(file_context_path=ctx)
        .from_template("base")
        .copy("folder/*", "folder")
        .run_cmd("cat folder/a.txt folder/b.txt > joined.txt; whoami > who.txt; pwd > where.txt")
        .run_cmd('test "$(whoami)" = "root"', user="root")
    )
    Template.build(tpl, name)
    with sandbox(template=name) as s:
        check(s.files.read("/home/user/joined.txt") == "a.txtb.txt", "a wildcard copy lands in the directory")
        check(s.files.read("/home/user/who.txt") == "user\n", "build steps run as user")
        check(s.files.read("/home/user/where.txt") == "/home/user\n", "build steps run in /home/user")
        check(s.commands.run("id -un").stdout == "user\n", "its sandboxes default to user")

    bad = Template().from_base_image().run_cmd("whoami", user="root123")
    try:
        Template.build(bad, f"account-bad-{os.getpid()}")
        raise AssertionError("a run_cmd as a missing user built")
    except BuildException as e:
        want = "failed to run command 'whoami': command failed: unauthenticated: invalid username: 'root123'"
        check(want in str(e), f"a missing run_cmd user fails with E2B's wording: {e}")
finally:
    shutil.rmtree(ctx, ignore_errors=True)
log("account: all checks passed")
