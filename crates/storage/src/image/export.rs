//! Exporting a stored image as it was pulled or imported: an OCI image
//! layout directory (blobs hard-linked from the store where possible) or a
//! tar stream of one (`oci-archive`), optionally with the `manifest.json`
//! of `docker save` so that `docker load` reads it too.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use serde::Deserialize;

use super::{Image, ImageStore, Reference, MAX_MANIFEST_BYTES};
use crate::error::{IoContext, Result, StorageError};
use crate::fsutil::{atomic_write, remove_any};

/// What [`ImageStore::export_archive`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// An OCI image layout (`oci-layout`, `index.json`, `blobs/`).
    Oci,
    /// The same plus `manifest.json`, as `docker save` writes it.
    Docker,
}

impl std::str::FromStr for ExportFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "oci" => Ok(Self::Oci),
            "docker" => Ok(Self::Docker),
            o => Err(format!("unknown export format {o:?}; use oci or docker")),
        }
    }
}

#[derive(Deserialize)]
struct Desc {
    digest: String,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    config: Desc,
    #[serde(default)]
    layers: Vec<Desc>,
}

/// What an export writes, worked out from the stored manifest.
struct Plan {
    index: Vec<u8>,
    docker_manifest: Vec<u8>,
    /// Blob digests: manifest, config, layers.
    blobs: Vec<String>,
}

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

impl ImageStore {
    /// Writes an OCI image layout of the image `reference` names into
    /// `dest` (which must not exist, or be an empty directory). Blobs are
    /// hard-linked from the store when `dest` is on the same filesystem,
    /// copied otherwise.
    pub fn export_layout(&self, reference: &str, dest: &Path) -> Result<()> {
        let img = self.get(reference)?;
        let plan = self.plan(&img)?;
        match fs::read_dir(dest) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(StorageError::Io {
                        op: "export image into",
                        path: dest.to_path_buf(),
                        source: io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "the directory is not empty; name a new or empty directory",
                        ),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(dest).ctx("create export directory", dest)?;
            }
            Err(e) => return Err(e).ctx("open export directory", dest),
        }
        let res = (|| {
            let blobs = dest.join("blobs/sha256");
            fs::create_dir_all(&blobs).ctx("create", &blobs)?;
            for d in &plan.blobs {
                let src = self.blob_path(d)?;
                let to = blobs.join(super::digest_hex(d).unwrap_or_default());
                if to.exists() {
                    continue;
                }
                if fs::hard_link(&src, &to).is_err() {
                    fs::copy(&src, &to).ctx("copy blob to", &to)?;
                }
            }
            atomic_write(&dest.join("oci-layout"), OCI_LAYOUT)?;
            atomic_write(&dest.join("index.json"), &plan.index)
        })();
        if res.is_err() {
            let _ = remove_any(&dest.join("blobs"));
            let _ = remove_any(&dest.join("index.json"));
            let _ = remove_any(&dest.join("oci-layout"));
        }
        res
    }

    /// Writes the image `reference` names as a tar archive to `out`: an
    /// OCI image layout, plus `manifest.json` for [`ExportFormat::Docker`].
    pub fn export_archive(
        &self,
        reference: &str,
        format: ExportFormat,
        out: &mut dyn Write,
    ) -> Result<()> {
        let img = self.get(reference)?;
        let plan = self.plan(&img)?;
        let mut tar = tar::Builder::new(out);
        let werr = |e: io::Error| StorageError::Io {
            op: "write export archive",
            path: reference.into(),
            source: e,
        };
        append_bytes(&mut tar, "oci-layout", OCI_LAYOUT).map_err(werr)?;
        append_bytes(&mut tar, "index.json", &plan.index).map_err(werr)?;
        if format == ExportFormat::Docker {
            append_bytes(&mut tar, "manifest.json", &plan.docker_manifest).map_err(werr)?;
        }
        append_dir(&mut tar, "blobs/").map_err(werr)?;
        append_dir(&mut tar, "blobs/sha256/").map_err(werr)?;
        let mut seen = std::collections::HashSet::new();
        for d in &plan.blobs {
            if !seen.insert(d.clone()) {
                continue;
            }
            let src = self.blob_path(d)?;
            let mut f = File::open(&src).ctx("open blob", &src)?;
            let len = f.metadata().ctx("stat blob", &src)?.len();
            let mut h = header(tar::EntryType::Regular, len, 0o644);
            let name = format!("blobs/sha256/{}", super::digest_hex(d).unwrap_or_default());
            tar.append_data(&mut h, &name, &mut f).map_err(werr)?;
        }
        tar.into_inner().map_err(werr)?.flush().map_err(werr)?;
        Ok(())
    }

    fn plan(&self, img: &Image) -> Result<Plan> {
        let digest = img
            .digest
            .as_deref()
            .ok_or_else(|| StorageError::BadImage {
                source_path: img.name.clone().into(),
                reason: if img.host_dirs.is_empty() {
                    "it was imported before dwell kept image blobs; import it again to export it"
                        .to_string()
                } else {
                    format!(
                        "the built-in image {:?} is a view of this host's /usr and cannot be \
                         exported",
                        img.name
                    )
                },
            })?;
        let bytes = self.read_blob(digest, MAX_MANIFEST_BYTES)?;
        let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| StorageError::BadImage {
            source_path: img.name.clone().into(),
            reason: format!("its stored manifest is not valid: {e}"),
        })?;
        let media_type = if m.media_type.is_empty() {
            super::oci::OCI_MANIFEST.to_string()
        } else {
            m.media_type.clone()
        };
        let r = img
            .reference
            .as_deref()
            .and_then(|k| Reference::parse(k).ok());
        let mut annotations = serde_json::Map::new();
        if let Some(r) = &r {
            if let Some(t) = &r.tag {
                annotations.insert("org.opencontainers.image.ref.name".into(), t.clone().into());
            }
            annotations.insert("io.containerd.image.name".into(), r.normalized().into());
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": media_type,
                "digest": digest,
                "size": bytes.len(),
                "annotations": annotations,
            }],
        });
        let blob_name =
            |d: &str| format!("blobs/sha256/{}", super::digest_hex(d).unwrap_or_default());
        let repo_tags: Vec<String> = r
            .as_ref()
            .filter(|r| r.tag.is_some())
            .map(|r| {
                let mut t = r.clone();
                t.digest = None;
                vec![t.familiar()]
            })
            .unwrap_or_default();
        let docker = serde_json::json!([{
            "Config": blob_name(&m.config.digest),
            "RepoTags": repo_tags,
            "Layers": m.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }]);
        let mut blobs = vec![digest.to_string(), m.config.digest.clone()];
        blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
        for d in &blobs {
            if !self.has_blob(d) {
                return Err(StorageError::BadImage {
                    source_path: img.name.clone().into(),
                    reason: format!("blob {d} is missing from the store; pull or import it again"),
                });
            }
        }
        Ok(Plan {
            index: serde_json::to_vec(&index).expect("index serializes"),
            docker_manifest: serde_json::to_vec(&docker).expect("manifest serializes"),
            blobs,
        })
    }
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    tar.append_data(&mut h, name, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    tar.append_data(&mut h, name, io::empty())
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}
