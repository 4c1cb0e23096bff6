//! Image removal and pruning: an image a live sandbox uses (by any
//! reference that resolves to it) is never removed.

use std::collections::BTreeMap;

use dwell_storage::{Image, Reference};

use super::Controller;
use crate::context::blocking;
use crate::error::{Error, Result};
use crate::model::SandboxSpec;

/// The reference a sandbox records for `img`: pinned to the manifest
/// digest when there is one (`python:3.12@sha256:...`), so that a tag
/// moved by a later pull never changes the layers under a sandbox.
pub(crate) fn pinned(img: &Image) -> String {
    match (&img.reference, &img.digest) {
        (Some(r), Some(d)) => match Reference::parse(r) {
            Ok(r) if r.digest.is_none() => r.with_digest(d).familiar(),
            _ => img.name.clone(),
        },
        _ => img.name.clone(),
    }
}

/// Whether `tenant` may use `img` (images pulled with a tenant's
/// registry credentials are that tenant's until another one proves access).
pub(crate) fn usable_by(img: &Image, tenant: &str) -> bool {
    img.tenants
        .as_ref()
        .is_none_or(|t| t.iter().any(|x| x == tenant))
}

impl Controller {
    /// Resolves the image a new sandbox of `tenant` asks for and returns
    /// the reference to record (see [`pinned`]).
    /// An image not stored yet (or pulled by another tenant with its
    /// credentials) is pulled first, with this tenant's logins.
    pub(crate) async fn image_for_create(&self, tenant: &str, asked: &str) -> Result<String> {
        match self.image_for_tenant(tenant, asked).await {
            Err(Error::Storage(dwell_storage::StorageError::ImageNotFound(_)))
                if !dwell_storage::is_builtin(asked) =>
            {
                let img = self.pull_image(tenant, asked, None).await?;
                Ok(pinned(&img))
            }
            other => other,
        }
    }

    /// The stored image `reference` names, as `tenant` may see it; the
    /// digest-pinned reference of it (see [`pinned`]). An image only
    /// other tenants may use is "not found".
    pub async fn image_for_tenant(&self, tenant: &str, reference: &str) -> Result<String> {
        let inner = self.inner.clone();
        let a = reference.to_string();
        let img = blocking(move || inner.images.get(&a)).await?;
        match img {
            Ok(img) if usable_by(&img, tenant) => Ok(pinned(&img)),
            Ok(_) | Err(dwell_storage::StorageError::ImageNotFound(_)) => {
                Err(dwell_storage::StorageError::ImageNotFound(reference.to_string()).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every image `tenant` may use, "host" first (blocking).
    pub fn images_for(&self, tenant: &str) -> Result<Vec<Image>> {
        let mut all = self.inner.images.list()?;
        all.retain(|i| usable_by(i, tenant));
        Ok(all)
    }

    /// Live sandboxes by the store key of the image they run (`host` for
    /// the built-in image). Sandboxes whose image is gone are left out.
    fn image_users(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for rec in self.inner.store.list_sandboxes::<SandboxSpec>(None)? {
            if let Ok(Some(key)) = self.inner.images.key_of(&rec.image) {
                users
                    .entry(key)
                    .or_default()
                    .push(format!("{}/{}", rec.tenant, rec.name));
            }
        }
        Ok(users)
    }

    /// Removes the image `reference` names (admin); refused while a live
    /// sandbox uses it, and (for a built-in image) while a stored image is
    /// built on it (the storage layer checks that under its lock).
    pub async fn remove_image(&self, reference: &str) -> Result<Image> {
        let this = self.clone();
        let reference = reference.to_string();
        blocking(move || {
            let key = this
                .inner
                .images
                .key_of(&reference)?
                .ok_or_else(|| dwell_storage::StorageError::ImageNotFound(reference.clone()))?;
            let mut all = this.image_users()?;
            let mut users = all.remove(&key).unwrap_or_default();
            // host-user's layers sit on the host image's skeleton.
            if key == dwell_storage::HOST_IMAGE {
                users.extend(
                    all.remove(dwell_storage::HOST_USER_IMAGE)
                        .unwrap_or_default(),
                );
            }
            if !users.is_empty() {
                return Err(Error::ImageInUse {
                    image: reference.clone(),
                    sandboxes: users,
                });
            }
            Ok(this.inner.images.remove(&reference)?)
        })
        .await?
    }

    /// Removes every stored image no live sandbox uses, then the blobs,
    /// layers and downloads no image needs, and the build cache (admin).
    /// While a build runs nothing is pruned: a 409 says so after a short
    /// wait. Returns the images that went.
    pub async fn prune_images(&self) -> Result<Vec<Image>> {
        let freed = self.prune_build_cache().await?;
        let this = self.clone();
        let gone = blocking(move || {
            let users = this.image_users()?;
            let in_use = |i: &Image| {
                let key = i.reference.clone().unwrap_or_else(|| i.name.clone());
                users.contains_key(&key)
            };
            Ok::<_, Error>(this.inner.images.prune(&in_use)?)
        })
        .await??;
        tracing::info!(
            images = gone.len(),
            build_cache_bytes = freed,
            "image prune"
        );
        Ok(gone)
    }
}
