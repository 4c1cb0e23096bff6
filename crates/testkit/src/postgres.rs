//! A real PostgreSQL server for tests: Debian's `postgresql` binaries,
//! `initdb` and `pg_ctl` in a temp dir (as the `postgres` user: the server
//! refuses root), listening on a free loopback port with trust auth for
//! the `dwell` role. One server per test process ([`Postgres::shared`]),
//! one fresh database per test ([`Postgres::database`]). The server and its
//! dir go when the test process ends, however it ends: a reaper in a
//! session of its own waits for the process's pipe to close, then stops
//! the server (`-m immediate`) and removes the dir. Tests skip with the
//! reason printed when the binaries are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use crate::process::free_port;
use crate::skip::skip;

/// A running server.
pub struct Postgres {
    pub port: u16,
    /// The PEM certificate of the CA that signed the server's TLS
    /// certificate (for 127.0.0.1); None when openssl is missing (the
    /// server then speaks no TLS).
    pub ca_pem: Option<Vec<u8>>,
    bin: PathBuf,
    dir: PathBuf,
    databases: AtomicU32,
    /// The reaper's stdin: closed when this process ends.
    _reaper: std::process::ChildStdin,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// `cmd` run as the `postgres` user when this process is root.
fn as_postgres(bin: &Path, tool: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, in
/// `dir` (the key readable by the postgres user only); the CA's PEM.
fn make_certificates(dir: &Path) -> Result<Vec<u8>, String> {
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .map_err(|e| e.to_string())?;
    let d = dir.to_string_lossy();
    let steps: [&[&str]; 3] = [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{d}/ca.key"),
            "-out",
            &format!("{d}/ca.crt"),
            "-subj",
            "/CN=dwell test CA",
            "-days",
            "2",
        ],
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{d}/server.key"),
            "-out",
            &format!("{d}/server.csr"),
            "-subj",
            "/CN=127.0.0.1",
        ],
        &[
            "x509",
            "-req",
            "-in",
            &format!("{d}/server.csr"),
            "-CA",
            &format!("{d}/ca.crt"),
            "-CAkey",
            &format!("{d}/ca.key"),
            "-CAcreateserial",
            "-out",
            &format!("{d}/server.crt"),
            "-days",
            "2",
            "-extfile",
            &format!("{d}/server.ext"),
        ],
    ];
    for args in steps {
        let mut c = Command::new("openssl");
        c.args(args).stdout(Stdio::null());
        run(c, "openssl")?;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres")
            .arg(dir.join("server.key"))
            .arg(dir.join("server.crt"));
        run(c, "chown of the server's key")?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| e.to_string())?;
    std::fs::read(dir.join("ca.crt")).map_err(|e| e.to_string())
}

impl Postgres {
    /// This process's server, started on first use; `None` (the reason
    /// printed) when PostgreSQL is not installed.
    pub fn shared() -> Option<&'static Postgres> {
        static PG: OnceLock<Result<Postgres, String>> = OnceLock::new();
        match PG.get_or_init(Postgres::start) {
            Ok(p) => Some(p),
            Err(why) => {
                skip(why);
                None
            }
        }
    }

    fn start() -> Result<Postgres, String> {
        let bin = bin_dir().ok_or(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); install it with scripts/install-deps.sh (apt-get install postgresql)",
        )?;
        let dir = std::env::temp_dir().join(format!("dwell-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        // The reaper first, so that nothing below outlives this process.
        let mut reaper = Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(
                "read _; runuser -u postgres -- \"$1/pg_ctl\" -D \"$2/data\" -m immediate stop \
                 >/dev/null 2>&1; rm -rf \"$2\"",
            )
            .arg("reaper")
            .arg(&bin)
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the PostgreSQL reaper: {e}"))?;
        let reaper_in = reaper.stdin.take().expect("piped");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown of the PostgreSQL dir",
            )?;
        }
        let data = dir.join("data");
        let mut init = as_postgres(&bin, "initdb");
        init.arg("-D")
            .arg(&data)
            .args(["-U", "dwell", "-A", "trust", "-E", "UTF8", "--no-sync"]);
        run(init, "initdb")?;
        // Without certificates the suites still run, over plain
        // connections: said, so that it is not missed.
        let ca_pem = match make_certificates(&dir) {
            Ok(pem) => Some(pem),
            Err(e) => {
                skip(&format!(
                    "TLS to the test PostgreSQL (plain connections instead): {e}"
                ));
                None
            }
        };
        let tls = if ca_pem.is_some() {
            format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.display()
            )
        } else {
            String::new()
        };
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut start = as_postgres(&bin, "pg_ctl");
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args([
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &format!(
                        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                     -c synchronous_commit=off -c full_page_writes=off -c max_connections=300{tls}",
                        dir.display()
                    ),
                    "start",
                ]);
            match run(start, "pg_ctl start") {
                Ok(()) => {
                    return Ok(Postgres {
                        port,
                        ca_pem,
                        bin,
                        dir,
                        databases: AtomicU32::new(0),
                        _reaper: reaper_in,
                    })
                }
                Err(e) => {
                    last = format!(
                        "{e}\n{}",
                        std::fs::read_to_string(dir.join("log")).unwrap_or_default()
                    )
                }
            }
        }
        Err(last)
    }

    /// A new, empty database; its URL.
    pub fn database(&self, prefix: &str) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        let mut c = Command::new(self.bin.join("createdb"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "dwell",
        ])
        .arg(&name);
        if let Err(e) = run(c, "createdb") {
            panic!("{e}");
        }
        self.url(&name)
    }

    /// The URL of database `name`.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://dwell@127.0.0.1:{}/{name}", self.port)
    }

    /// The server's dir (data, log, socket).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
