//! Importing images: OCI image layouts (`index.json` -> manifest -> config
//! and layers) and `docker save` tarballs (`manifest.json` with `Layers`).
//!
//! Every blob is checked against its sha256 digest: manifests, configs and
//! compressed layers against the digest that names them, uncompressed
//! layers against the config's `rootfs.diff_ids`. Layers are extracted
//! once per uncompressed digest into `layers/<hex>/` and shared.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::extract;
use super::{Healthcheck, Image, ImageStore};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{disk_usage, hex, now_secs, remove_any, sha256_hex};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
}

#[derive(Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
struct RunConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    workdir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
    #[serde(rename = "Labels", default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(rename = "ExposedPorts", default)]
    exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "Healthcheck", default)]
    healthcheck: Option<HealthcheckConfig>,
    #[serde(rename = "StopSignal", default)]
    stop_signal: Option<String>,
}

/// The most entries an image config may give in each of env, labels,
/// entrypoint + cmd and exposed ports (they are copied into the image's
/// metadata, which every listing reads, and into every sandbox's env).
pub const MAX_CONFIG_ENTRIES: usize = 1000;
/// The most bytes each of those lists may hold in total.
pub const MAX_CONFIG_LIST_BYTES: usize = 64 << 10;
/// The most bytes of each single string of the run config (working dir,
/// user, stop signal).
pub const MAX_CONFIG_STRING: usize = 4096;

impl RunConfig {
    /// Refuses a run config whose env, labels, command, ports or strings
    /// are over the caps above, saying which and by how much.
    fn check(&self) -> std::result::Result<(), String> {
        let list = |what: &str, n: usize, bytes: usize| {
            if n > MAX_CONFIG_ENTRIES || bytes > MAX_CONFIG_LIST_BYTES {
                return Err(format!(
                    "the image config's {what} has {n} entries of {bytes} bytes in all; at most \
                     {MAX_CONFIG_ENTRIES} entries and {MAX_CONFIG_LIST_BYTES} bytes are kept: \
                     trim it in the image (or set it on the sandbox instead)"
                ));
            }
            Ok(())
        };
        let strings = |v: &Option<Vec<String>>| {
            v.as_deref()
                .map_or((0, 0), |v| (v.len(), v.iter().map(String::len).sum()))
        };
        let (n, b) = strings(&self.env);
        list("Env", n, b)?;
        let (n1, b1) = strings(&self.entrypoint);
        let (n2, b2) = strings(&self.cmd);
        list("Entrypoint + Cmd", n1 + n2, b1 + b2)?;
        let labels = self.labels.as_ref();
        list(
            "Labels",
            labels.map_or(0, |l| l.len()),
            labels.map_or(0, |l| l.iter().map(|(k, v)| k.len() + v.len()).sum()),
        )?;
        let ports = self.exposed_ports.as_ref();
        list(
            "ExposedPorts",
            ports.map_or(0, |p| p.len()),
            ports.map_or(0, |p| p.keys().map(String::len).sum()),
        )?;
        for (what, s) in [
            ("WorkingDir", &self.workdir),
            ("User", &self.user),
            ("StopSignal", &self.stop_signal),
        ] {
            if s.as_ref().is_some_and(|s| s.len() > MAX_CONFIG_STRING) {
                return Err(format!(
                    "the image config's {what} is longer than {MAX_CONFIG_STRING} bytes"
                ));
            }
        }
        if let Some(h) = &self.healthcheck {
            let (n, b) = strings(&h.test);
            list("Healthcheck.Test", n, b)?;
        }
        Ok(())
    }
}

/// `config.Healthcheck` as Docker writes it (durations in nanoseconds).
#[derive(Deserialize, Default)]
struct HealthcheckConfig {
    #[serde(rename = "Test", default)]
    test: Option<Vec<String>>,
    #[serde(rename = "Interval", default)]
    interval: Option<u64>,
    #[serde(rename = "Timeout", default)]
    timeout: Option<u64>,
    #[serde(rename = "StartPeriod", default)]
    start_period: Option<u64>,
    #[serde(rename = "Retries", default)]
    retries: Option<u32>,
}

