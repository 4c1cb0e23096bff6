//! Item 2 of issue 11: the daemon never trusts a sandbox path. A sandbox
//! plants symlinks (to a host file, a host dir, `/dev/zero`,
//! `/proc/self/root`) and special files in what it can write — its upper
//! dirs and its run dir — and then asks the daemon for everything that
//! touches them on the host: `dwell diff`, snapshot capture and restore,
//! `create --from`, archive and start, `rm`. None may read, change or delete
//! a host file, hang, or bloat; the daemon keeps serving its neighbour.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::common::*;
use crate::support::*;

/// A host file the attacks aim at: a dpkg status naming a package no
/// sandbox has, in a host dir that also holds a second file.
struct Marker {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    file: PathBuf,
}

const MARKER_PACKAGE: &str = "dwell-host-marker-pkg";
const MARKER_BODY: &str =
    "Package: dwell-host-marker-pkg\nStatus: install ok installed\nVersion: 6.6.6\n";

fn marker() -> Marker {
    let dir = tempfile::Builder::new()
        .prefix("dwell-paths-marker-")
        .tempdir_in("/tmp")
        .unwrap();
    let file = dir.path().join("status");
    std::fs::write(&file, MARKER_BODY).unwrap();
    std::fs::write(dir.path().join("other"), "keep me").unwrap();
    Marker {
        dir: dir.path().to_path_buf(),
        file,
        _dir: dir,
    }
}

impl Marker {
    /// The host files are still there, unchanged.
    fn assert_intact(&self, after: &str) {
        assert_eq!(
            std::fs::read_to_string(&self.file).unwrap_or_default(),
            MARKER_BODY,
            "{} changed or vanished after {after}",
            self.file.display()
        );
        assert_eq!(
            std::fs::read_to_string(self.dir.join("other")).unwrap_or_default(),
            "keep me",
            "{}/other changed or vanished after {after}",
            self.dir.display()
        );
    }
}

/// `dwell ARGS`, killed (and the test failed) after `secs`: a hang here
/// means the daemon reads what it must not.
fn run_within(d: &Daemon, args: &[&str], secs: u64) -> Output {
    let child = d
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_within(
        child,
        Duration::from_secs(secs),
        &format!("dwell {args:?}"),
        || tail(&d.log(), 30),
    )
}

/// `dwell diff SB` must fail, saying why, and leak nothing of the marker.
fn diff_refused(d: &Daemon, sb: &str, why: &str) {
    let out = run_within(d, &["diff", sb, "--json"], 60);
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(
        !out.status.success(),
        "diff of {sb} read what the sandbox planted ({why}): {o}"
    );
    assert!(
        e.contains(why),
        "diff of {sb} failed without naming {why:?}: {e}"
    );
    assert!(
        !o.contains(MARKER_PACKAGE) && !e.contains(MARKER_PACKAGE),
        "diff leaked the host file: {o} {e}"
    );
}

/// The neighbour still answers execs and diffs.
fn neighbour_ok(d: &Daemon, n: &str) {
    assert_eq!(d.sh(n, "echo alive").trim(), "alive");
    d.ok(&["diff", n, "--json"]);
}

#[test]
fn diff_never_reads_a_status_file_the_sandbox_points_at_the_host() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let m = marker();
        let d = Daemon::start();
        let id = create_on(&d, "victim", rt);
        create_on(&d, "neighbour", rt);
        let pid = d.pid().unwrap();
        let rss0 = rss_kib(pid);

        // A symlink to a host file.
        d.sh(
            "victim",
            &format!(
                "mkdir -p /var/lib/dpkg && ln -sfn {} /var/lib/dpkg/status",
                m.file.display()
            ),
        );
        diff_refused(&d, "victim", "symlink");

        // A symlink to /dev/zero: read, it never ends.
        d.sh("victim", "ln -sfn /dev/zero /var/lib/dpkg/status");
        diff_refused(&d, "victim", "symlink");

        // The directory on the way is the symlink.
        d.sh(
            "victim",
            &format!(
                "rm -rf /var/lib/dpkg && ln -sfn {} /var/lib/dpkg",
                m.dir.display()
            ),
        );
        diff_refused(&d, "victim", "symlink");

        // A fifo: opened for reading, it blocks until a writer comes.
        d.sh(
            "victim",
            "rm -f /var/lib/dpkg && mkdir -p /var/lib/dpkg && mkfifo /var/lib/dpkg/status",
        );
        let on_host = d
            .data
            .join("volumes")
            .join(&id)
            .join("mnt/root/upper/var/lib/dpkg/status");
        let host_fifo = std::fs::symlink_metadata(&on_host)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
        // Only gVisor keeps a sandbox's fifo away from the host.
        assert!(
            host_fifo || rt == "gvisor",
            "{rt}: the fifo never reached the upper dir {}: the attack did not run",
            on_host.display()
        );
        if host_fifo {
            diff_refused(&d, "victim", "fifo");
        } else {
            // gVisor keeps a fifo in its sentry: the host sees no status
            // file, and the diff must still answer (without the marker).
            eprintln!(
                "{rt}: the fifo did not reach the host ({})",
                on_host.display()
            );
            let out = run_within(&d, &["diff", "victim", "--json"], 60);
            assert!(out.status.success(), "{rt}: {}", stderr(&out));
            assert!(!stdout(&out).contains(MARKER_PACKAGE));
        }

        let grown = rss_kib(pid).saturating_sub(rss0);
        assert!(
            grown < 64 << 10,
            "{rt}: the daemon grew by {grown} KiB during the attacks"
        );
        m.assert_intact("the diff attacks");

        // The victim itself works on, and its diff too once the status file
        // is a file again.
        d.sh(
            "victim",
            "rm -rf /var/lib/dpkg && mkdir -p /var/lib/dpkg && printf 'Package: fine\\nStatus: install ok installed\\nVersion: 1\\n' > /var/lib/dpkg/status",
        );
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["diff", "victim", "--json"])).unwrap();
        assert!(
            v["packages"]["installed"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fine"),
            "{rt}: {v}"
        );
        neighbour_ok(&d, "neighbour");
        d.ok(&["rm", "-f", "victim"]);
        d.ok(&["rm", "-f", "neighbour"]);
        m.assert_intact("rm");
    }
}

