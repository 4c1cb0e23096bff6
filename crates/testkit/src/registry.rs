//! A real OCI registry for tests: Debian's `docker-registry` (the
//! distribution project's v2 server) on 127.0.0.1 and a free port, with
//! its storage in a temporary directory, optionally behind htpasswd basic
//! auth (the bcrypt hash is made here). Killed and removed when dropped.
//! Tests skip with the reason printed when it or `skopeo` is missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, KillOnDrop};
use crate::skip::skip;

const BINARY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";

/// A running registry.
pub struct Registry {
    child: Option<KillOnDrop>,
    dir: tempfile::TempDir,
    pub port: u16,
    /// The user and password it requires, if any.
    pub auth: Option<(String, String)>,
}

impl Registry {
    /// Starts one (with htpasswd auth for `auth`) and waits until it
    /// answers; `None`, with the reason printed, when `docker-registry` or
    /// `skopeo` is not installed.
    pub fn start(auth: Option<(&str, &str)>) -> Option<Registry> {
        for tool in [BINARY, SKOPEO] {
            if !Path::new(tool).exists() {
                skip(&format!(
                    "{tool} is not installed; scripts/install-deps.sh installs it \
                     (apt packages docker-registry and skopeo)"
                ));
                return None;
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("dwell-registry-")
            .tempdir_in("/var/tmp")
            .expect("make a registry directory");
        let port = free_port();
        let mut auth_cfg = String::new();
        if let Some((user, pass)) = auth {
            let hash = bcrypt::hash(pass, 5).expect("bcrypt a password");
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n"))
                .expect("write htpasswd");
            auth_cfg = format!(
                "auth:\n  htpasswd:\n    realm: dwell-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: dwell-test-secret\n{auth_cfg}",
            dir.path().join("data").display()
        );
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child: Some(KillOnDrop(child)),
            dir,
            port,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let t0 = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "docker-registry did not listen on port {port} within 30 s: {}",
                reg.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(reg)
    }

    /// `127.0.0.1:PORT`, the host part of references to it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the OCI image layout `dir` as `repo:tag` (every manifest of
    /// an index too) with `skopeo copy`; panics on failure.
    pub fn push_layout(&self, dir: &Path, repo_tag: &str) {
        let mut cmd = Command::new(SKOPEO);
        cmd.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if let Some((u, p)) = &self.auth {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        cmd.arg(format!("oci:{}", dir.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host()));
        let out = cmd.output().expect("run skopeo");
        assert!(
            out.status.success(),
            "skopeo copy to {repo_tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Where the registry stores blob `sha256:<hex>` (to tamper with it).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// Stops the registry now (it also stops when dropped).
    pub fn stop(&mut self) {
        self.child.take();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.child.take();
    }
}
