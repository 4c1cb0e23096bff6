//! Sharing pulled blobs between daemons through the object store (when
//! the daemon keeps snapshots in one, `--object-store`): after a pull of a
//! public image (one usable by every tenant; restricted content is never
//! shared), every blob of the image is put under
//! `images/blobs/sha256/<hex>/` unless already there; before downloading a
//! layer from the registry, a pull takes it from there. The registry still
//! answers the manifest (so a tenant's access is checked where it is
//! decided), and a blob from the store is used only when its size and
//! sha256 match its descriptor.
//!
//! A blob is stored as parts of at most [`PART`] bytes
//! (`<hex>/part-<n>`) followed by `<hex>/size` (its length, written last:
//! a blob without it is incomplete and ignored), so that neither publish
//! nor fetch ever holds more than one part in memory, however large the
//! layer.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use dwell_snapshot::ChunkStore;
use sha2::{Digest, Sha256};

/// Largest part of a shared blob held in memory at once.
const PART: usize = 8 << 20;

/// The object key prefix of blob `digest`.
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
    match store.get(&format!("{k}/size")) {
        Ok(Some(d)) if d == size.to_string().as_bytes() => {}
        Ok(_) => return false,
        Err(e) => {
            tracing::warn!(blob = digest, error = %e, "reading a shared image blob failed");
            return false;
        }
    }
    let tmp = downloads.join(format!("{hex}.shared"));
    let done = downloads.join(&hex);
    let res = (|| -> Result<bool, String> {
        let mut out = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut have = 0u64;
        let mut n = 0u64;
        while have < size {
            let Some(part) = store
                .get(&format!("{k}/part-{n}"))
                .map_err(|e| e.to_string())?
            else {
                return Ok(false);
            };
            if part.is_empty() || part.len() > PART || have + part.len() as u64 > size {
                return Ok(false);
            }
            hasher.update(&part);
            out.write_all(&part).map_err(|e| e.to_string())?;
            have += part.len() as u64;
            n += 1;
        }
        if dwell_storage::image::reference::hex_lower(&hasher.finalize()) != hex {
            tracing::warn!(
                blob = digest,
                "a shared image blob does not match its digest; ignored"
            );
            return Ok(false);
        }
        out.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &done).map_err(|e| e.to_string())?;
        Ok(true)
    })();
    match res {
        Ok(true) => true,
        Ok(false) => {
            let _ = std::fs::remove_file(&tmp);
            false
        }
        Err(e) => {
            tracing::warn!(blob = digest, error = %e, "taking a shared image blob failed");
            let _ = std::fs::remove_file(&tmp);
            false
        }
    }
}

/// Puts every blob in `digests` that the object store lacks (blocking),
/// one part in memory at a time.
pub fn publish(
    store: &Arc<dyn ChunkStore>,
    images: &dwell_storage::ImageStore,
    digests: &[String],
) {
    for d in digests {
        let Some(k) = key(d) else { continue };
        if matches!(store.head(&format!("{k}/size")), Ok(Some(_))) {
            continue;
        }
        let Ok(path) = images.blob_path(d) else {
            continue;
        };
        if let Err(e) = put_parts(store, &k, &path) {
            tracing::warn!(blob = %d, error = %e, "sharing an image blob failed");
        }
    }
}

/// Writes the file `path` as the parts of `k`, then its size.
fn put_parts(store: &Arc<dyn ChunkStore>, k: &str, path: &Path) -> Result<(), String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; PART];
    let (mut n, mut size) = (0u64, 0u64);
    loop {
        let mut len = 0;
        while len < PART {
            match f.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(m) => len += m,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        if len == 0 {
            break;
        }
        store
            .put(&format!("{k}/part-{n}"), &buf[..len])
            .map_err(|e| e.to_string())?;
        size += len as u64;
        n += 1;
        if len < PART {
            break;
        }
    }
    store
        .put(&format!("{k}/size"), size.to_string().as_bytes())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_go_through_the_store_in_parts_and_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ChunkStore> =
            Arc::new(dwell_snapshot::LocalStore::open(dir.path().join("obj")).unwrap());
        let images = dwell_storage::ImageStore::open(dir.path().join("images")).unwrap();
        let data: Vec<u8> = (0..PART * 2 + 12345).map(|i| (i % 251) as u8).collect();
        let src = dir.path().join("src");
        std::fs::write(&src, &data).unwrap();
        let digest = format!(
            "sha256:{}",
            dwell_storage::image::reference::hex_lower(&Sha256::digest(&data))
        );
        let blob = images.blob_path(&digest).unwrap();
        std::fs::copy(&src, &blob).unwrap();
        publish(&store, &images, std::slice::from_ref(&digest));
        let k = key(&digest).unwrap();
        for n in 0..3 {
            let p = store.get(&format!("{k}/part-{n}")).unwrap().unwrap();
            assert!(p.len() <= PART);
        }
        let dl = dir.path().join("dl");
        std::fs::create_dir(&dl).unwrap();
        assert!(fetch(&store, &digest, data.len() as u64, &dl));
        assert_eq!(std::fs::read(dl.join(&digest[7..])).unwrap(), data);

        // A wrong size or a tampered part is ignored and leaves nothing.
        let dl2 = dir.path().join("dl2");
        std::fs::create_dir(&dl2).unwrap();
        assert!(!fetch(&store, &digest, data.len() as u64 - 1, &dl2));
        store.put(&format!("{k}/part-1"), &vec![0u8; PART]).unwrap();
        assert!(!fetch(&store, &digest, data.len() as u64, &dl2));
        assert_eq!(std::fs::read_dir(&dl2).unwrap().count(), 0);
    }
}
