//! [`TcpTunnel`]: a TCP connection the agent made from inside the sandbox,
//! as an `AsyncRead + AsyncWrite` byte stream over one protocol stream.
//!
//! Both directions are flow-controlled like file and stdin streams: what
//! the tunnel writes waits for the agent's window, and what the agent sends
//! is credited back when the tunnel's reader takes it, so a reader that
//! stops reading holds the sandbox's socket back instead of filling the
//! daemon's memory (at most one window, 256 KiB, per direction).
//! `shutdown()` half-closes (an `Eof` frame; the agent shuts down the
//! socket's write side); the agent's `Eof` is the reader's end of file.
//! Dropping the tunnel cancels the stream, and the agent closes the socket.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::conn::{Inbound, Stream, StreamSender};
use crate::error::Error;
use crate::frame::{Kind, DATA_CHUNK};
use crate::messages::{ErrorKind, RemoteError};

type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + 'static>>;

/// A TCP connection from inside a sandbox (see [`crate::AgentClient::connect_tcp`]).
pub struct TcpTunnel {
    stream: Stream,
    sender: StreamSender,
    peer: String,
    /// Received bytes not yet read.
    pending: Bytes,
    /// The agent closed its direction (Eof) or ended the stream.
    read_closed: bool,
    /// The stream ended with this error; reads and writes report it.
    failed: Option<(io::ErrorKind, String)>,
    /// This side sent `Eof`.
    write_closed: bool,
    /// Waits for the agent's window to open when it is exhausted.
    waiting: Option<Acquire>,
}

impl std::fmt::Debug for TcpTunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTunnel")
            .field("peer", &self.peer)
            .field("read_closed", &self.read_closed)
            .field("write_closed", &self.write_closed)
            .finish_non_exhaustive()
    }
}

/// The `io::ErrorKind` of an agent's error on a tunnel.
fn io_kind(e: &RemoteError) -> io::ErrorKind {
    match e.kind {
        ErrorKind::ConnectionRefused => io::ErrorKind::ConnectionRefused,
        ErrorKind::Unreachable => io::ErrorKind::HostUnreachable,
        _ => io::ErrorKind::ConnectionReset,
    }
}

impl TcpTunnel {
    pub(crate) fn new(stream: Stream, peer: String) -> Self {
        let sender = stream.sender();
        TcpTunnel {
            stream,
            sender,
            peer,
            pending: Bytes::new(),
            read_closed: false,
            failed: None,
            write_closed: false,
            waiting: None,
        }
    }

    /// The address the agent connected to, as `ip:port` inside the sandbox.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    fn fail(&mut self, kind: io::ErrorKind, msg: String) -> io::Error {
        self.read_closed = true;
        self.failed = Some((kind, msg.clone()));
        io::Error::new(kind, msg)
    }

    fn failure(&self) -> Option<io::Error> {
        self.failed
            .as_ref()
            .map(|(k, m)| io::Error::new(*k, m.clone()))
    }

    /// Takes the next message from the agent into `pending` (or closes).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.pending.is_empty() && !self.read_closed {
            let m = match self.stream.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(m) => m,
            };
            match m {
                Ok(Inbound::Data(b)) => self.pending = b,
                Ok(Inbound::Eof) | Ok(Inbound::End(Ok(_))) => self.read_closed = true,
                Ok(Inbound::End(Err(e))) => {
                    let k = io_kind(&e);
                    return Poll::Ready(Err(self.fail(
                        k,
                        format!("tunnel to {}: {}: {}", self.peer, e.kind, e.message),
                    )));
                }
                Ok(Inbound::Event(_) | Inbound::Stdout(_) | Inbound::Stderr(_)) => {
                    let msg = "the agent sent a message that does not belong on a tcp tunnel";
                    return Poll::Ready(Err(self.fail(io::ErrorKind::InvalidData, msg.into())));
                }
                Err(e) => {
                    let msg = format!("tunnel to {}: {e}", self.peer);
                    return Poll::Ready(Err(self.fail(io::ErrorKind::ConnectionAborted, msg)));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TcpTunnel {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.is_empty() {
            if let Some(e) = this.failure() {
                return Poll::Ready(Err(e));
            }
        }
        match this.poll_fill(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => {}
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

fn closed_window(sender: &StreamSender, peer: &str) -> io::Error {
    let why = match sender.check_open() {
        Err(Error::Invalid(_)) | Ok(()) => "the tunnel was closed by the sandbox".to_string(),
        Err(e) => e.to_string(),
    };
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        format!("tunnel to {peer}: {why}"),
    )
}

impl AsyncWrite for TcpTunnel {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.failure() {
            return Poll::Ready(Err(e));
        }
        if this.write_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("tunnel to {}: written after shutdown", this.peer),
            )));
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let window: Arc<Semaphore> = this.sender.window().clone();
        loop {
            if let Some(w) = this.waiting.as_mut() {
                match w.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    // The permit goes back on drop: it only said the window opened.
                    Poll::Ready(Ok(_permit)) => this.waiting = None,
                    Poll::Ready(Err(_)) => {
                        this.waiting = None;
                        return Poll::Ready(Err(closed_window(&this.sender, &this.peer)));
                    }
                }
            }
            let n = buf.len().min(DATA_CHUNK).min(window.available_permits());
            if n == 0 {
                if window.is_closed() {
                    return Poll::Ready(Err(closed_window(&this.sender, &this.peer)));
                }
                this.waiting = Some(Box::pin(window.clone().acquire_many_owned(1)));
                continue;
            }
            match window.try_acquire_many(n as u32) {
                Ok(p) => p.forget(),
                Err(tokio::sync::TryAcquireError::Closed) => {
                    return Poll::Ready(Err(closed_window(&this.sender, &this.peer)))
                }
                Err(tokio::sync::TryAcquireError::NoPermits) => continue,
            }
            return Poll::Ready(match this.sender.data_with_window(&buf[..n]) {
                Ok(()) => Ok(n),
                Err(_) => Err(closed_window(&this.sender, &this.peer)),
            });
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Frames go to the connection's writer as they are written.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_closed {
            return Poll::Ready(Ok(()));
        }
        this.write_closed = true;
        this.waiting = None;
        match this.sender.frame(Kind::Eof, b"") {
            Ok(()) => Poll::Ready(Ok(())),
            // The stream already ended: nothing left to close.
            Err(Error::Invalid(_)) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("tunnel to {}: {e}", this.peer),
            ))),
        }
    }
}
