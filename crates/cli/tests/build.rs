//! End to end: `dwell build` (Dockerfile builds whose RUN steps run in
//! sandboxes), on the daemon's default isolation (`DWELL_TEST_ISOLATION`).
//! Builds start FROM host so they need no registry. Attacks from RUN steps
//! and from the context are checked to leave the host untouched.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A build context in a temp dir.
struct Ctx {
    dir: tempfile::TempDir,
}

impl Ctx {
    fn new(dockerfile: &str) -> Ctx {
        let dir = tempfile::Builder::new()
            .prefix("dwell-build-ctx-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        Ctx { dir }
    }
    fn file(&self, rel: &str, data: &str) -> &Ctx {
        let p = self.dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
        self
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The build's JSON events.
fn events(out: &std::process::Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad event {l:?}: {e}")))
        .collect()
}

fn build(d: &Daemon, ctx: &Ctx, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "--json", "--memory", "256M", "--disk", "512M"];
    args.extend_from_slice(extra);
    let p = ctx.path().to_string_lossy().into_owned();
    args.push(&p);
    d.run(&args)
}

/// The `done` event of a build that must succeed.
fn built(d: &Daemon, ctx: &Ctx, extra: &[&str]) -> serde_json::Value {
    let out = build(d, ctx, extra);
    let ev = events(&out);
    let last = ev.last().cloned().unwrap_or_default();
    assert!(
        out.status.success() && last["event"] == "done",
        "build failed: {:?}\n{}\nstderr: {}\nlog: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        tail(&d.log(), 30)
    );
    last
}

fn images(d: &Daemon) -> Vec<serde_json::Value> {
    images_of(d, "default")
}

/// The images `tenant` sees (built images are the building tenant's).
fn images_of(d: &Daemon, tenant: &str) -> Vec<serde_json::Value> {
    let mut c = d.cmd(&["image", "ls", "--json"]);
    c.env("DWELL_AS_TENANT", tenant);
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn image(d: &Daemon, name: &str) -> Option<serde_json::Value> {
    images(d).into_iter().find(|i| i["name"] == name)
}

/// Nothing of a build is left: no sandboxes, no intermediate images.
fn nothing_left(d: &Daemon) {
    assert_eq!(d.ok(&["ls", "-q"]).trim(), "", "build sandboxes left");
    let tmp: Vec<_> = images(d)
        .into_iter()
        .filter(|i| i["name"].as_str().unwrap_or("").starts_with("dwell-build-"))
        .collect();
    assert!(tmp.is_empty(), "intermediate images left: {tmp:?}");
}

#[test]
fn builds_run_copy_and_config_and_a_sandbox_sees_them() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new(
        "FROM host AS base\n\
         ARG GREETING=hello\n\
         ENV APP_HOME=/opt/app\n\
         WORKDIR $APP_HOME\n\
         COPY --chown=1000:1001 hello.txt ./\n\
         RUN echo \"$GREETING\" > greeting && mkdir -p sub odir && echo x > sub/gone && echo x > keep && echo old > odir/old\n\
         RUN [\"/bin/sh\", \"-c\", \"rm sub/gone && echo exec > /opt/app/exec && rm -rf odir && mkdir odir && echo new > odir/new\"]\n\
         LABEL org.example.team=\"build team\"\n\
         EXPOSE 8080 53/udp\n\
         USER nobody\n\
         STOPSIGNAL SIGINT\n\
         HEALTHCHECK --interval=5s --retries=2 CMD true\n\
         ENTRYPOINT [\"/bin/sh\", \"-c\"]\n\
         CMD [\"sleep infinity\"]\n",
    );
    ctx.file("hello.txt", "from the context\n");
    let done = built(
        &d,
        &ctx,
        &["-t", "mytool:1", "--build-arg", "GREETING=hi there"],
    );
    assert_eq!(done["steps"], 14);
    let img = image(&d, "mytool:1").expect("the image is stored");
    assert_eq!(img["id"], done["digest"]);
    assert!(img["env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "APP_HOME=/opt/app"));
    assert_eq!(img["workdir"], "/opt/app");
    assert_eq!(img["user"], "nobody");
    assert_eq!(img["labels"]["org.example.team"], "build team");
    assert_eq!(img["entrypoint"], serde_json::json!(["/bin/sh", "-c"]));
    assert_eq!(img["cmd"], serde_json::json!(["sleep infinity"]));
    let ports = img["exposed_ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p == "8080/tcp") && ports.iter().any(|p| p == "53/udp"));
    assert_eq!(img["stop_signal"], "SIGINT");
    nothing_left(&d);

    d.create("t1", &["--image", "mytool:1"]);
    assert_eq!(d.sh("t1", "cat /opt/app/greeting"), "hi there\n");
    assert_eq!(d.sh("t1", "cat /opt/app/exec"), "exec\n");
    assert_eq!(d.sh("t1", "cat /opt/app/hello.txt"), "from the context\n");
    assert_eq!(
        d.sh("t1", "stat -c %u:%g /opt/app/hello.txt"),
        "1000:1001\n"
    );
    // Deleted in a later step: a whiteout hides it.
    assert_eq!(
        d.sh("t1", "test -e /opt/app/sub/gone && echo there || echo gone"),
        "gone\n"
    );
    assert_eq!(d.sh("t1", "cat /opt/app/keep"), "x\n");
    // A dir deleted and made again hides what it held (an opaque dir).
    assert_eq!(d.sh("t1", "ls /opt/app/odir"), "new\n");
    assert_eq!(d.sh("t1", "echo $APP_HOME"), "/opt/app\n");
    d.ok(&["rm", "-f", "t1"]);
}

#[test]
fn multi_stage_copy_from_and_target() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new(
        "FROM host AS builder\n\
         RUN mkdir -p /opt/out && echo built > /opt/out/artifact && echo junk > /opt/out/junk\n\
         FROM host AS unused\n\
         RUN exit 9\n\
         FROM host\n\
         COPY --from=builder /opt/out/artifact /opt/bin/\n\
         CMD [\"cat\", \"/opt/bin/artifact\"]\n",
    );
    let done = built(&d, &ctx, &["-t", "multi:1"]);
    // RUN steps have no network by default: loopback only.
    let net = Ctx::new("FROM host\nRUN cat /proc/net/dev > /opt/netdev\n");
    built(&d, &net, &["-t", "nonet:1"]);
    d.create("n", &["--image", "nonet:1"]);
    let ifaces: Vec<String> = d
        .sh("n", "tail -n +3 /opt/netdev | cut -d: -f1 | tr -d ' '")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(ifaces, ["lo"], "a build without --net saw {ifaces:?}");
    d.ok(&["rm", "-f", "n"]);
    // --isolation picks the RUN steps' runtime.
    for iso in runtimes() {
        let done = built(
            &d,
            &net,
            &["-t", "nonet:2", "--no-cache", "--isolation", iso],
        );
        assert_eq!(done["cached"], 0, "{iso}");
    }
    // The unused stage is not built.
    assert_eq!(done["steps"], 5);
    d.create("m", &["--image", "multi:1"]);
    assert_eq!(d.sh("m", "cat /opt/bin/artifact"), "built\n");
    assert_eq!(
        d.sh("m", "test -e /opt/out && echo leaked || echo clean"),
        "clean\n"
    );
    d.ok(&["rm", "-f", "m"]);
    // --target builds up to a stage.
    let done = built(&d, &ctx, &["-t", "multi:builder", "--target", "builder"]);
    assert_eq!(done["steps"], 2);
    assert_eq!(done["cached"], 2, "the builder stage is cached");
    nothing_left(&d);
}

#[test]
fn rebuilds_hit_the_cache_and_a_changed_run_rebuilds_only_what_follows() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let df = |middle: &str| {
        format!(
            "FROM host\n\
             COPY a.txt /opt/a.txt\n\
             RUN echo one > /opt/one\n\
             RUN echo {middle} > /opt/two\n\
             RUN cat /opt/two > /opt/three\n\
             CMD [\"true\"]\n"
        )
    };
    let ctx = Ctx::new(&df("two"));
    ctx.file("a.txt", "a\n");
    let first = built(&d, &ctx, &["-t", "cached:1"]);
    assert_eq!(first["steps"], 6);
    assert_eq!(first["cached"], 0);
    let t0 = std::time::Instant::now();
    let again = built(&d, &ctx, &["-t", "cached:1"]);
    let took = t0.elapsed();
    assert_eq!(again["cached"], 6, "every step from the cache");
    assert_eq!(again["digest"], first["digest"]);
    eprintln!("cached rebuild took {took:?}");

    // One changed RUN: the steps before it are cached, it and the rest run.
    std::fs::write(ctx.path().join("Dockerfile"), df("TWO")).unwrap();
    let out = build(&d, &ctx, &["-t", "cached:2"]);
    let ev = events(&out);
    let cached: Vec<u64> = ev
        .iter()
        .filter(|e| e["event"] == "cached")
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(cached, vec![1, 2, 3], "{ev:?}");
    assert_eq!(ev.last().unwrap()["event"], "done");
    // A changed context file invalidates its COPY and what follows.
    ctx.file("a.txt", "b\n");
    let changed = built(&d, &ctx, &["-t", "cached:3"]);
    assert_eq!(changed["cached"], 1);
    d.create("c", &["--image", "cached:3"]);
    assert_eq!(d.sh("c", "cat /opt/a.txt /opt/three"), "b\nTWO\n");
    d.ok(&["rm", "-f", "c"]);
    // --no-cache runs everything.
    let fresh = built(&d, &ctx, &["-t", "cached:3", "--no-cache"]);
    assert_eq!(fresh["cached"], 0);
    nothing_left(&d);
}

#[test]
fn dockerignore_and_chown_and_add_of_a_tar() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new(
        "FROM host\n\
         COPY . /opt/ctx/\n\
         COPY --chown=nobody --chmod=640 keep.txt /opt/owned\n\
         ADD bundle.tar /opt/unpacked/\n",
    );
    ctx.file("keep.txt", "keep\n")
        .file("secret.env", "TOKEN=1\n")
        .file("logs/a.log", "log\n")
        .file("logs/important.log", "important\n")
        .file(".dockerignore", "*.env\nlogs\n!logs/important.log\n");
    {
        let f = std::fs::File::create(ctx.path().join("bundle.tar")).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "inner/file", &b"abc"[..]).unwrap();
        b.finish().unwrap();
    }
    built(&d, &ctx, &["-t", "ign:1"]);
    d.create("i", &["--image", "ign:1"]);
    assert_eq!(d.sh("i", "cat /opt/ctx/keep.txt"), "keep\n");
    assert_eq!(
        d.sh("i", "ls /opt/ctx/secret.env 2>/dev/null || echo absent"),
        "absent\n"
    );
    assert_eq!(
        d.sh("i", "ls /opt/ctx/logs/a.log 2>/dev/null || echo absent"),
        "absent\n"
    );
    assert_eq!(d.sh("i", "cat /opt/ctx/logs/important.log"), "important\n");
    assert_eq!(d.sh("i", "stat -c %U:%a /opt/owned"), "nobody:640\n");
    assert_eq!(d.sh("i", "cat /opt/unpacked/inner/file"), "abc");
    d.ok(&["rm", "-f", "i"]);
    // -f with a Dockerfile outside the context: it is not copied with it.
    let outside = d.dir.path().join("Outside.Dockerfile");
    std::fs::write(&outside, "FROM host\nCOPY . /opt/c2/\n").unwrap();
    built(&d, &ctx, &["-t", "ign:2", "-f", outside.to_str().unwrap()]);
    d.create("j", &["--image", "ign:2"]);
    assert_eq!(
        d.sh(
            "j",
            "cat /opt/c2/keep.txt; ls -a /opt/c2 | grep -c dwell-build || true"
        ),
        "keep\n0\n"
    );
    d.ok(&["rm", "-f", "j"]);
    nothing_left(&d);
}

#[test]
fn a_failing_run_reports_its_exit_code_and_leaves_nothing() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx =
        Ctx::new("FROM host\nRUN echo before\nRUN echo to-stderr >&2; exit 7\nRUN echo never\n");
    let out = build(&d, &ctx, &["-t", "broken:1"]);
    assert_eq!(out.status.code(), Some(7));
    let ev = events(&out);
    let last = ev.last().unwrap();
    assert_eq!(last["event"], "error");
    assert_eq!(last["code"], "build_failed");
    assert_eq!(last["step"], 3);
    assert_eq!(last["exit_code"], 7);
    assert!(ev
        .iter()
        .any(|e| e["event"] == "output" && e["stream"] == "stderr" && e["text"] == "to-stderr\n"));
    assert!(image(&d, "broken:1").is_none());
    nothing_left(&d);
    // Human output: the step lines and the error.
    let p = ctx.path().to_string_lossy().into_owned();
    let out = d.run(&["build", "-t", "broken:1", &p]);
    assert_eq!(out.status.code(), Some(7));
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(so.contains("Step 2/4 : RUN echo before"), "{so}");
    assert!(so.contains(" ---> cached"), "{so}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("exited with code 7"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A Dockerfile error names the line.
    let bad = Ctx::new("FROM host\nFROBNICATE x\n");
    let out = build(&d, &bad, &["-t", "bad:1"]);
    assert_eq!(out.status.code(), Some(1));
    let last = events(&out).pop().unwrap();
    assert!(
        last["message"].as_str().unwrap().contains("line 2"),
        "{last}"
    );
    nothing_left(&d);
}

/// Host-side path of an image's topmost layer dir.
fn top_layer(img: &serde_json::Value) -> PathBuf {
    PathBuf::from(img["layers"][0].as_str().unwrap())
}

#[test]
fn hostile_run_steps_do_not_reach_the_host() {
    if !can_run() {
        return;
    }
    hostile_run_steps(Daemon::start());
}

/// Sandbox root as host root (no user namespace): device nodes can be made
/// inside (where the runtime lets it), and still never reach the host.
#[test]
fn hostile_run_steps_without_user_namespaces() {
    if !can_run() {
        return;
    }
    hostile_run_steps(Daemon::start_with(&["--user-namespaces", "off"]));
}

fn hostile_run_steps(d: Daemon) {
    let marker = d.dir.path().join("host-marker");
    std::fs::write(&marker, "host secret\n").unwrap();
    let ctx = Ctx::new(&format!(
        "FROM host\n\
         RUN mkdir -p /opt/x && cd /opt/x \\\n\
          && ln -s /etc/shadow shadow-link \\\n\
          && ln -s {m} marker-link \\\n\
          && ln -s / rootlink \\\n\
          && mkfifo fifo \\\n\
          && (mknod null c 1 3 || true) \\\n\
          && (mknod sda b 8 0 || true) \\\n\
          && cp /bin/true suid && chmod 4755 suid \\\n\
          && ln /etc/passwd pw-hardlink\n",
        m = marker.display()
    ));
    let out = build(&d, &ctx, &["-t", "hostile:1"]);
    let ev = events(&out);
    assert_eq!(ev.last().unwrap()["event"], "done", "{ev:?}");
    // Where the sandbox could make device nodes, they were left out.
    for w in ev.iter().filter(|e| e["event"] == "warning") {
        eprintln!("warning: {}", w["message"]);
        assert!(w["message"].as_str().unwrap().contains("device"), "{w}");
    }
    let img = image(&d, "hostile:1").unwrap();
    let layer = top_layer(&img).join("opt/x");
    // Symlinks stay symlinks: their targets were never read.
    for (name, target) in [
        ("shadow-link", "/etc/shadow".to_string()),
        ("marker-link", marker.display().to_string()),
        ("rootlink", "/".to_string()),
    ] {
        let p = layer.join(name);
        assert!(
            p.symlink_metadata().unwrap().file_type().is_symlink(),
            "{name}"
        );
        assert_eq!(std::fs::read_link(&p).unwrap(), PathBuf::from(target));
    }
    use std::os::unix::fs::FileTypeExt;
    // gVisor keeps fifos inside its own kernel; where one reached the upper
    // dir it is a fifo in the layer (never opened while capturing).
    if let Ok(m) = layer.join("fifo").symlink_metadata() {
        assert!(m.file_type().is_fifo());
    }
    // Device nodes never become usable host-side.
    for dev in ["null", "sda"] {
        if let Ok(m) = layer.join(dev).symlink_metadata() {
            assert!(
                !(m.file_type().is_char_device() || m.file_type().is_block_device()),
                "{dev} is a device node in the layer"
            );
        }
    }
    // The hard link is the sandbox's own copy, not the host's file.
    let pw = std::fs::read_to_string(layer.join("pw-hardlink")).unwrap();
    assert_ne!(
        std::fs::metadata(layer.join("pw-hardlink")).unwrap().len(),
        0
    );
    assert!(!pw.contains("host secret"));
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "host secret\n");
    // The layers are not reachable by other host users.
    let data_mode = std::fs::metadata(&d.data).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        data_mode.permissions().mode() & 0o077,
        0,
        "data dir is private"
    );
    nothing_left(&d);

    // A huge sparse file is refused without being read; nothing is left.
    let big = Ctx::new("FROM host\nRUN truncate -s 10G /opt/big\n");
    let t0 = std::time::Instant::now();
    let out = build(&d, &big, &["-t", "big:1"]);
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    assert_ne!(out.status.code(), Some(0));
    let last = events(&out).pop().unwrap();
    assert_eq!(last["event"], "error");
    assert!(
        last["message"].as_str().unwrap().contains("/opt/big"),
        "{last}"
    );
    assert!(image(&d, "big:1").is_none());
    nothing_left(&d);

    // COPY --from through a symlink the RUN planted is refused.
    let esc = Ctx::new(
        "FROM host AS evil\nRUN ln -s / /opt/root\nFROM host\nCOPY --from=evil /opt/root/etc/hostname /x\n",
    );
    let out = build(&d, &esc, &["-t", "esc:1"]);
    let last = events(&out).pop().unwrap();
    assert_eq!(last["event"], "error", "{last}");
    assert!(
        last["message"].as_str().unwrap().contains("symlink"),
        "{last}"
    );
    nothing_left(&d);
}

