//! Shared helpers of the namespace runtime's integration tests: a sandbox
//! guard that stops the sandbox and removes its files on drop, a minimal
//! image layer, and a client for the test init's one-line protocol.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dwell_runtime::ns::{NamespaceRuntime, NsOptions};
use dwell_runtime::{NetworkMode, Resources, RootfsSpec, Runtime, SandboxConfig, Started};

/// What the runtime tests need root for (see `dwell_testkit::has_root`).
pub const NEEDS: &str = "namespaces, cgroups, mounts";

/// A cgroup parent unique to this test binary's run.
pub fn cgroup_parent() -> String {
    format!("dwelltest-{}", std::process::id())
}

pub fn options() -> NsOptions {
    let mut o = NsOptions::new(env!("CARGO_BIN_EXE_dwell-ns-boot"), vec![]);
    o.cgroup_parent = cgroup_parent();
    o
}

/// A minimal image layer: merged-/usr symlinks and a few files in /etc.
pub fn make_layer(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        symlink(target, dir.join(link)).unwrap();
    }
    for d in [
        "usr", "etc", "tmp", "proc", "sys", "dev", "run", "root", "mnt",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(dir.join("etc/group"), "root:x:0:\ntty:x:5:\n").unwrap();
}

/// A uid range of its own for each test sandbox (user namespaces, as the
/// daemon gives them), from the top slots, far from a daemon's first ones.
pub fn test_id_map() -> dwell_runtime::IdMap {
    use dwell_runtime::ns::userns::{range_of_slot, MAX_SLOTS};
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let slot = MAX_SLOTS - 1 - (std::process::id() % 512) * 16 - n % 16;
    range_of_slot(slot).unwrap()
}

/// Runs a shell command through the test init's one-line protocol on
/// `sock` (the command, then its output and `__exit=<code>`), waiting at
/// most `limit` for the answer: (exit code, output).
pub fn init_exec(sock: &Path, cmd: &str, limit: Duration) -> (i32, String) {
    let mut s = UnixStream::connect(sock).expect("connect to the test init");
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(format!("{cmd}\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read command output");
    let (body, code) = out
        .rsplit_once("\n__exit=")
        .unwrap_or_else(|| panic!("no exit line in {out:?}"));
    (code.trim().parse().unwrap(), body.to_string())
}

/// One test sandbox; stopped and removed on drop, even when the test fails.
pub struct TestSandbox {
    pub rt: NamespaceRuntime,
    pub config: SandboxConfig,
    pub dir: tempfile::TempDir,
}

impl TestSandbox {
    pub fn new(name: &str) -> TestSandbox {
        TestSandbox::with_options(name, options())
    }

    /// A sandbox whose runtime uses `opts` (e.g. another pool size).
    pub fn with_options(name: &str, opts: NsOptions) -> TestSandbox {
        let dir = tempfile::Builder::new()
            .prefix("dwell-ns-test-")
            .tempdir()
            .unwrap();
        let layer = dir.path().join("layer");
        make_layer(&layer);
        let id = format!("{name}-{}", std::process::id());
        let config = SandboxConfig {
            id: id.clone(),
            hostname: format!("sb-{name}"),
            rootfs: RootfsSpec {
                layers: vec![layer],
                host_dirs: vec![PathBuf::from("/usr")],
                upper_root: dir.path().join("volume"),
            },
            resources: Resources {
                vcpus: 1.0,
                memory_bytes: 256 << 20,
                pids: 256,
            },
            env: BTreeMap::from([("DWELL_TEST".to_string(), "1".to_string())]),
            network: NetworkMode::None,
            state_dir: dir.path().join("state"),
            agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_dwell-ns-testinit")),
            agent_key: None,
            grants: Default::default(),
            id_map: Some(test_id_map()),
            private_nets: Vec::new(),
            egress: Default::default(),
            binds: Vec::new(),
        };
        TestSandbox {
            rt: NamespaceRuntime::new(opts).unwrap(),
            config,
            dir,
        }
    }

    pub fn start(&self) -> Started {
        match self.rt.start(&self.config) {
            Ok(s) => s,
            Err(e) => panic!("start failed: {e}"),
        }
    }

    /// Run a shell command in the sandbox: (exit code, output).
    pub fn exec(&self, cmd: &str) -> (i32, String) {
        let sock = self.config.state_dir.join("agent/agent.sock");
        init_exec(&sock, cmd, Duration::from_secs(60))
    }

    /// Run and expect success; returns trimmed output.
    pub fn ok(&self, cmd: &str) -> String {
        let (code, out) = self.exec(cmd);
        assert_eq!(code, 0, "{cmd:?} failed with {code}: {out}");
        out.trim().to_string()
    }
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        if let Err(e) = self.rt.stop(&self.config) {
            eprintln!("cleanup: stopping {} failed: {e}", self.config.id);
        }
        self.rt.remove_cgroup_parent();
    }
}
