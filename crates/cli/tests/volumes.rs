//! End to end: named volumes, on the runtime `DWELL_TEST_ISOLATION` names
//! (namespace by default, gVisor with `DWELL_TEST_ISOLATION=gvisor`).
//!
//! Two sandboxes share a volume read-write and see each other's writes; a
//! third binds it read-only and gets EROFS; `volume rm` is refused while
//! any of them exists (and names them); the volume grows (online where the
//! daemon has CAP_SYS_RESOURCE, else once its users stop) and `df` inside
//! shows it; it survives its sandboxes' deletion and a daemon restart, and
//! a restarted daemon still unmounts it when its last user goes. A sandbox
//! that plants symlinks in the volume, or swaps its own mount point's
//! parent for a symlink to `/`, makes nothing happen outside. Quotas count
//! volumes; sizes outside 32 MiB .. 64 TiB, unknown volumes, reserved
//! paths and another tenant's volume are refused clearly. A volume is
//! snapshotted while in use, restored once its users stop, copied into a
//! new volume, and its snapshot is refused where a sandbox's is needed. Nothing (mounts,
//! loop devices) is left behind: the daemon harness checks on drop, and
//! the volumes a test made are removed even when it fails.

mod common;

use std::path::Path;
use std::process::Output;

use common::*;

/// Removes the named volumes a test made (of the default tenant or of
/// `tenant`) when dropped; declared after the daemon so it runs first.
struct Volumes {
    socket: std::path::PathBuf,
    tenant: Option<&'static str>,
    names: Vec<String>,
}

impl Drop for Volumes {
    fn drop(&mut self) {
        for n in &self.names {
            let mut c = std::process::Command::new(dwell_bin());
            c.args(["volume", "rm", n])
                .env("DWELL_SOCKET", &self.socket)
                .env_remove("DWELL_HOST");
            if let Some(t) = self.tenant {
                c.env("DWELL_AS_TENANT", t);
            }
            let _ = c.output();
        }
    }
}

fn as_tenant(d: &Daemon, tenant: Option<&str>, args: &[&str]) -> Output {
    let mut c = d.cmd(args);
    if let Some(t) = tenant {
        c.env("DWELL_AS_TENANT", t);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn volume(d: &Daemon, name: &str) -> serde_json::Value {
    serde_json::from_str(&d.ok(&["volume", "inspect", name, "--json"])).unwrap()
}

/// The size `df` shows inside the sandbox for `path`, in KiB.
fn df_kib(d: &Daemon, sb: &str, path: &str) -> u64 {
    let out = d.sh(sb, &format!("df -k {path} | tail -1"));
    out.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("df output: {out}"))
}

/// Whether this process (the daemon runs with the same) may grow a
/// mounted ext4 online.
fn has_cap_sys_resource() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|c| c & (1 << 24) != 0)
}

fn loops_of(data: &Path) -> Vec<String> {
    leftovers(data)
        .into_iter()
        .filter(|l| l.starts_with("loop:") && l.contains("named-volumes"))
        .collect()
}

