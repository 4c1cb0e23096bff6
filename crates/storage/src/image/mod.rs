//! Images: the read-only lower layers of a sandbox's root filesystem.
//!
//! Layout under the store's root (e.g. `/var/lib/dwell/images`):
//!
//! ```text
//! images/<sha256 of ref>.json  metadata of an image, named by the hash of its
//!                      normalized reference (the reference is inside);
//!                      `images/<name>.json` of images stored before
//!                      references are still read
//! blobs/sha256/<hex>   manifests, configs and compressed layers, kept once
//! layers/<sha256>/     one extracted layer, keyed by its uncompressed
//!                      digest (diff_id) and shared by all images using it
//! downloads/           blobs being pulled (partial ones resume)
//! host/<digest>/       skeleton layer of the built-in "host" image
//! host/<digest>.json   its metadata
//! host/<digest>-dwell-host-user-vN/  account layer of the built-in
//!                      "host-user" image (N: its recipe), and `.json` its
//!                      metadata
//! tmp/                 staging; nothing here is ever referenced
//! ```
//!
//! Images are found by reference ([`reference::Reference`]): `python:3.12`,
//! `docker.io/library/python:3.12` and `index.docker.io/library/python:3.12`
//! are the same image. The namespace runtime mounts an image as an overlay
//! of [`Image::layers`] (topmost first) and, separately, one overlay per
//! [`Image::host_dirs`] entry at the same path inside.

mod access;
mod blobs;
mod export;
mod extract;
mod host;
mod oci;
pub mod reference;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use access::Access;
pub use blobs::digest_hex;
pub use export::ExportFormat;
pub(crate) use oci::{assemble, Assembly};
pub use reference::Reference;

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{atomic_write, nonce, sha256_hex, validate_name};

/// Name of the built-in image made from the host's own `/usr`.
pub const HOST_IMAGE: &str = "host";
/// Name of the built-in image that is [`HOST_IMAGE`] plus an unprivileged
/// account `user` (uid and gid 1000, home `/home/user`, passwordless
/// sudo) as its default user.
pub const HOST_USER_IMAGE: &str = "host-user";
pub use host::{ACCOUNT as HOST_USER_ACCOUNT, ACCOUNT_ID as HOST_USER_ACCOUNT_ID};

/// Whether `reference` names a built-in image (never pulled, stored or
/// built over).
pub fn is_builtin(reference: &str) -> bool {
    matches!(reference, HOST_IMAGE | HOST_USER_IMAGE)
}

/// Largest manifest or index read from a registry or the store.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Largest image config read from a registry or the store.
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// A root filesystem image, ready to be stacked by a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image's familiar reference (`python:3.12`, `host`, or a name
    /// stored before references).
    pub name: String,
    /// The normalized reference it is stored under
    /// (`docker.io/library/python:3.12`); `None` for "host" and for images
    /// stored before references.
    #[serde(default)]
    pub reference: Option<String>,
    /// Digest of its manifest (kept in the store's blobs); `None` for
    /// "host" and images imported before blobs were kept.
    #[serde(default)]
    pub digest: Option<String>,
    /// Every blob it needs (config, manifest, layers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<String>,
    /// Tenants that may use it: set for images pulled with a tenant's
    /// registry credentials; `None` means every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<String>>,
    /// Content digest, `sha256:<hex>` (the config digest for imports).
    pub id: String,
    /// Overlay lower directories, TOPMOST FIRST.
    pub layers: Vec<PathBuf>,
    /// Host directories to overlay individually at the same path inside
    /// (e.g. `/usr`); empty for imported images.
    pub host_dirs: Vec<PathBuf>,
    /// When the image was built or imported, seconds since the Unix epoch.
    pub created_at: u64,
    /// Disk space of the layers (host directories not counted).
    pub size_bytes: u64,
    /// Where it came from, e.g. `oci-layout:/path` or `host:/var/lib/dpkg/status`.
    pub source: String,
    /// Environment from the image config (`KEY=value`).
    pub env: Vec<String>,
    /// Entrypoint from the image config.
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// Default command from the image config.
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Working directory from the image config.
    #[serde(default)]
    pub workdir: Option<String>,
    /// User from the image config.
    #[serde(default)]
    pub user: Option<String>,
    /// Labels from the image config.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Exposed ports from the image config (`8080/tcp`).
    #[serde(default)]
    pub exposed_ports: Vec<String>,
    /// Health check from the image config.
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
    /// Signal that stops the image's start command (`SIGTERM` when unset).
    #[serde(default)]
    pub stop_signal: Option<String>,
}

