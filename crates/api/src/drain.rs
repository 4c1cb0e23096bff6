//! Reading what is left of a refused upload's body. A server that answers
//! an upload early (bad metadata, a paused sandbox, no access) and closes
//! the connection leaves a client that is still sending with a broken
//! pipe instead of the answer (a client that sends its whole body before
//! reading never sees it). So the refusal is answered at once and the
//! rest of the body is read and dropped behind it, bounded: at most
//! [`DRAIN_MAX`] bytes when the request was authorized and
//! [`DRAIN_MAX_UNAUTHORIZED`] when not (wrong token, unknown sandbox: no
//! stranger makes the daemon read much), for at most [`DRAIN_TIME`],
//! ended when no byte comes for [`DRAIN_STALL`], and at most
//! [`MAX_DRAINS`] at once in the whole process (beyond that the body is
//! dropped and the connection closed behind the answer). A client that
//! sent `Expect: 100-continue` has not sent the body yet when nothing
//! read it: it gets the answer and nothing is read (the server never asks
//! for the body).
//!
//! [`refused_bodies`] does this for every route of the REST API: a
//! request with a body that is answered with an error (an over-quota
//! build, a bad key, an unknown sandbox) has the rest of its body drained
//! behind the answer, whichever layer refused it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::{Body, BodyDataStream};
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Most bytes of a refused, authorized body read and dropped.
pub const DRAIN_MAX: u64 = 256 << 20;
/// Most bytes of a refused body read and dropped when the request was
/// not authorized.
pub const DRAIN_MAX_UNAUTHORIZED: u64 = 1 << 20;
/// Longest a refused body is read for.
pub const DRAIN_TIME: Duration = Duration::from_secs(15);
/// A drain with no byte coming for this long ends.
pub const DRAIN_STALL: Duration = Duration::from_secs(2);
/// Drains running at once in the process; more are not started.
pub const MAX_DRAINS: usize = 16;

/// The process-wide drain slots.
static DRAINS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(MAX_DRAINS)));

/// Reads and drops `body` in the background, at most `max` bytes (see
/// the module doc for the other bounds). False when [`MAX_DRAINS`] are
/// already running: then `body` is dropped unread.
pub fn spawn<S, E: Send + 'static>(body: S, max: u64) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
{
    spawn_under(&DRAINS, body, max)
}

fn spawn_under<S, E: Send + 'static>(slots: &Arc<Semaphore>, body: S, max: u64) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
{
    let Ok(permit) = slots.clone().try_acquire_owned() else {
        tracing::debug!("not draining a refused upload: {MAX_DRAINS} drains are running");
        return false;
    };
    tokio::spawn(drain_stream(body, max, permit));
    true
}

/// Reads `body` until it ends, `max` bytes have come, no byte comes for
/// [`DRAIN_STALL`] or [`DRAIN_TIME`] has passed; returns the bytes read.
async fn drain_stream<S, E>(mut body: S, max: u64, _slot: OwnedSemaphorePermit) -> u64
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let end = tokio::time::Instant::now() + DRAIN_TIME;
    let mut seen = 0u64;
    loop {
        let left = end.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return seen;
        }
        match tokio::time::timeout(left.min(DRAIN_STALL), body.next()).await {
            Ok(Some(Ok(c))) => {
                seen += c.len() as u64;
                if seen > max {
                    return seen;
                }
            }
            _ => return seen,
        }
    }
}

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

    /// Reads and drops the rest of the body (bounded; less when not
    /// `authorized`), in the background while the refusal is answered: a
    /// client that reads answers early gets it at once, one that first
    /// sends its whole body finds the answer waiting, and neither has the
    /// connection closed under it. Nothing is read when the client waits
    /// for a `100 Continue` that was never asked for.
    pub fn drain(&self, h: &HeaderMap, authorized: bool) {
        if expects_continue(h) && !self.started.load(Ordering::Relaxed) {
            return;
        }
        let max = if authorized {
            DRAIN_MAX
        } else {
            DRAIN_MAX_UNAUTHORIZED
        };
        spawn(self.stream(), max);
    }
}

/// Middleware: every request that carries a body reads it through a
/// [`Shared`], and an error answer (4xx or 5xx) has what the handler left
/// of it drained behind the answer (bounded as the module doc says; the
/// small bound for 401 and 403). Requests without a body pass untouched.
pub async fn refused_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !has_body(req.headers()) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let shared = Shared::new(body);
    let headers = parts.headers.clone();
    let req = axum::extract::Request::from_parts(parts, Body::from_stream(shared.stream()));
    let response = next.run(req).await;
    let status = response.status();
    if status.is_client_error() || status.is_server_error() {
        let authorized = !matches!(
            status,
            axum::http::StatusCode::UNAUTHORIZED | axum::http::StatusCode::FORBIDDEN
        );
        shared.drain(&headers, authorized);
    }
    response
}

