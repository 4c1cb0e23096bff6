//! [`AgentClient`]: the daemon's async client for one agent connection.
//!
//! Cheap to clone (all clones share the connection). Any number of calls and
//! process streams may run concurrently. When the connection dies, every
//! pending and future call fails with [`Error::Unreachable`] or
//! [`Error::Protocol`]; unary calls are also bounded by a call timeout.

mod conn;
mod files;
mod process;
mod service;
mod sleep;
mod tunnel;
mod watch;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

pub use conn::{MAX_QUEUED_DATA_FRAMES, MAX_QUEUED_EVENTS, MAX_QUEUED_EVENT_BYTES};
pub use files::{FileReader, FileWriter};
pub use process::{ProcessEvent, ProcessInput, ProcessOutput, ProcessStream};
pub use service::{LogChunk, ServiceLogs};
pub use sleep::{SleepGate, WakeHook};
pub use tunnel::TcpTunnel;
pub use watch::{FsEvent, WatchFlusher, WatchItem, Watcher};

use crate::auth::{self, AgentKey, Side};
use crate::error::{Error, Result};
use crate::frame::{self, CodecError, FrameReader, Kind};
use crate::messages::{
    Event, ExecRequest, FileInfo, Health, Hello, ProcessInfo, Request, WriteOptions,
};
use crate::{PROTOCOL_VERSION, UNAUTHENTICATED_PROTOCOL_VERSION};
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

/// Whom a connection must reach: the sandbox (named in errors) and the key
/// its agent must prove. Without a key the handshake is unauthenticated, and
/// an agent that has a key refuses it.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The sandbox's id or name, for error messages.
    pub sandbox: String,
    pub key: Option<AgentKey>,
}

impl AgentClient {
    /// Connects to an agent's unix socket and handshakes without a key,
    /// within [`CONNECT_TIMEOUT`] (tests and agents started without one).
    pub async fn connect_unix(path: &Path) -> Result<AgentClient> {
        let fut = async {
            let s = tokio::net::UnixStream::connect(path).await.map_err(|e| {
                Error::Unreachable(format!(
                    "cannot connect to the agent socket {}: {e} (is the sandbox running?)",
                    path.display()
                ))
            })?;
            Self::handshake(s, &Peer::default()).await
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: format!("the connection handshake on {}", path.display()),
                ms: CONNECT_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    /// Handshakes without a key over any byte stream (pipes, vsock, ...),
    /// within [`CONNECT_TIMEOUT`].
    pub async fn from_stream(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
    ) -> Result<AgentClient> {
        Self::from_stream_to(stream, &Peer::default()).await
    }

    /// Handshakes over any byte stream with the agent of `peer`, proving
    /// and checking its key when it has one, within [`CONNECT_TIMEOUT`].
    pub async fn from_stream_to(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        peer: &Peer,
    ) -> Result<AgentClient> {
        match tokio::time::timeout(CONNECT_TIMEOUT, Self::handshake(stream, peer)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                what: "the connection handshake".into(),
                ms: CONNECT_TIMEOUT.as_millis() as u64,
            }),
        }
    }

