//! Reading what is left of a refused upload's body. A server that answers
//! an upload early (bad metadata, a paused sandbox, no access) and closes
//! the connection leaves a client that is still sending with a broken
//! pipe instead of the answer (a client that sends its whole body before
//! reading never sees it). So the refusal is answered at once and the
//! rest of the body is read and dropped behind it, at most [`DRAIN_MAX`]
//! bytes for at most [`DRAIN_TIME`]. A client that sent `Expect:
//! 100-continue` has not sent the body yet when nothing read it: it gets
//! the answer and nothing is read (the server never asks for the body).

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::Mutex;

/// Most bytes of a refused body read and dropped.
pub const DRAIN_MAX: u64 = 256 << 20;
/// Longest a refused body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(15);

/// An upload body as a stream of chunks.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, axum::Error>> + Send>>;

/// A request body that the handler reads through [`Shared::stream`] and
/// that can be drained after a refusal.
pub struct Shared {
    inner: Arc<Mutex<BodyDataStream>>,
    started: Arc<AtomicBool>,
}

impl Shared {
    pub fn new(body: Body) -> Self {
        Shared {
            inner: Arc::new(Mutex::new(body.into_data_stream())),
            started: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The body's chunks, for the handler.
    pub fn stream(&self) -> BodyStream {
        let started = self.started.clone();
        Box::pin(futures_util::stream::unfold(
            self.inner.clone(),
            move |inner| {
                started.store(true, Ordering::Relaxed);
                async move {
                    let next = inner.lock().await.next().await;
                    next.map(|c| (c, inner))
                }
            },
        ))
    }

    /// Reads and drops the rest of the body (bounded), in the background
    /// while the refusal is answered: a client that reads answers early
    /// gets it at once, one that first sends its whole body finds the
    /// answer waiting, and neither has the connection closed under it.
    /// Nothing is read when the client waits for a `100 Continue` that was
    /// never asked for.
    pub fn drain(&self, h: &HeaderMap) {
        if expects_continue(h) && !self.started.load(Ordering::Relaxed) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(drain_stream(inner));
    }
}

async fn drain_stream(inner: Arc<Mutex<BodyDataStream>>) {
    let _ = tokio::time::timeout(DRAIN_TIME, async move {
        let mut s = inner.lock().await;
        let mut seen = 0u64;
        while let Some(Ok(c)) = s.next().await {
            seen += c.len() as u64;
            if seen > DRAIN_MAX {
                return;
            }
        }
    })
    .await;
}

/// Whether the request carries `Expect: 100-continue`.
pub fn expects_continue(h: &HeaderMap) -> bool {
    h.get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drains_what_the_handler_left() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![0u8; 1000]))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let shared = Shared::new(body);
        let mut s = shared.stream();
        assert_eq!(s.next().await.unwrap().unwrap().len(), 1000);
        drop(s);
        drain_stream(shared.inner.clone()).await;
        assert!(shared.inner.lock().await.next().await.is_none());
    }

    #[tokio::test]
    async fn a_client_waiting_for_continue_is_not_read() {
        let shared = Shared::new(Body::from("x"));
        let mut h = HeaderMap::new();
        h.insert(header::EXPECT, "100-continue".parse().unwrap());
        shared.drain(&h);
        tokio::task::yield_now().await;
        assert!(shared.inner.lock().await.next().await.is_some());
    }
}
