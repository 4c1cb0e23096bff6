//! What a TCP request was authenticated with, kept for as long as its
//! answer lasts. Most answers end in milliseconds; a WebSocket (a terminal,
//! an attach) or a streamed body (`logs --follow`, an events stream, a long
//! download) can last days. Revoking the API key, or revoking, logging out
//! or outliving the console session it was opened with, ends those too:
//! [`guard`] closes a WebSocket, [`guard_body`] cuts a stream, and the
//! key middleware ([`crate::auth::api_key`]) stops a handler still at work,
//! within [`AppState::recheck`] (`--credential-recheck`, 30 s) of that. Requests on the unix socket carry no credential
//! (whoever can reach the socket is root on the host).

use std::time::Duration;

use axum::body::Body;
use futures_util::StreamExt;

use crate::AppState;

/// How often a long answer checks that its credential still holds, by
/// default (`dwell serve --credential-recheck`, [`AppState::recheck`]).
pub const RECHECK: Duration = Duration::from_secs(30);

/// The credential of a TCP request (a request extension).
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
    /// the next check decides).
    pub fn holds(&self, st: &AppState) -> Option<bool> {
        match self {
            Credential::Key(id) => match st.ctl.api_key_by_id(id) {
                Ok(k) => Some(k.is_some_and(|k| k.revoked_at.is_none())),
                Err(e) => {
                    tracing::warn!("re-checking API key {id}: {e}");
                    None
                }
            },
            Credential::Session(s) => crate::session::still_valid(st, s),
        }
    }

    fn describe(&self) -> String {
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
                "{} no longer holds: ending its open answer",
                cred.describe()
            );
            return;
        }
    }
}

/// Runs `fut` (a WebSocket's whole life) and ends it once `cred` no
/// longer holds: a socket outlives no revocation or logout.
pub async fn guard<F: std::future::Future<Output = ()>>(
    st: AppState,
    cred: Option<Credential>,
    fut: F,
) {
    tokio::select! {
        () = fut => {}
        () = ended(st, cred) => {}
    }
}

/// `body` (a streamed answer), cut with an error once `cred` no longer
/// holds: the client sees a broken transfer, not a clean end it could
/// take for the whole answer.
pub fn guard_body(st: AppState, cred: Credential, body: Body) -> Body {
    let state = (
        Box::pin(body.into_data_stream()),
        Box::pin(ended(st, Some(cred))),
        false,
    );
    let stream = futures_util::stream::unfold(state, |(mut data, mut end, cut)| async move {
        if cut {
            return None;
        }
        tokio::select! {
            biased;
            item = data.next() => {
                item.map(|r| (r.map_err(std::io::Error::other), (data, end, false)))
            }
            () = &mut end => {
                let e = std::io::Error::other(
                    "the credential this answer was opened with was revoked or expired",
                );
                Some((Err(e), (data, end, true)))
            }
        }
    });
    Body::from_stream(stream)
}