    async fn handshake(
        stream: impl AsyncRead + AsyncWrite + Send + Unpin + 'static,
        peer: &Peer,
    ) -> Result<AgentClient> {
        let (r, mut w) = tokio::io::split(stream);
        let nonce = auth::random()
            .map_err(|e| Error::Unreachable(format!("no random bytes for the handshake: {e}")))?;
        // Without a key, the version every agent accepts (see
        // UNAUTHENTICATED_PROTOCOL_VERSION); an agent with a key refuses it.
        let version = match peer.key {
            Some(_) => PROTOCOL_VERSION,
            None => UNAUTHENTICATED_PROTOCOL_VERSION,
        };
        let hello = Hello {
            protocol: version,
            software: software(),
            error: None,
            nonce: Some(auth::encode_hex(&nonce)),
            proof: None,
        };
        send_hello(&mut w, &hello).await?;
        let mut reader = FrameReader::new(r);
        let reply = read_hello(&mut reader).await?;
        if let Some(e) = reply.error {
            if version == UNAUTHENTICATED_PROTOCOL_VERSION && reply.protocol == PROTOCOL_VERSION {
                return Err(Error::Unauthenticated(format!(
                    "the agent of {} has a key and this client has none: {e}",
                    if peer.sandbox.is_empty() {
                        "the sandbox"
                    } else {
                        &peer.sandbox
                    }
                )));
            }
            return Err(Error::Protocol(format!(
                "the agent ({}) refused the connection: {e}",
                reply.software
            )));
        }
        // Without a key either version will do: their frames are the same.
        let understood =
            reply.protocol == version || (peer.key.is_none() && reply.protocol == PROTOCOL_VERSION);
        if !understood {
            return Err(Error::Protocol(format!(
                "agent {} speaks protocol {}, this client speaks {}; update the agent binary \
                 (restart the sandbox)",
                reply.software, reply.protocol, version
            )));
        }
        if let Some(proof) = authenticate(peer, &nonce, &reply)? {
            // Sent before any request, without waiting for an answer: a
            // wrong proof makes the agent drop the connection.
            send_hello(&mut w, &proof).await?;
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

    /// Opens a stream for `req`, waking a sleeping agent first (see
    /// [`sleep`]).
    async fn open(&self, req: &Request) -> Result<Stream> {
        let gate = self.conn.gate();
        let _opening = gate.enter().await?;
        self.conn.open(req, &gate)
    }

    /// Make this connection's calls pass `gate`, the sleep gate of its
    /// sandbox shared by all its connections (see [`sleep`]). Give it
    /// before the first call.
    pub fn use_sleep_gate(&self, gate: Arc<SleepGate>) {
        *self.conn.sleep.lock().unwrap() = gate;
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
        let mut s = self.open(&req).await?;
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
        let mut s = self.open(&Request::Exec(req)).await?;
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
        let mut s = self.open(&Request::Attach { pid }).await?;
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
        let mut s = self.open(&Request::Unlisten).await?;
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
        let mut s = self.open(&Request::WriteStdin { pid }).await?;
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
        let mut s = self.open(&Request::ReadFile { path: path.into() }).await?;
        match self.first(&mut s, "read_file").await? {
            Inbound::Event(Event::Opened { size }) => Ok(FileReader::new(s, path, size)),
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
        self.write_file_with(path, opts, user, None).await
    }

    /// [`AgentClient::write_file_as`] that also replaces the file's
    /// extended attributes under a prefix before any data is sent (the
    /// agent must report [`crate::FEATURE_XATTRS`]; an older one ignores
    /// `xattrs`).
    pub async fn write_file_with(
        &self,
        path: &str,
        opts: WriteOptions,
        user: Option<&str>,
        xattrs: Option<crate::XattrSet>,
    ) -> Result<FileWriter> {
        let mut s = self
            .open(&Request::WriteFile {
                path: path.into(),
                options: opts,
                user: user.map(Into::into),
                xattrs,
            })
            .await?;
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
        self.list_dir_with(path, depth, None).await
    }

    /// [`AgentClient::list_dir`] reporting each entry's extended attributes
    /// whose names start with `xattrs`.
    pub async fn list_dir_with(
        &self,
        path: &str,
        depth: u32,
        xattrs: Option<&str>,
    ) -> Result<Vec<FileInfo>> {
        self.call(
            Request::ListDir {
                path: path.into(),
                depth,
                xattrs: xattrs.map(Into::into),
            },
            "list_dir",
        )
        .await
    }

    /// Metadata of a path (symlinks are not followed).
    pub async fn stat(&self, path: &str) -> Result<FileInfo> {
        self.stat_with(path, None).await
    }

    /// [`AgentClient::stat`] reporting the extended attributes whose names
    /// start with `xattrs`.
    pub async fn stat_with(&self, path: &str, xattrs: Option<&str>) -> Result<FileInfo> {
        self.call(
            Request::Stat {
                path: path.into(),
                xattrs: xattrs.map(Into::into),
            },
            "stat",
        )
        .await
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

    /// Connects to `host:port` from inside the sandbox (its own network
    /// namespace, so `127.0.0.1` is the sandbox's loopback) and returns
    /// the connection as a byte stream. `host` is an IP address,
    /// `localhost` or a name in the sandbox's `/etc/hosts`. Nothing
    /// listening fails with [`Error::Remote`] of kind
    /// [`ErrorKind::ConnectionRefused`](crate::ErrorKind::ConnectionRefused);
    /// an address that cannot be reached (within the agent's 10 s connect
    /// timeout) with kind [`ErrorKind::Unreachable`](crate::ErrorKind::Unreachable).
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<TcpTunnel> {
        let mut s = self
            .open(&Request::Connect {
                host: host.into(),
                port,
            })
            .await?;
        match self.first(&mut s, "connect").await? {
            Inbound::Event(Event::Connected { peer }) => Ok(TcpTunnel::new(s, peer)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "connect reply did not start with Connected".into(),
            )),
        }
    }

    /// Sets (or with `None` removes) the sandbox's service; the same
    /// definition again changes nothing. `Ok(None)` when none is set.
    pub async fn service_set(
        &self,
        service: Option<crate::service::ServiceSpec>,
    ) -> Result<Option<crate::service::ServiceStatus>> {
        self.call(Request::ServiceSet { service }, "service_set")
            .await
    }

    /// The service's state, `None` when the sandbox has none.
    pub async fn service_status(&self) -> Result<Option<crate::service::ServiceStatus>> {
        self.call(Request::ServiceStatus, "service_status").await
    }

    /// Starts, stops or restarts the service.
    pub async fn service_control(
        &self,
        action: crate::service::ServiceAction,
    ) -> Result<crate::service::ServiceStatus> {
        self.call(Request::ServiceControl { action }, "service_control")
            .await
    }

    /// The service's recorded output (the newest `tail` lines, since
    /// `since_ms`), then with `follow` its live output.
    pub async fn service_logs(
        &self,
        follow: bool,
        tail: Option<u64>,
        since_ms: Option<u64>,
    ) -> Result<ServiceLogs> {
        let mut s = self
            .open(&Request::ServiceLogs {
                follow,
                tail,
                since_ms,
            })
            .await?;
        match self.first(&mut s, "service_logs").await? {
            Inbound::Event(Event::Ready) => Ok(ServiceLogs::new(s)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "service_logs reply did not start with Ready".into(),
            )),
        }
    }

    /// Watches a directory (and its subdirectories with `recursive`) for
    /// changes; the watch lasts until the [`Watcher`] is dropped.
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<Watcher> {
        let mut s = self
            .open(&Request::Watch {
                path: path.into(),
                recursive,
                flush: true,
            })
            .await?;
        match self.first(&mut s, "watch").await? {
            Inbound::Event(Event::Watching { flush }) => Ok(Watcher::new(s, flush)),
            Inbound::End(Err(e)) => Err(Error::Remote(e)),
            _ => Err(Error::Protocol(
                "watch reply did not start with Watching".into(),
            )),
        }
    }
}

fn software() -> String {
    format!("dwell-proto {}", env!("CARGO_PKG_VERSION"))
}

async fn send_hello(w: &mut (impl AsyncWrite + Unpin), hello: &Hello) -> Result<()> {
    let payload = serde_json::to_vec(hello).expect("hello serializes");
    let f = frame::encode(0, Kind::Hello, &payload).expect("a small hello");
    w.write_all(&f)
        .await
        .map_err(|e| Error::Unreachable(format!("sending the handshake failed: {e}")))?;
    w.flush()
        .await
        .map_err(|e| Error::Unreachable(format!("sending the handshake failed: {e}")))
}

async fn read_hello<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Hello> {
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
    if f.payload.len() > frame::MAX_HELLO_PAYLOAD {
        return Err(Error::Protocol(format!(
            "the handshake reply is {} bytes, above the {} byte limit for a Hello; \
             the peer is not a dwell agent or is compromised",
            f.payload.len(),
            frame::MAX_HELLO_PAYLOAD
        )));
    }
    serde_json::from_slice(&f.payload)
        .map_err(|e| Error::Protocol(format!("undecodable handshake reply: {e}")))
}

/// Checks the agent's reply against `peer`'s key; returns the client's
/// proof to send, None for an unauthenticated connection. Fails closed:
/// an agent that cannot prove the key is not the sandbox's.
fn authenticate(peer: &Peer, nonce: &[u8; auth::LEN], reply: &Hello) -> Result<Option<Hello>> {
    let who = if peer.sandbox.is_empty() {
        "the sandbox".to_string()
    } else {
        format!("sandbox {}", peer.sandbox)
    };
    let Some(key) = &peer.key else {
        if reply.proof.is_some() {
            return Err(Error::Unauthenticated(format!(
                "the agent of {who} requires its key, and this client has none; \
                 connect through the daemon, which keeps the key in the sandbox's config"
            )));
        }
        return Ok(None);
    };
    let (Some(agent_nonce), Some(proof)) = (&reply.nonce, &reply.proof) else {
        return Err(Error::Unauthenticated(format!(
            "the agent that answered for {who} did not prove the sandbox's key (it runs \
             without one, or is not {who}'s agent); refusing it. Restart the sandbox so its \
             agent gets its key"
        )));
    };
    let agent_nonce = auth::decode_hex(agent_nonce).ok_or_else(|| {
        Error::Unauthenticated(format!(
            "the agent that answered for {who} sent a malformed nonce"
        ))
    })?;
    if !key.verify(Side::Agent, nonce, &agent_nonce, proof) {
        return Err(Error::Unauthenticated(format!(
            "the agent that answered is not {who}'s agent: its handshake proof does not \
             match {who}'s key. The connection was refused; the sandbox may have redirected \
             its agent socket. Restart it to get its own agent back"
        )));
    }
    let mine = key.proof(Side::Client, nonce, &agent_nonce);
    Ok(Some(Hello {
        protocol: PROTOCOL_VERSION,
        software: software(),
        error: None,
        nonce: None,
        proof: Some(auth::encode_hex(&mine)),
    }))
}
