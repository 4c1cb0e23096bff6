//! `diff`: what a sandbox changed relative to its image (the walk is
//! [`crate::diff`]).

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};

impl Controller {
    /// What a sandbox changed relative to its image: files added, changed
    /// and deleted (with sizes) and packages installed, removed and changed.
    pub async fn diff(&self, tenant: &str, id_or_name: &str) -> Result<crate::diff::Drift> {
        let sb = self.get(tenant, id_or_name)?;
        self.here(sb.node.as_deref(), &sb.name)?;
        let lock = self.inner.lock_for(&sb.id);
        let _g = lock.lock().await;
        let inner = self.inner.clone();
        let (id, image) = (sb.id.clone(), sb.image.clone());
        blocking(move || -> Result<crate::diff::Drift> {
            let image = inner.images.get(&image)?;
            let info = inner.volumes.info(&id)?;
            // A stopped sandbox's volume is mounted just for the walk.
            let was_mounted = info.mounted;
            let root = inner.volumes.mount(&id)?;
            let layers = crate::diff::layers(&image, &root);
            // What the sandbox planted (a symlink, a fifo, a huge file) is
            // its own doing: a conflict that names it, not a daemon failure.
            let d = crate::diff::drift(&layers).map_err(|e| match e.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::InvalidData
                | std::io::ErrorKind::Other => {
                    Error::Conflict(format!("cannot diff sandbox {id}: {e}"))
                }
                _ => Error::Internal(format!("reading the volume of {id}: {e}")),
            });
            if !was_mounted {
                let _ = inner.volumes.unmount(&id);
            }
            d
        })
        .await?
    }
}
