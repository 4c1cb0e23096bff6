//! Who may reuse a stored blob or extracted layer.
//!
//! Blobs and layers are content-addressed and shared between images, but
//! knowing a digest is not proof of being allowed to read the content: a
//! layer pulled with tenant A's registry login must not reach tenant B just
//! because B names its digest (in a manifest on B's own registry, or in a
//! config's `rootfs.diff_ids`). The allowed tenants of a blob or layer are
//! derived from the images that hold it: public (`None`) when any such image
//! is usable by every tenant (pulled anonymously, imported by the admin),
//! otherwise the union of those images' tenants. A blob or layer no image
//! holds is allowed to nobody. A pull reuses only what its tenant is
//! allowed; anything else is downloaded by that tenant from its registry
//! and verified (which proves it can read it), or re-extracted and checked
//! against its diff_id, before the new image references it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use super::{digest_hex, Image, ImageStore};
use crate::error::Result;

/// Tenants allowed per blob and per layer; see the module docs.
#[derive(Debug, Default, Clone)]
pub struct Access {
    blobs: HashMap<String, Allowed>,
    layers: HashMap<PathBuf, Allowed>,
}

/// `None`: every tenant; `Some(set)`: only these.
type Allowed = Option<BTreeSet<String>>;

fn merge(slot: Option<&mut Allowed>, tenants: &Option<Vec<String>>) -> Option<Allowed> {
    let new: Allowed = tenants.as_ref().map(|t| t.iter().cloned().collect());
    match slot {
        None => Some(new),
        Some(cur) => {
            match (cur.as_mut(), new) {
                (None, _) => {}
                (Some(_), None) => *cur = None,
                (Some(c), Some(n)) => c.extend(n),
            }
            None
        }
    }
}

fn allows(a: Option<&Allowed>, tenant: &str) -> bool {
    match a {
        Some(None) => true,
        Some(Some(set)) => set.contains(tenant),
        None => false,
    }
}

impl Access {
    /// Access derived from `images`.
    pub fn of(images: &[Image]) -> Self {
        let mut out = Access::default();
        for img in images {
            for d in &img.blobs {
                let Some(h) = digest_hex(d) else { continue };
                if let Some(new) = merge(out.blobs.get_mut(&h), &img.tenants) {
                    out.blobs.insert(h, new);
                }
            }
            for l in &img.layers {
                if let Some(new) = merge(out.layers.get_mut(l), &img.tenants) {
                    out.layers.insert(l.clone(), new);
                }
            }
        }
        out
    }

    /// Whether `tenant` may reuse the stored blob `digest`.
    pub fn blob(&self, digest: &str, tenant: &str) -> bool {
        digest_hex(digest).is_some_and(|h| allows(self.blobs.get(&h), tenant))
    }

    /// Whether every tenant may reuse the stored blob `digest`.
    pub fn blob_is_public(&self, digest: &str) -> bool {
        digest_hex(digest).is_some_and(|h| matches!(self.blobs.get(&h), Some(None)))
    }

    /// Whether `tenant` may reuse the extracted layer at `path`.
    pub fn layer(&self, path: &Path, tenant: &str) -> bool {
        allows(self.layers.get(path), tenant)
    }

    /// Whether every tenant may reuse the extracted layer at `path`.
    pub fn layer_is_public(&self, path: &Path) -> bool {
        matches!(self.layers.get(path), Some(None))
    }
}

