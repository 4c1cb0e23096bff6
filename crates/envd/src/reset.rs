//! Connections that end with a reset (a TCP RST) instead of an orderly
//! close when a handler asks for it: [`ConnectionReset`] is the request
//! extension a handler arms, [`ResettableTcp`] the client socket that obeys
//! it. Every listener that serves the envd router (the daemon's
//! `--e2b-sandbox-listen` and the port proxy's `sandbox.D`/`49983-ID.D`,
//! plain or under TLS) wraps its accepted sockets in one and hands each
//! request the connection's [`ConnectionReset`].

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The connection a request came on, as its listener hands it to the
/// handlers (a request extension): a handler arms it to have the
/// connection reset (a TCP RST) instead of closed when the connection
/// ends. A process stream of a sandbox that went away ends so, as on
/// E2B, where the SDKs read a reset as "the sandbox is gone" (they then
/// ask `/health`), and an orderly close as a broken response.
#[derive(Debug, Clone, Default)]
pub struct ConnectionReset(Arc<AtomicBool>);

impl ConnectionReset {
    /// Reset the connection when it ends.
    pub fn arm(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether [`Self::arm`] was called.
    pub fn armed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// An accepted client socket that ends with a reset once its
/// [`ConnectionReset`] is armed: a shutdown then sends no FIN, and the
/// drop closes the socket with a zero linger (the kernel sends RST).
///
/// Under TLS, wrap the socket before the TLS acceptor: the reset then
/// happens beneath TLS. hyper drops a connection whose response body
/// failed (how an armed stream ends) without shutting it down, so no
/// close_notify is sent either: the client sees the reset only.
pub struct ResettableTcp {
    io: TcpStream,
    reset: ConnectionReset,
}

impl ResettableTcp {
    /// Wraps `io`; arming `reset` makes it end with a reset.
    pub fn new(io: TcpStream, reset: ConnectionReset) -> ResettableTcp {
        ResettableTcp { io, reset }
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.io
    }
}

impl AsyncRead for ResettableTcp {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableTcp {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.reset.armed() {
            // No FIN: the drop resets the connection.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Drop for ResettableTcp {
    fn drop(&mut self) {
        if !self.reset.armed() {
            return;
        }
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the descriptor is this open socket's (closed only after
        // this drop); `linger` is a valid `struct linger` of the size given.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.io),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            tracing::debug!("cannot reset a connection: {}", io::Error::last_os_error());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The peer of a connection whose wrapper was dropped (after
    /// `shutdown`) reads what was written, then a reset when armed and an
    /// end of stream when not.
    async fn peer_sees(armed: bool) -> io::Result<Vec<u8>> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(l.local_addr()?).await?;
        let (server, _) = l.accept().await?;
        let reset = ConnectionReset::default();
        let mut s = ResettableTcp::new(server, reset.clone());
        s.write_all(b"part").await?;
        s.flush().await?;
        // Let the bytes arrive before the reset (an RST discards what
        // the peer has not read yet only on its side, not in flight).
        let mut got = vec![0u8; 4];
        client.read_exact(&mut got).await?;
        if armed {
            reset.arm();
        }
        s.shutdown().await?;
        drop(s);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await?;
        got.extend(rest);
        Ok(got)
    }

    #[tokio::test]
    async fn armed_connections_are_reset_others_closed() {
        assert_eq!(peer_sees(false).await.unwrap(), b"part");
        let e = peer_sees(true).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}");
    }
}