#[test]
fn named_volumes_are_shared_outlive_sandboxes_and_stay_inside() {
    if !can_run() || (isolation() == "gvisor" && !can_run_gvisor()) {
        return;
    }
    let mut d = Daemon::start();
    let mut vols = Volumes {
        socket: d.socket.clone(),
        tenant: None,
        names: vec!["shared".into()],
    };
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "create", "shared", "--size", "64M", "--json"]))
            .unwrap();
    assert_eq!(v["size_bytes"], 64u64 << 20);
    assert_eq!(v["mounted"], false);
    let vid = v["id"].as_str().unwrap().to_string();
    assert!(d.ok(&["volume", "ls"]).contains("shared"));
    // A second volume of the same name is refused.
    let o = d.run(&["volume", "create", "shared", "--size", "64M"]);
    assert!(
        !o.status.success() && text(&o).contains("already has a volume"),
        "{}",
        text(&o)
    );

    d.create("va", &["--volume", "shared:/data"]);
    d.create("vb", &["--volume", "shared:/srv/shared"]);
    assert_eq!(volume(&d, "shared")["mounted"], true);
    d.sh("va", "echo from-a > /data/a.txt");
    assert_eq!(d.sh("vb", "cat /srv/shared/a.txt").trim(), "from-a");
    d.sh("vb", "echo from-b > /srv/shared/b.txt");
    assert_eq!(d.sh("va", "cat /data/b.txt").trim(), "from-b");

    // Review 14 F11: a setuid-root program the sandbox writes into the
    // volume is inert on the host: the host-side mount is nosuid,nodev.
    d.sh(
        "va",
        "cp /bin/true /data/suid && chown 0:0 /data/suid && chmod 4755 /data/suid",
    );
    let mnt = d.data.join("named-volumes").join(&vid).join("mnt");
    let host_file = mnt.join("suid");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&host_file).unwrap().permissions(),
    );
    assert_eq!(mode & 0o4000, 0o4000, "the sandbox's setuid file is there");
    let pid = d.pid().expect("daemon running");
    let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let at = mnt.to_str().unwrap();
    let opts = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(at))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_else(|| panic!("{at} is not mounted host-side:\n{info}"));
    let o: Vec<&str> = opts.split(',').collect();
    assert!(
        o.contains(&"nosuid") && o.contains(&"nodev"),
        "named volume mounted host-side with {opts}"
    );

    // Read-only: reads work, writes fail with EROFS.
    d.create("vc", &["--volume", "shared:/data:ro"]);
    assert_eq!(d.sh("vc", "cat /data/a.txt").trim(), "from-a");
    let w = d.run(&["exec", "vc", "--", "sh", "-c", "echo x > /data/c.txt"]);
    assert!(!w.status.success(), "a read-only volume took a write");
    assert!(
        text(&w).to_lowercase().contains("read-only"),
        "expected EROFS: {}",
        text(&w)
    );
    let v = volume(&d, "shared");
    let mut users: Vec<&str> = v["used_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    users.sort();
    assert_eq!(users, ["va", "vb", "vc"]);

    // In use: removal refused, naming every user; nothing removed.
    let o = d.run(&["volume", "rm", "shared"]);
    assert!(!o.status.success());
    let msg = text(&o);
    assert!(
        msg.contains("va") && msg.contains("vb") && msg.contains("vc"),
        "{msg}"
    );
    // Also with its users stopped.
    d.ok(&["stop", "vc"]);
    assert!(!d.run(&["volume", "rm", "shared"]).status.success());
    d.ok(&["start", "vc"]);
    assert_eq!(d.sh("vc", "cat /data/b.txt").trim(), "from-b");

    // Planted symlinks are never followed by the daemon: what it shows
    // of the volume is the volume's own (statfs of its mount).
    d.sh(
        "va",
        "ln -s / /data/escape && ln -s /etc/shadow /data/shadow && mkdir -p /data/d",
    );
    let v = volume(&d, "shared");
    assert!(v["used_bytes"].as_u64().unwrap() < 64 << 20, "{v}");
    // The other sandbox resolves them inside itself.
    assert_eq!(d.sh("vb", "readlink /srv/shared/escape").trim(), "/");

    // Grow: online where the daemon may, else once the users stop.
    let before = df_kib(&d, "va", "/data");
    if has_cap_sys_resource() {
        d.ok(&["volume", "resize", "shared", "--size", "160M"]);
    } else {
        let o = d.run(&["volume", "resize", "shared", "--size", "160M"]);
        assert!(!o.status.success());
        assert!(text(&o).contains("CAP_SYS_RESOURCE"), "{}", text(&o));
        for sb in ["va", "vb", "vc"] {
            d.ok(&["stop", sb]);
        }
        d.ok(&["volume", "resize", "shared", "--size", "160M"]);
        for sb in ["va", "vb", "vc"] {
            d.ok(&["start", sb]);
        }
    }
    let after = df_kib(&d, "va", "/data");
    assert!(
        after > before + 80 * 1024,
        "df: {before} KiB -> {after} KiB"
    );
    assert_eq!(df_kib(&d, "vb", "/srv/shared"), after);
    // Shrinking is refused.
    let o = d.run(&["volume", "resize", "shared", "--size", "64M"]);
    assert!(
        !o.status.success() && text(&o).contains("only grow"),
        "{}",
        text(&o)
    );

    // A sandbox that swaps its mount point's parent for a symlink to `/`
    // cannot have its next start bind the volume onto the host.
    // (A parent the image lacks: made in the sandbox's own layer, where
    // the sandbox can rename it while the volume is bound below it.)
    let escape = format!("dwell-volume-escape-{}", std::process::id());
    let parent = format!("/vp-{}", std::process::id());
    d.create("vp", &["--volume", &format!("shared:{parent}/{escape}")]);
    d.sh(
        "vp",
        &format!("mv {parent} {parent}.old && ln -s / {parent}"),
    );
    d.ok(&["stop", "vp"]);
    let o = d.run(&["start", "vp"]);
    let host_path = Path::new("/").join(&escape);
    let on_host = host_path.exists();
    if on_host {
        let _ = std::fs::remove_dir(&host_path);
    }
    assert!(
        !on_host,
        "the start made {} on the host",
        host_path.display()
    );
    if o.status.success() {
        // gVisor resolves the path inside the sandbox: it lands in the
        // sandbox's own root.
        assert_eq!(d.sh("vp", &format!("cat /{escape}/a.txt")).trim(), "from-a");
    } else {
        assert!(text(&o).contains("symlink"), "{}", text(&o));
    }
    d.ok(&["rm", "-f", "vp"]);

    // Deleting every user keeps the volume (unmounted, loop device freed).
    for sb in ["va", "vb", "vc"] {
        d.ok(&["rm", "-f", sb]);
    }
    let v = volume(&d, "shared");
    assert_eq!(v["mounted"], false);
    assert!(v["used_by"].as_array().unwrap().is_empty());
    wait_for(
        || loops_of(&d.data).is_empty(),
        "the volume's loop device to go",
    );

    // It survives a daemon restart, with its data; a restarted daemon
    // re-derives who holds the mount and unmounts it after the last.
    d.create("vd", &["--volume", "shared:/data"]);
    d.restart();
    assert_eq!(
        d.sh("vd", "cat /data/a.txt /data/b.txt"),
        "from-a\nfrom-b\n"
    );
    assert_eq!(volume(&d, "shared")["mounted"], true);
    d.ok(&["rm", "-f", "vd"]);
    assert_eq!(volume(&d, "shared")["mounted"], false);
    wait_for(
        || loops_of(&d.data).is_empty(),
        "the volume's loop device to go",
    );

    d.ok(&["volume", "rm", "shared"]);
    vols.names.clear();
    let o = d.run(&["volume", "inspect", "shared"]);
    assert!(!o.status.success() && text(&o).contains("no volume named"));
    assert!(!d.data.join("named-volumes").join(&vid).exists());
}

