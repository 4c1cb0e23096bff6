//! The E2B "envd" data plane: what the E2B SDKs talk to inside a sandbox,
//! served by the dwell daemon on top of each sandbox's agent.
//!
//! * Connect RPC with the JSON codec over HTTP/1.1 ([`connect`]): the
//!   services `process.Process` (`process.rs`) and `filesystem.Filesystem`
//!   (`filesystem.rs`, watchers in `watch.rs`).
//! * Plain HTTP: `GET /health`, `GET /files` and `POST /files`
//!   (`files.rs`, multipart in `multipart.rs`), with signed URLs
//!   (`signature.rs`).
//!
//! Requests name their sandbox with `E2b-Sandbox-Id` or a
//! `49983-{id}.{domain}` host and prove access with `X-Access-Token`
//! (`sandbox.rs`); the user comes from Basic auth or `username`
//! (`users.rs`); the agent does a non-root user's file changes as that
//! user. The version reported to the SDK is [`ENVD_VERSION`].
//! In a cluster, requests for another node's sandbox are served by that
//! node ([`routers`], `cluster.rs`).
//! proto3 JSON details (int64 as strings, base64 bytes, RFC 3339 times,
//! Go file modes) are in [`pbjson`].

mod cluster;
pub mod connect;
mod files;
mod filesystem;
mod gunzip;
mod gzip;
mod multipart;
pub mod pbjson;
mod process;
mod reset;
mod sandbox;
mod signature;
mod users;
mod watch;

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::routing::{get, post};
use dwell_control::Controller;
use dwell_proto::AgentClient;

pub use reset::{ConnectionReset, ResettableTcp};
pub use sandbox::{id_from_host, ENVD_PORT};
pub use signature::sign;

/// The envd version whose behaviour this implementation matches; the
/// control plane reports it as `envdVersion` so that the SDK's feature
/// gates (octet-stream and gzip uploads, close_stdin, watch entries) pass.
pub const ENVD_VERSION: &str = "0.6.7";

/// Uploads that may run at once (each holds a decoder thread at most and a
/// few chunks of memory).
pub const MAX_UPLOADS: usize = 64;
/// How long an upload waits for a free slot before a 503.
const UPLOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Shared state of the envd router.
pub struct Envd {
    pub(crate) ctl: Arc<Controller>,
    pub(crate) users: users::Cache,
    pub(crate) watchers: watch::Watchers,
    /// Upload slots ([`MAX_UPLOADS`]).
    pub(crate) uploads: Arc<tokio::sync::Semaphore>,
    /// Scans of the sandboxes for a signed URL without a sandbox id.
    pub(crate) scans: tokio::sync::Semaphore,
    /// Lifetimes of signed URLs without an expiration.
    pub(crate) unexpiring: signature::Unexpiring,
}

/// Settings of the envd router.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a signed `/files` URL without `signature_expiration` is
    /// valid after its first use.
    pub signed_url_lifetime: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signed_url_lifetime: signature::DEFAULT_LIFETIME,
        }
    }
}

/// An authorized request's sandbox, agent and user.
pub(crate) struct Ctx {
    pub target: sandbox::Target,
    pub agent: AgentClient,
    pub user: users::Account,
    pub accounts: Arc<users::Accounts>,
}

impl Envd {
    /// Resolves, authorizes and connects a request; `user` is the name it
    /// asked to run as.
    pub(crate) async fn ctx(
        &self,
        h: &HeaderMap,
        user: Option<String>,
    ) -> Result<Ctx, sandbox::Reject> {
        let target = sandbox::resolve(&self.ctl, h)?;
        self.ctx_for(target, user).await
    }

    /// A slot for one upload, or 503 after waiting [`UPLOAD_WAIT`].
    pub(crate) async fn upload_slot(
        &self,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, sandbox::Reject> {
        match tokio::time::timeout(UPLOAD_WAIT, self.uploads.clone().acquire_owned()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(sandbox::Reject::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_UPLOADS} uploads are already running; retry later"),
            )),
        }
    }

    /// Connects an already authorized sandbox.
    pub(crate) async fn ctx_for(
        &self,
        target: sandbox::Target,
        user: Option<String>,
    ) -> Result<Ctx, sandbox::Reject> {
        let agent = sandbox::agent(&self.ctl, &target).await?;
        let accounts = self.users.get(&target.id, &agent, user.as_deref()).await;
        let user = accounts
            .resolve(user.as_deref())
            .map_err(|m| sandbox::Reject::new(axum::http::StatusCode::UNAUTHORIZED, m))?;
        Ok(Ctx {
            target,
            agent,
            user,
            accounts,
        })
    }
}

