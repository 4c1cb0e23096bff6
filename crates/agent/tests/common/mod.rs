//! Test harness: runs the real agent binary on a socket in a temporary
//! directory and stops it (and everything it started) on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dwell_proto::{AgentClient, ExecRequest, ProcessOutput};

pub const AGENT: &str = env!("CARGO_BIN_EXE_dwell-agent");

pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/dwell/agent.sock");
        let child = Command::new(AGENT)
            .arg("--listen")
            .arg(&sock)
            .stdin(Stdio::null())
            .spawn()
            .expect("start dwell-agent");
        let a = Agent { child, dir, sock };
        a.wait_for_socket();
        a
    }

    pub fn wait_for_socket(&self) {
        let t = Instant::now();
        while !self.sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "agent socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait (at most 5 s) until the agent has removed its socket.
    pub async fn wait_socket_gone(&self) {
        let t = Instant::now();
        while self.sock.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the socket did not go away"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn client(&self) -> AgentClient {
        AgentClient::connect_unix(&self.sock)
            .await
            .expect("connect to agent")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SIGTERM makes the agent stop everything it started; SIGKILL if it hangs.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(8) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn sh(c: &AgentClient, cmd: &str) -> ProcessOutput {
    c.exec(ExecRequest::shell(cmd))
        .await
        .expect("exec")
        .output(1 << 24)
        .await
        .expect("output")
}

pub fn s(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
