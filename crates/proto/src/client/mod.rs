//! [`AgentClient`]: the daemon's async client for one agent connection.
//!
//! Cheap to clone (all clones share the connection). Any number of calls and
//! process streams may run concurrently. When the connection dies, every
//! pending and future call fails with [`Error::Unreachable`] or
//! [`Error::Protocol`]; unary calls are also bounded by a call timeout.

mod conn;
mod files;
mod process;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use conn::MAX_QUEUED_EVENTS;
pub use files::{FileReader, FileWriter};
pub use process::{ProcessEvent, ProcessInput, ProcessOutput, ProcessStream};
pub use watch::{FsEvent, Watcher};

use crate::error::{Error, Result};
use crate::frame::{self, CodecError, FrameReader, Kind};
use crate::messages::{
    Event, ExecRequest, FileInfo, Health, Hello, ProcessInfo, Request, WriteOptions,
};
use crate::PROTOCOL_VERSION;
use conn::{Conn, Inbound, Stream};

/// Default bound on connecting plus handshaking.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on a unary call (and on the first reply of a streaming call).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A multiplexing client of one agent connection.
#[derive(Clone)]
pub struct AgentClient {
    conn: Arc<Conn>,
    call_timeout: Duration,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentClient")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

impl AgentClient {
    /// Connects to an agent's unix socket and handshakes, within [`CONNECT_TIMEOUT`].
    pub async fn connect_unix(path: &Path) -> Result<AgentClient> {
        let fut = async {
            let s = tokio::net::UnixStream::connect(path).await.map_err(|e| {
                Error::Unreachable(format!(
                    "cannot connect to the agent socket {}: {e} (is the sandbox running?)",
                    path.display()
                ))
            })?;
            Self::handshake(s).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: format!("the connection handshake on {}", path.display()),
                ms: CONNECT_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// Handshakes over any byte stream (pipes, vsock, ...), within [`CONNECT_TIMEOUT`].
    pub async fn from_stream(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    ) -> Result<AgentClient> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(stream)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: "the connection handshake".into(),
                ms: CONNECT_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    async fn handshake(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    ) -> Result<AgentClient> {
        let (r, mut w) = tokio::io::split(stream);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            software: format!("dwell-proto {}", env!("CARGO_PKG_VERSION")),
            error: None,
        };
        let payload = serde_json::to_vec(&hello).expect("hello serializes");
        w.write_all(&frame::encode(0, Kind::Hello, &payload).expect("a small hello"))
            .await
            .map_err(|e| Error::Unreachable(format!("sending the handshake failed: {e}")))?;
        w.flush()
            .await
            .map_err(|e| Error::Unreachable(format!("sending the handshake failed: {e}")))?;
        let mut reader = FrameReader::new(r);
        let f = match reader.next().await {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(Error::Unreachable(
                    "the agent closed the connection during the handshake".into(),
                ))
            }
            Err(CodecError::Io(e)) => {
                return Err(Error::Unreachable(format!("handshake read failed: {e}")))
            }
            Err(e) => return Err(Error::Protocol(format!("bad handshake reply: {e}"))),
        };
        if f.stream != 0 || f.kind != Kind::Hello {
            return Err(Error::Protocol(format!(
                "expected a Hello frame on stream 0, got {:?} on stream {}",
                f.kind, f.stream
            )));
        }
        let reply: Hello = serde_json::from_slice(&f.payload)
            .map_err(|e| Error::Protocol(format!("undecodable handshake reply: {e}")))?;
        if let Some(e) = reply.error {
            return Err(Error::Protocol(format!(
                "the agent ({}) refused the connection: {e}",
                reply.software
            )));
        }
        if reply.protocol != PROTOCOL_VERSION {
            return Err(Error::Protocol(format!(
                "agent {} speaks protocol {}, this client speaks {}; update the agent binary",
                reply.software, reply.protocol, PROTOCOL_VERSION
            )));
        }
        Ok(AgentClient {
            conn: Conn::start(reader, w),
            call_timeout: CALL_TIMEOUT,
        })
    }

    /// A clone of this client whose unary calls time out after `t`.
    pub fn with_call_timeout(&self, t: Duration) -> AgentClient {
        AgentClient {
            conn: self.conn.clone(),
            call_timeout: t,
        }
    }