impl HealthcheckConfig {
    /// `None` for no test or `["NONE"]` (health checks turned off).
    fn into_healthcheck(self) -> Option<Healthcheck> {
        let test = self.test.filter(|t| !t.is_empty())?;
        if test[0] == "NONE" {
            return None;
        }
        Some(Healthcheck {
            test,
            interval_ms: self.interval.map(|n| n / 1_000_000).filter(|&n| n > 0),
            timeout_ms: self.timeout.map(|n| n / 1_000_000).filter(|&n| n > 0),
            start_period_ms: self.start_period.map(|n| n / 1_000_000).filter(|&n| n > 0),
            retries: self.retries.filter(|&n| n > 0),
        })
    }
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// One layer to apply, bottom first.
struct LayerSource {
    /// The blob file.
    path: PathBuf,
    /// Digest of the blob as stored (compressed), if the format names it.
    blob_digest: Option<String>,
    /// Media type, if the format names it.
    media_type: Option<String>,
    /// The store's own blob, verified against its digest when it entered
    /// the store: a compressed one is not hashed again while extracting.
    trusted: bool,
}

/// What a source holds: config bytes, layers bottom first, and the
/// manifest when the format has one.
type Parts = (Vec<u8>, Vec<LayerSource>, Option<Vec<u8>>);

/// Media types of the manifests and blobs dwell writes.
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub(crate) const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub(crate) const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// Removes a staging path when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = remove_any(&self.0);
    }
}

/// Imports `source` as image `name` (its familiar reference, stored under
/// `reference`): its blobs go into the store's blobs, its layers are
/// extracted. The caller holds the store lock and writes the metadata.
pub(crate) fn import(
    store: &ImageStore,
    name: &str,
    reference: &str,
    source: &Path,
) -> Result<Image> {
    let bad = |reason: String| StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason,
    };
    let meta = fs::metadata(source).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut _staging = None;
    let dir = if meta.is_dir() {
        source.to_path_buf()
    } else {
        // A tarball: unpack its files (not as a layer) into staging.
        let s = Staging(store.tmp_path("archive"));
        fs::create_dir(&s.0).ctx("create staging directory", &s.0)?;
        let f = File::open(source).ctx("open", source)?;
        let reader: Box<dyn Read> = if magic(source)?.starts_with(&[0x1f, 0x8b]) {
            Box::new(MultiGzDecoder::new(BufReader::new(f)))
        } else {
            Box::new(BufReader::new(f))
        };
        extract::unpack(
            reader,
            &s.0,
            &source.display().to_string(),
            false,
            extract::Limits::LAYER,
        )?;
        let d = s.0.clone();
        _staging = Some(s);
        d
    };

    let (kind, (config_bytes, layers, manifest)) = if dir.join("index.json").is_file() {
        ("oci-layout", read_oci(&dir, source)?)
    } else if dir.join("manifest.json").is_file() {
        ("docker-archive", read_docker(&dir, source)?)
    } else {
        return Err(bad(
            "it has neither index.json (OCI image layout) nor manifest.json (docker save); \
             export the image with `docker save` or `skopeo copy ... oci:DIR`"
                .to_string(),
        ));
    };
    // Keep every blob (verified on the way in), then extract the layers
    // from the store's copies.
    let config_digest = store.put_blob_bytes(&config_bytes)?;
    let mut stored = Vec::with_capacity(layers.len());
    let mut descriptors = Vec::with_capacity(layers.len());
    for layer in &layers {
        let what = format!(
            "layer {}",
            layer
                .blob_digest
                .clone()
                .unwrap_or_else(|| layer.path.display().to_string())
        );
        let (digest, size) =
            store.put_blob_file(&layer.path, layer.blob_digest.as_deref(), &what)?;
        let path = store.blob_path(&digest)?;
        let media_type = match &layer.media_type {
            Some(m) => m.clone(),
            None if magic(&path)?.starts_with(&[0x1f, 0x8b]) => OCI_LAYER_GZIP.to_string(),
            None => OCI_LAYER_TAR.to_string(),
        };
        descriptors.push(serde_json::json!({
            "mediaType": media_type, "digest": digest, "size": size,
        }));
        stored.push(digest);
    }
    let manifest_bytes = match manifest {
        Some(bytes) => bytes,
        None => synthesize_manifest(&config_digest, config_bytes.len() as u64, descriptors),
    };
    let manifest_digest = store.put_blob_bytes(&manifest_bytes)?;
    assemble(
        store,
        Assembly {
            name,
            reference,
            source_label: format!("{kind}:{}", source.display()),
            config_bytes: &config_bytes,
            manifest_digest,
            layers: stored,
            reuse: None,
        },
        source,
    )
}

