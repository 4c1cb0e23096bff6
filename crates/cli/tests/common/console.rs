//! A daemon with a TCP listener, where the web console is served, for the
//! console suites (`console.rs` over HTTP, `console_browser.rs` in
//! Chromium).

use std::process::Output;

use dwell_testkit::daemon::{can_run, Daemon};
use dwell_testkit::http::wait_listening;
use dwell_testkit::process::{free_port, stderr, stdout};

pub struct Console {
    pub d: Daemon,
    /// The TCP listener (`--listen`): the API and the console at /ui/.
    pub addr: String,
}

impl Console {
    /// `None` (a skip is printed) where sandboxes cannot run.
    pub fn start() -> Option<Console> {
        Self::start_with(&[])
    }

    /// [`Console::start`] with more `serve` flags.
    pub fn start_with(extra: &[&str]) -> Option<Console> {
        if !can_run() {
            return None;
        }
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--listen", addr.as_str()];
        args.extend_from_slice(extra);
        let d = Daemon::start_with(&args);
        wait_listening(&addr, 20);
        Some(Console { d, addr })
    }

    /// `dwell <args>` over TCP with `key`.
    pub fn run(&self, key: &str, args: &[&str]) -> Output {
        self.d
            .cmd(args)
            .env("DWELL_HOST", &self.addr)
            .env("DWELL_API_KEY", key)
            .output()
            .unwrap()
    }

    /// [`Console::run`], which must succeed: its stdout.
    pub fn ok(&self, key: &str, args: &[&str]) -> String {
        let out = self.run(key, args);
        assert!(out.status.success(), "dwell {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}
