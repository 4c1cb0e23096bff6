//! Memory-snapshot templates: a hibernated gVisor sandbox started as new,
//! independent sandboxes ("set up once, start warm many times"). Each copy
//! gets a new id, a copy of the template's volume and a copy of its saved
//! memory and processes; the reconciler then restores that image instead
//! of booting, so the copy continues from the template's moment of
//! hibernation. The template stays hibernated and can be copied again.

use std::path::Path;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Record, State};
use crate::reconcile::config::config_of;
use crate::reconcile::hibernate;

/// Check that `rec` can serve as a template.
pub(crate) fn check(rec: &Record) -> Result<()> {
    if rec.state != State::Hibernated {
        return Err(Error::Conflict(format!(
            "sandbox {} is {}; only a hibernated sandbox is a memory template: hibernate \
             it first",
            rec.name, rec.state
        )));
    }
    Ok(())
}

/// Give sandbox `id` (named `name`) the template's volume, saved state and
/// runtime config. Blocking; the caller holds the template's lock. On
/// failure the caller deletes the new sandbox (volume and state dir).
pub(crate) fn prepare(inner: &Context, template: &Record, id: &str, name: &str) -> Result<()> {
    if !hibernate::saved(inner, &template.id) {
        return Err(Error::Conflict(format!(
            "sandbox {} has no saved state on disk; resume and hibernate it again",
            template.name
        )));
    }
    inner.volumes.copy(&template.id, id)?;
    let mut cfg = config_of(inner, &template.id)?;
    cfg.id = id.to_string();
    cfg.hostname = name.to_string();
    cfg.state_dir = inner.state_dir(id);
    cfg.rootfs.upper_root = inner.volumes.mount_path(id);
    // A key of its own: the restore hands it to the copied agent.
    cfg.agent_key = Some(crate::reconcile::config::new_agent_key()?);
    // Its own private networks and addresses, never the template's (the
    // same address twice on one bridge).
    cfg.private_nets = crate::reconcile::config::private_nets(inner, id)?;
    crate::reconcile::config::save(inner, &cfg)?;
    copy_dir(
        &hibernate::image_dir(inner, &template.id),
        &hibernate::image_dir(inner, id),
    )
}

/// Copy the regular files of `src` into a new directory `dst`.
fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| Error::Internal(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(dst).map_err(|e| io(dst, e))?;
    for e in std::fs::read_dir(src).map_err(|e| io(src, e))? {
        let e = e.map_err(|e| io(src, e))?;
        if e.file_type().map_err(|er| io(&e.path(), er))?.is_file() {
            let to = dst.join(e.file_name());
            std::fs::copy(e.path(), &to).map_err(|er| io(&to, er))?;
        }
    }
    Ok(())
}
