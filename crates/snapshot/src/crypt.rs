//! Encryption at rest with a per-tenant key.
//!
//! From the 32-byte tenant key, BLAKE3's key derivation makes three independent keys: one that
//! keys the chunk hash (so chunk names are keyed BLAKE3 hashes that reveal nothing about the
//! content, and the same content stored by two tenants gets two unrelated names), one for
//! XChaCha20-Poly1305, and a public fingerprint recorded in the manifest so that a wrong key is
//! reported as a wrong key rather than as corruption. Each compressed chunk is sealed with a
//! fresh random 24-byte nonce; the chunk id is the associated data, so a chunk object cannot be
//! swapped for another one undetected.
//!
//! Where the tenant key comes from is recorded in the manifest (`encryption.key_derivation`,
//! format version 3): a [`MasterKey`] derives every tenant's key as
//! `derive_key("dwell-snapshot 2026 tenant key v1", master || tenant)`, so one secret shared by
//! the daemons that share a store serves all tenants, and no tenant's key opens another's
//! snapshots. Keys made with [`TenantKey::from_bytes`] (format versions 1 and 2) came from the
//! writer by other means.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::manifest::ChunkId;

const CTX_CHUNK_ID: &str = "dwell-snapshot 2026 chunk-id v1";
const CTX_SEAL: &str = "dwell-snapshot 2026 chunk-seal v1";
const CTX_FINGERPRINT: &str = "dwell-snapshot 2026 key-fingerprint v1";
const CTX_TENANT: &str = "dwell-snapshot 2026 tenant key v1";

/// The name of the master-key derivation in manifests (`encryption.key_derivation`).
pub const MASTER_TENANT_V1: &str = "master-tenant-v1";

/// Length of a master key in bytes.
pub const MASTER_KEY_LEN: usize = 32;

/// The secret every tenant key of a store is derived from. Debug output never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; MASTER_KEY_LEN]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A master key from its 32 secret bytes.
    pub fn from_bytes(secret: [u8; MASTER_KEY_LEN]) -> MasterKey {
        MasterKey(secret)
    }

    /// The key of `tenant`: `derive_key(CTX_TENANT, master || tenant)`. The master key has a
    /// fixed length, so the material is unambiguous for every tenant name.
    pub fn tenant(&self, tenant: &str) -> TenantKey {
        let mut material = Vec::with_capacity(MASTER_KEY_LEN + tenant.len());
        material.extend_from_slice(&self.0);
        material.extend_from_slice(tenant.as_bytes());
        let mut k = TenantKey::from_bytes(blake3::derive_key(CTX_TENANT, &material));
        k.derivation = Some(MASTER_TENANT_V1);
        k
    }
}

/// Length of the random nonce prefixed to every sealed chunk.
pub const NONCE_LEN: usize = 24;

/// A tenant's encryption key (32 bytes of secret). Debug output never shows the key.
#[derive(Clone)]
pub struct TenantKey {
    id_key: [u8; 32],
    seal_key: [u8; 32],
    fingerprint: String,
    /// How the key was derived, when it was derived from a [`MasterKey`].
    derivation: Option<&'static str>,
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
            derivation: None,
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

    /// How this key was derived ([`MASTER_TENANT_V1`]), or `None` for a key given as bytes.
    pub fn derivation(&self) -> Option<&'static str> {
        self.derivation
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

    #[test]
    fn master_key_derives_distinct_stable_tenant_keys() {
        let m = MasterKey::from_bytes([1; 32]);
        let a = m.tenant("acme");
        assert_eq!(a.derivation(), Some(MASTER_TENANT_V1));
        assert_eq!(a.fingerprint(), m.tenant("acme").fingerprint());
        assert_ne!(a.fingerprint(), m.tenant("globex").fingerprint());
        // Tenant names are not confused with master bytes or each other.
        assert_ne!(a.fingerprint(), m.tenant("acm").fingerprint());
        assert_ne!(a.fingerprint(), m.tenant("").fingerprint());
        // Same content, two tenants: two unrelated chunk ids; same tenant: the same id.
        let g = m.tenant("globex");
        assert_ne!(a.chunk_id(b"same"), g.chunk_id(b"same"));
        assert_eq!(a.chunk_id(b"same"), m.tenant("acme").chunk_id(b"same"));
        // Another master key, another tenant key; and one tenant's key opens nothing of another.
        let other = MasterKey::from_bytes([2; 32]);
        assert_ne!(a.fingerprint(), other.tenant("acme").fingerprint());
        let id = a.chunk_id(b"x");
        assert!(g.open(&id, &a.seal(&id, b"x").unwrap()).is_err());
        // The derivation is the documented one (FORMAT.md), not just any.
        let mut material = [1u8; 32].to_vec();
        material.extend_from_slice(b"acme");
        let want = TenantKey::from_bytes(blake3::derive_key(CTX_TENANT, &material));
        assert_eq!(a.fingerprint(), want.fingerprint());
        assert_eq!(format!("{m:?}"), "MasterKey(..)");
    }
}
