"""The Template SDK against dwell: build a template (base image, run_cmd,
copy of local files, set_envs, set_workdir, set_start_cmd with a ready
command), poll its build status and logs, check Template.exists and tags,
start a sandbox from it (files, env, workdir, the start command serving),
rebuild from the cache, and see a failing run_cmd end the build with an
error and its log. Another tenant sees none of it.
"""
import os
import shutil
import tempfile
import time

from e2b import Sandbox, Template
from e2b.exceptions import BuildException

from _common import check, log, other_key, sandbox

ctx = tempfile.mkdtemp(prefix="e2b-tpl-")
try:
    os.makedirs(os.path.join(ctx, "app", "sub"))
    with open(os.path.join(ctx, "app", "hello.txt"), "w") as f:
        f.write("hello from copy\n")
    with open(os.path.join(ctx, "app", "sub", "deep.txt"), "w") as f:
        f.write("deep\n")
    with open(os.path.join(ctx, "tool.sh"), "w") as f:
        f.write("#!/bin/sh\necho tool\n")

    name = f"tpl-{os.getpid()}"
    ready = (
        "python3 -c \"import urllib.request; "
        "urllib.request.urlopen('http://127.0.0.1:8000/hello.txt', timeout=2)\""
    )
    tpl = (
        Template(file_context_path=ctx)
        .from_image("host")
        .run_cmd("mkdir -p /srv/app && echo built > /srv/built.txt")
        .copy("app", "/srv/app/")
        .copy("tool.sh", "/opt/tool.sh", mode=0o755)
        .set_envs({"GREETING": "hi there", "TRICKY": '$HOME "q"'})
        .set_workdir("/srv/app")
        .set_start_cmd(
            'pwd > /tmp/start-cwd; echo "$GREETING" > /tmp/start-env; '
            "exec python3 -m http.server 8000",
            ready,
        )
    )

    check(not Template.exists(name), "a template that was never built does not exist")
    logs = []
    t0 = time.time()
    info = Template.build(tpl, name, on_build_logs=logs.append)
    first = time.time() - t0
    log(f"first build: {first:.1f}s, {len(logs)} log entries")
    messages = [e.message for e in logs]
    check(info.template_id and info.build_id, "the build has a template id and a build id")
    check(any("RUN" in m for m in messages), "the build log shows the RUN step")
    check(Template.exists(name), "Template.exists finds the built template")

    with sandbox(template=name) as s:
        check(s.files.read("/srv/app/hello.txt") == "hello from copy\n", "copied file is there")
        check(s.files.read("/srv/app/sub/deep.txt") == "deep\n", "copied directory is there")
        check(s.files.read("/srv/built.txt") == "built\n", "run_cmd's output is in the image")
        r = s.commands.run("ls -l /opt/tool.sh && /opt/tool.sh", user="root")
        check(r.stdout.startswith("-rwxr-xr-x") and r.stdout.endswith("tool\n"), "copy mode 0755 applies")
        r = s.commands.run('printf "%s|%s" "$GREETING" "$TRICKY"', user="root")
        check(r.stdout == 'hi there|$HOME "q"', f"set_envs reach commands: {r.stdout!r}")
        check(s.files.read("/tmp/start-cwd").strip() == "/srv/app", "the start command runs in the workdir")

        check(s.files.read("/tmp/start-env") == "hi there\n", "the start command has the env")
        r = s.commands.run(
            "python3 -c \"import urllib.request; "
            "print(urllib.request.urlopen('http://127.0.0.1:8000/hello.txt').read().decode(), end='')\"",
            user="root",
        )
        check(r.stdout == "hello from copy\n", "the start command serves when create returns")

    # A rebuild with nothing changed comes from the cache.
    logs2 = []
    t0 = time.time()
    Template.build(tpl, name, on_build_logs=logs2.append)
    second = time.time() - t0
    log(f"rebuild: {second:.1f}s")
    check(any("CACHED" in e.message for e in logs2), "the rebuild reports cached steps")
    check(second < max(first, 4.0), f"the rebuild ({second:.1f}s) is faster than the first build ({first:.1f}s)")

    # skip_cache builds every step again.
    logs3 = []
    Template.build(tpl, name, skip_cache=True, on_build_logs=logs3.append)
    check(not any("CACHED" in e.message for e in logs3), "skip_cache uses no cached step")

    # In the background, with a tag; the status is polled with log offsets.
    bg = Template.build_in_background(tpl, f"{name}:v2")
    offset, seen, status = 0, [], None
    deadline = time.time() + 120
    while time.time() < deadline:
        st = Template.get_build_status(bg, logs_offset=offset)
        offset += len(st.log_entries)
        seen += st.log_entries
        status = st.status.value
        if status in ("ready", "error"):
            break
        time.sleep(0.2)
    check(status == "ready", f"the background build is ready ({status})")
    check(len(seen) == offset and offset > 0, "log offsets page through every entry once")
    again = Template.get_build_status(bg, logs_offset=offset)
    check(again.log_entries == [], "nothing past the last offset")
    tags = {t.tag for t in Template.get_tags(name)}
    check({"default", "v2"} <= tags, f"tags default and v2 ({tags})")
    with sandbox(template=f"{name}:v2") as s:
        check(s.files.read("/srv/built.txt") == "built\n", "a sandbox starts from name:tag")

    # A template on top of another one. It has a ready command but no
    # start command: the ready command runs until it succeeds before the
    # create answers.
    child = (
        Template()
        .from_template(name)
        .run_cmd("cat /srv/built.txt > /srv/child.txt")
        .set_ready_cmd("touch /tmp/ready-ran")
    )
    Template.build(child, f"{name}-child")
    with sandbox(template=f"{name}-child") as s:
        check(s.files.read("/srv/child.txt") == "built\n", "from_template starts from the other template")
        check(s.files.exists("/tmp/ready-ran"), "a ready command without a start command ran")
        r = s.commands.run("cat /tmp/start-env 2>/dev/null || echo none", user="root")
        check(r.stdout == "none\n", "the child runs no start command of its own")

    # A failing run_cmd ends the build with an error and its log.
    bad = (
        Template(file_context_path=ctx)
        .from_image("host")
        .run_cmd("echo about-to-fail; exit 3")
    )
    bad_logs = []
    try:
        Template.build(bad, f"{name}-bad", on_build_logs=bad_logs.append)
        raise AssertionError("a failing run_cmd built")
    except BuildException as e:
        log("build error:", e)
        check("3" in str(e), "the error names the exit code")
    check(any("about-to-fail" in e.message for e in bad_logs), "the failing step's output is in the log")
    check(any(e.level == "error" for e in bad_logs), "the failure is logged at level error")

    # Another tenant sees none of it.
    other = other_key()
    check(not Template.exists(name, api_key=other), "another tenant's Template.exists is False")
    try:
        Sandbox.create(template=name, api_key=other, timeout=60)
        raise AssertionError("another tenant started a sandbox from the template")
    except AssertionError:
        raise
    except Exception as e:
        check("404" in str(e), f"another tenant cannot use the template ({e})")
finally:
    shutil.rmtree(ctx, ignore_errors=True)
log("templates: all checks passed")