#[test]
fn named_volume_limits_quota_and_tenants() {
    if !can_run() || (isolation() == "gvisor" && !can_run_gvisor()) {
        return;
    }
    let d = Daemon::start();
    d.ok(&["tenant", "create", "vq", "--max-storage", "1G"]);
    let vols = Volumes {
        socket: d.socket.clone(),
        tenant: Some("vq"),
        names: vec!["one".into(), "two".into()],
    };
    let t = |args: &[&str]| as_tenant(&d, Some("vq"), args);
    // The range.
    for (size, why) in [("16M", "32MiB to 64TiB"), ("65T", "32MiB to 64TiB")] {
        let o = t(&["volume", "create", "one", "--size", size]);
        assert!(
            !o.status.success() && text(&o).contains(why),
            "{size}: {}",
            text(&o)
        );
    }
    let o = t(&["volume", "create", "Bad Name", "--size", "64M"]);
    assert!(!o.status.success(), "{}", text(&o));
    // The quota counts volumes, used or not.
    assert!(t(&["volume", "create", "one", "--size", "600M"])
        .status
        .success());
    let o = t(&["volume", "create", "two", "--size", "600M"]);
    assert!(!o.status.success());
    assert!(text(&o).contains("storage quota"), "{}", text(&o));
    // A sandbox's disk counts on top of them.
    let o = t(&[
        "create",
        "--name",
        "big",
        "--disk",
        "512M",
        "--volume",
        "one:/data",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("storage quota"),
        "{}",
        text(&o)
    );
    // Growing past the quota is refused too.
    let o = t(&["volume", "resize", "one", "--size", "2G"]);
    assert!(
        !o.status.success() && text(&o).contains("storage quota"),
        "{}",
        text(&o)
    );
    // Another tenant's volume does not exist for the default tenant.
    let o = d.run(&["volume", "inspect", "one"]);
    assert!(
        !o.status.success() && text(&o).contains("no volume named"),
        "{}",
        text(&o)
    );
    let o = d.run(&["create", "--name", "thief", "--volume", "one:/data"]);
    assert!(
        !o.status.success() && text(&o).contains("no volume named"),
        "{}",
        text(&o)
    );
    // Unknown volumes and reserved paths.
    let o = t(&["create", "--name", "x", "--volume", "nope:/data"]);
    assert!(
        !o.status.success() && text(&o).contains("volume create"),
        "{}",
        text(&o)
    );
    for bad in [
        "one:/proc",
        "one:/",
        "one:/run/dwell",
        "one:data",
        "one:/a/../b",
    ] {
        let o = t(&["create", "--name", "x", "--volume", bad]);
        assert!(!o.status.success(), "{bad} was accepted");
    }
    assert!(
        t(&["ls", "-q"]).stdout.is_empty(),
        "a refused create left a sandbox"
    );
    drop(vols);
    assert!(loops_of(&d.data).is_empty());
}

#[test]
fn named_volume_snapshots_restore_and_copy() {
    if !can_run() || (isolation() == "gvisor" && !can_run_gvisor()) {
        return;
    }
    let d = Daemon::start();
    let mut vols = Volumes {
        socket: d.socket.clone(),
        tenant: None,
        names: vec!["snapv".into(), "copy".into()],
    };
    d.ok(&["volume", "create", "snapv", "--size", "64M"]);
    d.create("s1", &["--volume", "snapv:/data"]);
    d.sh("s1", "echo one > /data/f && sync");
    // Taken while in use (frozen for the capture).
    let snap: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "snapshot", "snapv", "--name", "snap1", "--json"]))
            .unwrap();
    let sid = snap["id"].as_str().unwrap().to_string();
    d.sh("s1", "echo two > /data/f");
    // Not while a user runs.
    let o = d.run(&["volume", "restore", "snapv", "snap1"]);
    assert!(
        !o.status.success() && text(&o).contains("stop them"),
        "{}",
        text(&o)
    );
    d.ok(&["stop", "s1"]);
    d.ok(&["volume", "restore", "snapv", "snap1"]);
    d.ok(&["start", "s1"]);
    assert_eq!(d.sh("s1", "cat /data/f").trim(), "one");
    // A new volume from it, of its size.
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["volume", "create", "copy", "--from", &sid, "--json"]))
            .unwrap();
    assert_eq!(v["size_bytes"], 64u64 << 20);
    d.create("s2", &["--volume", "copy:/c:ro"]);
    assert_eq!(d.sh("s2", "cat /c/f").trim(), "one");
    // A volume's snapshot is no sandbox's.
    let o = d.run(&["create", "--name", "nope", "--from", "snap1"]);
    assert!(
        !o.status.success() && text(&o).contains("volume restore"),
        "{}",
        text(&o)
    );
    let o = d.run(&["restore", "s1", "snap1"]);
    assert!(
        !o.status.success() && text(&o).contains("named volume"),
        "{}",
        text(&o)
    );
    d.ok(&["rm", "-f", "s1", "s2"]);
    for n in std::mem::take(&mut vols.names) {
        d.ok(&["volume", "rm", &n]);
    }
    d.ok(&["snapshot", "rm", &sid]);
    wait_for(|| loops_of(&d.data).is_empty(), "loop devices to go");
}

