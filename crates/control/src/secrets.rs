//! Secret environment variables: sealed at rest, injected per exec.
//!
//! Values of secret variables are encrypted (XChaCha20-Poly1305) with the
//! daemon's key in `<data-dir>/secret.key` (mode 0600) before they reach the
//! database, and are never written to a runtime config, an event or a log.
//! Only their names are visible in `inspect`. They reach processes because
//! the daemon adds them to each exec request it sends to the agent, over
//! the sandbox's socket.

use std::collections::BTreeMap;
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

/// Seals and opens secret values with the daemon's key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Key for tokens derived from the daemon key (keyed BLAKE3 of the
    /// daemon key under a fixed context, so it never equals the key).
    token_key: [u8; 32],
    /// Root of the per-tenant snapshot keys (derived like `token_key`).
    snapshot_root: [u8; 32],
    /// Signs the port proxy's one-time login tokens and cookies, and
    /// derives E2B traffic access tokens (derived like `token_key`).
    port_key: [u8; 32],
}

impl Sealer {
    /// Load the key, making it (0600, atomically) on first use.
    pub fn load_or_create(path: &Path) -> std::io::Result<Sealer> {
        let key = crate::keyfile::load_or_create(path, 32)?;
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new_from_slice(&key)
                .map_err(|e| std::io::Error::other(e.to_string()))?,
            token_key: blake3::derive_key("dwell 2026 sandbox access token", &key),
            snapshot_root: blake3::derive_key("dwell 2026 snapshot tenant keys", &key),
            port_key: blake3::derive_key("dwell 2026 port proxy", &key),
        })
    }

    /// Encrypt a map of variables; hex of nonce and ciphertext.
    pub fn seal(&self, vars: &BTreeMap<String, String>) -> Result<String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| Error::Internal(e.to_string()))?;
        let plain = serde_json::to_vec(vars).map_err(|e| Error::Internal(e.to_string()))?;
        let ct = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain.as_slice())
            .map_err(|_| Error::Internal("sealing secrets failed".into()))?;
        Ok(hex(&nonce) + &hex(&ct))
    }

    /// A bearer token for one sandbox's in-sandbox API (the E2B "envd
    /// access token"): a keyed hash of the sandbox id, so it needs no
    /// storage, survives restarts and differs per sandbox. Compare with
    /// [`token_matches`](Self::token_matches), which is constant-time.
    pub fn sandbox_token(&self, sandbox_id: &str) -> String {
        blake3::keyed_hash(&self.token_key, sandbox_id.as_bytes())
            .to_hex()
            .to_string()
    }

    /// Whether `token` is the access token of `sandbox_id`.
    pub fn token_matches(&self, sandbox_id: &str, token: &str) -> bool {
        match blake3::Hash::from_hex(token) {
            // `blake3::Hash` equality is constant-time.
            Ok(h) => h == blake3::keyed_hash(&self.token_key, sandbox_id.as_bytes()),
            Err(_) => false,
        }
    }

    /// A MAC of `msg` under the port proxy's key (compare the
    /// `blake3::Hash` values: their equality is constant-time).
    pub fn port_mac(&self, msg: &[u8]) -> blake3::Hash {
        blake3::keyed_hash(&self.port_key, msg)
    }

    /// The snapshot encryption key of `tenant` in format versions 1 and 2: a
    /// keyed hash of the tenant name under a key derived from the daemon
    /// key. New snapshots use the master key (`snapshot.key`) instead; this
    /// one only reads snapshots sealed before it.
    pub fn snapshot_key(&self, tenant: &str) -> dwell_snapshot::TenantKey {
        dwell_snapshot::TenantKey::from_bytes(
            *blake3::keyed_hash(&self.snapshot_root, tenant.as_bytes()).as_bytes(),
        )
    }

    /// Decrypt what [`seal`](Self::seal) made.
    pub fn open(&self, sealed: &str) -> Result<BTreeMap<String, String>> {
        let bytes =
            unhex(sealed).ok_or_else(|| Error::Internal("corrupt sealed secrets".into()))?;
        if bytes.len() < 24 {
            return Err(Error::Internal("corrupt sealed secrets".into()));
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = self.cipher.decrypt(XNonce::from_slice(nonce), ct).map_err(|_| {
            Error::Internal("secrets cannot be opened with this daemon's key (was <data-dir>/secret.key replaced?)".into())
        })?;
        serde_json::from_slice(&plain).map_err(|e| Error::Internal(e.to_string()))
    }
}

/// `b` as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Hex text as bytes; None when it is not even-length hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_clear_text() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let vars = BTreeMap::from([("TOKEN".to_string(), "s3cr3t-value".to_string())]);
        let sealed = s.seal(&vars).unwrap();
        assert!(!sealed.contains("s3cr3t") && !sealed.contains(&hex(b"s3cr3t")));
        assert_eq!(s.open(&sealed).unwrap(), vars);
        let other = Sealer::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(other.open(&sealed).is_err());
        // Same key file, same key.
        let again = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        assert_eq!(again.open(&sealed).unwrap(), vars);
    }

    #[test]
    fn sandbox_tokens_are_per_sandbox_and_per_key() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let t = s.sandbox_token("abc");
        assert_eq!(t.len(), 64);
        assert!(s.token_matches("abc", &t));
        assert!(!s.token_matches("abd", &t));
        assert!(!s.token_matches("abc", "not-hex"));
        let other = Sealer::load_or_create(&dir.path().join("k2")).unwrap();
        assert!(!other.token_matches("abc", &t));
    }

    #[test]
    fn snapshot_keys_differ_per_tenant_and_per_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let s = Sealer::load_or_create(&dir.path().join("k")).unwrap();
        let a = s.snapshot_key("acme");
        assert_eq!(a.fingerprint(), s.snapshot_key("acme").fingerprint());
        assert_ne!(a.fingerprint(), s.snapshot_key("globex").fingerprint());
        let other = Sealer::load_or_create(&dir.path().join("k2")).unwrap();
        assert_ne!(a.fingerprint(), other.snapshot_key("acme").fingerprint());
    }
}