/// A health check, as an image config (or a create request) states it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", arg...]` or `["CMD-SHELL", "command"]`.
    pub test: Vec<String>,
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub start_period_ms: Option<u64>,
    #[serde(default)]
    pub retries: Option<u32>,
}

/// Builds, imports, lists and removes images under one root directory.
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root` and clears staging
    /// left over by a crash.
    pub fn open(root: PathBuf) -> Result<Self> {
        for sub in [
            "images",
            "layers",
            "host",
            "tmp",
            "blobs/sha256",
            "downloads",
        ] {
            let p = root.join(sub);
            fs::create_dir_all(&p).ctx("create image store directory", &p)?;
        }
        // Extracted layers keep their set-id bits and root-owned files (they
        // are sandbox lowers); only root may reach them, whatever the modes
        // of the directories above.
        for p in [root.clone(), root.join("layers")] {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o700))
                .ctx("make the image store private (0700)", &p)?;
        }
        let store = Self { root };
        {
            let _lock = store.lock()?;
            store.clear_tmp();
        }
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where pulls keep blobs being downloaded (kept across restarts so
    /// that a killed pull resumes).
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("downloads")
    }

    /// The built-in image: built on first use, rebuilt when the host's
    /// package database (`/var/lib/dpkg/status`) changed.
    pub fn host(&self) -> Result<Image> {
        host::get_or_build(self)
    }

    /// The built-in [`HOST_USER_IMAGE`]: the host image with an account
    /// layer on top, built once per host skeleton.
    pub fn host_user(&self) -> Result<Image> {
        host::get_or_build_user(self)
    }

    /// Imports an OCI image layout directory or a `docker save` tarball
    /// (optionally gzip-compressed) as `reference` (e.g. `mytool:1`).
    /// Fails if an image is stored under that reference.
    pub fn import(&self, reference: &str, source: &Path) -> Result<Image> {
        let r = parse_new(reference)?;
        let _lock = self.lock()?;
        if self.find(reference)?.is_some() {
            return Err(StorageError::ImageExists(r.familiar()));
        }
        let image = match oci::import(self, &r.familiar(), &r.key(), source) {
            Ok(i) => i,
            Err(e) => {
                // Blobs and layers stored before the failure belong to no
                // image.
                let _ = self.collect();
                return Err(e);
            }
        };
        self.write_meta(&image)?;
        Ok(image)
    }

    /// Imports the OCI image layout `source` as `reference`, stacked over
    /// `base`: the result's layers are the layout's (topmost first) and
    /// then `base`'s, and it shares `base`'s host dirs. This is how a
    /// build adds its result (and the intermediate images its RUN steps
    /// run in) without copying the base. `tenants` as in [`Image::tenants`].
    /// With `replace`, an image already stored under `reference` with the
    /// same `tenants` is replaced (one of other owners never is): its
    /// metadata is swapped atomically and the old content stays pinned by
    /// digest for the sandboxes that use it.
    pub fn import_over(
        &self,
        reference: &str,
        source: &Path,
        base: &Image,
        replace: bool,
        tenants: Option<Vec<String>>,
    ) -> Result<Image> {
        let r = parse_new(reference)?;
        let _lock = self.lock()?;
        // `base` was read before the lock: its layers may have gone since
        // (a built-in image removed meanwhile). Stacking on them would
        // store an image no sandbox can start.
        if let Some(gone) = base.layers.iter().find(|l| !l.is_dir()) {
            return Err(StorageError::BadImage {
                source_path: source.to_path_buf(),
                reason: format!(
                    "its base image {:?} was removed meanwhile (layer {} is gone); build again",
                    base.name,
                    gone.display()
                ),
            });
        }
        let existing = self.find(reference)?;
        // Only an image of the same owners is replaced (checked under the
        // lock, so no other import slips in between).
        if let Some((_, old)) = &existing {
            if !replace || old.tenants != tenants {
                return Err(StorageError::ImageExists(r.familiar()));
            }
        }
        let mut image = match oci::import(self, &r.familiar(), &r.key(), source) {
            Ok(i) => i,
            Err(e) => {
                let _ = self.collect();
                return Err(e);
            }
        };
        image.layers.extend(base.layers.iter().cloned());
        image.host_dirs = base.host_dirs.clone();
        image.size_bytes += base.size_bytes;
        image.tenants = tenants;
        if let Some((path, old)) = &existing {
            // A legacy metadata file of the same image goes with it.
            if *path != self.meta_path(&r.key()) {
                fs::remove_file(path).ctx("remove image metadata", path)?;
            }
            // The tag moves: the old content stays under its digest (as for
            // pulls), so sandboxes pinned to it keep their layers; `prune`
            // drops it once unused.
            if let (Some(old_digest), true) = (&old.digest, old.digest != image.digest) {
                let pinned = r.with_digest(old_digest);
                let mut kept = old.clone();
                kept.reference = Some(pinned.key());
                let mut shown = pinned.clone();
                shown.tag = None;
                kept.name = shown.familiar();
                if load(&self.meta_path(&pinned.key()))?.is_none() {
                    self.write_meta(&kept)?;
                }
            }
        }
        self.write_meta(&image)?;
        if existing.is_some() {
            self.collect()?;
        }
        Ok(image)
    }

    /// Adds a pulled image: moves its downloaded layer blobs into the
    /// store (each already verified by the caller against its digest),
    /// stores manifest and config, extracts the layers once per diff_id and
    /// writes the metadata, all under the store lock. When the reference's
    /// tag pointed at other content, that image stays, pinned by digest
    /// (`repo@sha256:...`), so sandboxes on it keep their layers. Pulling
    /// content that is already stored merges `tenants` (`None` wins).
    pub fn add_pulled(&self, p: Pulled) -> Result<Image> {
        let _lock = self.lock()?;
        let key = p.reference.key();
        // Decided under the lock: what this tenant may reuse (see access).
        let access = self.access()?;
        let mut restricted = false;
        for (digest, file) in &p.layers {
            match file {
                Some(f) => {
                    self.adopt_blob(f, digest)?;
                }
                None if self.has_blob(digest) && access.blob(digest, &p.tenant) => {
                    restricted |= !access.blob_is_public(digest);
                }
                None if self.has_blob(digest) => {
                    return Err(StorageError::BadImage {
                        source_path: p.source.clone().into(),
                        reason: format!(
                            "layer blob {digest} was not downloaded by this pull and belongs to \
                             images this tenant may not use (it changed during the pull); pull \
                             again"
                        ),
                    })
                }
                None => {
                    return Err(StorageError::BadImage {
                        source_path: p.source.clone().into(),
                        reason: format!(
                            "layer blob {digest} vanished from the store during the pull \
                             (an image was removed meanwhile); pull again"
                        ),
                    })
                }
            }
        }
        let manifest_digest = self.put_blob_bytes(&p.manifest)?;
        self.put_blob_bytes(&p.config)?;
        let existing = load(&self.meta_path(&key))?;
        let same_content = existing
            .as_ref()
            .filter(|o| o.digest.as_deref() == Some(manifest_digest.as_str()));
        if let Some(old) = existing.as_ref().filter(|_| same_content.is_none()) {
            if let Some(old_digest) = &old.digest {
                // The tag moved: keep the old content under its digest.
                let pinned = p.reference.with_digest(old_digest);
                let mut kept = old.clone();
                kept.reference = Some(pinned.key());
                let mut shown = pinned.clone();
                shown.tag = None;
                kept.name = shown.familiar();
                if load(&self.meta_path(&pinned.key()))?.is_none() {
                    self.write_meta(&kept)?;
                }
            }
        }
        let shown = p.reference.familiar();
        let reuse = oci::Reuse {
            access: &access,
            tenant: &p.tenant,
            restricted: std::cell::Cell::new(false),
        };
        let mut image = match assemble(
            self,
            Assembly {
                name: &shown,
                reference: &key,
                source_label: p.source.clone(),
                config_bytes: &p.config,
                manifest_digest,
                layers: p.layers.iter().map(|(d, _)| d.clone()).collect(),
                reuse: Some(&reuse),
            },
            Path::new(&p.source),
        ) {
            Ok(i) => i,
            Err(e) => {
                let _ = self.collect();
                return Err(e);
            }
        };
        // An anonymous pull that reused content not public proves nothing
        // for other tenants: the image stays this tenant's.
        let mut tenants = p.tenants.clone();
        if tenants.is_none() && (restricted || reuse.restricted.get()) {
            tenants = Some(vec![p.tenant.clone()]);
        }
        if let Some(old) = same_content {
            tenants = match (tenants, &old.tenants) {
                (None, _) | (_, None) => None,
                (Some(mut a), Some(b)) => {
                    a.extend(b.iter().cloned());
                    a.sort();
                    a.dedup();
                    Some(a)
                }
            };
        }
        image.tenants = tenants;
        if let Some(old) = existing.filter(|o| o.digest == image.digest) {
            image.created_at = old.created_at;
        }
        self.write_meta(&image)?;
        Ok(image)
    }

    fn write_meta(&self, image: &Image) -> Result<()> {
        let key = image.reference.as_deref().unwrap_or(&image.name);
        let json = serde_json::to_vec_pretty(image).expect("image metadata serializes");
        atomic_write(&self.meta_path(key), &json)
    }

    /// The image `reference` names ("host", a reference, or a name stored
    /// before references).
    pub fn get(&self, reference: &str) -> Result<Image> {
        if reference == HOST_IMAGE {
            return self.host();
        }
        if reference == HOST_USER_IMAGE {
            return self.host_user();
        }
        match self.find(reference)? {
            Some((_, img)) => Ok(img),
            None => Err(StorageError::ImageNotFound(reference.to_string())),
        }
    }

    /// The image `reference` names, if stored (never "host").
    pub fn lookup(&self, reference: &str) -> Result<Option<Image>> {
        if is_builtin(reference) {
            return Ok(None);
        }
        Ok(self.find(reference)?.map(|(_, i)| i))
    }

    /// Finds a stored image and its metadata file: by normalized reference,
    /// then (for a digest) any image of that repository with that manifest
    /// digest, then by the names images had before references.
    fn find(&self, reference: &str) -> Result<Option<(PathBuf, Image)>> {
        let parsed = Reference::parse(reference);
        let mut legacy = Vec::new();
        match &parsed {
            Ok(r) => {
                let p = self.meta_path(&r.key());
                if let Some(img) = load(&p)? {
                    return Ok(Some((p, img)));
                }
                if let Some(d) = &r.digest {
                    let name = r.name();
                    for (p, img) in self.imported_with_paths()? {
                        let same_repo = img
                            .reference
                            .as_deref()
                            .and_then(|k| Reference::parse(k).ok())
                            .is_some_and(|k| k.name() == name);
                        if same_repo && img.digest.as_deref() == Some(d.as_str()) {
                            return Ok(Some((p, img)));
                        }
                    }
                }
                let fam = r.familiar();
                if let Some(short) = fam.strip_suffix(":latest") {
                    legacy.push(short.to_string());
                }
                legacy.push(fam);
                legacy.push(reference.to_string());
            }
            Err(_) => legacy.push(reference.to_string()),
        }
        for name in legacy {
            if validate_name("image name", &name).is_err() {
                continue;
            }
            let p = self.legacy_meta_path(&name);
            if let Some(img) = load(&p)? {
                if img.reference.is_none() {
                    return Ok(Some((p, img)));
                }
            }
        }
        match parsed {
            Ok(_) => Ok(None),
            Err(e) if validate_name("image name", reference).is_err() => Err(e),
            Err(_) => Ok(None),
        }
    }

    /// The key the image `reference` is stored under (its normalized
    /// reference, or its old name), if it is stored; `host` for "host".
    /// Two references naming the same stored image have the same key.
    pub fn key_of(&self, reference: &str) -> Result<Option<String>> {
        if is_builtin(reference) {
            return Ok(Some(reference.to_string()));
        }
        Ok(self
            .find(reference)?
            .map(|(_, i)| i.reference.unwrap_or(i.name)))
    }

    /// All images, "host" first, then stored ones by name.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut out = vec![self.host()?];
        out.extend(self.imported()?);
        Ok(out)
    }

    /// Stored images (not "host"), sorted by name.
    pub fn stored(&self) -> Result<Vec<Image>> {
        self.imported()
    }

    /// Removes the image `reference` names and every blob and layer no
    /// other image uses. Callers must check that no sandbox still uses it.
    /// Removing "host" drops its built skeletons (it is rebuilt on next
    /// use). A missing image is an error. Returns the removed image.
    ///
    /// A built-in image is refused ([`StorageError::ImageIsBase`]) while a
    /// stored image is built on it: a build's result (or an E2B template's)
    /// stacks its layers over the built-in image's own directories rather
    /// than copying them, so removing those would break every sandbox
    /// start from that image.
    pub fn remove(&self, reference: &str) -> Result<Image> {
        if reference == HOST_USER_IMAGE {
            let img = self.host_user()?;
            let _lock = self.lock()?;
            self.refuse_if_base(HOST_USER_IMAGE, &|p| {
                host::is_builtin_layer(self, p) && host::is_account_layer(p)
            })?;
            host::remove_user_layers(self)?;
            return Ok(img);
        }
        let _lock = self.lock()?;
        if reference == HOST_IMAGE {
            let img = self.host()?;
            self.refuse_if_base(HOST_IMAGE, &|p| host::is_builtin_layer(self, p))?;
            host::remove_all(self)?;
            return Ok(img);
        }
        let Some((path, img)) = self.find(reference)? else {
            return Err(StorageError::ImageNotFound(reference.to_string()));
        };
        fs::remove_file(&path).ctx("remove image metadata", &path)?;
        self.collect()?;
        Ok(img)
    }

    /// Fails with [`StorageError::ImageIsBase`] when a stored image has a
    /// layer for which `built_on` is true (the layers of the built-in image
    /// `builtin`). The caller holds the lock.
    fn refuse_if_base(&self, builtin: &str, built_on: &dyn Fn(&Path) -> bool) -> Result<()> {
        let dependents: Vec<String> = self
            .imported()?
            .into_iter()
            .filter(|i| i.layers.iter().any(|l| built_on(l)))
            .map(|i| i.name)
            .collect();
        if dependents.is_empty() {
            return Ok(());
        }
        Err(StorageError::ImageIsBase {
            image: builtin.to_string(),
            dependents,
        })
    }

    /// Removes every stored image for which `in_use` is false, then every
    /// blob, layer and download no image uses. Returns the removed images.
    pub fn prune(&self, in_use: &dyn Fn(&Image) -> bool) -> Result<Vec<Image>> {
        let _lock = self.lock()?;
        let mut removed = Vec::new();
        for (path, img) in self.imported_with_paths()? {
            if in_use(&img) {
                continue;
            }
            fs::remove_file(&path).ctx("remove image metadata", &path)?;
            removed.push(img);
        }
        self.collect()?;
        let dl = self.downloads_dir();
        for e in fs::read_dir(&dl).ctx("list downloads in", &dl)?.flatten() {
            let _ = crate::fsutil::remove_any(&e.path());
        }
        Ok(removed)
    }

    /// Imported images, sorted by name.
    fn imported(&self) -> Result<Vec<Image>> {
        Ok(self
            .imported_with_paths()?
            .into_iter()
            .map(|(_, i)| i)
            .collect())
    }

    fn imported_with_paths(&self) -> Result<Vec<(PathBuf, Image)>> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).ctx("list images in", &dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else {
                continue;
            };
            if validate_name("image name", stem).is_err() {
                continue;
            }
            if let Some(img) = load(&e.path())? {
                out.push((e.path(), img));
            }
        }
        out.sort_by(|a, b| a.1.name.cmp(&b.1.name));
        Ok(out)
    }

    /// Deletes layer directories and blobs no stored image references.
    /// The caller holds the lock.
    fn collect(&self) -> Result<()> {
        let images = self.imported()?;
        let used: HashSet<PathBuf> = images.iter().flat_map(|i| i.layers.clone()).collect();
        let dir = self.root.join("layers");
        for e in fs::read_dir(&dir).ctx("list layers in", &dir)?.flatten() {
            let p = e.path();
            if used.contains(&p) {
                continue;
            }
            let trash = self.tmp_path("gc");
            fs::rename(&p, &trash).ctx("move unused layer aside", &p)?;
            fs::remove_dir_all(&trash).ctx("remove unused layer", &trash)?;
        }
        let used_blobs: HashSet<String> = images
            .iter()
            .flat_map(|i| i.blobs.iter().filter_map(|d| digest_hex(d)))
            .collect();
        let dir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&dir).ctx("list blobs in", &dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !used_blobs.contains(&name) {
                fs::remove_file(e.path()).ctx("remove unused blob", &e.path())?;
            }
        }
        Ok(())
    }

    /// Metadata file of the image stored under normalized reference `key`.
    fn meta_path(&self, key: &str) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", sha256_hex(key.as_bytes())))
    }

    /// Metadata file of an image stored before references, by name.
    fn legacy_meta_path(&self, name: &str) -> PathBuf {
        self.root.join("images").join(format!("{name}.json"))
    }

    /// Where an extracted layer with uncompressed digest `hex` lives.
    pub(crate) fn layer_path(&self, hex: &str) -> PathBuf {
        self.root.join("layers").join(hex)
    }

    /// A fresh, unused path in the staging directory.
    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        self.root.join("tmp").join(format!("{what}-{}", nonce()))
    }

    fn clear_tmp(&self) {
        let dir = self.root.join("tmp");
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let _ = crate::fsutil::remove_any(&e.path());
            }
        }
    }

    /// Serialises mutations across processes sharing this store.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.root.join(".lock");
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx("open lock file", &path)?;
        // SAFETY: flock on an owned descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).ctx("lock", &path);
        }
        Ok(StoreLock { _file: f })
    }
}

/// The most entries (files, dirs, links) [`unpack_untrusted`] accepts: a
/// tar of empty entries would otherwise use millions of inodes within its
/// byte cap.
pub const MAX_UNTRUSTED_ENTRIES: usize = 1_000_000;

/// Unpack the untrusted tar file `archive` (plain or gzip: a build
/// context) into the existing empty directory `dest` with the image
/// extractor's rules: absolute paths and `..` refused, nothing created
/// through a symlink, hard links only within the archive, device nodes
/// skipped. A first pass over the headers refuses an archive whose files
/// add up to more than `max_bytes` (sparse entries count their full size),
/// or more than [`MAX_UNTRUSTED_ENTRIES`] entries, before anything is
/// written. Returns the bytes of regular files.
pub fn unpack_untrusted(archive: &Path, dest: &Path, what: &str, max_bytes: u64) -> Result<u64> {
    unpack_untrusted_with(archive, dest, what, max_bytes, MAX_UNTRUSTED_ENTRIES)
}

/// [`unpack_untrusted`] with the entry cap given.
fn unpack_untrusted_with(
    archive: &Path,
    dest: &Path,
    what: &str,
    max_bytes: u64,
    max_entries: usize,
) -> Result<u64> {
    let open = || -> Result<Box<dyn io::Read>> {
        let f = File::open(archive).ctx("open", archive)?;
        let mut head = [0u8; 2];
        let n = io::Read::read(&mut File::open(archive).ctx("open", archive)?, &mut head)
            .ctx("read", archive)?;
        Ok(if n == 2 && head == [0x1f, 0x8b] {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(f)))
        } else {
            Box::new(io::BufReader::new(f))
        })
    };
    let bad = |e: io::Error| StorageError::BadImage {
        source_path: archive.to_path_buf(),
        reason: format!("{what} is not a valid tar: {e}"),
    };
    let mut total: u64 = 0;
    let mut ar = tar::Archive::new(open()?);
    for (n, entry) in ar.entries().map_err(bad)?.enumerate() {
        let entry = entry.map_err(bad)?;
        if n >= max_entries {
            return Err(StorageError::BadImage {
                source_path: archive.to_path_buf(),
                reason: format!(
                    "{what} holds more than {max_entries} files and dirs; send fewer \
                     (.dockerignore, or pack many small files into one archive)"
                ),
            });
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            return Err(StorageError::BadImage {
                source_path: archive.to_path_buf(),
                reason: format!(
                    "{what} unpacks to more than {max_bytes} bytes; send less (.dockerignore)"
                ),
            });
        }
    }
    let limits = extract::Limits {
        bytes: max_bytes,
        entries: MAX_CONTEXT_ENTRIES,
    };
    extract::unpack(open()?, dest, what, false, limits).map(|u| u.bytes)
}

/// The most entries a build context may hold (each is an inode on the
/// image store's disk).
pub const MAX_CONTEXT_ENTRIES: u64 = 1_000_000;

/// A pulled image, handed to [`ImageStore::add_pulled`].
#[derive(Debug)]
pub struct Pulled {
    /// The reference it was pulled as.
    pub reference: Reference,
    /// The manifest's bytes (verified against its digest by the caller).
    pub manifest: Vec<u8>,
    /// The config's bytes (verified).
    pub config: Vec<u8>,
    /// Layer blob digests, bottom first, each with the verified downloaded
    /// file to move into the store (`None` when the store had it already).
    pub layers: Vec<(String, Option<PathBuf>)>,
    /// Where it came from, e.g. `registry:docker.io/library/python`.
    pub source: String,
    /// Tenants that may use it (`None`: every tenant).
    pub tenants: Option<Vec<String>>,
    /// The tenant pulling it: layer blobs and extracted layers already in
    /// the store are reused only when this tenant may use them.
    pub tenant: String,
}

/// Parses a reference for a new image; the built-in names are refused.
fn parse_new(reference: &str) -> Result<Reference> {
    if is_builtin(reference) {
        return Err(StorageError::InvalidName {
            what: "image name",
            name: reference.to_string(),
            reason: format!("{reference:?} is a built-in image; choose another name"),
        });
    }
    Reference::parse(reference)
}

/// Holds the store's exclusive lock until dropped (closing releases it).
pub struct StoreLock {
    _file: File,
}

/// Reads image metadata; `None` when the file does not exist.
pub(crate) fn load(path: &Path) -> Result<Option<Image>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("read image metadata", path),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|e| StorageError::Metadata {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod unpack_untrusted_tests {
    use super::*;

    fn tar_with(files: &[(&str, usize)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, size) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(*size as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, name, &vec![7u8; *size][..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn an_archive_over_the_cap_is_refused_before_anything_is_written() {
        let t = tempfile::tempdir().unwrap();
        let tar = t.path().join("c.tar");
        std::fs::write(&tar, tar_with(&[("a", 60), ("b", 60)])).unwrap();
        let dest = t.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        let e = unpack_untrusted(&tar, &dest, "the context", 100).unwrap_err();
        assert!(e.to_string().contains("more than 100 bytes"), "{e}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        assert_eq!(
            unpack_untrusted(&tar, &dest, "the context", 1000).unwrap(),
            120
        );
        assert_eq!(std::fs::read(dest.join("b")).unwrap().len(), 60);
    }
}

#[cfg(test)]
mod store_mode_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Extracted layers hold set-id files: the store root and `layers/` are
    /// 0700 even when made under a permissive umask or loosened later.
    #[test]
    fn the_store_and_its_layers_are_private() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("images");
        fs::create_dir_all(root.join("layers")).unwrap();
        for p in [&root, &root.join("layers")] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        ImageStore::open(root.clone()).unwrap();
        for p in [&root, &root.join("layers")] {
            let m = fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, 0o700, "{}", p.display());
        }
    }
}

#[cfg(test)]
mod untrusted_tests {
    use super::*;

    /// F6: a context of many empty entries is refused before anything is
    /// written, however small its bytes.
    #[test]
    fn entry_cap_refuses_before_writing() {
        let t = tempfile::tempdir().unwrap();
        let tar_path = t.path().join("ctx.tar");
        {
            let mut b = tar::Builder::new(File::create(&tar_path).unwrap());
            for i in 0..50 {
                let mut h = tar::Header::new_gnu();
                h.set_size(0);
                h.set_mode(0o644);
                h.set_uid(0);
                h.set_gid(0);
                h.set_mtime(0);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_cksum();
                b.append_data(&mut h, format!("f{i}"), io::empty()).unwrap();
            }
            b.finish().unwrap();
        }
        let dest = t.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let e = unpack_untrusted_with(&tar_path, &dest, "the build context", 1 << 20, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 10 files"), "{e}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        unpack_untrusted_with(&tar_path, &dest, "the build context", 1 << 20, 50).unwrap();
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 50);
    }
}
