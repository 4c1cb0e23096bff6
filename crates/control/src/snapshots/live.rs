//! A snapshot of a sandbox whose processes exist (running or paused): the
//! freeze, reflink and capture sequence the parent module describes.
//!
//! The processes are frozen (a running sandbox is paused, a paused one
//! already is), then the volume's filesystem (which flushes it); the image
//! is reflinked if the data dir allows it, or else read while frozen; both
//! are thawed whatever happened, and a reflinked clone is read afterwards.

use std::path::Path;
use std::time::Instant;

use dwell_runtime::{Runtime, SandboxConfig};
use dwell_snapshot::{ChunkStore, Manifest};

use super::{capture, capture_clone, preflush, reflink_clone, Ctx, FsFreeze, ImageClone};
use crate::error::Result;

/// The processes of the sandbox being captured.
pub(crate) struct Processes<'a> {
    pub runtime: &'a dyn Runtime,
    pub config: &'a SandboxConfig,
    /// Running (paused for the freeze and resumed after), or else paused
    /// already (left as it is).
    pub running: bool,
}

/// What happened while a sandbox was frozen.
enum Frozen {
    /// The image was reflinked; it is read after the thaw.
    Cloned(ImageClone),
    /// The image could not be reflinked, so it was read while frozen.
    Captured(Box<Manifest>),
}

/// Capture the volume mounted at `mount` (backed by `image`) of `sandbox`
/// while its processes are frozen; the manifest records the freeze time.
#[allow(clippy::too_many_arguments)]
pub(crate) fn capture_live(
    store: &dyn ChunkStore,
    processes: &Processes<'_>,
    mount: &Path,
    image: &Path,
    tenant: &str,
    sandbox: &str,
    name: Option<&str>,
    parent: Option<&Manifest>,
    ctx: Ctx,
) -> Result<Manifest> {
    preflush(mount, image);
    let t0 = Instant::now();
    if processes.running {
        processes.runtime.pause(processes.config)?;
    }
    let frozen = FsFreeze::new(mount).and_then(|_frozen| match reflink_clone(image)? {
        Some(clone) => Ok(Frozen::Cloned(clone)),
        None => capture(store, image, tenant, sandbox, name, parent, None, &ctx)
            .map(|m| Frozen::Captured(Box::new(m))),
    });
    if processes.running {
        processes.runtime.resume(processes.config)?;
    }
    let freeze = t0.elapsed();
    match frozen? {
        Frozen::Captured(mut m) => {
            m.freeze_us = Some(freeze.as_micros() as u64);
            Ok(*m)
        }
        Frozen::Cloned(clone) => {
            capture_clone(store, clone, tenant, sandbox, name, parent, freeze, ctx)
        }
    }
}
