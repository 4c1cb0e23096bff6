//! A real S3 server for tests: `moto_server` (PyPI `moto[server]`) on a
//! free local port, killed when dropped. Tests skip with the reason
//! printed when it is not installed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{free_port, KillOnDrop};
use crate::skip::skip;

/// A running `moto_server`.
pub struct Moto {
    _child: KillOnDrop,
    pub port: u16,
}

impl Moto {
    /// Starts one and waits (at most 30 s) until it listens; `None` (with
    /// the reason printed) when moto_server cannot run here.
    pub fn start() -> Option<Moto> {
        let port = free_port();
        let child = match Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                skip(&format!(
                    "cannot run moto_server ({e}); install it with scripts/install-deps.sh (pip install 'moto[server]')"
                ));
                return None;
            }
        };
        let moto = Moto {
            _child: KillOnDrop(child),
            port,
        };
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not listen on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(moto)
    }

    /// A server with the bucket `dwell`, whose credentials (`testing`)
    /// are exported in the standard variables (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`), where daemons this test starts take them.
    pub fn start_for_daemons() -> Option<Moto> {
        let moto = Moto::start()?;
        moto.make_bucket("dwell");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        Some(moto)
    }

    /// Its endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` with a bare HTTP request (moto checks no
    /// signatures); panics unless moto answers 200.
    /// A connection reset (moto still starting its workers on a loaded
    /// machine) is retried for up to 10 s.
    pub fn make_bucket(&self, bucket: &str) {
        let port = self.port;
        let once = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            write!(
                s,
                "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut resp = String::new();
            s.read_to_string(&mut resp)?;
            Ok(resp)
        };
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let resp = loop {
            match once() {
                Ok(r) => break r,
                Err(e) if std::time::Instant::now() < end => {
                    eprintln!("moto: create bucket {bucket}: {e}; retrying");
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => panic!("create bucket {bucket}: {e}"),
            }
        };
        assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    }
}
