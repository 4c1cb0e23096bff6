//! Encoding of one chunk object: zstd-compressed plaintext, then, for encrypted snapshots, sealed
//! with the tenant key. Decoding checks everything: authentication, decompression, length and
//! the hash that names the chunk.

use crate::crypt::TenantKey;
use crate::manifest::ChunkId;

/// The id of plaintext `data`: plain BLAKE3, or keyed BLAKE3 with a tenant key.
pub fn chunk_id(key: Option<&TenantKey>, data: &[u8]) -> ChunkId {
    match key {
        Some(k) => k.chunk_id(data),
        None => ChunkId(*blake3::hash(data).as_bytes()),
    }
}

/// Builds the stored object for a chunk.
pub fn encode(
    key: Option<&TenantKey>,
    id: &ChunkId,
    data: &[u8],
    level: i32,
) -> std::io::Result<Vec<u8>> {
    let z = zstd::bulk::compress(data, level)?;
    match key {
        Some(k) => k.seal(id, &z),
        None => Ok(z),
    }
}

/// Recovers and verifies a chunk of `length` bytes; `Err` says why it is corrupt.
pub fn decode(
    key: Option<&TenantKey>,
    id: &ChunkId,
    stored: &[u8],
    length: usize,
) -> Result<Vec<u8>, String> {
    let opened;
    let z = match key {
        Some(k) => {
            opened = k.open(id, stored)?;
            &opened[..]
        }
        None => stored,
    };
    let data =
        zstd::bulk::decompress(z, length).map_err(|e| format!("zstd decompression failed: {e}"))?;
    if data.len() != length {
        return Err(format!(
            "decompressed to {} bytes, the manifest says {length}",
            data.len()
        ));
    }
    if chunk_id(key, &data) != *id {
        return Err("BLAKE3 hash of the content does not match the chunk id".into());
    }
    Ok(data)
}