    /// False once the connection has died (reconnect then).
    pub fn is_connected(&self) -> bool {
        !self.conn.is_dead()
    }

    /// Waits for the first message of a stream, bounded by the call timeout.
    async fn first(&self, s: &mut Stream, what: &str) -> Result<Inbound> {
        match tokio::time::timeout(self.call_timeout, s.recv()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: what.into(),
                ms: self.call_timeout.as_millis() as u64,
            }),
        }
    }

    async fn call<T: DeserializeOwned>(&self, req: Request, what: &str) -> Result<T> {
        let mut s = self.conn.open(&req)?;
        match self.first(&mut s, what).await? {
            Inbound::End(Ok(v)) => serde_json::from_value(v)
                .map_err(|e| Error::Protocol(format!("undecodable reply to {what}: {e}"))),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(format!(
                "unexpected message before the reply to {what}"
            ))),
        }
    }

    /// Agent version, uptime and process counts.
    pub async fn health(&self) -> Result<Health> {
        self.call(Request::Health, "health").await
    }

    /// Starts a process. Dropping the returned stream kills a foreground process.
    pub async fn exec(&self, req: ExecRequest) -> Result<ProcessStream> {
        req.command_line().map_err(Error::Invalid)?;
        let mut s = self.conn.open(&Request::Exec(req))?;
        match self.first(&mut s, "exec").await? {
            Inbound::Event(Event::Started { pid }) => Ok(ProcessStream::new(s, pid, None)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "exec reply did not start with Started".into(),
            )),
        }
    }

    /// Attaches to a process started through the agent: replays its recent
    /// output, then streams live output and its exit.
    pub async fn attach(&self, pid: u32) -> Result<ProcessStream> {
        let mut s = self.conn.open(&Request::Attach { pid })?;
        match self.first(&mut s, "attach").await? {
            Inbound::Event(Event::Attached { process }) => {
                Ok(ProcessStream::new(s, process.pid, Some(process)))
            }
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "attach reply did not start with Attached".into(),
            )),
        }
    }

    /// Make the agent stop listening (before a checkpoint): it answers,
    /// then closes its socket and every connection, this one included.
    /// The connection closing after the request was sent, before the
    /// answer arrived, counts as done; a connection already down is an
    /// error (nothing was sent).
    pub async fn unlisten(&self) -> Result<()> {
        // Fails when the connection is known to be down: nothing was sent.
        let mut s = self.conn.open(&Request::Unlisten)?;
        match self.first(&mut s, "unlisten").await {
            Ok(Inbound::End(Ok(_))) | Err(Error::Unreachable(_)) => Ok(()),
            Ok(Inbound::End(Err(e))) => Err(Error::Remote(e)),
            Ok(_) => Err(Error::Protocol(
                "unexpected message before the reply to unlisten".into(),
            )),
            Err(e) => Err(e),
        }
    }

    /// Processes started through the agent that it still remembers.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        self.call(Request::Processes, "processes").await
    }

    /// Sends `signal` to the process group of a process started through the agent.
    pub async fn signal(&self, pid: u32, signal: i32) -> Result<()> {
        self.call(Request::Signal { pid, signal }, "signal").await
    }

    /// Writes to the stdin of a process started through the agent (with
    /// `stdin: true` or a tty), without attaching to its output.
    pub async fn write_stdin(&self, pid: u32, data: bytes::Bytes) -> Result<()> {
        let mut s = self.conn.open(&Request::WriteStdin { pid })?;
        match self.first(&mut s, "write_stdin").await? {
            Inbound::Event(Event::Ready) => {}
            Inbound::End(Err(e)) => return Err(Error::Remote(e)),
            _ => {
                return Err(Error::Protocol(
                    "write_stdin reply did not start with Ready".into(),
                ))
            }
        }
        let mut w = FileWriter::new(s, self.call_timeout);
        w.write(data).await?;
        w.finish().await.map(|_| ())
    }

    /// Closes the stdin of a process started through the agent.
    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        self.call(Request::CloseStdin { pid }, "close_stdin").await
    }

    /// Resizes the PTY of a process started through the agent.
    pub async fn resize(&self, pid: u32, rows: u16, cols: u16) -> Result<()> {
        self.call(Request::Resize { pid, rows, cols }, "resize")
            .await
    }

    /// Opens a file for streamed reading.
    pub async fn read_file(&self, path: &str) -> Result<FileReader> {
        let mut s = self.conn.open(&Request::ReadFile { path: path.into() })?;
        match self.first(&mut s, "read_file").await? {
            Inbound::Event(Event::Opened { size }) => Ok(FileReader::new(s, size)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "read_file reply did not start with Opened".into(),
            )),
        }
    }

    /// Opens a file for streamed writing; send chunks, then `finish()`.
    pub async fn write_file(&self, path: &str, opts: WriteOptions) -> Result<FileWriter> {
        self.write_file_as(path, opts, None).await
    }

    /// [`AgentClient::write_file`] as a sandbox user (name or `uid[:gid]`):
    /// opened (and parents created) with that user's permissions, owned by it.
    pub async fn write_file_as(
        &self,
        path: &str,
        opts: WriteOptions,
        user: Option<&str>,
    ) -> Result<FileWriter> {
        let mut s = self.conn.open(&Request::WriteFile {
            path: path.into(),
            options: opts,
            user: user.map(Into::into),
        })?;
        match self.first(&mut s, "write_file").await? {
            Inbound::Event(Event::Ready) => Ok(FileWriter::new(s, self.call_timeout)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "write_file reply did not start with Ready".into(),
            )),
        }
    }

    /// Lists a directory; `depth` 0 or 1 lists direct entries, 2 also their children, ...
    pub async fn list_dir(&self, path: &str, depth: u32) -> Result<Vec<FileInfo>> {
        self.call(
            Request::ListDir {
                path: path.into(),
                depth,
            },
            "list_dir",
        )
        .await
    }

    /// Metadata of a path (symlinks are not followed).
    pub async fn stat(&self, path: &str) -> Result<FileInfo> {
        self.call(Request::Stat { path: path.into() }, "stat").await
    }

    /// Creates a directory (and its parents with `parents`, which also accepts an existing one).
    pub async fn mkdir(&self, path: &str, parents: bool) -> Result<()> {
        self.mkdir_as(path, parents, None).await
    }

    /// [`AgentClient::mkdir`] as a sandbox user (name or `uid[:gid]`).
    pub async fn mkdir_as(&self, path: &str, parents: bool, user: Option<&str>) -> Result<()> {
        self.call(
            Request::Mkdir {
                path: path.into(),
                parents,
                user: user.map(Into::into),
            },
            "mkdir",
        )
        .await
    }

    /// Removes a file, symlink or empty directory (any directory with `recursive`).
    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.remove_as(path, recursive, None).await
    }

    /// [`AgentClient::remove`] as a sandbox user (name or `uid[:gid]`).
    pub async fn remove_as(&self, path: &str, recursive: bool, user: Option<&str>) -> Result<()> {
        self.call(
            Request::Remove {
                path: path.into(),
                recursive,
                user: user.map(Into::into),
            },
            "remove",
        )
        .await
    }

    /// Renames (moves) a path.
    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.rename_as(from, to, None).await
    }

    /// [`AgentClient::rename`] as a sandbox user (name or `uid[:gid]`).
    pub async fn rename_as(&self, from: &str, to: &str, user: Option<&str>) -> Result<()> {
        self.call(
            Request::Rename {
                from: from.into(),
                to: to.into(),
                user: user.map(Into::into),
            },
            "rename",
        )
        .await
    }

    /// Changes the owner of a path (a symlink itself, not its target).
    pub async fn chown(&self, path: &str, uid: u32, gid: u32) -> Result<()> {
        self.call(
            Request::Chown {
                path: path.into(),
                uid,
                gid,
            },
            "chown",
        )
        .await
    }

    /// Watches a directory (and its subdirectories with `recursive`) for
    /// changes; the watch lasts until the [`Watcher`] is dropped.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watcher> {
        let mut s = self.conn.open(&Request::Watch {
            path: path.into(),
            recursive,
        })?;
        match self.first(&mut s, "watch").await? {
            Inbound::Event(Event::Watching) => Ok(Watcher::new(s)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "watch reply did not start with Watching".into(),
            )),
        }
    }
}
