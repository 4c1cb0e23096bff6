//! Non-blocking file descriptors (pipes, PTY masters, stdio) driven by tokio's reactor.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Puts `fd` in non-blocking mode.
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own; no memory is passed.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn raw_read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid writable slice of buf.len() bytes.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn raw_write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is a valid readable slice of buf.len() bytes.
    let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// An owned non-blocking descriptor registered with the reactor.
pub struct Fd(AsyncFd<OwnedFd>);

impl Fd {
    /// Registers `fd` (made non-blocking) for the given interest.
    pub fn new(fd: OwnedFd, interest: Interest) -> io::Result<Fd> {
        set_nonblocking(fd.as_raw_fd())?;
        // SAFETY: OwnedFd keeps the descriptor open and unchanged for the
        // lifetime of the AsyncFd that owns it.
        let a =
            unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)?;
        Ok(Fd(a))
    }

    /// Reads once; `Ok(0)` at end of file. A PTY master's EIO counts as end of file.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut g = self.0.readable().await?;
            match g.try_io(|fd| raw_read(fd.as_raw_fd(), buf)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads without waiting: `Ok(None)` when nothing is available right now.
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match raw_read(self.0.as_raw_fd(), buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::EIO) => Ok(Some(0)),
            Err(e) => Err(e),
        }
    }

    /// Writes all of `buf`.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut g = self.0.writable().await?;
            match g.try_io(|fd| raw_write(fd.as_raw_fd(), buf)) {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

/// A readable descriptor as `AsyncRead` (used for `--stdio`).
pub struct FdReader(pub Fd);

impl AsyncRead for FdReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut g = ready!(self.0 .0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match g.try_io(|fd| raw_read(fd.as_raw_fd(), unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

/// A writable descriptor as `AsyncWrite` (used for `--stdio`).
pub struct FdWriter(pub Fd);

impl AsyncWrite for FdWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut g = ready!(self.0 .0.poll_write_ready(cx))?;
            match g.try_io(|fd| raw_write(fd.as_raw_fd(), buf)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