/// An image whose blobs are all in the store, ready to be extracted.
pub(crate) struct Assembly<'a> {
    /// Familiar name shown.
    pub name: &'a str,
    /// Normalized reference it is stored under.
    pub reference: &'a str,
    /// Where it came from (`oci-layout:/path`, `registry:host/repo`).
    pub source_label: String,
    /// The config (already stored as a blob).
    pub config_bytes: &'a [u8],
    /// The manifest's digest (already stored).
    pub manifest_digest: String,
    /// Layer blob digests, bottom first (already stored).
    pub layers: Vec<String>,
    /// For a tenant's pull: which extracted layers that tenant may reuse.
    /// `None` (an admin import) reuses any layer with the same diff_id.
    pub reuse: Option<&'a Reuse<'a>>,
}

/// Limits the reuse of already extracted layers to those a tenant may use
/// (see [`super::access`]); any other layer is extracted again from the
/// tenant's own verified blob and checked against its diff_id before the
/// stored copy is referenced.
pub(crate) struct Reuse<'a> {
    /// Who may use what, under the store lock.
    pub access: &'a super::Access,
    /// The pulling tenant.
    pub tenant: &'a str,
    /// Set when a layer not public was reused without extraction.
    pub restricted: std::cell::Cell<bool>,
}

/// Extracts the layers of `a` (once per diff_id) from the store's blobs
/// and builds its metadata. `source` names the origin in errors.
pub(crate) fn assemble(store: &ImageStore, a: Assembly<'_>, source: &Path) -> Result<Image> {
    let bad = |reason: String| StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason,
    };
    let config: Config = serde_json::from_slice(a.config_bytes)
        .map_err(|e| bad(format!("image config is not valid JSON: {e}")))?;
    // Before any layer is extracted: what the config says goes into the
    // metadata every listing reads.
    if let Some(run) = &config.config {
        run.check().map_err(bad)?;
    }
    let diff_ids = config
        .rootfs
        .as_ref()
        .map(|r| r.diff_ids.clone())
        .unwrap_or_default();
    if !diff_ids.is_empty() && diff_ids.len() != a.layers.len() {
        return Err(bad(format!(
            "the manifest lists {} layers but the config's rootfs.diff_ids lists {}",
            a.layers.len(),
            diff_ids.len()
        )));
    }
    let config_digest = format!("sha256:{}", sha256_hex(a.config_bytes));
    let mut blobs = vec![config_digest.clone(), a.manifest_digest.clone()];
    let mut stored = Vec::with_capacity(a.layers.len());
    for d in &a.layers {
        blobs.push(d.clone());
        stored.push(LayerSource {
            path: store.blob_path(d)?,
            blob_digest: Some(d.clone()),
            media_type: None,
            trusted: true,
        });
    }
    let mut paths = Vec::with_capacity(stored.len());
    let mut size = 0;
    for (i, layer) in stored.iter().enumerate() {
        let diff_id = diff_ids.get(i).map(String::as_str);
        let path = apply_layer(store, layer, diff_id, a.reuse, source)?;
        size += disk_usage(&path);
        paths.push(path);
    }
    paths.reverse(); // topmost first

    let run = config.config.unwrap_or_default();
    Ok(Image {
        name: a.name.to_string(),
        reference: Some(a.reference.to_string()),
        digest: Some(a.manifest_digest),
        blobs,
        tenants: None,
        id: config_digest,
        layers: paths,
        host_dirs: Vec::new(),
        created_at: now_secs(),
        size_bytes: size,
        source: a.source_label,
        env: run.env.unwrap_or_default(),
        entrypoint: run.entrypoint.unwrap_or_default(),
        cmd: run.cmd.unwrap_or_default(),
        workdir: run.workdir.filter(|w| !w.is_empty()),
        user: run.user.filter(|u| !u.is_empty()),
        labels: run.labels.unwrap_or_default(),
        exposed_ports: run
            .exposed_ports
            .map(|m| m.into_keys().collect())
            .unwrap_or_default(),
        healthcheck: run
            .healthcheck
            .and_then(HealthcheckConfig::into_healthcheck),
        stop_signal: run.stop_signal.filter(|s| !s.is_empty()),
    })
}

