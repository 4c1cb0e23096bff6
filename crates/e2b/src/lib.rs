//! An E2B-compatible control plane on top of dwell's [`Controller`], so
//! that the official E2B SDKs (PyPI/npm `e2b`) manage dwell sandboxes
//! unchanged: point `E2B_API_URL` at this router, `E2B_SANDBOX_URL` at the
//! envd data plane (`dwell-envd`), and use a dwell API key as `E2B_API_KEY`.
//!
//! The mapping onto dwell:
//!
//! | E2B | dwell |
//! |---|---|
//! | API key (`X-API-KEY`) | a dwell API key; its tenant owns the sandboxes |
//! | sandbox id | the dwell sandbox id |
//! | template `base` / a name | the built-in `host-user` image (the host image with the account `user`, uid 1000, passwordless sudo, its default user) / an image, or a snapshot (id or name) to create from |
//! | `timeout` | the `ttl` policy, with a keepalive hold at the same instant (fired by dwell's deadline timer) |
//! | `autoPause` | `ttl_action: pause` (freeze in RAM) instead of `delete`; with `autoPauseMemory: false`, `stop` (files only) |
//! | `autoResume: {enabled}` (SDK `lifecycle.autoResume`) | the `auto_resume` policy (off unless enabled): a data-plane request wakes the paused sandbox |
//! | `metadata` / `envVars` | labels / env of the sandbox |
//! | pause / connect | pause (cgroup freezer; `memory: false`: stop) / resume, or start when stopped |
//! | fork | dwell's fork ([`dwell_control::Controller::fork`]): warm or cold copies |
//! | metrics | the sandbox's cgroup counters and volume usage |
//! | logs | the sandbox's lifecycle events |
//! | snapshots | dwell snapshots (content-addressed volume captures) |
//!
//! Routes are in [`routes`]; errors have E2B's shape `{"code","message"}`
//! ([`error`]). In a cluster, requests about another node's sandbox are
//! served by that node ([`forward`], [`routers`]).

pub mod auth;
pub mod error;
pub mod forward;
pub mod lifetime;
pub mod paging;
pub mod routes;
pub mod template_files;
pub mod template_wire;
pub mod time;
pub mod translate;
pub mod view;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use dwell_control::Controller;

/// The envd version reported to the SDKs: the data plane's
/// (`dwell-envd`), which the SDKs gate features on.
pub use dwell_envd::ENVD_VERSION;

/// E2B's built-in template: the `host-user` image.
pub const BASE_TEMPLATE: &str = "base";

/// The `clientID` of every sandbox (E2B reports the node; dwell has one).
pub const CLIENT_ID: &str = "dwell";

/// How the control plane is configured.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The `domain` reported with every sandbox. The SDK builds envd URLs
    /// as `https://49983-{id}.{domain}` from it unless `E2B_SANDBOX_URL` is
    /// set; `None` leaves the SDK's own setting in effect.
    pub domain: Option<String>,
}

/// How many CPU samples are kept before old ones are pruned.
pub const CPU_SAMPLES_PRUNE_AT: usize = 256;
/// A CPU sample older than this (ms) is pruned; the next one then measures
/// from the sandbox's start.
pub const CPU_SAMPLE_TTL_MS: i64 = 10 * 60 * 1000;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct E2bState {
    pub ctl: Controller,
    pub opts: Arc<Options>,
    /// Last CPU sample per sandbox (time in ms, CPU ns), for `cpuUsedPct`;
    /// pruned of stale entries once it holds [`CPU_SAMPLES_PRUNE_AT`].
    pub cpu_samples: Arc<Mutex<HashMap<String, (i64, u64)>>>,
    /// Outstanding upload URLs of template files.
    pub uploads: Arc<template_files::Uploads>,
    /// In a cluster: how requests reach other nodes ([`forward`]).
    pub forward: Option<dwell_api::forward::ForwardFn>,
}

/// The control plane's routers of a cluster's node, with one state.
pub struct Routers {
    /// For clients (API key), forwarding what another node serves.
    pub public: Router,
    /// For the node listener (`x-dwell-plane: e2b`): the caller from the
    /// principal headers, this node's sandboxes only.
    pub node: Router,
}

/// The E2B control-plane router. Every request needs an API key, except
/// the upload of a template's files, whose one-time URL is the grant.
///
/// Template builds that were running when the daemon stopped are marked
/// failed here (nothing resumes them) and their contexts removed.
pub fn router(ctl: Controller, opts: Options) -> Router {
    routers(ctl, opts, None).public
}

/// [`router`], and the node listener's router; with `forward`, requests
/// about another node's sandbox (and creates placed elsewhere) go there.
pub fn routers(
    ctl: Controller,
    opts: Options,
    forward: Option<dwell_api::forward::ForwardFn>,
) -> Routers {
    match ctl.store().e2b_fail_interrupted_builds(
        "the server restarted during the build; build the template again",
    ) {
        Ok(stuck) if !stuck.is_empty() => {
            tracing::warn!(
                "{} E2B template builds were interrupted by a restart",
                stuck.len()
            )
        }
        Ok(_) => {}
        Err(e) => tracing::error!("cannot mark interrupted E2B template builds: {e}"),
    }
    template_files::clear_contexts(ctl.data_dir());
    let state = E2bState {
        ctl: ctl.clone(),
        opts: Arc::new(opts),
        cpu_samples: Default::default(),
        uploads: Default::default(),
        forward: forward.clone(),
    };
    let node = routes::router(state.clone())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::from_node,
        ))
        .layer(axum::middleware::from_fn(dwell_api::drain::refused_bodies));
    let mut public = routes::router(state.clone());
    if forward.is_some() {
        public = public.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            forward::to_owner,
        ));
    }
    let public = public
        .layer(axum::middleware::from_fn_with_state(
            dwell_api::AppState::new(ctl),
            dwell_api::auth::audit,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::api_key,
        ))
        .merge(routes::unauthenticated(state))
        .layer(axum::middleware::from_fn(dwell_api::drain::refused_bodies));
    Routers { public, node }
}