/// A tar whose entries are written as given (names unchecked).
fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        let n = name.as_bytes();
        h.as_old_mut().name[..n.len()].copy_from_slice(n);
        if let Some(l) = link {
            let l = l.as_bytes();
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(*kind);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_build_contexts_are_refused_or_copied_as_links() {
    if !can_run() {
        return;
    }
    let port = 20000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "admin key and TCP listener", || {
        d.data.join("admin.key").exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let bearer = format!("Bearer {}", d.tenant_key("builder"));
    let marker = d.dir.path().join("host-marker");
    std::fs::write(&marker, "host secret\n").unwrap();
    let post = |tar: &[u8], extra: &str| {
        http::request(
            &addr,
            "POST",
            &format!("/v1/builds?t=ctx:1&memory=256M&disk=512M{extra}"),
            &[("Authorization", &bearer)],
            tar,
        )
    };
    let df = b"FROM host\nCOPY . /opt/c/\n" as &[u8];
    // Entries escaping the context are refused before anything runs.
    for evil in ["../escape", "/abs-escape", "a/../../escape"] {
        let t = raw_tar(&[
            ("Dockerfile", tar::EntryType::Regular, df, None),
            (evil, tar::EntryType::Regular, b"x", None),
        ]);
        let r = post(&t, "");
        assert_eq!(r.status, 400, "{evil}: {r}");
        assert!(r.text().contains("build context"), "{r}");
    }
    let found = std::process::Command::new("find")
        .args([d.data.to_str().unwrap(), "-name", "*escape*"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&found.stdout), "");
    // A Dockerfile that is a symlink is not followed.
    let t = raw_tar(&[(
        "Dockerfile",
        tar::EntryType::Symlink,
        b"",
        Some(marker.to_str().unwrap()),
    )]);
    let r = post(&t, "");
    assert_eq!(r.status, 400, "{r}");
    assert!(!r.text().contains("host secret"));
    // A path through a context symlink is refused; a symlink itself is
    // copied as a symlink, its target never read.
    let t = raw_tar(&[
        (
            "Dockerfile",
            tar::EntryType::Regular,
            b"FROM host\nCOPY etc/passwd /opt/p\n",
            None,
        ),
        ("etc", tar::EntryType::Symlink, b"", Some("/etc")),
    ]);
    let r = post(&t, "");
    assert_eq!(r.status, 200, "{r}");
    let text = r.text();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "error", "{text}");
    assert!(
        last["message"].as_str().unwrap().contains("symlink"),
        "{last}"
    );
    let t = raw_tar(&[
        ("Dockerfile", tar::EntryType::Regular, df, None),
        (
            "hostfile",
            tar::EntryType::Symlink,
            b"",
            Some(marker.to_str().unwrap()),
        ),
    ]);
    let r = post(&t, "");
    let text = r.text();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "done", "{text}");
    let img = images_of(&d, "builder")
        .into_iter()
        .find(|i| i["name"] == "ctx:1")
        .expect("the tenant sees its image");
    // Another tenant does not.
    assert!(image(&d, "ctx:1").is_none());
    let p = top_layer(&img).join("opt/c/hostfile");
    assert!(p.symlink_metadata().unwrap().file_type().is_symlink());
    // The staged contexts are gone.
    let staged: Vec<_> = std::fs::read_dir(d.data.join("images/tmp"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(staged.is_empty(), "{staged:?}");
    nothing_left(&d);
}

/// Import a busybox image (`tiny:1`, one layer) for builds that need an
/// OCI base; `false` (with a skip) without /bin/busybox.
fn import_busybox(d: &Daemon) -> bool {
    if !Path::new("/bin/busybox").exists() {
        skip("/bin/busybox (package busybox-static) is needed to build a test image");
        return false;
    }
    let dir = d.dir.path().join("img");
    let script = r#"
set -e
cd "$1"
mkdir -p l1/bin l1/etc l1/tmp
cp /bin/busybox l1/bin/busybox
for t in sh echo cat ls id rm mkdir stat test; do ln -s busybox l1/bin/$t; done
echo base > l1/etc/base-file
echo 'root:x:0:0:root:/root:/bin/sh' > l1/etc/passwd
echo 'root:x:0:' > l1/etc/group
mkdir -p out/a
tar -C l1 -cf out/a/layer.tar .
d1=$(sha256sum out/a/layer.tar | cut -d' ' -f1)
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"test base"}]}' $d1 > out/config.json
printf '[{"Config":"config.json","RepoTags":["tiny:1"],"Layers":["a/layer.tar"]}]' > out/manifest.json
tar -C out -cf image.tar manifest.json config.json a
"#;
    std::fs::create_dir_all(&dir).unwrap();
    let st = std::process::Command::new("sh")
        .args(["-c", script, "sh", dir.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    d.ok(&[
        "image",
        "import",
        "tiny:1",
        dir.join("image.tar").to_str().unwrap(),
    ]);
    true
}

#[test]
fn builds_on_an_imported_image_are_complete_oci_images() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    if !import_busybox(&d) {
        return;
    }
    let ctx = Ctx::new(
        "FROM tiny:1\n\
         RUN rm /etc/base-file && echo built > /etc/built\n\
         COPY app.txt /app/\n\
         COPY --from=tiny:1 /etc/base-file /app/from-image\n\
         CMD [\"cat\", \"/app/app.txt\"]\n",
    );
    ctx.file("app.txt", "app\n");
    let done = built(&d, &ctx, &["-t", "onbase:1"]);
    d.create("b", &["--image", "onbase:1"]);
    assert_eq!(d.sh("b", "cat /etc/built /app/app.txt"), "built\napp\n");
    // COPY --from an image (not a stage) reads the image as stored.
    assert_eq!(d.sh("b", "cat /app/from-image"), "base\n");
    assert_eq!(
        d.sh("b", "test -e /etc/base-file && echo there || echo gone"),
        "gone\n"
    );
    d.ok(&["rm", "-f", "b"]);
    // Exported, it holds the base's layer and its own, and the history.
    let out = d.dir.path().join("export");
    d.ok(&["image", "export", "onbase:1", "-o", out.to_str().unwrap()]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(out.join("blobs/sha256").join(hex)).unwrap(),
        )
        .unwrap()
    };
    let manifest = blob(index["manifests"][0]["digest"].as_str().unwrap());
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 4);
    let config = blob(manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(manifest["config"]["digest"], done["digest"], "the image id");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 4);
    assert_eq!(config["history"][0]["created_by"], "test base");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/app/app.txt"])
    );
    nothing_left(&d);
}