/// An OCI image manifest for a config and layers (for `docker save`
/// archives, which have none).
pub(crate) fn synthesize_manifest(
    config_digest: &str,
    config_size: u64,
    layers: Vec<serde_json::Value>,
) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": layers,
    }))
    .expect("manifest serializes")
}

/// Reads an OCI layout: returns the config bytes, the layers and the
/// manifest.
fn read_oci(dir: &Path, source: &Path) -> Result<Parts> {
    let index: Index = parse(
        &read_file(dir, Path::new("index.json"), source)?,
        "index.json",
        source,
    )?;
    let first = pick(&index.manifests, source)?;
    let (mut digest, mut media_type) = (first.digest.clone(), first.media_type.clone());
    // Follow nested indexes (multi-platform images) to one manifest.
    for _ in 0..8 {
        let bytes = read_blob(dir, &digest, "manifest", source)?;
        let m: Manifest = parse(&bytes, "manifest", source)?;
        if INDEX_TYPES.contains(&media_type.as_str())
            || INDEX_TYPES.contains(&m.media_type.as_str())
            || (m.config.is_none() && !m.manifests.is_empty())
        {
            let next = pick(&m.manifests, source)?;
            (digest, media_type) = (next.digest.clone(), next.media_type.clone());
            continue;
        }
        let config = m.config.ok_or_else(|| StorageError::BadImage {
            source_path: source.to_path_buf(),
            reason: "the manifest has no config".to_string(),
        })?;
        let config_bytes = read_blob(dir, &config.digest, "config", source)?;
        let mut layers = Vec::new();
        for l in &m.layers {
            if l.media_type.contains("zstd") {
                return Err(StorageError::BadImage {
                    source_path: source.to_path_buf(),
                    reason: format!(
                        "layer {} is zstd-compressed ({}), which is not supported; re-export \
                         with gzip or uncompressed layers",
                        l.digest, l.media_type
                    ),
                });
            }
            layers.push(LayerSource {
                path: blob_path(dir, &l.digest, source)?,
                blob_digest: Some(l.digest.clone()),
                media_type: Some(l.media_type.clone()).filter(|m| !m.is_empty()),
                trusted: false,
            });
        }
        return Ok((config_bytes, layers, Some(bytes)));
    }
    Err(StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason: "image indexes nest too deeply".to_string(),
    })
}

/// Reads a `docker save` archive: returns the config bytes and the layers.
fn read_docker(dir: &Path, source: &Path) -> Result<Parts> {
    let entries: Vec<DockerEntry> = parse(
        &read_file(dir, Path::new("manifest.json"), source)?,
        "manifest.json",
        source,
    )?;
    let entry = entries
        .into_iter()
        .next()
        .ok_or_else(|| StorageError::BadImage {
            source_path: source.to_path_buf(),
            reason: "manifest.json lists no image".to_string(),
        })?;
    let config_bytes = read_file(dir, Path::new(&entry.config), source)?;
    // Config files are named by their digest ("<hex>.json" or
    // "blobs/sha256/<hex>"): check it when the name says so.
    if let Some(hexname) = digest_in_name(&entry.config) {
        let actual = sha256_hex(&config_bytes);
        if actual != hexname {
            return Err(StorageError::DigestMismatch {
                what: format!("config {}", entry.config),
                expected: format!("sha256:{hexname}"),
                actual: format!("sha256:{actual}"),
            });
        }
    }
    let mut layers = Vec::new();
    for l in &entry.layers {
        let path = inside(dir, Path::new(l), source)?;
        let blob_digest = l
            .strip_prefix("blobs/sha256/")
            .map(|h| format!("sha256:{h}"));
        layers.push(LayerSource {
            path,
            blob_digest,
            media_type: None,
            trusted: false,
        });
    }
    Ok((config_bytes, layers, None))
}