impl ImageStore {
    /// Who may reuse each stored blob and layer, from the stored images.
    pub fn access(&self) -> Result<Access> {
        Ok(Access::of(&self.stored()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StorageError;

    fn img(blobs: &[&str], layers: &[&str], tenants: Option<&[&str]>) -> Image {
        Image {
            name: "x".into(),
            reference: None,
            digest: None,
            blobs: blobs.iter().map(|s| s.to_string()).collect(),
            tenants: tenants.map(|t| t.iter().map(|s| s.to_string()).collect()),
            id: String::new(),
            layers: layers.iter().map(PathBuf::from).collect(),
            host_dirs: Vec::new(),
            created_at: 0,
            size_bytes: 0,
            source: String::new(),
            env: Vec::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            workdir: None,
            user: None,
            labels: Default::default(),
            exposed_ports: Vec::new(),
            healthcheck: None,
            stop_signal: None,
        }
    }

    #[test]
    fn restricted_content_is_allowed_only_to_its_tenants_and_public_wins() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = format!("sha256:{}", "c".repeat(64));
        let acc = Access::of(&[
            img(&[&a, &b], &["/l/a"], Some(&["t1"])),
            img(&[&b], &["/l/b"], Some(&["t2"])),
            img(&[&c], &["/l/a"], None),
        ]);
        assert!(acc.blob(&a, "t1"));
        assert!(
            !acc.blob(&a, "t2"),
            "a private blob must not reach another tenant"
        );
        assert!(acc.blob(&b, "t1") && acc.blob(&b, "t2") && !acc.blob(&b, "t3"));
        assert!(acc.blob(&c, "anyone") && acc.blob_is_public(&c));
        assert!(!acc.blob(&format!("sha256:{}", "d".repeat(64)), "t1"));
        assert!(
            acc.layer(Path::new("/l/a"), "t9"),
            "a public image makes it public"
        );
        assert!(!acc.layer(Path::new("/l/b"), "t1"));
        assert!(
            !acc.layer(Path::new("/l/x"), "t2"),
            "an orphan layer is nobody's"
        );
    }

    /// A tar of one file, as a downloaded layer blob in `dir`; returns
    /// (blob digest, diff_id, file).
    fn blob(dir: &Path, name: &str, data: &[u8]) -> (String, String, PathBuf) {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data).unwrap();
        let tar = b.into_inner().unwrap();
        let d = format!("sha256:{}", crate::fsutil::sha256_hex(&tar));
        let f = dir.join(format!("dl-{name}"));
        std::fs::write(&f, &tar).unwrap();
        (d.clone(), d, f)
    }

    fn pulled(
        reference: &str,
        layer: (String, Option<PathBuf>),
        diff_id: &str,
        tenant: &str,
        with_login: bool,
    ) -> super::super::Pulled {
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]}
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "layers": [{"digest": layer.0}], "ref": reference
        }))
        .unwrap();
        super::super::Pulled {
            reference: super::super::Reference::parse(reference).unwrap(),
            manifest,
            config,
            layers: vec![layer],
            source: format!("registry:{reference}"),
            tenants: with_login.then(|| vec![tenant.to_string()]),
            tenant: tenant.to_string(),
        }
    }

    #[test]
    fn a_pull_cannot_claim_another_tenants_private_blob_or_diff_id() {
        let root = tempfile::tempdir().unwrap();
        let store = ImageStore::open(root.path().join("images")).unwrap();
        let dl = root.path().join("dl");
        std::fs::create_dir(&dl).unwrap();
        let (secret, secret_diff, file) = blob(&dl, "secret", b"private data\n");
        let a = store
            .add_pulled(pulled(
                "reg.a/team/x:1",
                (secret.clone(), Some(file)),
                &secret_diff,
                "alice",
                true,
            ))
            .unwrap();
        assert_eq!(a.tenants, Some(vec!["alice".to_string()]));

        // The blob, named without being downloaded: refused.
        let e = store
            .add_pulled(pulled(
                "reg.b/bob/x:1",
                (secret.clone(), None),
                &secret_diff,
                "bob",
                false,
            ))
            .unwrap_err();
        assert!(e.to_string().contains("may not use"), "{e}");

        // Its diff_id, claimed by bob's own small blob: that blob is
        // extracted and does not match, so the stored layer is not his.
        let (junk, _, file) = blob(&dl, "junk", b"nothing\n");
        let e = store
            .add_pulled(pulled(
                "reg.b/bob/y:1",
                (junk, Some(file)),
                &secret_diff,
                "bob",
                false,
            ))
            .unwrap_err();
        assert!(matches!(e, StorageError::DigestMismatch { .. }), "{e}");
        assert!(store.lookup("reg.b/bob/y:1").unwrap().is_none());

        // The owner reusing its blob anonymously gets an image only it may
        // use (its reuse proves nothing for other tenants).
        let own = store
            .add_pulled(pulled(
                "reg.b/bob/z:1",
                (secret, None),
                &secret_diff,
                "alice",
                false,
            ))
            .unwrap();
        assert_eq!(own.tenants, Some(vec!["alice".to_string()]));
        assert_eq!(own.layers, a.layers);
    }
}
