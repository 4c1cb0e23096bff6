//! `start`: make sure the volume exists and is mounted, write the runtime
//! config, and start the sandbox's processes. On failure nothing of the
//! attempt keeps running and the volume is unmounted again.

use std::sync::Arc;

use crate::model::Record;

use super::config;
use super::journal::{record, step_event};
use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::State;

/// Checks the image's USER and WORKDIR (at create) and gives the agent
/// the service's definition.
async fn defaults_and_service(inner: &Arc<Context>, rec: &Record) -> Result<()> {
    // Only an image that names a USER or WORKDIR has defaults to check.
    let has_defaults = config::config_of(inner, &rec.id).is_ok_and(|c| {
        c.env.contains_key(dwell_proto::DEFAULT_USER_ENV)
            || c.env.contains_key(dwell_proto::DEFAULT_WORKDIR_ENV)
    });
    if rec.state == State::Creating && has_defaults {
        crate::service::check_defaults(inner, rec).await?;
    }
    if rec.spec.service.is_some() {
        crate::service::send_at_start(inner, rec).await?;
        let _ = inner.store.add_event(&rec.id, "step", "service started");
    }
    Ok(())
}

/// Stops what `run` started, and unmounts the volume.
async fn undo(inner: &Arc<Context>, rec: &Record) {
    if let Err(e) = super::stop::release(inner, &rec.id).await {
        tracing::warn!(sandbox = %rec.id, "undoing a failed start: {e}");
    }
}

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record) -> Result<()> {
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    step_event(inner, &rec.id, "preparing volume and image")?;
    let inner2 = inner.clone();
    let rec2 = rec.clone();
    blocking(move || -> Result<()> {
        let inner = inner2;
        let rec = rec2;
        let image = inner.images.get(&rec.image)?;
        if crate::archive::unarchive(&inner, &rec.id, &rec.tenant)? {
            let _ = inner
                .store
                .add_event(&rec.id, "step", "volume restored from its archive");
        }
        let upper = if inner.volumes.info(&rec.id).is_err() {
            crate::crashpoint::crashpoint("start:before-mount");
            // A new volume comes mounted, from the pool when it holds one
            // of this size (no look at every mount and loop device).
            inner.volumes.create_mounted(&rec.id, rec.spec.disk_bytes)?;
            inner.volumes.mount_path(&rec.id)
        } else {
            crate::crashpoint::crashpoint("start:before-mount");
            inner.volumes.mount(&rec.id)?
        };
        let mut cfg = config::build(&inner, &rec.id, &rec.name, &rec.spec, &image, upper)?;
        if runtime.capabilities().id_map {
            cfg.id_map = Some(config::id_range(&inner, &rec.id)?);
        }
        // Its named volumes: mounted on the host (if no other sandbox
        // has them mounted already) and bound in.
        cfg.binds = match crate::volumes::attach(&inner, &rec) {
            Ok(b) => b,
            Err(e) => {
                let _ = inner.volumes.unmount(&rec.id);
                return Err(e);
            }
        };
        let started = config::save(&inner, &cfg).and_then(|()| {
            let _ = inner.store.add_event(&rec.id, "step", "starting processes");
            runtime.start(&cfg).map_err(Into::into)
        });
        if let Err(e) = started {
            let _ = runtime.stop(&cfg);
            crate::volumes::detach(&inner, &rec.id);
            let _ = inner.volumes.unmount(&rec.id);
            return Err(e);
        }
        crate::crashpoint::crashpoint("start:after-runtime");
        Ok(())
    })
    .await??;
    crate::connections::preconnect(inner, &rec.id).await;
    crate::egress::attach_started(inner, rec).await;
    if let Err(e) = defaults_and_service(inner, rec).await {
        if rec.state == State::Creating {
            // A new sandbox whose image cannot run as it says is not made.
            undo(inner, rec).await;
            return Err(e);
        }
        // A sandbox that ran before starts anyway; the service's state
        // says what is wrong.
        let _ = inner
            .store
            .add_event(&rec.id, "error", &format!("service: {e}"));
    }
    let reason = match rec.state {
        State::Creating => "created and started",
        // A lost node's sandbox keeps saying what was lost.
        State::Archived if crate::cluster::recovery::is_recovery(&rec.reason) => &rec.reason,
        State::Archived => "restored from its archive and started",
        _ => "started on request",
    };
    record(inner, &rec.id, State::Running, reason)
}
