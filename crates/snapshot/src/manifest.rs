//! The snapshot manifest: a versioned JSON document that lists, in image order, every extent of
//! the source image as either a stored chunk (by hash) or a hole. FORMAT.md describes it field by
//! field; this module is its single source of truth in code.
//!
//! Version 2 adds *attachments*: named files stored with the image (a hibernated sandbox's saved
//! memory and processes, and what is needed to run it again). They live in the same manifest,
//! rather than in companion snapshots, so that one atomic publish makes the image and its
//! attachments visible together, one delete removes them together, and garbage collection,
//! leases, encryption and verification treat their chunks exactly like the image's (each
//! attachment is cut, deduplicated, compressed and encrypted like the image). A manifest without
//! attachments is still written as version 1, so older readers keep reading ordinary snapshots;
//! readers accept both versions.
//!
//! Version 3 adds `encryption.key_derivation`: the tenant key was derived from the store's
//! master key (see [`crate::MasterKey`]). Only encrypted manifests with a derived key are
//! written as version 3, so older readers refuse exactly the snapshots they could not open.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The newest manifest format version: written for manifests whose tenant key was derived
/// from a master key (version 2 for other manifests with attachments, 1 for the rest).
/// Readers refuse versions they do not know.
pub const FORMAT_VERSION: u32 = 3;

/// The oldest version this crate reads.
const OLDEST_VERSION: u32 = 1;

/// The version a manifest with (or without) attachments and a derived key is written as: the
/// oldest that can hold it.
pub fn version_for(has_attachments: bool, derived_key: bool) -> u32 {
    if derived_key {
        3
    } else if has_attachments {
        2
    } else {
        1
    }
}

/// A 32-byte BLAKE3 hash naming a chunk: plain BLAKE3 of the uncompressed chunk, or keyed BLAKE3
/// (key derived from the tenant key) when the snapshot is encrypted.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        s
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<ChunkId> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let nib = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        };
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
        }
        Some(ChunkId(out))
    }

    /// The object key of this chunk in a store: `chunks/ab/cdef...`.
    pub fn key(&self) -> String {
        let h = self.to_hex();
        format!("chunks/{}/{}", &h[..2], &h[2..])
    }

    /// Parses an object key made by [`ChunkId::key`].
    pub fn from_key(key: &str) -> Option<ChunkId> {
        let rest = key.strip_prefix("chunks/")?;
        let (dir, name) = rest.split_once('/')?;
        if dir.len() != 2 {
            return None;
        }
        ChunkId::from_hex(&format!("{dir}{name}"))
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkId({})", self.to_hex())
    }
}

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ChunkId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChunkId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ChunkId::from_hex(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad chunk hash {s:?}")))
    }
}

/// Where the snapshot came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Source {
    /// The sandbox whose volume this is, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// The apparent size of the volume image in bytes.
    pub volume_size: u64,
}

/// Encryption parameters; present only for encrypted snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// Always `"xchacha20poly1305"` in format version 1.
    pub algorithm: String,
    /// Always `"blake3-keyed"`: chunk ids are keyed BLAKE3 hashes.
    pub chunk_id: String,
    /// A public fingerprint of the tenant key (16 hex chars) so a wrong key is reported as such.
    pub key_id: String,
    /// Version 3: how the tenant key was derived (`"master-tenant-v1"`); absent when the
    /// writer supplied the tenant key itself (versions 1 and 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_derivation: Option<String>,
}

/// One extent of the image: a stored chunk or a hole (reads as zeros, not stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Byte offset in the image.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// The chunk holding these bytes; absent for a hole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<ChunkId>,
    /// Size of the stored (compressed, maybe encrypted) chunk object in bytes; 0 for a hole.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stored: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Extent {
    /// Whether this extent is a hole.
    pub fn is_hole(&self) -> bool {
        self.chunk.is_none()
    }
}

/// Size accounting of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Sizes {
    /// Apparent image size (same as `source.volume_size`).
    pub total: u64,
    /// Bytes of the image held in chunks (the rest are holes).
    pub data: u64,
    /// Sum of the stored sizes of the distinct chunks this snapshot references.
    pub stored: u64,
    /// Stored bytes this snapshot uploaded (chunks not already in the store).
    pub uploaded: u64,
}