#[test]
fn a_build_cut_short_by_a_daemon_kill_leaves_nothing_after_restart() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    let ctx = Ctx::new("FROM host\nRUN echo a > /opt/a\nRUN sleep 120\n");
    let p = ctx.path().to_string_lossy().into_owned();
    let mut child = d
        .cmd(&[
            "build", "-t", "cut:1", "--memory", "256M", "--disk", "512M", &p,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The second RUN's sandbox is up (the first RUN's image is stored).
    wait_for(120, "the sleeping RUN step's sandbox", || {
        let ids = d.ok(&["ls", "-q"]);
        !ids.trim().is_empty()
            && images(&d)
                .iter()
                .any(|i| i["name"].as_str().unwrap_or("").starts_with("dwell-build-"))
    });
    d.kill9();
    let _ = child.kill();
    let _ = child.wait();
    d.restart();
    wait_for(60, "the interrupted build's leftovers removed", || {
        d.ok(&["ls", "-q"]).trim().is_empty()
            && !images(&d)
                .iter()
                .any(|i| i["name"].as_str().unwrap_or("").starts_with("dwell-build-"))
    });
    assert!(image(&d, "cut:1").is_none());
    // The cache still works for the step that finished.
    let ctx2 = Ctx::new("FROM host\nRUN echo a > /opt/a\n");
    let done = built(&d, &ctx2, &["-t", "cut:2"]);
    assert_eq!(done["cached"], 2);
}