/// The namespace runtime without user namespaces binds volumes with plain
/// bind mounts (`ns::mounts`): shared, read-only on request, and a symlink
/// on the path refused.
#[test]
fn named_volumes_without_user_namespaces() {
    if !can_run() || isolation() == "gvisor" {
        return;
    }
    let d = Daemon::start_with(&["--user-namespaces", "off"]);
    let _vols = Volumes {
        socket: d.socket.clone(),
        tenant: None,
        names: vec!["plain".into()],
    };
    d.ok(&["volume", "create", "plain", "--size", "32M"]);
    d.create("pa", &["--volume", "plain:/data"]);
    d.create("pb", &["--volume", "plain:/data:ro"]);
    d.sh("pa", "echo hi > /data/x");
    assert_eq!(d.sh("pb", "cat /data/x").trim(), "hi");
    let w = d.run(&["exec", "pb", "--", "sh", "-c", "echo x > /data/y"]);
    assert!(
        !w.status.success() && text(&w).to_lowercase().contains("read-only"),
        "{}",
        text(&w)
    );
    let escape = format!("dwell-volume-escape-plain-{}", std::process::id());
    let parent = format!("/pp-{}", std::process::id());
    d.create("pc", &["--volume", &format!("plain:{parent}/{escape}")]);
    d.sh(
        "pc",
        &format!("mv {parent} {parent}.old && ln -s / {parent}"),
    );
    d.ok(&["stop", "pc"]);
    let o = d.run(&["start", "pc"]);
    let host_path = Path::new("/").join(&escape);
    let on_host = host_path.exists();
    if on_host {
        let _ = std::fs::remove_dir(&host_path);
    }
    assert!(
        !on_host,
        "the start made {} on the host",
        host_path.display()
    );
    assert!(
        !o.status.success() && text(&o).contains("symlink"),
        "{}",
        text(&o)
    );
    d.ok(&["rm", "-f", "pa", "pb", "pc"]);
    wait_for(|| loops_of(&d.data).is_empty(), "loop devices to go");
}

