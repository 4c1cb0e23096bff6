//! Encryption at rest with a per-tenant key.
//!
//! From the 32-byte tenant key, BLAKE3's key derivation makes three independent keys: one that
//! keys the chunk hash (so chunk names are keyed BLAKE3 hashes that reveal nothing about the
//! content, and the same content stored by two tenants gets two unrelated names), one for
//! XChaCha20-Poly1305, and a public fingerprint recorded in the manifest so that a wrong key is
//! reported as a wrong key rather than as corruption. Each compressed chunk is sealed with a
//! fresh random 24-byte nonce; the chunk id is the associated data, so a chunk object cannot be
//! swapped for another one undetected.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::manifest::ChunkId;

const CTX_CHUNK_ID: &str = "dwell-snapshot 2026 chunk-id v1";
const CTX_SEAL: &str = "dwell-snapshot 2026 chunk-seal v1";
const CTX_FINGERPRINT: &str = "dwell-snapshot 2026 key-fingerprint v1";

/// Length of the random nonce prefixed to every sealed chunk.
pub const NONCE_LEN: usize = 24;

/// A tenant's encryption key (32 bytes of secret). Debug output never shows the key.
#[derive(Clone)]
pub struct TenantKey {
    id_key: [u8; 32],
    seal_key: [u8; 32],
    fingerprint: String,
}

impl std::fmt::Debug for TenantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TenantKey({})", self.fingerprint)
    }
}

impl TenantKey {
    /// Derives the working keys from 32 secret bytes.
    pub fn from_bytes(secret: [u8; 32]) -> TenantKey {
        let fp = blake3::derive_key(CTX_FINGERPRINT, &secret);
        let mut fingerprint = String::new();
        for b in &fp[..8] {
            fingerprint.push_str(&format!("{b:02x}"));
        }
        TenantKey {
            id_key: blake3::derive_key(CTX_CHUNK_ID, &secret),
            seal_key: blake3::derive_key(CTX_SEAL, &secret),
            fingerprint,
        }
    }

    /// A fresh random key (from the OS random source), returned with its secret bytes so the
    /// caller can store them.
    pub fn generate() -> std::io::Result<([u8; 32], TenantKey)> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)
            .map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
        Ok((secret, TenantKey::from_bytes(secret)))
    }

    /// The public fingerprint (16 hex characters) recorded in manifests.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The keyed chunk id of plaintext `data`.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        ChunkId(*blake3::keyed_hash(&self.id_key, data).as_bytes())
    }

    /// Seals `plain` (a compressed chunk): `nonce || ciphertext+tag`.
    pub fn seal(&self, id: &ChunkId, plain: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
        let cipher = XChaCha20Poly1305::new((&self.seal_key).into());
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &id.0,
                },
            )
            .map_err(|_| std::io::Error::other("chunk encryption failed"))?;
        let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Opens a sealed chunk; `Err` with the reason when it is too short or fails authentication.
    pub fn open(&self, id: &ChunkId, sealed: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(format!(
                "sealed chunk is {} bytes, shorter than nonce and tag",
                sealed.len()
            ));
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new((&self.seal_key).into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &id.0,
                },
            )
            .map_err(|_| "authentication tag mismatch (tampered data or wrong key)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_tamper() {
        let k = TenantKey::from_bytes([7; 32]);
        let id = k.chunk_id(b"hello");
        let s = k.seal(&id, b"hello").unwrap();
        assert_eq!(k.open(&id, &s).unwrap(), b"hello");
        let mut bad = s.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(k.open(&id, &bad).is_err());
        let other = TenantKey::from_bytes([8; 32]);
        assert!(other.open(&id, &s).is_err());
        assert_ne!(other.chunk_id(b"hello"), id);
        assert_ne!(ChunkId(*blake3::hash(b"hello").as_bytes()), id);
        assert_ne!(other.fingerprint(), k.fingerprint());
    }
}