/// Extracts one layer (or reuses it) and returns its directory.
fn apply_layer(
    store: &ImageStore,
    layer: &LayerSource,
    diff_id: Option<&str>,
    reuse: Option<&Reuse<'_>>,
    source: &Path,
) -> Result<PathBuf> {
    let diff_hex = match diff_id {
        Some(d) => Some(sha256_of(d, "rootfs.diff_ids entry", source)?),
        None => None,
    };
    if let Some(h) = &diff_hex {
        let existing = store.layer_path(h);
        if existing.is_dir() {
            match reuse {
                None => return Ok(existing),
                Some(r) if r.access.layer(&existing, r.tenant) => {
                    if !r.access.layer_is_public(&existing) {
                        r.restricted.set(true);
                    }
                    return Ok(existing);
                }
                // Not this tenant's to reuse: extract its own blob and
                // check it against the diff_id; the stored copy is then
                // referenced (the staging copy is dropped below).
                Some(_) => {}
            }
        }
    }
    let what = layer
        .blob_digest
        .clone()
        .unwrap_or_else(|| layer.path.display().to_string());
    let staging = Staging(store.tmp_path("layer"));
    fs::create_dir(&staging.0).ctx("create staging directory", &staging.0)?;

    let gz = magic(&layer.path)?;
    if gz.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(StorageError::BadImage {
            source_path: source.to_path_buf(),
            reason: format!("layer {what} is zstd-compressed, which is not supported"),
        });
    }
    let file = File::open(&layer.path).ctx("open layer", &layer.path)?;
    let mut outer = HashReader::new(BufReader::new(file));
    let gzipped = gz.starts_with(&[0x1f, 0x8b]);
    // A trusted blob needs no second hash of its own: compressed, only
    // the uncompressed stream is hashed (the diff_id, checked below);
    // uncompressed with its digest equal to the diff_id, nothing is.
    let blob_hex = match &layer.blob_digest {
        Some(d) => Some(sha256_of(d, "layer digest", source)?),
        None => None,
    };
    let trusted_diff = match (&blob_hex, &diff_hex) {
        (Some(b), Some(d)) if layer.trusted && !gzipped && b == d => Some(b.clone()),
        _ => None,
    };
    outer.enabled = !(layer.trusted && gzipped) && trusted_diff.is_none();
    let unpacked = if gz.starts_with(&[0x1f, 0x8b]) {
        let mut inner = HashReader::new(MultiGzDecoder::new(&mut outer));
        extract::unpack(&mut inner, &staging.0, &what, true, extract::Limits::LAYER)
            .and_then(|_| io::copy(&mut inner, &mut io::sink()).ctx("read layer", &layer.path))
            .map(|_| inner.finish())
    } else {
        extract::unpack(&mut outer, &staging.0, &what, true, extract::Limits::LAYER)
            .and_then(|_| io::copy(&mut outer, &mut io::sink()).ctx("read layer", &layer.path))
            .map(|_| match &trusted_diff {
                Some(d) => d.clone(),
                None => outer.clone_digest(),
            })
    };
    // Hash the whole blob even when extraction failed: a corrupt blob is
    // reported as a digest mismatch, not as whatever broke in the tar.
    let drained = io::copy(&mut outer, &mut io::sink());
    let outer_enabled = outer.enabled;
    let blob_actual = outer.finish();
    if let (Some(expected), true) = (&layer.blob_digest, outer_enabled) {
        let want = sha256_of(expected, "layer digest", source)?;
        if want != blob_actual && drained.is_ok() {
            return Err(StorageError::DigestMismatch {
                what: format!("layer {}", layer.path.display()),
                expected: expected.clone(),
                actual: format!("sha256:{blob_actual}"),
            });
        }
    }
    if let (Err(_), Some(want), false, true) = (&unpacked, &diff_hex, gzipped, drained.is_ok()) {
        if *want != blob_actual {
            return Err(StorageError::DigestMismatch {
                what: format!("layer {} (rootfs.diff_ids)", layer.path.display()),
                expected: format!("sha256:{want}"),
                actual: format!("sha256:{blob_actual}"),
            });
        }
    }
    let diff_actual = unpacked?;
    drained.ctx("read layer", &layer.path)?;

    if let Some(want) = &diff_hex {
        if *want != diff_actual {
            return Err(StorageError::DigestMismatch {
                what: format!(
                    "uncompressed layer {} (rootfs.diff_ids)",
                    layer.path.display()
                ),
                expected: format!("sha256:{want}"),
                actual: format!("sha256:{diff_actual}"),
            });
        }
    }
    let dest = store.layer_path(&diff_actual);
    match fs::rename(&staging.0, &dest) {
        Ok(()) => Ok(dest),
        // Already extracted by an earlier image: keep that one.
        Err(_) if dest.is_dir() => Ok(dest),
        Err(e) => Err(e).ctx("move layer into place at", &dest),
    }
}