#[test]
fn a_client_that_goes_away_cancels_its_build() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new("FROM host\nRUN sleep 300\n");
    let p = ctx.path().to_string_lossy().into_owned();
    let mut child = d
        .cmd(&[
            "build", "-t", "gone:1", "--memory", "256M", "--disk", "512M", &p,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(120, "the RUN step's sandbox", || {
        !d.ok(&["ls", "-q"]).trim().is_empty()
    });
    let _ = child.kill();
    let _ = child.wait();
    wait_for(60, "the cancelled build's sandbox removed", || {
        d.ok(&["ls", "-q"]).trim().is_empty()
    });
    assert!(image(&d, "gone:1").is_none());
    nothing_left(&d);
}

#[test]
fn two_builds_at_once_share_the_cache_without_harm() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new("FROM host\nCOPY f /opt/f\nRUN cat /opt/f > /opt/g\n");
    ctx.file("f", "same\n");
    let p = ctx.path().to_string_lossy().into_owned();
    let spawn = |tag: &str| {
        d.cmd(&[
            "build", "--json", "-t", tag, "--memory", "256M", "--disk", "512M", &p,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (a, b) = (spawn("twin:a"), spawn("twin:b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (ea, eb) = (events(&a), events(&b));
    let (la, lb) = (ea.last().unwrap(), eb.last().unwrap());
    assert_eq!(la["event"], "done", "{ea:?}");
    assert_eq!(lb["event"], "done", "{eb:?}");
    let again = built(&d, &ctx, &["-t", "twin:c"]);
    assert_eq!(again["cached"], 3);
    d.create("tw", &["--image", "twin:c"]);
    assert_eq!(d.sh("tw", "cat /opt/g"), "same\n");
    d.ok(&["rm", "-f", "tw"]);
    nothing_left(&d);
}

#[test]
fn builds_from_an_image_pulled_from_a_registry() {
    if !can_run() {
        return;
    }
    let Some(reg) = dwell_testkit::registry::Registry::start(None) else {
        return;
    };
    let d = Daemon::start();
    if !import_busybox(&d) {
        return;
    }
    // The base goes to the registry and leaves the daemon: the build pulls it.
    let lay = d.dir.path().join("layout");
    d.ok(&["image", "export", "tiny:1", "-o", lay.to_str().unwrap()]);
    reg.push_layout(&lay, "test/tiny:1");
    d.ok(&["image", "rm", "tiny:1"]);
    let base = format!("{}/test/tiny:1", reg.host());
    let ctx = Ctx::new(&format!(
        "FROM {base}\nRUN echo from-registry > /hi\nCMD [\"cat\", \"/hi\"]\n"
    ));
    let done = built(&d, &ctx, &["-t", "fromreg:1"]);
    assert_eq!(done["cached"], 0);
    d.create("r", &["--image", "fromreg:1"]);
    assert_eq!(d.sh("r", "cat /hi"), "from-registry\n");
    d.ok(&["rm", "-f", "r"]);
    let img = image(&d, "fromreg:1").unwrap();
    assert_eq!(img["layers"].as_array().unwrap().len(), 2);
    // The pulled base is stored now: a rebuild is all cache.
    let again = built(&d, &ctx, &["-t", "fromreg:1"]);
    assert_eq!(again["cached"], again["steps"]);
    assert_eq!(again["digest"], done["digest"]);
    nothing_left(&d);
}

#[test]
fn the_cache_is_per_tenant() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.tenant_key("other");
    let ctx = Ctx::new("FROM host\nRUN echo mine > /opt/f\n");
    let mine = built(&d, &ctx, &["-t", "t:1"]);
    assert_eq!(mine["cached"], 0);
    let p = ctx.path().to_string_lossy().into_owned();
    let as_other = |tag: &str| {
        let mut c = d.cmd(&[
            "build", "--json", "-t", tag, "--memory", "256M", "--disk", "512M", &p,
        ]);
        c.env("DWELL_AS_TENANT", "other");
        events(&c.output().unwrap()).pop().unwrap()
    };
    // Image names are one namespace: another tenant's tag is not taken over.
    let last = as_other("t:1");
    assert_eq!(last["event"], "error", "{last}");
    assert_eq!(last["code"], "conflict", "{last}");
    let last = as_other("t:2");
    assert_eq!(last["event"], "done", "{last}");
    assert_eq!(
        last["cached"], 0,
        "another tenant's steps are not cache hits"
    );
    // Each tenant sees its own image only.
    let names = |t: &str| -> Vec<String> {
        images_of(&d, t)
            .iter()
            .filter_map(|i| i["name"].as_str().map(String::from))
            .collect()
    };
    assert!(names("other").contains(&"t:2".to_string()));
    assert!(!names("other").contains(&"t:1".to_string()));
    assert!(!names("default").contains(&"t:2".to_string()));
    nothing_left(&d);
}

/// Review 14 F0: a build context (any tenant) whose directory entries carry
/// set-id modes and another owner, and whose later entries put a symlink in
/// place of those directories, pointing at host paths. The context's
/// extractor once applied the deferred directory owner/mode through the
/// symlink (chmod 04777 of a host file, chown to 1000). The host files must
/// keep their content, mode and owner, and the daemon must keep serving.
#[test]
fn a_context_cannot_chmod_host_files_through_a_later_symlink() {
    if !can_run() {
        return;
    }
    let port = 20000 + ((std::process::id() + 7) % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "admin key and TCP listener", || {
        d.data.join("admin.key").exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let bearer = format!("Bearer {}", d.tenant_key("builder"));
    let outside = d.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let victim = outside.join("victim");
    std::fs::write(&victim, "host data\n").unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    // (name, kind, mode, uid, link)
    let tar_of = |entries: &[(&str, tar::EntryType, u32, u64, Option<&str>)]| {
        let mut b = tar::Builder::new(Vec::new());
        let df = b"FROM host\nCOPY . /opt/c/\n";
        let mut h = tar::Header::new_gnu();
        h.set_path("Dockerfile").unwrap();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_mode(0o644);
        h.set_size(df.len() as u64);
        h.set_cksum();
        b.append(&h, &df[..]).unwrap();
        for (name, kind, mode, uid, link) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_entry_type(*kind);
            h.set_uid(*uid);
            h.set_gid(*uid);
            h.set_mtime(0);
            h.set_mode(*mode);
            h.set_size(0);
            h.set_cksum();
            b.append(&h, &[][..]).unwrap();
        }
        b.into_inner().unwrap()
    };
    let v = victim.to_str().unwrap().to_string();
    let o = outside.to_str().unwrap().to_string();
    let attacks = [
        // A set-id directory, then a symlink in its place to a host file.
        tar_of(&[
            ("x/", tar::EntryType::Directory, 0o4777, 1000, None),
            ("x", tar::EntryType::Symlink, 0o777, 0, Some(&v)),
        ]),
        // A child directory named like the host file, then its parent
        // replaced by a symlink to the host file's directory.
        tar_of(&[
            ("a/", tar::EntryType::Directory, 0o755, 0, None),
            ("a/victim/", tar::EntryType::Directory, 0o6777, 1000, None),
            ("a/", tar::EntryType::Directory, 0o777, 1000, None),
            ("a", tar::EntryType::Symlink, 0o777, 0, Some(&o)),
        ]),
    ];
    for (i, t) in attacks.iter().enumerate() {
        let r = http::request(
            &addr,
            "POST",
            "/v1/builds?t=evil:1&memory=256M&disk=512M",
            &[("Authorization", &bearer)],
            t,
        );
        // The context is accepted (a later entry replaces an earlier one,
        // as in Docker); the build itself may end either way.
        assert_eq!(r.status, 200, "attack {i}: {r}");
        let m = std::fs::metadata(&victim).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "host data\n");
        assert_eq!(
            m.mode() & 0o7777,
            0o644,
            "attack {i} changed the host file's mode"
        );
        assert_eq!((m.uid(), m.gid()), (0, 0), "attack {i} changed its owner");
        let m = std::fs::metadata(&outside).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            0o755,
            "attack {i} changed the host dir's mode"
        );
        assert_eq!((m.uid(), m.gid()), (0, 0), "attack {i} changed its owner");
    }
    // The daemon still serves.
    let r = http::request(
        &addr,
        "GET",
        "/v1/images",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(r.status, 200, "{r}");
    nothing_left(&d);
}

/// The text of a failed build: its error event or stderr.
fn failure(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Review 14 F12/F13/F17: hostile Dockerfiles, `.dockerignore` files and
/// COPY sources sent straight to `POST /v1/builds` (a self-doubling ENV, a
/// 200k-star glob, exponential backtracking, a `FROM $ARG` stage
/// reference) get a clear error or a normal build, fast, and the daemon
/// stays up with nothing left behind.
#[test]
fn hostile_dockerfiles_get_clear_errors_and_the_daemon_stays_up() {
    if !can_run() {
        return;
    }
    let port = 40000 + (std::process::id() % 20000) as u16;
    let addr = format!("127.0.0.1:{port}");
    let d = Daemon::start_with(&["--listen", &addr]);
    wait_for(10, "admin key and TCP listener", || {
        d.data.join("admin.key").exists() && std::net::TcpStream::connect(&addr).is_ok()
    });
    let bearer = format!("Bearer {}", d.tenant_key("builder"));
    let post = |files: &[(&str, &[u8])]| {
        let entries: Vec<_> = files
            .iter()
            .map(|(n, data)| (*n, tar::EntryType::Regular, *data, None))
            .collect();
        let r = http::request(
            &addr,
            "POST",
            "/v1/builds?t=hostile:1&memory=256M&disk=512M",
            &[("Authorization", &bearer)],
            &raw_tar(&entries),
        );
        r.text()
    };
    let alive = |d: &Daemon| {
        d.ok(&["ls", "-q"]);
    };
    // F12: 40 doubling ENV lines.
    let mut df = format!("FROM host\nENV a={}\n", "x".repeat(1024));
    for _ in 0..40 {
        df.push_str("ENV a=$a$a\n");
    }
    let t = post(&[("Dockerfile", df.as_bytes())]);
    assert!(t.contains("expands to more than"), "{t}");
    alive(&d);
    // F13: a 200k-star .dockerignore line is refused.
    let stars = "*".repeat(200_000);
    let copy_all = b"FROM host\nCOPY . /x\n" as &[u8];
    let t = post(&[
        ("Dockerfile", copy_all),
        (".dockerignore", stars.as_bytes()),
    ]);
    assert!(t.contains("over the limit"), "{t}");
    alive(&d);
    // ... and a 200k-star COPY source.
    let df = format!("FROM host\nCOPY {stars} /x\n");
    let t = post(&[("Dockerfile", df.as_bytes())]);
    assert!(t.contains("over the limit"), "{t}");
    alive(&d);
    // F13: a backtracking bomb (a 99-char name: the raw tar's limit).
    let bomb = format!("{}b\n", "*a".repeat(14));
    let name = "a".repeat(99);
    let t0 = std::time::Instant::now();
    let t = post(&[
        ("Dockerfile", copy_all),
        (".dockerignore", bomb.as_bytes()),
        (&name, b"kept\n"),
    ]);
    assert!(t.contains("\"done\""), "{t}");
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    alive(&d);
    // F17: `FROM $B` naming a stage the target needs builds it.
    let ctx = Ctx::new(
        "ARG B=0\nFROM host\nRUN echo zero > /z\nFROM host AS s1\nRUN echo one > /o\n\
         FROM $B\nCOPY --from=s1 /o /o\n",
    );
    built(&d, &ctx, &["-t", "fromarg:1"]);
    d.create("fa", &["--image", "fromarg:1"]);
    assert_eq!(d.sh("fa", "cat /z /o"), "zero\none\n");
    d.ok(&["rm", "-f", "fa"]);
    nothing_left(&d);
    let left: Vec<_> = images_of(&d, "builder")
        .into_iter()
        .filter(|i| i["name"].as_str().unwrap_or("").starts_with("dwell-build-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Review 14 F15/F6: a build past its deadline is stopped and cleaned up;
/// a tenant over its concurrent-build cap gets a 409; `image prune` does
/// not wait forever on a running build.
#[test]
fn build_deadline_concurrency_cap_and_prune_while_building() {
    if !can_run() {
        return;
    }
    let d = Daemon::start_with(&["--max-builds-per-tenant", "1"]);
    let ctx = Ctx::new("FROM host\nRUN sleep 300\n");
    let t0 = std::time::Instant::now();
    let out = build(&d, &ctx, &["-t", "slow:1", "--timeout", "5"]);
    assert!(!out.status.success());
    assert!(failure(&out).contains("deadline"), "{}", failure(&out));
    assert!(t0.elapsed() < std::time::Duration::from_secs(120));
    assert!(image(&d, "slow:1").is_none());
    nothing_left(&d);
    // One build runs; a second one of the same tenant is refused.
    let p = ctx.path().to_string_lossy().into_owned();
    let mut child = d
        .cmd(&[
            "build",
            "-t",
            "slow:2",
            "--memory",
            "256M",
            "--disk",
            "512M",
            "--timeout",
            "200",
            &p,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for(120, "the RUN step's sandbox", || {
        !d.ok(&["ls", "-q"]).trim().is_empty()
    });
    let out = build(&d, &ctx, &["-t", "slow:3"]);
    assert!(!out.status.success());
    assert!(
        failure(&out).contains("already runs 1 builds"),
        "{}",
        failure(&out)
    );
    // prune answers (409) instead of blocking on the running build.
    let t0 = std::time::Instant::now();
    let out = d.run(&["image", "prune"]);
    assert!(!out.status.success());
    assert!(
        failure(&out).contains("a build is running"),
        "{}",
        failure(&out)
    );
    assert!(t0.elapsed() < std::time::Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    wait_for(60, "the cancelled build's sandbox removed", || {
        d.ok(&["ls", "-q"]).trim().is_empty()
    });
    nothing_left(&d);
    // The slot is free again.
    built(&d, &Ctx::new("FROM host\nRUN true\n"), &["-t", "quick:1"]);
    d.ok(&["image", "prune"]);
}

/// Review 14 F17: a build task that panics (a bug; forced here with the
/// test panic point) still removes its intermediate images, fails with a
/// clear error, and the daemon keeps serving.
#[test]
fn a_build_that_panics_still_cleans_up() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    d.env = vec![("DWELL_PANIC_AT".into(), "build:next-stage".into())];
    d.restart();
    let ctx = Ctx::new(
        "FROM host AS s1\nRUN echo one > /o\nRUN cat /o > /p\nFROM host\nCOPY --from=s1 /p /p\n",
    );
    let out = build(&d, &ctx, &["-t", "panics:1"]);
    assert!(!out.status.success());
    assert!(
        failure(&out).contains("internal error"),
        "{}",
        failure(&out)
    );
    assert!(image(&d, "panics:1").is_none());
    nothing_left(&d);
    d.ok(&["ls", "-q"]);
}

/// An image built FROM a built-in image stacks on the built-in's own
/// layer directories, so `dwell image rm host-user` (and `host`) is refused
/// while it is stored, naming it and the way out; the built image still
/// starts afterwards, and once it is gone the built-in image goes.
#[test]
fn a_builtin_image_with_a_build_on_it_is_not_removed() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    let ctx = Ctx::new("FROM host-user\nRUN echo built > /home/user/mark\n");
    built(&d, &ctx, &["-t", "onuser:1"]);
    nothing_left(&d);
    for builtin in ["host-user", "host"] {
        let out = d.run(&["image", "rm", builtin]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{builtin} was removed");
        assert!(
            err.contains("onuser:1") && err.contains("dwell image rm") && err.contains("base"),
            "{builtin}: {err}"
        );
    }
    d.create("on", &["--image", "onuser:1"]);
    assert_eq!(d.sh("on", "cat /home/user/mark; id -un"), "built\nuser\n");
    d.ok(&["rm", "-f", "on"]);
    d.ok(&["image", "rm", "onuser:1"]);
    d.ok(&["image", "rm", "host-user"]);
    d.ok(&["image", "rm", "host"]);
    // Both come back on next use.
    d.create("again", &["--image", "host-user"]);
    assert_eq!(d.sh("again", "id -un"), "user\n");
    d.ok(&["rm", "-f", "again"]);
}