/// Whether a request's headers announce a body: a non-zero
/// `Content-Length` or any `Transfer-Encoding`.
fn has_body(h: &HeaderMap) -> bool {
    if h.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() != "0")
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

    fn slots(n: usize) -> Arc<Semaphore> {
        Arc::new(Semaphore::new(n))
    }

    #[tokio::test]
    async fn drains_what_the_handler_left() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..10).map(|_| Ok(Bytes::from(vec![0u8; 1000]))).collect();
        let body = Body::from_stream(futures_util::stream::iter(chunks));
        let shared = Shared::new(body);
        let mut s = shared.stream();
        assert_eq!(s.next().await.unwrap().unwrap().len(), 1000);
        drop(s);
        let permit = slots(1).try_acquire_owned().unwrap();
        assert_eq!(drain_stream(shared.stream(), DRAIN_MAX, permit).await, 9000);
        assert!(shared.inner.lock().await.next().await.is_none());
    }

    /// An endless body: chunks of 64 KiB for ever.
    fn endless() -> BodyStream {
        Box::pin(futures_util::stream::repeat_with(|| {
            Ok(Bytes::from(vec![0u8; 64 << 10]))
        }))
    }

    #[tokio::test]
    async fn a_drain_stops_at_its_byte_cap() {
        let permit = slots(1).try_acquire_owned().unwrap();
        let n = drain_stream(endless(), DRAIN_MAX_UNAUTHORIZED, permit).await;
        assert!(
            n > DRAIN_MAX_UNAUTHORIZED && n <= DRAIN_MAX_UNAUTHORIZED + (64 << 10),
            "{n}"
        );
    }

    #[tokio::test]
    async fn a_drain_without_progress_ends() {
        // One chunk, then nothing ever again.
        let body: BodyStream = Box::pin(
            futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))])
                .chain(futures_util::stream::pending()),
        );
        let start = tokio::time::Instant::now();
        let permit = slots(1).try_acquire_owned().unwrap();
        assert_eq!(drain_stream(body, DRAIN_MAX, permit).await, 3);
        let took = start.elapsed();
        assert!(took >= DRAIN_STALL && took < DRAIN_STALL * 2, "{took:?}");
    }

    #[tokio::test]
    async fn drains_beyond_the_cap_are_not_started() {
        let slots = slots(2);
        let stalled = || -> BodyStream { Box::pin(futures_util::stream::pending()) };
        assert!(spawn_under(&slots, stalled(), DRAIN_MAX));
        assert!(spawn_under(&slots, stalled(), DRAIN_MAX));
        assert!(
            !spawn_under(&slots, stalled(), DRAIN_MAX),
            "a third at once"
        );
        // The stalled ones end and give their slots back.
        tokio::time::sleep(DRAIN_STALL + Duration::from_millis(500)).await;
        assert_eq!(slots.available_permits(), 2);
        assert!(spawn_under(&slots, stalled(), DRAIN_MAX));
    }

    /// A client that sends all of a 32 MiB body before it reads, to a
    /// unix-socket server whose handler refuses without reading it: with
    /// [`refused_bodies`] in front it gets the refusal; without, its write
    /// breaks (the case the layer exists for).
    async fn send_all_then_read(with_layer: bool) -> std::io::Result<String> {
        async fn refuse() -> (axum::http::StatusCode, &'static str) {
            (axum::http::StatusCode::CONFLICT, "over the cap")
        }
        let dir =
            std::env::temp_dir().join(format!("dwell-drain-{}-{}", std::process::id(), with_layer));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("api.sock");
        let mut app = axum::Router::new().route("/up", axum::routing::put(refuse));
        if with_layer {
            app = app.layer(axum::middleware::from_fn(refused_bodies));
        }
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
            let size = 32usize << 20;
            write!(
                s,
                "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
            )?;
            let chunk = vec![0u8; 1 << 20];
            for _ in 0..size / chunk.len() {
                s.write_all(&chunk)?;
            }
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .await
        .unwrap();
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
        answer
    }

    #[tokio::test]
    async fn a_refused_upload_gets_its_answer_after_sending_everything() {
        let answer = send_all_then_read(true)
            .await
            .expect("the client is answered");
        assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
        assert!(answer.contains("over the cap"), "{answer}");
        // Without the layer the same client loses the answer: the test
        // can fail.
        assert!(send_all_then_read(false).await.is_err());
    }

    #[tokio::test]
    async fn a_client_waiting_for_continue_is_not_read() {
        let shared = Shared::new(Body::from("x"));
        let mut h = HeaderMap::new();
        h.insert(header::EXPECT, "100-continue".parse().unwrap());
        shared.drain(&h, true);
        tokio::task::yield_now().await;
        assert!(shared.inner.lock().await.next().await.is_some());
    }
}