/// Checks a unary request's codec (HTTP 415 when unsupported).
pub(crate) fn check_unary(h: &HeaderMap) -> Result<(), connect::ConnectError> {
    connect::check_codec(h, false).map_err(connect::ConnectError::unsupported_codec)
}

/// The start of every unary RPC: the codec checked, the sandbox and its
/// access token authorized, and only then the body read and decoded (an
/// unauthorized caller never makes the daemon buffer a body).
pub(crate) async fn unary_request<T: serde::de::DeserializeOwned>(
    ctl: &Controller,
    h: &HeaderMap,
    body: axum::body::Body,
) -> Result<(sandbox::Target, T), connect::ConnectError> {
    check_unary(h)?;
    let target = sandbox::resolve(ctl, h)?;
    let req = connect::read_unary(body).await?;
    Ok((target, req))
}

/// Purges abandoned watchers, and those of sandboxes that no longer run,
/// every [`watch::PURGE_EVERY`] while the router lives (when there is a
/// runtime to do it on).
fn spawn_purger(st: &Arc<Envd>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(st);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(watch::PURGE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            if st.unexpiring.len() > 0 {
                let ctl = st.ctl.clone();
                st.unexpiring
                    .purge(move |id| ctl.live_sandbox(id).ok().flatten().is_some());
            }
            if st.watchers.len() == 0 {
                continue;
            }
            let ctl = st.ctl.clone();
            let running = move |id: &str| {
                ctl.live_sandbox(id).ok().flatten().is_some_and(|sb| {
                    matches!(
                        sb.state,
                        dwell_control::State::Running | dwell_control::State::Paused
                    )
                })
            };
            st.watchers.purge(running);
        }
    });
}

/// The envd router: every route, routed to a sandbox by the
/// `E2b-Sandbox-Id` header or a `49983-{id}.{domain}` host name.
pub fn router(ctl: Arc<Controller>) -> axum::Router {
    router_with(ctl, Options::default())
}

/// [`router`] with settings.
pub fn router_with(ctl: Arc<Controller>, opts: Options) -> axum::Router {
    routes(new_state(ctl, opts))
}

/// The envd routers of a cluster's node, with one state: the one for
/// clients sends requests for other nodes' sandboxes to their owner with
/// `forward`; the one for the node listener (other nodes' forwarded
/// requests, `x-dwell-plane: envd`) serves this node's sandboxes only.
pub fn routers(
    ctl: Arc<Controller>,
    opts: Options,
    forward: dwell_api::forward::ForwardFn,
) -> (axum::Router, axum::Router) {
    let st = new_state(ctl.clone(), opts);
    let layer = |forward| {
        axum::middleware::from_fn_with_state(
            cluster::Route {
                ctl: ctl.clone(),
                forward,
            },
            cluster::to_owner,
        )
    };
    (
        routes(st.clone()).layer(layer(Some(forward))),
        routes(st).layer(layer(None)),
    )
}

fn new_state(ctl: Arc<Controller>, opts: Options) -> Arc<Envd> {
    let st = Arc::new(Envd {
        ctl,
        users: users::Cache::default(),
        watchers: watch::Watchers::default(),
        uploads: Arc::new(tokio::sync::Semaphore::new(MAX_UPLOADS)),
        scans: tokio::sync::Semaphore::new(2),
        unexpiring: signature::Unexpiring::new(opts.signed_url_lifetime),
    });
    spawn_purger(&st);
    st
}

fn routes(st: Arc<Envd>) -> axum::Router {
    axum::Router::new()
        .route("/health", get(files::health))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/Start", post(process::start))
        .route("/process.Process/Connect", post(process::connect_process))
        .route("/process.Process/List", post(process::list))
        .route("/process.Process/SendInput", post(process::send_input))
        .route("/process.Process/StreamInput", post(process::stream_input))
        .route("/process.Process/SendSignal", post(process::send_signal))
        .route("/process.Process/CloseStdin", post(process::close_stdin))
        .route("/process.Process/Update", post(process::update))
        .route("/filesystem.Filesystem/Stat", post(filesystem::stat))
        .route("/filesystem.Filesystem/MakeDir", post(filesystem::make_dir))
        .route("/filesystem.Filesystem/Move", post(filesystem::move_entry))
        .route("/filesystem.Filesystem/ListDir", post(filesystem::list_dir))
        .route("/filesystem.Filesystem/Remove", post(filesystem::remove))
        .route("/filesystem.Filesystem/WatchDir", post(watch::watch_dir))
        .route(
            "/filesystem.Filesystem/CreateWatcher",
            post(watch::create_watcher),
        )
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(watch::get_watcher_events),
        )
        .route(
            "/filesystem.Filesystem/RemoveWatcher",
            post(watch::remove_watcher),
        )
        .fallback(files::not_found)
        .with_state(st)
}