/// Picks the manifest for this machine (linux and our architecture), or
/// the only/first one.
fn pick<'a>(list: &'a [Descriptor], source: &Path) -> Result<&'a Descriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    list.iter()
        .find(|d| {
            d.platform
                .as_ref()
                .is_some_and(|p| p.architecture == arch && p.os == "linux")
        })
        .or_else(|| list.iter().find(|d| d.platform.is_none()))
        .or_else(|| list.first())
        .ok_or_else(|| StorageError::BadImage {
            source_path: source.to_path_buf(),
            reason: "the image index lists no manifests".to_string(),
        })
}

/// Reads a blob by digest and verifies it.
fn read_blob(dir: &Path, digest: &str, what: &str, source: &Path) -> Result<Vec<u8>> {
    let path = blob_path(dir, digest, source)?;
    let bytes = fs::read(&path).map_err(|e| StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason: format!("{what} blob {digest} is missing or unreadable: {e}"),
    })?;
    let actual = sha256_hex(&bytes);
    if actual != sha256_of(digest, what, source)? {
        return Err(StorageError::DigestMismatch {
            what: format!("{what} {}", path.display()),
            expected: digest.to_string(),
            actual: format!("sha256:{actual}"),
        });
    }
    Ok(bytes)
}

fn blob_path(dir: &Path, digest: &str, source: &Path) -> Result<PathBuf> {
    let h = sha256_of(digest, "blob digest", source)?;
    inside(dir, &Path::new("blobs/sha256").join(h), source)
}

/// The hex part of a `sha256:<64 hex>` digest.
fn sha256_of(digest: &str, what: &str, source: &Path) -> Result<String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(StorageError::BadImage {
            source_path: source.to_path_buf(),
            reason: format!("{what} {digest:?} is not a sha256 digest"),
        }),
    }
}

/// `<hex>.json` or `blobs/sha256/<hex>` -> `<hex>`.
fn digest_in_name(name: &str) -> Option<String> {
    let base = name.rsplit('/').next()?;
    let h = base.strip_suffix(".json").unwrap_or(base);
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

/// Resolves `rel` under `dir`, refusing anything that ends up outside.
fn inside(dir: &Path, rel: &Path, source: &Path) -> Result<PathBuf> {
    let bad = |reason: String| StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason,
    };
    let base = dir.canonicalize().ctx("resolve", dir)?;
    let p = base
        .join(rel)
        .canonicalize()
        .map_err(|e| bad(format!("{} is missing or unreadable: {e}", rel.display())))?;
    if !p.starts_with(&base) {
        return Err(bad(format!("{} points outside the image", rel.display())));
    }
    Ok(p)
}

fn read_file(dir: &Path, rel: &Path, source: &Path) -> Result<Vec<u8>> {
    let p = inside(dir, rel, source)?;
    fs::read(&p).ctx("read", &p)
}

fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str, source: &Path) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StorageError::BadImage {
        source_path: source.to_path_buf(),
        reason: format!("{what} is not valid: {e}"),
    })
}

/// The first bytes of a file (for compression detection).
fn magic(path: &Path) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    let mut f = File::open(path).ctx("open", path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]).ctx("read", path)? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// A reader that hashes everything read through it.
struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    /// Off: the bytes pass through unhashed.
    enabled: bool,
}

impl<R: Read> HashReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            enabled: true,
        }
    }

    fn clone_digest(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }

    fn finish(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.enabled {
            self.hasher.update(&buf[..n]);
        }
        Ok(n)
    }
}
