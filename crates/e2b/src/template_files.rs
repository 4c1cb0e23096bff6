//! Where the E2B template layer keeps its files, all under
//! `<data-dir>/e2b-templates/` (owned by the daemon):
//!
//! - `files/<tenant>/<hash>`: the tar (gzip or plain) the SDK uploaded for a
//!   COPY step, keyed by the step's files hash and kept per tenant (a
//!   rebuild with the same files uploads nothing);
//! - `builds/<build>/`: a build's context while it runs: each COPY
//!   step's tar unpacked into `files/<hash>/` with the storage crate's
//!   safe extractor (the tar is untrusted: no absolute paths, no `..`,
//!   nothing through a symlink, device nodes skipped) and a cap on the
//!   unpacked bytes. Removed when the build ends, and at daemon start.
//!
//! Uploads go to a one-time URL ([`Uploads`]) the upload-link route hands
//! out; they are written to a temporary file and renamed into place, so a
//! half-sent upload is never taken for the files.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The largest upload (one COPY step's tar, as sent).
pub const MAX_UPLOAD: u64 = 2 << 30;
/// The most bytes of uploaded template files one tenant keeps.
pub const MAX_TENANT_FILES: u64 = 16 << 30;
/// The most bytes a build's context may unpack to.
pub const MAX_UNPACKED: u64 = 8 << 30;
/// How long an upload URL is good for.
pub const UPLOAD_LIFETIME: Duration = Duration::from_secs(3600);
/// The most upload URLs one tenant has outstanding at once (its older
/// ones are dropped; never another tenant's).
pub const MAX_PENDING_UPLOADS: usize = 256;

/// The layer's root directory.
pub fn root(data_dir: &Path) -> PathBuf {
    data_dir.join("e2b-templates")
}

/// A tenant's upload directory (the name hex-encoded, so any tenant name
/// is one safe path component).
pub fn tenant_dir(data_dir: &Path, tenant: &str) -> PathBuf {
    root(data_dir).join("files").join(hex(tenant.as_bytes()))
}

/// Where the files of `hash` uploaded by `tenant` are.
pub fn upload_path(data_dir: &Path, tenant: &str, hash: &str) -> PathBuf {
    tenant_dir(data_dir, tenant).join(hash)
}

/// The bytes of uploads `tenant` keeps (blocking).
pub fn tenant_usage(data_dir: &Path, tenant: &str) -> u64 {
    let Ok(entries) = fs::read_dir(tenant_dir(data_dir, tenant)) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A build's context directory.
pub fn context_dir(data_dir: &Path, build_id: &str) -> PathBuf {
    root(data_dir).join("builds").join(build_id)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex(&b)
}

/// A random (version 4) UUID, E2B's build id format.
pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source works");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A new template id: 20 lowercase letters and digits.
pub fn new_template_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut b = [0u8; 20];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// An upload URL's grant: whose files of which hash it may write.
#[derive(Debug, Clone)]
pub struct Grant {
    pub tenant: String,
    pub hash: String,
    expires: Instant,
}

/// Outstanding upload URLs, by token, and the bytes each tenant's
/// running uploads may still write.
#[derive(Default)]
pub struct Uploads {
    pending: Mutex<HashMap<String, Grant>>,
    reserved: Mutex<HashMap<String, u64>>,
}

/// Bytes set aside for one running upload of a tenant, given back when
/// dropped (by then the upload is on disk, where
/// [`tenant_usage`] counts it, or is gone).
pub struct Reservation {
    uploads: std::sync::Arc<Uploads>,
    tenant: String,
    /// The most bytes this upload may write.
    pub bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut r = self
            .uploads
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = r.get_mut(&self.tenant) {
            *n = n.saturating_sub(self.bytes);
            if *n == 0 {
                r.remove(&self.tenant);
            }
        }
    }
}

impl Uploads {
    /// A token for one upload of `tenant`'s files `hash`.
    pub fn grant(&self, tenant: &str, hash: &str) -> String {
        let token = random_hex(24);
        let now = Instant::now();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|_, g| g.expires > now);
        let mine = p.values().filter(|g| g.tenant == tenant).count();
        if mine >= MAX_PENDING_UPLOADS {
            if let Some(oldest) = p
                .iter()
                .filter(|(_, g)| g.tenant == tenant)
                .min_by_key(|(_, g)| g.expires)
                .map(|(k, _)| k.clone())
            {
                p.remove(&oldest);
            }
        }
        p.insert(
            token.clone(),
            Grant {
                tenant: tenant.to_string(),
                hash: hash.to_string(),
                expires: now + UPLOAD_LIFETIME,
            },
        );
        token
    }

    /// Sets aside room for one upload of `tenant`: at most [`MAX_UPLOAD`]
    /// bytes, and no more than what [`MAX_TENANT_FILES`] leaves after the
    /// tenant's files on disk and its other running uploads; `None` when
    /// nothing is left. Blocking (it reads the tenant's directory while it
    /// holds the reservations, so two uploads never see the same room).
    pub fn reserve(
        self: &std::sync::Arc<Self>,
        data_dir: &Path,
        tenant: &str,
    ) -> Option<Reservation> {
        let mut r = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        let used = tenant_usage(data_dir, tenant);
        let running = r.get(tenant).copied().unwrap_or(0);
        let bytes = MAX_UPLOAD.min(MAX_TENANT_FILES.saturating_sub(used.saturating_add(running)));
        if bytes == 0 {
            return None;
        }
        *r.entry(tenant.to_string()).or_insert(0) += bytes;
        Some(Reservation {
            uploads: self.clone(),
            tenant: tenant.to_string(),
            bytes,
        })
    }

    /// The grant of `token` if it is still good; it is used up.
    pub fn take(&self, token: &str) -> Option<Grant> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let g = p.remove(token)?;
        (g.expires > Instant::now()).then_some(g)
    }
}