/// A named file stored with the image (format version 2), cut into chunks like the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// Its name: `/`-separated components of `[A-Za-z0-9._-]`, none empty, `.`, `..` or starting
    /// with a dot (see [`validate_attachment_name`]).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its extents, sorted, contiguous, covering `[0, size)`.
    pub extents: Vec<Extent>,
}

/// A snapshot manifest (format version 1, or 2 with attachments).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; see [`FORMAT_VERSION`].
    pub version: u32,
    /// Snapshot id: `[A-Za-z0-9._-]{1,128}`, unique in the store.
    pub id: String,
    /// Creation time, RFC 3339 UTC.
    pub created_at: String,
    /// The tenant owning the snapshot; listings filter by it.
    pub tenant: String,
    /// What was captured.
    pub source: Source,
    /// Chunk size used to cut the image (every data extent but the last is this long).
    pub chunk_size: u64,
    /// Compression of stored chunks: always `"zstd"` in version 1.
    pub compression: String,
    /// Encryption, when the snapshot is encrypted at rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// How long the source was frozen for a consistent capture, in microseconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_us: Option<u64>,
    /// Size accounting.
    pub sizes: Sizes,
    /// Free-form labels (name, parent snapshot, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The extents, sorted, contiguous, covering `[0, source.volume_size)`.
    pub extents: Vec<Extent>,
    /// Named files stored with the image (version 2). `sizes.stored` and `sizes.uploaded`
    /// include their chunks; `sizes.data` and `sizes.total` are the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

impl Manifest {
    /// The object key of a manifest: `manifests/<id>.json`.
    pub fn key_for(id: &str) -> String {
        format!("manifests/{id}.json")
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        v.push(b'\n');
        v
    }

    /// Parses and validates a manifest.
    pub fn from_json(id_hint: &str, bytes: &[u8]) -> Result<Manifest> {
        let bad = |reason: String| Error::BadManifest {
            id: id_hint.to_string(),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
        let version = v.get("version").and_then(|x| x.as_u64()).unwrap_or(0);
        if !(u64::from(OLDEST_VERSION)..=u64::from(FORMAT_VERSION)).contains(&version) {
            return Err(bad(format!(
                "format version {version}, this build reads versions {OLDEST_VERSION} to \
                 {FORMAT_VERSION}; upgrade dwell to read it"
            )));
        }
        let m: Manifest = serde_json::from_value(v).map_err(|e| bad(format!("bad field: {e}")))?;
        m.validate().map_err(bad)?;
        Ok(m)
    }

    /// Checks the invariants FORMAT.md promises.
    pub fn validate(&self) -> std::result::Result<(), String> {
        validate_id(&self.id).map_err(|_| format!("bad id {:?}", self.id))?;
        if self.compression != "zstd" {
            return Err(format!("unknown compression {:?}", self.compression));
        }
        if let Some(e) = &self.encryption {
            if e.algorithm != "xchacha20poly1305" || e.chunk_id != "blake3-keyed" {
                return Err(format!(
                    "unknown encryption {:?}/{:?}",
                    e.algorithm, e.chunk_id
                ));
            }
            match e.key_derivation.as_deref() {
                None => {}
                Some(crate::MASTER_TENANT_V1) if self.version >= 3 => {}
                Some(d) if self.version >= 3 => {
                    return Err(format!("unknown key derivation {d:?}"))
                }
                Some(_) => {
                    return Err(format!(
                        "version {} cannot name a key derivation (version 3 can)",
                        self.version
                    ))
                }
            }
        }
        if self.version < 2 && !self.attachments.is_empty() {
            return Err(format!(
                "version {} cannot hold attachments (version 2 can)",
                self.version
            ));
        }
        let data = check_extents(&self.extents, self.chunk_size, self.source.volume_size)
            .map_err(|e| format!("{e}, the volume is {} bytes", self.source.volume_size))?;
        let mut names = std::collections::BTreeSet::new();
        for a in &self.attachments {
            validate_attachment_name(&a.name)?;
            if !names.insert(a.name.as_str()) {
                return Err(format!("attachment {:?} appears twice", a.name));
            }
            check_extents(&a.extents, self.chunk_size, a.size)
                .map_err(|e| format!("attachment {:?}: {e}, it is {} bytes", a.name, a.size))?;
        }
        if data != self.sizes.data {
            return Err(format!(
                "extents hold {data} data bytes, sizes.data says {}",
                self.sizes.data
            ));
        }
        Ok(())
    }

    /// The distinct chunks this manifest references (the image's and the attachments').
    pub fn chunk_ids(&self) -> std::collections::BTreeSet<ChunkId> {
        self.extents
            .iter()
            .chain(self.attachments.iter().flat_map(|a| a.extents.iter()))
            .filter_map(|x| x.chunk)
            .collect()
    }

    /// The attachment called `name`, if any.
    pub fn attachment(&self, name: &str) -> Option<&Attachment> {
        self.attachments.iter().find(|a| a.name == name)
    }
}

/// Checks that `extents` are sorted, contiguous, non-empty, no chunk longer than `chunk_size`,
/// and cover exactly `[0, size)`; returns the bytes held in chunks.
fn check_extents(
    extents: &[Extent],
    chunk_size: u64,
    size: u64,
) -> std::result::Result<u64, String> {
    let mut pos = 0u64;
    let mut data = 0u64;
    for x in extents {
        if x.offset != pos {
            return Err(format!(
                "extent at {} does not follow the previous one (expected offset {pos})",
                x.offset
            ));
        }
        if x.length == 0 {
            return Err(format!("empty extent at {}", x.offset));
        }
        if x.chunk.is_some() {
            if x.length > chunk_size {
                return Err(format!("chunk at {} longer than chunk_size", x.offset));
            }
            data += x.length;
        }
        pos = pos
            .checked_add(x.length)
            .ok_or_else(|| "extent overflow".to_string())?;
    }
    if pos != size {
        return Err(format!("extents cover {pos} bytes"));
    }
    Ok(data)
}

/// Checks an attachment name: 1-255 bytes of `/`-separated components from `[A-Za-z0-9._-]`,
/// none empty, `.`, `..` or starting with a dot, so a name is always a safe relative path.
pub fn validate_attachment_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.split('/').all(|c| {
            !c.is_empty()
                && !c.starts_with('.')
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad attachment name {name:?}: use /-separated parts of [A-Za-z0-9._-], none \
             empty or starting with '.'"
        ))
    }
}

