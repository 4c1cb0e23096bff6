//! Writing an OCI image layout (`oci-layout`, `index.json`, `blobs/`)
//! from layer blobs and a config, for the image store's importer.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{History, RunConfig};
use crate::{sha256_hex, BuildError};

/// A layer of the image being written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The compressed blob on disk.
    pub blob: PathBuf,
    /// sha256 hex of the blob.
    pub digest: String,
    /// sha256 hex of the uncompressed tar.
    pub diff_id: String,
    pub size: u64,
}

/// The OCI architecture name of this machine.
pub fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The image config JSON.
pub fn config_json(
    run: &RunConfig,
    layers: &[Layer],
    history: &[History],
    created: &str,
) -> Vec<u8> {
    let v = json!({
        "architecture": arch(),
        "os": "linux",
        "created": created,
        "config": run,
        "rootfs": {
            "type": "layers",
            "diff_ids": layers.iter().map(|l| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>(),
        },
        "history": history,
    });
    serde_json::to_vec(&v).expect("config serializes")
}

fn io<'a>(what: &'static str, p: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |e| BuildError::io(what, p, e)
}

/// Write a layout into the new dir `dir`: blobs are hard-linked (copied
/// when on another filesystem). Returns the config's digest (hex).
pub fn write_layout(dir: &Path, config: &[u8], layers: &[Layer]) -> Result<String, BuildError> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(io("create", &blobs))?;
    let put = |hex: &str, data: &[u8]| -> Result<(), BuildError> {
        let p = blobs.join(hex);
        fs::write(&p, data).map_err(io("write", &p))
    };
    for l in layers {
        let p = blobs.join(&l.digest);
        if p.exists() {
            continue;
        }
        if fs::hard_link(&l.blob, &p).is_err() {
            fs::copy(&l.blob, &p).map_err(io("copy layer blob to", &p))?;
        }
    }
    let config_hex = sha256_hex(config);
    put(&config_hex, config)?;
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_hex}"),
            "size": config.len(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", l.digest),
            "size": l.size,
        })).collect::<Vec<_>>(),
    }))
    .expect("manifest serializes");
    let manifest_hex = sha256_hex(&manifest);
    put(&manifest_hex, &manifest)?;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": manifest.len(),
            "platform": {"architecture": arch(), "os": "linux"},
        }],
    }))
    .expect("index serializes");
    let p = dir.join("index.json");
    fs::write(&p, index).map_err(io("write", &p))?;
    let p = dir.join("oci-layout");
    fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io("write", &p))?;
    Ok(config_hex)
}
