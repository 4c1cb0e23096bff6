//! The table of processes started through the agent: their info, recent
//! output, live subscribers (exec and attach streams), stdin and PTY handles,
//! and the hand-off of exit statuses from the reaper.

use std::collections::{HashMap, VecDeque};
use std::os::fd::OwnedFd;
use std::sync::{Arc, LazyLock, Mutex};

use bytes::Bytes;
use dwell_proto::{ErrorKind, ExitStatus, ProcessInfo, RemoteError};
use tokio::sync::{mpsc, oneshot};

use crate::conn::Credit;
use crate::ring::Ring;

/// Exited processes remembered for `processes` and `attach`.
pub const MAX_EXITED: usize = 64;
/// Output kept for replay once a process has exited.
pub const EXITED_RING: usize = 16 * 1024;
/// Output chunks queued per subscriber before the process is held back.
pub const SUBSCRIBER_QUEUE: usize = 8;

/// What a subscriber receives.
#[derive(Debug)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExitStatus),
}

/// What the stdin writer of a process receives.
pub enum StdinMsg {
    Data(Bytes, Option<Credit>),
    Close,
}

struct Proc {
    info: ProcessInfo,
    ring: Ring,
    subs: Vec<mpsc::Sender<Output>>,
    stdin: Option<mpsc::UnboundedSender<StdinMsg>>,
    pty: Option<Arc<OwnedFd>>,
    exit_tx: Option<oneshot::Sender<i32>>,
}

/// Result of subscribing to a process.
pub struct Attachment {
    pub info: ProcessInfo,
    pub replay: Vec<(bool, Bytes)>,
    /// Live output, or the exit status if the process is already gone.
    pub live: Result<mpsc::Receiver<Output>, ExitStatus>,
}

#[derive(Default)]
pub struct Registry {
    procs: HashMap<u32, Proc>,
    exited: VecDeque<u32>,
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

/// Runs `f` with the registry locked (never across an await).
pub fn with<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    f(&mut REGISTRY.lock().unwrap_or_else(|p| p.into_inner()))
}

fn no_such(pid: u32) -> RemoteError {
    RemoteError::new(
        ErrorKind::NoSuchProcess,
        format!("no process {pid} was started through the agent (or it exited long ago); see `processes`"),
    )
}

impl Registry {
    /// Adds a freshly spawned process; returns the receiver of its exit status
    /// and, if `subscribe`, a live output receiver.
    pub fn insert(
        &mut self,
        info: ProcessInfo,
        stdin: Option<mpsc::UnboundedSender<StdinMsg>>,
        pty: Option<Arc<OwnedFd>>,
        subscribe: bool,
    ) -> (oneshot::Receiver<i32>, Option<mpsc::Receiver<Output>>) {
        let (exit_tx, exit_rx) = oneshot::channel();
        let mut subs = Vec::new();
        let rx = subscribe.then(|| {
            let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
            subs.push(tx);
            rx
        });
        // A pid can be reused after its previous owner was reaped.
        if self.procs.remove(&info.pid).is_some() {
            self.exited.retain(|p| *p != info.pid);
        }
        self.procs.insert(
            info.pid,
            Proc {
                info,
                ring: Ring::default(),
                subs,
                stdin,
                pty,
                exit_tx: Some(exit_tx),
            },
        );
        (exit_rx, rx)
    }

    /// Hands a reaped status to the process's supervisor; false for orphans.
    pub fn on_reaped(&mut self, pid: u32, status: i32) -> bool {
        match self.procs.get_mut(&pid).and_then(|p| p.exit_tx.take()) {
            Some(tx) => {
                let _ = tx.send(status);
                true
            }
            None => false,
        }
    }

    /// Records output; returns the subscribers to deliver it to.
    pub fn record_output(
        &mut self,
        pid: u32,
        stderr: bool,
        b: &Bytes,
    ) -> Vec<mpsc::Sender<Output>> {
        match self.procs.get_mut(&pid) {
            Some(p) => {
                p.ring.push(stderr, b.clone());
                if p.info.exit.is_some() {
                    p.ring.shrink_to(EXITED_RING);
                }
                p.subs.retain(|s| !s.is_closed());
                p.subs.clone()
            }
            None => Vec::new(),
        }
    }

    /// Marks a process exited; returns the subscribers to tell.
    pub fn finish(&mut self, pid: u32, status: ExitStatus) -> Vec<mpsc::Sender<Output>> {
        let subs = match self.procs.get_mut(&pid) {
            Some(p) => {
                p.info.running = false;
                p.info.exit = Some(status);
                p.ring.shrink_to(EXITED_RING);
                p.stdin = None;
                p.pty = None;
                std::mem::take(&mut p.subs)
            }
            None => return Vec::new(),
        };
        self.exited.push_back(pid);
        while self.exited.len() > MAX_EXITED {
            if let Some(old) = self.exited.pop_front() {
                self.procs.remove(&old);
            }
        }
        subs
    }

    /// Forgets an exited process at once (a health check's, so checks do
    /// not push users' processes out of the remembered ones).
    pub fn forget_exited(&mut self, pid: u32) {
        if self.procs.get(&pid).is_some_and(|p| !p.info.running) {
            self.procs.remove(&pid);
            self.exited.retain(|p| *p != pid);
        }
    }

    /// Subscribes to a process's output, with a replay of what it printed recently.
    pub fn attach(&mut self, pid: u32) -> Result<Attachment, RemoteError> {
        let p = self.procs.get_mut(&pid).ok_or_else(|| no_such(pid))?;
        let replay = p.ring.snapshot();
        let live = match p.info.exit {
            Some(st) => Err(st),
            None => {
                let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
                p.subs.push(tx);
                Ok(rx)
            }
        };
        Ok(Attachment {
            info: p.info.clone(),
            replay,
            live,
        })
    }

    /// All remembered processes, oldest first.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut v: Vec<ProcessInfo> = self.procs.values().map(|p| p.info.clone()).collect();
        v.sort_by_key(|p| (p.started_at_ms, p.pid));
        v
    }

    pub fn running_count(&self) -> usize {
        self.procs.values().filter(|p| p.info.running).count()
    }

    /// Pids of running processes (their process groups).
    pub fn running_pids(&self) -> Vec<u32> {
        self.procs
            .values()
            .filter(|p| p.info.running)
            .map(|p| p.info.pid)
            .collect()
    }

    /// Whether `pid` is a running process of ours.
    pub fn is_running(&self, pid: u32) -> bool {
        self.procs.get(&pid).is_some_and(|p| p.info.running)
    }

    /// The stdin writer of a running process.
    pub fn stdin(&self, pid: u32) -> Result<Option<mpsc::UnboundedSender<StdinMsg>>, RemoteError> {
        let p = self.procs.get(&pid).ok_or_else(|| no_such(pid))?;
        Ok(p.stdin.clone())
    }

    /// The PTY of a running process.
    pub fn pty(&self, pid: u32) -> Result<Arc<OwnedFd>, RemoteError> {
        let p = self.procs.get(&pid).ok_or_else(|| no_such(pid))?;
        p.pty.clone().ok_or_else(|| {
            RemoteError::new(
                ErrorKind::InvalidArgument,
                format!("process {pid} has no tty (or has exited); only tty execs can be resized"),
            )
        })
    }
}
