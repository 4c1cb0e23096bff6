//! What a request was authenticated with, kept for as long as its answer
//! lasts. Most answers end in milliseconds; a WebSocket (a terminal, an
//! attach), a streamed body (`logs --follow`, a large download) or a
//! handler still at work (an exec of a long command) can last days.
//! Revoking the API key, or revoking, logging out or outliving the console
//! session it was opened with, ends those too, within
//! [`AppState::recheck`] (`--credential-recheck`, 30 s): [`guarded`] (a
//! middleware inside the audit log's) stops a running handler with a 401
//! and cuts a long body; [`guard`] closes a WebSocket.
//!
//! The TCP listener's key middleware puts the [`Credential`] in the
//! request; a cluster's node listener rebuilds it from the forwarded
//! request ([`crate::forward::from_node`]), so that the node that owns a
//! sandbox ends a forwarded terminal itself. Requests on the unix socket
//! carry none (whoever can reach the socket is root on the host).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http_body::{Frame, SizeHint};

use crate::error::ApiError;
use crate::AppState;

/// How often a long answer checks that its credential still holds, by
/// default (`dwell serve --credential-recheck`, [`AppState::recheck`]).
pub const RECHECK: Duration = Duration::from_secs(30);

/// Bodies of at most this many bytes (of a known size) are sent whole at
/// once: not worth a guard.
const SMALL_BODY: u64 = 64 * 1024;

/// The credential of a request (a request extension).
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API key, by id.
    Key(String),
    /// A console session (its cookie).
    Session(dwell_store::ConsoleSession),
}

impl Credential {
    /// Whether it still holds: the key not revoked; the session not
    /// revoked, not expired and its key not revoked. `None` when the store
    /// could not say (a database blip does not end a day-long terminal;
    /// the next check decides). A session that holds is marked seen: what
    /// it has open is use, and does not idle out.
    pub fn holds(&self, st: &AppState) -> Option<bool> {
        match self {
            Credential::Key(id) => match st.ctl.api_key_by_id(id) {
                Ok(k) => Some(k.is_some_and(|k| k.revoked_at.is_none())),
                Err(e) => {
                    tracing::warn!("re-checking API key {id}: {e}");
                    None
                }
            },
            Credential::Session(s) => match crate::session::by_id(st, &s.id) {
                Ok(Some(mut now)) => {
                    if let Err(e) = st.ctl.touch_console_session(&mut now) {
                        tracing::warn!("marking console session {} seen: {e}", s.id);
                    }
                    Some(true)
                }
                Ok(None) => Some(false),
                Err(_) => None,
            },
        }
    }

    /// For the log: which key or session.
    pub fn describe(&self) -> String {
        match self {
            Credential::Key(id) => format!("API key {id}"),
            Credential::Session(s) => format!("console session {}", s.id),
        }
    }
}

/// Resolves once `cred` no longer holds (checked every
/// [`AppState::recheck`], off the async threads); never without one.
pub async fn ended(st: AppState, cred: Option<Credential>) {
    let Some(cred) = cred else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(st.recheck).await;
        let (st2, c2) = (st.clone(), cred.clone());
        let holds = tokio::task::spawn_blocking(move || c2.holds(&st2))
            .await
            .unwrap_or(None);
        if holds == Some(false) {
            tracing::info!(
                "{} no longer holds: ending what is open with it",
                cred.describe()
            );
            return;
        }
    }
}

/// Runs `fut` (a WebSocket's whole life) and ends it once `cred` no
/// longer holds: a socket outlives no revocation or logout.
pub async fn guard<F: Future<Output = ()>>(st: AppState, cred: Option<Credential>, fut: F) {
    tokio::select! {
        () = fut => {}
        () = ended(st, cred) => {}
    }
}

/// Middleware: a request with a [`Credential`] is stopped (401) if it
/// no longer holds while its handler runs, as when its client goes away;
/// a body longer than a few KiB is cut with an error once it no longer
/// holds (the client sees a broken transfer, not an end it could take for
/// the whole answer). A switch to a WebSocket is left to [`guard`].
pub async fn guarded(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cred) = req.extensions().get::<Credential>().cloned() else {
        return next.run(req).await;
    };
    let res = tokio::select! {
        res = next.run(req) => res,
        () = ended(st.clone(), Some(cred.clone())) => {
            return ApiError::unauthorized(
                "the API key or console session of this request was revoked or expired while \
                 it ran; it was stopped (what it had done stays done)",
            )
            .into_response_();
        }
    };
    let small = http_body::Body::size_hint(res.body())
        .exact()
        .is_some_and(|n| n <= SMALL_BODY);
    if small || res.status() == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        return res;
    }
    res.map(|body| {
        Body::new(GuardedBody {
            body,
            end: Some(Box::pin(ended(st, Some(cred)))),
        })
    })
}

/// A body that ends with an error once its credential no longer holds;
/// its size hint is the inner body's (a `Content-Length` stays).
struct GuardedBody {
    body: Body,
    /// `None` once it fired (the body then ends).
    end: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl http_body::Body for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        // The check first: a body that is always ready (a fast producer,
        // a reader keeping up) must not keep it from running.
        let Some(end) = self.end.as_mut() else {
            return Poll::Ready(None);
        };
        if end.as_mut().poll(cx).is_ready() {
            self.end = None;
            return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::other(
                "the credential this answer was opened with was revoked or expired",
            )))));
        }
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