/// Unpack the uploads of `hashes` into a fresh context directory for
/// `build_id` (each under `files/<hash>/`); returns the directory.
/// Blocking.
pub fn prepare_context(
    data_dir: &Path,
    tenant: &str,
    build_id: &str,
    hashes: &[String],
) -> Result<PathBuf, String> {
    let dir = context_dir(data_dir, build_id);
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(|e| format!("cannot clear {}: {e}", dir.display()))?;
    }
    fs::create_dir_all(dir.join("files"))
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let mut budget = MAX_UNPACKED;
    for hash in hashes {
        let src = upload_path(data_dir, tenant, hash);
        if !src.is_file() {
            return Err(format!(
                "the files of hash {hash} were not uploaded; build again (the SDK uploads them)"
            ));
        }
        let dest = dir.join("files").join(hash);
        fs::create_dir(&dest).map_err(|e| format!("cannot make {}: {e}", dest.display()))?;
        let what = format!("the uploaded files {hash}");
        let used = dwell_storage::unpack_untrusted(&src, &dest, &what, budget).map_err(|e| {
            format!("{what} cannot be unpacked (at most {MAX_UNPACKED} bytes in all, no paths leaving the directory): {e}")
        })?;
        budget = budget.saturating_sub(used);
    }
    Ok(dir)
}

/// Remove the contexts of builds the daemon no longer runs (at start).
pub fn clear_contexts(data_dir: &Path) {
    let dir = root(data_dir).join("builds");
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(
                    "cannot remove the build context {}: {err}",
                    e.path().display()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw so that hostile names reach the extractor.
            let bytes = name.as_bytes();
            h.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn contexts_unpack_plain_and_gzip_and_refuse_escapes() {
        let data = tempfile::tempdir().unwrap();
        let tenant = "acme";
        let ok = "a".repeat(64);
        let gz = "b".repeat(64);
        let evil = "c".repeat(64);
        fs::create_dir_all(tenant_dir(data.path(), tenant)).unwrap();
        fs::write(
            upload_path(data.path(), tenant, &ok),
            tar_of(&[("app/x.txt", b"hi")]),
        )
        .unwrap();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &tar_of(&[("y.txt", b"yo")])).unwrap();
        fs::write(upload_path(data.path(), tenant, &gz), enc.finish().unwrap()).unwrap();
        fs::write(
            upload_path(data.path(), tenant, &evil),
            tar_of(&[("../../escape.txt", b"x")]),
        )
        .unwrap();

        let dir = prepare_context(data.path(), tenant, "b1", &[ok.clone(), gz.clone()]).unwrap();
        assert_eq!(
            fs::read(dir.join("files").join(&ok).join("app/x.txt")).unwrap(),
            b"hi"
        );
        assert_eq!(
            fs::read(dir.join("files").join(&gz).join("y.txt")).unwrap(),
            b"yo"
        );

        let e = prepare_context(data.path(), tenant, "b2", &[evil]).unwrap_err();
        assert!(e.contains("cannot be unpacked"), "{e}");
        assert!(!data.path().join("e2b-templates/builds/escape.txt").exists());
        // Another tenant's uploads are not found.
        let e = prepare_context(data.path(), "other", "b3", &[ok]).unwrap_err();
        assert!(e.contains("not uploaded"), "{e}");
        clear_contexts(data.path());
        assert!(!dir.exists());
    }

    #[test]
    fn upload_grants_are_used_once() {
        let u = Uploads::default();
        let t = u.grant("a", "h");
        assert_eq!(u.take(&t).unwrap().hash, "h");
        assert!(u.take(&t).is_none());
        assert!(u.take("nope").is_none());
        let id = new_uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
    }

    #[test]
    fn one_tenant_cannot_evict_anothers_upload_urls() {
        let u = Uploads::default();
        let victim = u.grant("victim", "h");
        for i in 0..MAX_PENDING_UPLOADS * 3 {
            u.grant("flood", &format!("h{i}"));
        }
        assert_eq!(
            u.take(&victim).map(|g| g.tenant),
            Some("victim".to_string()),
            "another tenant's flood of upload URLs dropped this one"
        );
        let p = u.pending.lock().unwrap();
        assert!(p.len() <= MAX_PENDING_UPLOADS, "{} grants kept", p.len());
    }

    #[test]
    fn concurrent_uploads_share_the_tenant_cap() {
        let data = tempfile::tempdir().unwrap();
        let u = std::sync::Arc::new(Uploads::default());
        // As many uploads at once as the cap allows whole, and one more.
        let n = (MAX_TENANT_FILES / MAX_UPLOAD) as usize;
        let held: Vec<_> = (0..n)
            .map(|_| u.reserve(data.path(), "t").expect("room for this upload"))
            .collect();
        assert!(held.iter().all(|r| r.bytes == MAX_UPLOAD));
        assert!(
            u.reserve(data.path(), "t").is_none(),
            "running uploads together may pass the tenant's cap"
        );
        // Another tenant has its own room.
        assert!(u.reserve(data.path(), "other").is_some());
        // An upload that ends gives its room back.
        drop(held);
        assert_eq!(u.reserve(data.path(), "t").unwrap().bytes, MAX_UPLOAD);
        assert!(u.reserved.lock().unwrap().is_empty());
    }
}
