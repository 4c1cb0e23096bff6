//! Sharing pulled blobs between daemons through the object store (when
//! the daemon keeps snapshots in one, `--object-store`): after a pull,
//! every blob of the image is put under `images/blobs/sha256/<hex>` unless
//! already there; before downloading a layer from the registry, a pull
//! takes it from there. The registry still answers the manifest (so a
//! tenant's access is checked where it is decided), and a blob from the
//! store is used only when its size and sha256 match its descriptor.

use std::path::Path;
use std::sync::Arc;

use dwell_snapshot::ChunkStore;
use sha2::{Digest, Sha256};

/// The object key of blob `digest`.
pub fn key(digest: &str) -> Option<String> {
    dwell_storage::digest_hex(digest).map(|h| format!("images/blobs/sha256/{h}"))
}

/// Takes blob `digest` (of `size` bytes) from `store` into
/// `downloads/<hex>` when it is there and intact (blocking); true when it
/// was.
pub fn fetch(store: &Arc<dyn ChunkStore>, digest: &str, size: u64, downloads: &Path) -> bool {
    let (Some(k), Some(hex)) = (key(digest), dwell_storage::digest_hex(digest)) else {
        return false;
    };
    let data = match store.get(&k) {
        Ok(Some(d)) => d,
        Ok(None) => return false,
        Err(e) => {
            tracing::warn!(blob = digest, error = %e, "reading a shared image blob failed");
            return false;
        }
    };
    if data.len() as u64 != size
        || dwell_storage::image::reference::hex_lower(&Sha256::digest(&data)) != hex
    {
        tracing::warn!(
            blob = digest,
            "a shared image blob does not match its digest; ignored"
        );
        return false;
    }
    let tmp = downloads.join(format!("{hex}.shared"));
    let done = downloads.join(&hex);
    let ok = std::fs::write(&tmp, &data)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &done));
    if ok.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    ok.is_ok()
}

/// Puts every blob in `digests` that the object store lacks (blocking).
pub fn publish(
    store: &Arc<dyn ChunkStore>,
    images: &dwell_storage::ImageStore,
    digests: &[String],
) {
    for d in digests {
        let Some(k) = key(d) else { continue };
        if matches!(store.head(&k), Ok(Some(_))) {
            continue;
        }
        let Ok(path) = images.blob_path(d) else {
            continue;
        };
        match std::fs::read(&path) {
            Ok(data) => {
                if let Err(e) = store.put(&k, &data) {
                    tracing::warn!(blob = %d, error = %e, "sharing an image blob failed");
                }
            }
            Err(e) => tracing::warn!(blob = %d, error = %e, "reading an image blob failed"),
        }
    }
}