/// The attachment outlives pause/resume, stop/start and (gVisor)
/// hibernation; an ephemeral sandbox's stop deletes the sandbox, never the
/// volume.
#[test]
fn named_volumes_keep_their_attachment_through_the_lifecycle() {
    if !can_run() || (isolation() == "gvisor" && !can_run_gvisor()) {
        return;
    }
    let d = Daemon::start();
    let _vols = Volumes {
        socket: d.socket.clone(),
        tenant: None,
        names: vec!["life".into()],
    };
    d.ok(&["volume", "create", "life", "--size", "32M"]);
    d.create("lp", &["--volume", "life:/data"]);
    d.sh("lp", "echo kept > /data/k");
    d.ok(&["pause", "lp"]);
    d.ok(&["resume", "lp"]);
    assert_eq!(d.sh("lp", "cat /data/k").trim(), "kept");
    if isolation() == "gvisor" {
        d.ok(&["hibernate", "lp"]);
        d.ok(&["resume", "lp"]);
        assert_eq!(d.sh("lp", "cat /data/k").trim(), "kept");
        d.sh("lp", "echo after > /data/h");
    }
    d.ok(&["stop", "lp"]);
    assert_eq!(volume(&d, "life")["mounted"], false);
    d.ok(&["start", "lp"]);
    assert_eq!(d.sh("lp", "cat /data/k").trim(), "kept");
    // Ephemeral: its stop deletes it, the volume and its data stay.
    d.create("le", &["--ephemeral", "--volume", "life:/v"]);
    d.sh("le", "echo eph > /v/e");
    d.ok(&["stop", "le"]);
    assert_eq!(d.sh("lp", "cat /data/e").trim(), "eph");
    let users = volume(&d, "life")["used_by"].clone();
    assert_eq!(users, serde_json::json!(["lp"]));
    d.ok(&["rm", "-f", "lp"]);
    wait_for(|| loops_of(&d.data).is_empty(), "loop devices to go");
}

fn wait_for(mut f: impl FnMut() -> bool, what: &str) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "waited 20 s for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
