//! Images: the read-only lower layers of a sandbox's root filesystem.
//!
//! Layout under the store's root (e.g. `/var/lib/dwell/images`):
//!
//! ```text
//! images/<name>.json   metadata of an imported image (atomic writes)
//! layers/<sha256>/     one extracted layer, keyed by its uncompressed
//!                      digest (diff_id) and shared by all images using it
//! host/<digest>/       skeleton layer of the built-in "host" image
//! host/<digest>.json   its metadata
//! tmp/                 staging; nothing here is ever referenced
//! ```
//!
//! The namespace runtime mounts an image as an overlay of [`Image::layers`]
//! (topmost first) and, separately, one overlay per [`Image::host_dirs`]
//! entry at the same path inside.

mod extract;
mod host;
mod oci;

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{atomic_write, nonce, validate_name};

/// Name of the built-in image made from the host's own `/usr`.
pub const HOST_IMAGE: &str = "host";

/// A root filesystem image, ready to be stacked by a runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image's name ("host" or the name given at import).
    pub name: String,
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
        for sub in ["images", "layers", "host", "tmp"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).ctx("create image store directory", &p)?;
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

    /// The built-in image: built on first use, rebuilt when the host's
    /// package database (`/var/lib/dpkg/status`) changed.
    pub fn host(&self) -> Result<Image> {
        host::get_or_build(self)
    }

    /// Imports an OCI image layout directory or a `docker save` tarball
    /// (optionally gzip-compressed) as `name`. Fails if `name` exists.
    pub fn import(&self, name: &str, source: &Path) -> Result<Image> {
        validate_name("image name", name)?;
        if name == HOST_IMAGE {
            return Err(StorageError::InvalidName {
                what: "image name",
                name: name.to_string(),
                reason: "\"host\" is the built-in image; choose another name".to_string(),
            });
        }
        let _lock = self.lock()?;
        if self.meta_path(name).exists() {
            return Err(StorageError::InvalidName {
                what: "image name",
                name: name.to_string(),
                reason: "an image with this name exists; remove it first or pick another name"
                    .to_string(),
            });
        }
        let image = match oci::import(self, name, source) {
            Ok(i) => i,
            Err(e) => {
                // Layers extracted before the failure belong to no image.
                let _ = self.collect_layers();
                return Err(e);
            }
        };
        let json = serde_json::to_vec_pretty(&image).expect("image metadata serializes");
        atomic_write(&self.meta_path(name), &json)?;
        Ok(image)
    }

    /// Imports the OCI image layout `source` as `name`, stacked over
    /// `base`: the result's layers are the layout's (topmost first) and
    /// then `base`'s, and it shares `base`'s host dirs. This is how a
    /// build adds its result (and the intermediate images its RUN steps
    /// run in) without copying the base. With `replace`, an image already
    /// called `name` is replaced (its metadata swapped atomically, its
    /// layers dropped when nothing else uses them); the caller checks that
    /// no sandbox uses it.
    pub fn import_over(
        &self,
        name: &str,
        source: &Path,
        base: &Image,
        replace: bool,
    ) -> Result<Image> {
        validate_name("image name", name)?;
        if name == HOST_IMAGE {
            return Err(StorageError::InvalidName {
                what: "image name",
                name: name.to_string(),
                reason: "\"host\" is the built-in image; choose another name".to_string(),
            });
        }
        let _lock = self.lock()?;
        let existed = self.meta_path(name).exists();
        if existed && !replace {
            return Err(StorageError::InvalidName {
                what: "image name",
                name: name.to_string(),
                reason: "an image with this name exists; remove it first or pick another name"
                    .to_string(),
            });
        }
        let mut image = match oci::import(self, name, source) {
            Ok(i) => i,
            Err(e) => {
                let _ = self.collect_layers();
                return Err(e);
            }
        };
        image.layers.extend(base.layers.iter().cloned());
        image.host_dirs = base.host_dirs.clone();
        image.size_bytes += base.size_bytes;
        let json = serde_json::to_vec_pretty(&image).expect("image metadata serializes");
        atomic_write(&self.meta_path(name), &json)?;
        if existed {
            self.collect_layers()?;
        }
        Ok(image)
    }

    /// The image called `name` ("host" or an imported name).
    pub fn get(&self, name: &str) -> Result<Image> {
        if name == HOST_IMAGE {
            return self.host();
        }
        validate_name("image name", name)?;
        load(&self.meta_path(name))?.ok_or_else(|| StorageError::ImageNotFound(name.to_string()))
    }

    /// All images, "host" first, then imported ones by name.
    pub fn list(&self) -> Result<Vec<Image>> {
        let mut out = vec![self.host()?];
        out.extend(self.imported()?);
        Ok(out)
    }

    /// Removes image `name` and every layer no other image uses. Callers
    /// must check that no sandbox still uses it. Removing "host" drops its
    /// built skeletons (it is rebuilt on next use). A missing image is an
    /// error.
    pub fn remove(&self, name: &str) -> Result<()> {
        let _lock = self.lock()?;
        if name == HOST_IMAGE {
            return host::remove_all(self);
        }
        validate_name("image name", name)?;
        let path = self.meta_path(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StorageError::ImageNotFound(name.to_string()))
            }
            Err(e) => return Err(e).ctx("remove image metadata", &path),
        }
        self.collect_layers()
    }

    /// Imported images, sorted by name.
    fn imported(&self) -> Result<Vec<Image>> {
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
                out.push(img);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes layer directories no imported image references.
    fn collect_layers(&self) -> Result<()> {
        let used: HashSet<PathBuf> = self
            .imported()?
            .into_iter()
            .flat_map(|i| i.layers)
            .collect();
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
        Ok(())
    }

    fn meta_path(&self, name: &str) -> PathBuf {
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
    pub(crate) fn lock(&self) -> Result<StoreLock> {
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

/// Unpack an untrusted tar (a build context) into the existing empty
/// directory `dest` with the image extractor's rules: absolute paths and
/// `..` refused, nothing created through a symlink, hard links only within
/// the archive, device nodes skipped. Returns the bytes of regular files.
pub fn unpack_untrusted<R: io::Read>(archive: R, dest: &Path, what: &str) -> Result<u64> {
    extract::unpack(archive, dest, what, false).map(|u| u.bytes)
}

/// Holds the store's exclusive lock until dropped (closing releases it).
pub(crate) struct StoreLock {
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
