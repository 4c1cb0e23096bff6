//! User namespaces (issue 11, item 4): a namespace sandbox's root is its
//! own unprivileged host uid range, so what the kernel counts per user is
//! counted per sandbox; files stay 0-based on disk, so snapshots restore
//! into any range; volumes written before user namespaces keep working.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;
use crate::support::*;

/// `inside host count` of the first line of a `/proc/self/{uid,gid}_map`.
fn map_of(d: &Daemon, sb: &str, file: &str) -> (u64, u64, u64) {
    let out = d.sh(sb, &format!("cat /proc/self/{file}"));
    let v: Vec<u64> = out
        .split_whitespace()
        .take(3)
        .map(|s| s.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

/// The effective uid of a host process, from /proc/<pid>/status.
fn host_uid(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn root_maps_to_an_unprivileged_range_of_its_own() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    let a = d.create("ua", &["--isolation", "namespace"]);
    d.create("ub", &["--isolation", "namespace"]);
    let (ia, ha, ca) = map_of(&d, "ua", "uid_map");
    let (ib, hb, cb) = map_of(&d, "ub", "uid_map");
    assert_eq!((ia, ca, ib, cb), (0, 65536, 0, 65536));
    assert!(ha >= 1 << 31 && hb >= 1 << 31, "ranges far from host users");
    assert!(ha.abs_diff(hb) >= 65536, "ranges overlap: {ha} {hb}");
    assert_eq!(map_of(&d, "ua", "gid_map"), (0, ha, 65536));
    // Seen from the host, the sandbox's root is that uid.
    assert_eq!(host_uid(d.host_pid(&a)), ha);
    // Root inside cannot make a namespace of its own to get around it.
    let out = d.run(&["exec", "ua", "--", "unshare", "-U", "-r", "true"]);
    assert!(
        !out.status.success() && stderr(&out).contains("Operation not permitted"),
        "nested user namespace not refused as such: {}",
        stderr(&out)
    );
    // Ranges stay across a restart of the sandbox and of the daemon.
    d.ok(&["stop", "ua"]);
    d.restart();
    d.ok(&["start", "ua"]);
    assert_eq!(map_of(&d, "ua", "uid_map").1, ha);
    assert_eq!(d.sh("ub", "echo ok"), "ok\n");
    // A deleted sandbox's range goes to the next one, a live one's never.
    d.ok(&["rm", "-f", "ub"]);
    d.create("uc", &["--isolation", "namespace"]);
    assert_eq!(map_of(&d, "uc", "uid_map").1, hb);
    assert_eq!(map_of(&d, "ua", "uid_map").1, ha);
}

/// Opens inotify instances until the kernel refuses; prints how many, then
/// holds them for argv[1] seconds.
const INOTIFY_HOG: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while len(fds) < 4096:
    fd = libc.inotify_init()
    if fd < 0:
        break
    fds.append(fd)
print(len(fds), ctypes.get_errno(), flush=True)
time.sleep(float(sys.argv[1]))
"#;

/// How many inotify instances this (host) process can still open.
fn host_inotify_free() -> usize {
    let mut fds = Vec::new();
    loop {
        // SAFETY: plain syscall; every descriptor is closed below.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 || fds.len() >= 4096 {
            break;
        }
        fds.push(fd);
    }
    for fd in &fds {
        // SAFETY: descriptors opened above.
        unsafe { libc::close(*fd) };
    }
    fds.len()
}

#[test]
fn exhausting_inotify_in_a_sandbox_leaves_the_host_and_neighbours_theirs() {
    if !can_run() {
        return;
    }
    if host_inotify_free() == 0 {
        skip("host root has no inotify instance left before the test");
        return;
    }
    let d = Daemon::start();
    for rt in runtimes() {
        let (a, b) = (format!("ia-{rt}"), format!("ib-{rt}"));
        create_on(&d, &a, rt);
        create_on(&d, &b, rt);
        let mut hog = KillOnDrop(
            d.cmd(&["exec", &a, "--", "python3", "-c", INOTIFY_HOG, "20"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut line = String::new();
        BufReader::new(hog.0.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let got: Vec<u64> = line
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        assert!(got.len() == 2 && got[0] > 0, "{rt}: hog printed {line:?}");
        // The namespace sandbox ran into its per-user limit (EMFILE); under
        // gVisor the sentry keeps its own count, whatever it stops at.
        if rt == "namespace" {
            assert_eq!(
                got[1], 24,
                "{rt}: the hog stopped short of its limit: {line:?}"
            );
        }
        // While A holds every instance it could get, B and the host still
        // get theirs.
        assert!(
            host_inotify_free() > 0,
            "{rt}: the sandbox took host root's inotify instances"
        );
        let out = d.ok(&["exec", &b, "--", "python3", "-c", INOTIFY_HOG, "0"]);
        let n: u64 = out.split_whitespace().next().unwrap().parse().unwrap();
        assert!(n > 0, "{rt}: the neighbour got no inotify instance: {out}");
        drop(hog);
        assert_eq!(d.sh(&a, "echo alive"), "alive\n", "{rt}");
        d.ok(&["rm", "-f", &a, &b]);
    }
}

/// Writes a file as root and one as uid 1000 (a home dir it owns).
const WRITE_AS_TWO_USERS: &str = "echo r > /root/by-root && mkdir -p /home/u && \
     chown 1000:1000 /home/u && setpriv --reuid 1000 --regid 1000 --clear-groups \
     sh -c 'echo u > /home/u/by-user'";

/// `uid:gid` of a file inside the sandbox.
fn owner_inside(d: &Daemon, sb: &str, path: &str) -> String {
    d.sh(sb, &format!("stat -c %u:%g {path}"))
        .trim()
        .to_string()
}

/// `uid:gid` of a file of the sandbox's writable layer on the host.
fn owner_on_disk(d: &Daemon, id: &str, rel: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let p = d
        .data
        .join("volumes")
        .join(id)
        .join("mnt/root/upper")
        .join(rel);
    let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    format!("{}:{}", m.uid(), m.gid())
}

#[test]
fn files_land_on_disk_with_the_ids_used_inside() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    for rt in runtimes() {
        let name = format!("own-{rt}");
        let id = create_on(&d, &name, rt);
        d.sh(&name, WRITE_AS_TWO_USERS);
        assert_eq!(owner_inside(&d, &name, "/root/by-root"), "0:0", "{rt}");
        assert_eq!(
            owner_inside(&d, &name, "/home/u/by-user"),
            "1000:1000",
            "{rt}"
        );
        assert_eq!(owner_on_disk(&d, &id, "root/by-root"), "0:0", "{rt}");
        assert_eq!(
            owner_on_disk(&d, &id, "home/u/by-user"),
            "1000:1000",
            "{rt}"
        );
        d.ok(&["rm", "-f", &name]);
    }
}

#[test]
fn a_snapshot_taken_on_one_range_restores_into_another() {
    if !can_run() {
        return;
    }
    let d = Daemon::start();
    d.create("src", &["--isolation", "namespace"]);
    d.sh("src", WRITE_AS_TWO_USERS);
    d.ok(&["snapshot", "create", "src", "--name", "two-users"]);
    // The source keeps its range, so the copy gets another one.
    let id = d.create("copy", &["--from", "two-users"]);
    let src_base = map_of(&d, "src", "uid_map").1;
    let copy_base = map_of(&d, "copy", "uid_map").1;
    assert_ne!(src_base, copy_base);
    assert_eq!(owner_inside(&d, "copy", "/root/by-root"), "0:0");
    assert_eq!(owner_inside(&d, "copy", "/home/u/by-user"), "1000:1000");
    assert_eq!(d.sh("copy", "cat /home/u/by-user"), "u\n");
    assert_eq!(owner_on_disk(&d, &id, "home/u/by-user"), "1000:1000");
    // Root and uid 1000 of the copy can still write their files.
    d.sh(
        "copy",
        "echo r2 >> /root/by-root && setpriv --reuid 1000 --regid 1000 --clear-groups \
         sh -c 'echo u2 >> /home/u/by-user'",
    );
    assert_eq!(d.sh("src", "cat /home/u/by-user"), "u\n");
}

/// Makes an opaque dir (removed, then made again) and a whiteout in the
/// root overlay and in the /usr overlay.
const OLD_STYLE_CHANGES: &str = "set -e
    d=$(for x in /etc/*/; do [ -n \"$(ls -A $x)\" ] && echo ${x%/} && break; done)
    echo $d > /root/opaque-dir
    rm -rf $d && mkdir $d && echo mine > $d/only
    rm -rf /usr/share/doc && mkdir /usr/share/doc && echo mine > /usr/share/doc/only
    rm -f /usr/bin/true
    echo kept > /root/kept";

#[test]
fn a_volume_written_without_user_namespaces_starts_with_its_deletions_intact() {
    if !can_run() {
        return;
    }
    let mut d = Daemon::start();
    d.env.push(("DWELL_USER_NAMESPACES".into(), "off".into()));
    d.restart();
    d.create("old", &["--isolation", "namespace"]);
    assert_eq!(map_of(&d, "old", "uid_map"), (0, 0, 4294967295));
    d.sh("old", OLD_STYLE_CHANGES);
    let dir = d.sh("old", "cat /root/opaque-dir").trim().to_string();
    d.ok(&["stop", "old"]);

    d.env.clear();
    d.restart();
    d.ok(&["start", "old"]);
    assert_ne!(
        map_of(&d, "old", "uid_map").1,
        0,
        "user namespaces are on again"
    );
    assert_eq!(
        d.sh("old", &format!("ls -A {dir}")),
        "only\n",
        "opaque {dir}"
    );
    assert_eq!(d.sh("old", "ls -A /usr/share/doc"), "only\n");
    assert_eq!(d.sh("old", "test -e /usr/bin/true || echo gone"), "gone\n");
    assert_eq!(d.sh("old", "cat /root/kept"), "kept\n");
    // And it keeps working: new deletions and writes as root.
    d.sh("old", &format!("rm -rf {dir} && echo new > /root/new"));
    d.ok(&["stop", "old"]);
    d.ok(&["start", "old"]);
    assert_eq!(
        d.sh("old", &format!("test -e {dir} || echo gone")),
        "gone\n"
    );
    assert_eq!(d.sh("old", "cat /root/new"), "new\n");
    // Switched off again, the converted volume still shows the same tree.
    d.ok(&["stop", "old"]);
    d.env.push(("DWELL_USER_NAMESPACES".into(), "off".into()));
    d.restart();
    d.ok(&["start", "old"]);
    assert_eq!(map_of(&d, "old", "uid_map").1, 0);
    assert_eq!(d.sh("old", "ls -A /usr/share/doc"), "only\n");
    assert_eq!(
        d.sh("old", &format!("test -e {dir} || echo gone")),
        "gone\n"
    );
}
