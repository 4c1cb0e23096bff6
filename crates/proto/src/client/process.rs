//! [`ProcessStream`] (events of one exec or attach) and [`ProcessInput`]
//! (its clonable stdin / resize / signal handle).

use bytes::Bytes;

use super::conn::{Inbound, Stream, StreamSender};
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::messages::{Control, Event, ExitStatus, ProcessInfo};

/// One event of a process stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// Always the first event.
    Started {
        pid: u32,
    },
    /// Standard output (all output for a tty).
    Stdout(Bytes),
    Stderr(Bytes),
    /// Always the last event.
    Exit(ExitStatus),
}

/// Everything a process printed, and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

/// The events of one exec or attach. Dropping it before `Exit` kills a
/// foreground exec's process group; background processes keep running.
pub struct ProcessStream {
    stream: Stream,
    pid: u32,
    info: Option<ProcessInfo>,
    started_sent: bool,
    finished: bool,
    error: Option<Error>,
}

impl ProcessStream {
    pub(crate) fn new(stream: Stream, pid: u32, info: Option<ProcessInfo>) -> Self {
        ProcessStream {
            stream,
            pid,
            info,
            started_sent: false,
            finished: false,
            error: None,
        }
    }

    /// The process id (inside the sandbox).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// For an attach: the process as the agent knew it when attaching.
    pub fn info(&self) -> Option<&ProcessInfo> {
        self.info.as_ref()
    }

    /// A handle to write stdin, resize the tty and signal the process.
    pub fn input(&self) -> ProcessInput {
        ProcessInput {
            sender: self.stream.sender(),
        }
    }

    /// The error that ended the stream early, if `next()` returned `None` without `Exit`.
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// The next event; `Ok(None)` after `Exit`; `Err` if the connection died
    /// or the agent reported an error.
    pub async fn try_next(&mut self) -> Result<Option<ProcessEvent>> {
        if !self.started_sent {
            self.started_sent = true;
            return Ok(Some(ProcessEvent::Started { pid: self.pid }));
        }
        if self.finished {
            return Ok(None);
        }
        loop {
            let m = match self.stream.recv().await {
                Ok(m) => m,
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            };
            return match m {
                Inbound::Stdout(b) => Ok(Some(ProcessEvent::Stdout(b))),
                Inbound::Stderr(b) => Ok(Some(ProcessEvent::Stderr(b))),
                Inbound::Data(_) | Inbound::Eof => Err(Error::Protocol(
                    "agent sent file data on a process stream".into(),
                )),
                Inbound::Event(Event::Started { .. } | Event::Attached { .. }) => continue,
                Inbound::Event(e) => Err(Error::Protocol(format!(
                    "unexpected event {e:?} on a process stream"
                ))),
                Inbound::End(r) => {
                    self.finished = true;
                    match r {
                        Ok(v) => serde_json::from_value(v)
                            .map(|s| Some(ProcessEvent::Exit(s)))
                            .map_err(|e| Error::Protocol(format!("undecodable exit status: {e}"))),
                        Err(e) => Err(Error::Remote(e)),
                    }
                }
            };
        }
    }

    /// The next event, `None` at the end; if the stream broke, `error()` says why.
    pub async fn next(&mut self) -> Option<ProcessEvent> {
        match self.try_next().await {
            Ok(e) => e,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }

    /// Collects all output until the process exits, at most `max` bytes of
    /// stdout and stderr together: more is [`Error::TooLarge`] (the stream
    /// is dropped, which cancels it in the agent; the process goes on). A
    /// process in a sandbox can print without end, so whoever holds its
    /// output in memory must bound it this way.
    pub async fn output(mut self, max: u64) -> Result<ProcessOutput> {
        let mut out = ProcessOutput {
            stdout: Vec::new(),
            stderr: Vec::new(),
            status: ExitStatus::default(),
        };
        while let Some(ev) = self.try_next().await? {
            match ev {
                ProcessEvent::Started { .. } => {}
                ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b)
                    if (out.stdout.len() + out.stderr.len() + b.len()) as u64 > max =>
                {
                    return Err(Error::TooLarge {
                        what: format!("the output of process {}", self.pid()),
                        max,
                    });
                }
                ProcessEvent::Stdout(b) => out.stdout.extend_from_slice(&b),
                ProcessEvent::Stderr(b) => out.stderr.extend_from_slice(&b),
                ProcessEvent::Exit(s) => {
                    out.status = s;
                    return Ok(out);
                }
            }
        }
        Err(Error::Protocol(
            "process stream ended without an exit status".into(),
        ))
    }

    /// True once the exit (or an error) was received.
    pub fn is_finished(&self) -> bool {
        self.finished || self.stream.is_done()
    }
}

/// Clonable input side of a process stream.
#[derive(Clone)]
pub struct ProcessInput {
    sender: StreamSender,
}

impl ProcessInput {
    /// Writes to the process's stdin (waits when the agent's window is full).
    pub async fn write_stdin(&self, data: Bytes) -> Result<()> {
        self.sender.data(data).await
    }

    /// Closes stdin (sends end-of-file; on a tty, the EOF character).
    pub async fn close_stdin(&self) -> Result<()> {
        self.sender.frame(Kind::Eof, b"")
    }

    /// Resizes the tty.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        self.control(&Control::Resize { rows, cols })
    }

    /// Sends a signal to the process group.
    pub async fn signal(&self, signal: i32) -> Result<()> {
        self.control(&Control::Signal { signal })
    }

    fn control(&self, c: &Control) -> Result<()> {
        let p = serde_json::to_vec(c).expect("control serializes");
        self.sender.frame(Kind::Control, &p)
    }
}
