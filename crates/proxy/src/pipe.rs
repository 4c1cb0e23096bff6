//! Bytes both ways between two streams (a WebSocket or CONNECT tunnel),
//! until both sides have closed or nothing moved for the idle limit.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream that notes when bytes last came out of it.
struct Watched<S> {
    inner: S,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = self.start.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Copies between `a` and `b` both ways (half-closes pass through) until
/// both directions end, or no byte moved for `idle`. Returns the bytes
/// copied `a -> b` and `b -> a`, or why it stopped early.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration) -> Result<(u64, u64), String>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Watched {
        inner: a,
        start,
        last: last.clone(),
    };
    let mut b = Watched {
        inner: b,
        start,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        tokio::select! {
            r = &mut copy => return r.map_err(|e| e.to_string()),
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now_since = Duration::from_millis(last.load(Ordering::Relaxed));
                if start + now_since + idle <= Instant::now() {
                    return Err(format!("idle for {} s", idle.as_secs()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_and_times_out_when_idle() {
        let (mut c1, p1) = tokio::io::duplex(1024);
        let (p2, mut c2) = tokio::io::duplex(1024);
        let t = tokio::spawn(pipe(p1, p2, Duration::from_millis(300)));
        c1.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        c2.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        // Nothing moves: the pipe gives up.
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert!(r.unwrap_err().contains("idle"));
    }

    #[tokio::test]
    async fn ends_when_both_sides_close() {
        let (mut c1, p1) = tokio::io::duplex(1024);
        let (p2, mut c2) = tokio::io::duplex(1024);
        let t = tokio::spawn(pipe(p1, p2, Duration::from_secs(30)));
        c1.write_all(b"abc").await.unwrap();
        c1.shutdown().await.unwrap();
        let mut got = Vec::new();
        c2.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"abc");
        c2.write_all(b"de").await.unwrap();
        c2.shutdown().await.unwrap();
        let mut back = Vec::new();
        c1.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"de");
        assert_eq!(t.await.unwrap().unwrap(), (3, 2));
    }
}
