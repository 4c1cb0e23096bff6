//! Where `dwell serve` keeps snapshots, and how: the local directory
//! `<data-dir>/snapshots` by default, or an S3-compatible bucket
//! (`--object-store s3://bucket/prefix`, credentials from the standard
//! `AWS_*` environment variables, region `us-east-1` unless `AWS_REGION`
//! says otherwise); per-tenant encryption (on unless
//! `--no-encrypt-snapshots`, keys derived from the master key
//! `--snapshot-key`, default `<data-dir>/snapshot.key`); periodic garbage
//! collection.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use dwell_control::snapshot_settings::SnapshotSettings;
use dwell_snapshot::ChunkStore;

/// Snapshot store flags of `dwell serve`.
#[derive(Debug, Clone, Args, Default)]
pub struct StoreFlags {
    /// Keep snapshots and archives in an S3-compatible bucket
    /// (`s3://bucket/prefix`) instead of `<data-dir>/snapshots`.
    /// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and
    /// AWS_SESSION_TOKEN); region: AWS_REGION, default us-east-1.
    #[arg(long, value_name = "URL")]
    pub object_store: Option<String>,
    /// Endpoint of a non-AWS S3 server (`http://127.0.0.1:9000`).
    #[arg(long, value_name = "URL", requires = "object_store")]
    pub s3_endpoint: Option<String>,
    /// Encrypt new snapshots and archives at rest (XChaCha20-Poly1305) with
    /// a per-tenant key derived from the snapshot master key (the default;
    /// accepted for scripts that pass it).
    #[arg(long, overrides_with = "no_encrypt_snapshots")]
    pub encrypt_snapshots: bool,
    /// Store new snapshots and archives in clear: chunks are then named by
    /// their content and shared by every tenant of the store (encrypted
    /// snapshots still restore).
    #[arg(long, overrides_with = "encrypt_snapshots")]
    pub no_encrypt_snapshots: bool,
    /// The snapshot master key file (32 bytes, made 0600 if missing; default
    /// <data-dir>/snapshot.key). Daemons sharing an --object-store must use
    /// the same key to restore each other's encrypted snapshots.
    #[arg(long, value_name = "FILE")]
    pub snapshot_key: Option<PathBuf>,
    /// How often the sweep deletes stored chunks no snapshot references
    /// (`off` for only `dwell snapshot gc`).
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub snapshot_gc_every: String,
}

impl StoreFlags {
    /// Open the configured store.
    pub fn open(&self, data_dir: &Path) -> Result<Arc<dyn ChunkStore>> {
        let Some(url) = &self.object_store else {
            return Ok(Arc::new(
                dwell_snapshot::LocalStore::open(data_dir.join("snapshots"))
                    .context("cannot open the snapshot store under the data dir")?,
            ));
        };
        if !url.starts_with("s3://") {
            bail!("--object-store {url:?}: only s3://bucket/prefix is supported (omit the flag for the local directory)");
        }
        let mut cfg = dwell_snapshot::S3Config::from_url(url)?;
        if let Some(e) = &self.s3_endpoint {
            cfg.allow_http = e.starts_with("http://");
            cfg.endpoint = Some(e.clone());
        }
        let store = dwell_snapshot::S3Store::new(&cfg)
            .with_context(|| format!("cannot use the object store {url}"))?;
        // Fail now, not on the first snapshot, if the bucket is unreachable.
        store.list("manifests/").with_context(|| {
            format!(
                "cannot list {url}{}: check the bucket exists and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
                self.s3_endpoint
                    .as_deref()
                    .map(|e| format!(" at {e}"))
                    .unwrap_or_default()
            )
        })?;
        Ok(Arc::new(store))
    }

    /// Encryption and collection settings; loads (or makes) the master key.
    pub fn settings(&self, data_dir: &Path) -> Result<SnapshotSettings> {
        let gc_every = match self.snapshot_gc_every.as_str() {
            "off" | "0" => None,
            s => Some(humantime::parse_duration(s).with_context(|| {
                format!("--snapshot-gc-every {s:?} is not a duration; write it like 1h (or off)")
            })?),
        };
        let path = self
            .snapshot_key
            .clone()
            .unwrap_or_else(|| data_dir.join("snapshot.key"));
        let key = dwell_control::keyfile::load_or_create(&path, dwell_snapshot::MASTER_KEY_LEN)
            .with_context(|| {
                format!(
                    "cannot use the snapshot master key {}: fix or restore the file \
                     (encrypted snapshots need the key they were sealed with), \
                     or point --snapshot-key at another one",
                    path.display()
                )
            })?;
        let master = dwell_snapshot::MasterKey::from_bytes(
            key.try_into()
                .expect("load_or_create returns the asked length"),
        );
        Ok(SnapshotSettings {
            encrypt: !self.no_encrypt_snapshots,
            gc_every: gc_every.map(|d: Duration| d.max(Duration::from_secs(1))),
            master: Some(master),
        })
    }
}