/// Checks a snapshot id: `[A-Za-z0-9._-]{1,128}`, not starting with a dot.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'_' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidId { id: id.to_string() })
    }
}

/// Appends an extent, merging adjacent holes.
pub(crate) fn push_extent(v: &mut Vec<Extent>, x: Extent) {
    if x.is_hole() {
        if let Some(last) = v.last_mut() {
            if last.is_hole() && last.offset + last.length == x.offset {
                last.length += x.length;
                return;
            }
        }
    }
    v.push(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_id_hex_and_key_round_trip() {
        let id = ChunkId(*blake3::hash(b"x").as_bytes());
        assert_eq!(ChunkId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(ChunkId::from_key(&id.key()), Some(id));
        assert!(id.key().starts_with("chunks/"));
        assert_eq!(ChunkId::from_hex("zz"), None);
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("snap-1.a_b").is_ok());
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rejects_unknown_version_and_gaps() {
        let m = Manifest {
            version: 1,
            id: "a".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            tenant: "t".into(),
            source: Source {
                sandbox: None,
                volume_size: 10,
            },
            chunk_size: 4,
            compression: "zstd".into(),
            encryption: None,
            freeze_us: None,
            sizes: Sizes::default(),
            labels: Default::default(),
            extents: vec![Extent {
                offset: 0,
                length: 10,
                chunk: None,
                stored: 0,
            }],
            attachments: Vec::new(),
        };
        let j = m.to_json();
        assert_eq!(Manifest::from_json("a", &j).unwrap(), m);
        let j2 = String::from_utf8(j)
            .unwrap()
            .replace("\"version\": 1", "\"version\": 9");
        assert!(Manifest::from_json("a", j2.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        let mut gap = m.clone();
        gap.extents[0].offset = 1;
        assert!(gap.validate().is_err());
    }

    fn chunk(n: u8) -> Option<ChunkId> {
        Some(ChunkId([n; 32]))
    }

    fn v1() -> Manifest {
        Manifest::from_json(
            "a",
            br#"{"version": 1, "id": "a", "created_at": "2026-01-01T00:00:00Z",
                 "tenant": "t", "source": {"volume_size": 8}, "chunk_size": 4,
                 "compression": "zstd", "sizes": {"total": 8, "data": 4, "stored": 3,
                 "uploaded": 3}, "extents": [{"offset": 0, "length": 4, "chunk":
                 "0101010101010101010101010101010101010101010101010101010101010101",
                 "stored": 3}, {"offset": 4, "length": 4}]}"#,
        )
        .expect("a version 1 manifest written before attachments existed still reads")
    }

    #[test]
    fn a_derived_key_needs_version_3() {
        assert_eq!(version_for(false, true), 3);
        assert_eq!(version_for(true, true), 3);
        let mut m = v1();
        m.encryption = Some(Encryption {
            algorithm: "xchacha20poly1305".into(),
            chunk_id: "blake3-keyed".into(),
            key_id: "0011223344556677".into(),
            key_derivation: Some(crate::MASTER_TENANT_V1.into()),
        });
        let e = Manifest::from_json("a", &m.to_json())
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 3 can"), "{e}");
        m.version = 3;
        let j = String::from_utf8(m.to_json()).unwrap();
        assert!(
            j.contains("\"key_derivation\": \"master-tenant-v1\""),
            "{j}"
        );
        assert_eq!(Manifest::from_json("a", j.as_bytes()).unwrap(), m);
        m.encryption.as_mut().unwrap().key_derivation = Some("rot13".into());
        let e = Manifest::from_json("a", &m.to_json())
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key derivation"), "{e}");
        // Version 4 is refused with a clear word.
        m.version = 4;
        let e = Manifest::from_json("a", &m.to_json())
            .unwrap_err()
            .to_string();
        assert!(e.contains("reads versions 1 to 3"), "{e}");
    }

    #[test]
    fn version_1_reads_without_attachments_and_stays_version_1() {
        let m = v1();
        assert_eq!(m.version, 1);
        assert!(m.attachments.is_empty());
        assert_eq!(version_for(false, false), 1);
        let j = String::from_utf8(m.to_json()).unwrap();
        assert!(!j.contains("attachments"), "{j}");
        assert_eq!(Manifest::from_json("a", j.as_bytes()).unwrap(), m);
    }

    #[test]
    fn attachments_round_trip_in_version_2_and_count_in_chunk_ids() {
        let mut m = v1();
        m.version = version_for(true, false);
        m.attachments = vec![
            Attachment {
                name: "memory/pages.img".into(),
                size: 6,
                extents: vec![
                    Extent {
                        offset: 0,
                        length: 4,
                        chunk: chunk(2),
                        stored: 2,
                    },
                    Extent {
                        offset: 4,
                        length: 2,
                        chunk: chunk(1),
                        stored: 3,
                    },
                ],
            },
            Attachment {
                name: "empty".into(),
                size: 0,
                extents: vec![],
            },
        ];
        let back = Manifest::from_json("a", &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.version, 2);
        assert_eq!(back.chunk_ids().len(), 2, "shared chunk counted once");
        assert!(back.chunk_ids().contains(&ChunkId([2; 32])));
        assert_eq!(back.attachment("empty").unwrap().size, 0);
        assert!(back.attachment("nope").is_none());
    }

    #[test]
    fn bad_attachments_are_refused() {
        let ok = Attachment {
            name: "a".into(),
            size: 4,
            extents: vec![Extent {
                offset: 0,
                length: 4,
                chunk: chunk(3),
                stored: 1,
            }],
        };
        let with = |a: Vec<Attachment>, version: u32| {
            let mut m = v1();
            m.version = version;
            m.attachments = a;
            m.validate()
        };
        assert!(with(vec![ok.clone()], 2).is_ok());
        assert!(with(vec![ok.clone()], 1).unwrap_err().contains("version 1"));
        assert!(with(vec![ok.clone(), ok.clone()], 2)
            .unwrap_err()
            .contains("twice"));
        for name in ["", "../x", "a/../b", ".hidden", "a//b", "a b", "/abs"] {
            let a = Attachment {
                name: name.into(),
                ..ok.clone()
            };
            assert!(with(vec![a], 2).is_err(), "{name:?}");
        }
        let short = Attachment {
            size: 5,
            ..ok.clone()
        };
        assert!(with(vec![short], 2).unwrap_err().contains("cover 4"));
        let long = Attachment {
            size: 8,
            extents: vec![Extent {
                offset: 0,
                length: 8,
                chunk: chunk(3),
                stored: 1,
            }],
            ..ok
        };
        assert!(with(vec![long], 2).unwrap_err().contains("chunk_size"));
        let j = String::from_utf8(v1().to_json())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 4");
        assert!(Manifest::from_json("a", j.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("version 4"));
    }
}
