"""A template from an image in a registry (REGISTRY_IMAGE, pushed by the
test to a local registry): the build pulls it, runs its steps on it, and a
sandbox starts from the result with its start command running.
"""
import os

from e2b import Template

from _common import check, log, sandbox

image = os.environ["REGISTRY_IMAGE"]
name = f"reg-{os.getpid()}"
tpl = (
    Template()
    .from_image(image)
    # Steps run as the account `user` the build adds, as on E2B.
    .run_cmd("whoami > /tmp/step-user")
    .run_cmd("echo from-registry > /made.txt", user="root")
    .set_envs({"WHO": "registry"})
    .set_workdir("/work")
    .set_start_cmd("pwd > /tmp/cwd; echo $WHO > /tmp/who; exec sleep 600", "cat /tmp/who")
)
logs = []
Template.build(tpl, name, on_build_logs=logs.append)
check(any("Pulling" in e.message for e in logs), "the build pulled the base image")
with sandbox(template=name) as s:
    check(s.files.read("/made.txt") == "from-registry\n", "run_cmd ran on the pulled image")
    check(s.files.read("/tmp/step-user") == "user\n", "steps run as user, as E2B's builder runs them")
    check(s.files.get_info("/home/user").owner == "user", "the build added the account user with its home")
    check(s.files.read("/hello.txt") == "hello from the registry image\n", "the image's own files are there")
    check(s.files.read("/tmp/who") == "registry\n", "the start command ran with the env")
    check(s.files.read("/tmp/cwd") == "/work\n", "in the workdir")
log("templates_registry: all checks passed")
