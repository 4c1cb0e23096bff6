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

/// The image config JSON. It has no `created` time, so that the same
/// steps give the same image id on every rebuild.
pub fn config_json(run: &RunConfig, layers: &[Layer], history: &[History]) -> Vec<u8> {
    let v = json!({
        "architecture": arch(),
        "os": "linux",
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

/// An image read from an OCI layout: its layers (bottom first) and config.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub layers: Vec<Layer>,
    pub config: serde_json::Value,
}

/// The most bytes of an index, manifest or config read from a layout.
const MAX_META: u64 = 8 << 20;

fn hex_of(digest: &str) -> Result<String, BuildError> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(BuildError::Invalid(format!(
            "the base image names a blob {digest:?} that is not a sha256 digest"
        ))),
    }
}

fn read_meta(path: &Path) -> Result<serde_json::Value, BuildError> {
    use std::io::Read;
    let f = fs::File::open(path).map_err(|e| BuildError::io("open", path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_META + 1)
        .read_to_end(&mut buf)
        .map_err(|e| BuildError::io("read", path, e))?;
    if buf.len() as u64 > MAX_META {
        return Err(BuildError::Invalid(format!(
            "{} is larger than {MAX_META} bytes",
            path.display()
        )));
    }
    serde_json::from_slice(&buf)
        .map_err(|e| BuildError::Invalid(format!("{} is not valid JSON: {e}", path.display())))
}

/// Read the image of the layout `dir` (as the image store exports it:
/// one manifest).
pub fn read_layout(dir: &Path) -> Result<BaseImage, BuildError> {
    let bad = |m: &str| BuildError::Invalid(format!("the base image's layout: {m}"));
    let index = read_meta(&dir.join("index.json"))?;
    let mdigest = index["manifests"][0]["digest"]
        .as_str()
        .ok_or_else(|| bad("index.json names no manifest"))?;
    let blob =
        |d: &str| -> Result<PathBuf, BuildError> { Ok(dir.join("blobs/sha256").join(hex_of(d)?)) };
    let manifest = read_meta(&blob(mdigest)?)?;
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| bad("the manifest names no config"))?;
    let config = read_meta(&blob(cdigest)?)?;
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let descs = manifest["layers"].as_array().cloned().unwrap_or_default();
    if descs.len() != diff_ids.len() {
        return Err(bad(
            "the manifest and the config list different numbers of layers",
        ));
    }
    let mut layers = Vec::new();
    for (d, diff) in descs.iter().zip(&diff_ids) {
        let digest = d["digest"]
            .as_str()
            .ok_or_else(|| bad("a layer has no digest"))?;
        layers.push(Layer {
            blob: blob(digest)?,
            digest: hex_of(digest)?,
            diff_id: hex_of(diff)?,
            size: d["size"].as_u64().unwrap_or(0),
        });
    }
    Ok(BaseImage { layers, config })
}

/// The config of an image made of `base`'s layers and then `own`, with
/// `run` as its runtime config and `history` after the base's (the base's
/// `created` time is kept, so rebuilds give the same image id).
pub fn config_over(
    base: &BaseImage,
    run: &RunConfig,
    own: &[Layer],
    history: &[History],
) -> Vec<u8> {
    let mut v = base.config.clone();
    let all: Vec<Layer> = base.layers.iter().chain(own).cloned().collect();
    v["config"] = serde_json::to_value(run).expect("config serializes");
    v["rootfs"] = json!({
        "type": "layers",
        "diff_ids": all.iter().map(|l| format!("sha256:{}", l.diff_id)).collect::<Vec<_>>(),
    });
    let mut h = base.config["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    h.extend(
        history
            .iter()
            .map(|x| serde_json::to_value(x).expect("history serializes")),
    );
    v["history"] = json!(h);
    serde_json::to_vec(&v).expect("config serializes")
}