/// What the sandbox plants before every other host-side operation: links
/// to a host file, a host dir and the host's root, a fifo, and the same in
/// its run dir (`/run/dwell`).
fn plant(d: &Daemon, sb: &str, m: &Marker) {
    d.sh(
        sb,
        &format!(
            "ln -s {f} /root/to-host-file && ln -s {dir} /root/to-host-dir && \
             ln -s /proc/self/root /root/to-host-root && ln -s /dev/zero /root/zero && \
             mkfifo /root/fifo && \
             ln -s {dir} /run/dwell/to-host-dir && ln -s {f} /run/dwell/to-host-file && \
             echo data > /root/data",
            f = m.file.display(),
            dir = m.dir.display()
        ),
    );
}

/// The planted links are still links to the same targets in `sb`, and
/// none leads to the host.
fn links_kept(d: &Daemon, sb: &str, m: &Marker) {
    let out = d.sh(
        sb,
        "readlink /root/to-host-file; readlink /root/to-host-dir; readlink /root/to-host-root; \
         cat /root/data; cat /root/to-host-file 2>/dev/null || echo unreadable",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            m.file.to_str().unwrap(),
            m.dir.to_str().unwrap(),
            "/proc/self/root",
            "data",
            "unreadable"
        ],
        "links in {sb} changed, or lead to the host"
    );
}

#[test]
fn snapshots_forks_archives_and_rm_never_follow_planted_links() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let m = marker();
        let d = Daemon::start();
        create_on(&d, "victim", rt);
        create_on(&d, "neighbour", rt);
        plant(&d, "victim", &m);

        // Capture (running) and restore into a new sandbox.
        d.ok(&["snapshot", "create", "victim", "--name", "planted"]);
        m.assert_intact("snapshot create");
        d.ok(&[
            "create",
            "--from",
            "planted",
            "--name",
            "fork",
            "--isolation",
            rt,
            "--memory",
            "256M",
        ]);
        m.assert_intact("create --from");
        links_kept(&d, "fork", &m);

        // Archive (stop, capture, free the volume) and start again.
        d.ok(&["archive", "victim"]);
        m.assert_intact("archive");
        d.ok(&["start", "victim"]);
        m.assert_intact("start");
        links_kept(&d, "victim", &m);

        // Diff lists the links as what they are, never what they point at.
        let v: serde_json::Value =
            serde_json::from_str(&d.ok(&["diff", "victim", "--json"])).unwrap();
        let files = v["files"].as_array().unwrap();
        for p in [
            "/root/to-host-file",
            "/root/to-host-dir",
            "/root/to-host-root",
        ] {
            let f = files.iter().find(|f| f["path"] == p);
            assert!(
                f.is_some_and(|f| f["dir"] == false && f["size"] == 0),
                "{rt}: diff shows {p} as {f:?}"
            );
        }
        assert!(
            !files.iter().any(|f| f["path"]
                .as_str()
                .unwrap()
                .starts_with("/root/to-host-dir/")),
            "{rt}: diff walked into the host dir: {v}"
        );

        // Delete both: volumes and state dirs go, the host files stay.
        d.ok(&["rm", "-f", "fork"]);
        d.ok(&["rm", "-f", "victim"]);
        m.assert_intact("rm");
        neighbour_ok(&d, "neighbour");
        d.ok(&["rm", "-f", "neighbour"]);
        assert!(Path::new(&m.dir).is_dir());
    }
}

#[test]
fn rm_removes_deep_trees_and_links_the_sandbox_left_in_its_run_dir() {
    if !can_run() {
        return;
    }
    for rt in runtimes() {
        let m = marker();
        let d = Daemon::start();
        let id = create_on(&d, "victim", rt);
        create_on(&d, "neighbour", rt);
        // As deep as the run dir takes (the namespace runtime's is the
        // sandbox's own tmpfs of 256 inodes, gVisor's a host tmpfs of 64),
        // with a link to the host dir at every level. Trees deeper than the
        // 32 dirs the daemon holds open while deleting are hostfs's unit
        // tests (a run dir cannot hold one any more).
        d.sh(
            "victim",
            &format!(
                "cd /run/dwell && i=0; \
                 while [ $i -lt 100 ] && mkdir d 2>/dev/null && cd d && \
                 ln -s {} host 2>/dev/null; do i=$((i+1)); done; [ $i -ge 20 ]",
                m.dir.display()
            ),
        );
        d.ok(&["rm", "-f", "victim"]);
        let state = d.data.join("sandboxes").join(&id);
        assert!(
            !state.exists(),
            "{rt}: rm left {}; daemon log:\n{}",
            state.display(),
            tail(&d.log(), 20)
        );
        m.assert_intact("rm of a deep run dir");
        neighbour_ok(&d, "neighbour");
        d.ok(&["rm", "-f", "neighbour"]);
    }
}
