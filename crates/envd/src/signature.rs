//! Signed `/files` URLs (the SDK's `download_url` / `upload_url`):
//! `signature=v1_<unpadded base64 of sha256("{path}:{read|write}:{user}:{token}[:{expiration}]")>`
//! with an optional `signature_expiration` (Unix seconds). The token is the
//! sandbox's envd access token, so a signature both authorizes the request
//! and, when no sandbox id header comes with it, names the sandbox.
//!
//! A URL without `signature_expiration` names no time, so nothing in it can
//! expire; the daemon gives it one ([`Unexpiring`]): it is valid for the
//! configured lifetime (`dwell serve --signed-url-lifetime`, default
//! [`DEFAULT_LIFETIME`]) from its first use, then refused with 401. The
//! first uses are remembered in memory, at most [`MAX_PER_SANDBOX`] per
//! sandbox (more such URLs are refused until the sandbox is deleted: sign
//! them with an expiration), and forgotten when the sandbox is deleted or
//! the daemon restarts (which starts their lifetimes over).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use sha2::{Digest, Sha256};

/// How long a signed URL without an expiration stays valid after its first use.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// Signed URLs without an expiration remembered per sandbox.
pub const MAX_PER_SANDBOX: usize = 4096;

/// First uses of signed URLs without an expiration, per sandbox.
pub struct Unexpiring {
    lifetime: Duration,
    seen: Mutex<HashMap<String, HashMap<String, Instant>>>,
}

impl Unexpiring {
    pub fn new(lifetime: Duration) -> Unexpiring {
        Unexpiring {
            lifetime,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a use `now` of `signature` (already checked to be valid for
    /// `sandbox`), or says why not and what to do instead.
    pub fn admit(&self, sandbox: &str, signature: &str, now: Instant) -> Result<(), String> {
        let mut seen = self.seen.lock().unwrap();
        let of_sandbox = seen.entry(sandbox.to_string()).or_default();
        match of_sandbox.get(signature) {
            Some(first) if now.saturating_duration_since(*first) > self.lifetime => Err(format!(
                "the signed URL has expired: a URL without signature_expiration is valid for {} after its first use; ask the SDK for a new one (with use_signature_expiration to choose its lifetime)",
                humantime::format_duration(self.lifetime)
            )),
            Some(_) => Ok(()),
            None if of_sandbox.len() >= MAX_PER_SANDBOX => Err(format!(
                "sandbox {sandbox} already has {MAX_PER_SANDBOX} signed URLs without an expiration in use; sign new ones with an expiration (use_signature_expiration)"
            )),
            None => {
                of_sandbox.insert(signature.to_string(), now);
                Ok(())
            }
        }
    }

    /// Forgets the URLs of sandboxes for which `exists` is false.
    pub fn purge(&self, exists: impl Fn(&str) -> bool) {
        let sandboxes: Vec<String> = self.seen.lock().unwrap().keys().cloned().collect();
        let gone: Vec<String> = sandboxes.into_iter().filter(|s| !exists(s)).collect();
        let mut seen = self.seen.lock().unwrap();
        for s in gone {
            seen.remove(&s);
        }
    }

    /// Sandboxes with remembered URLs.
    pub fn len(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The signature of a file operation (`op` is `read` or `write`; `user`
/// is the `username` parameter, empty when none).
pub fn sign(path: &str, op: &str, user: &str, token: &str, expiration: Option<i64>) -> String {
    let raw = match expiration {
        Some(e) => format!("{path}:{op}:{user}:{token}:{e}"),
        None => format!("{path}:{op}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// Whether `signature` signs this operation with `token` (in constant time).
pub fn matches(
    signature: &str,
    path: &str,
    op: &str,
    user: &str,
    token: &str,
    expiration: Option<i64>,
) -> bool {
    let want = sign(path, op, user, token, expiration);
    want.len() == signature.len()
        && want
            .bytes()
            .zip(signature.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_sdk_formula() {
        // python3 -c 'import hashlib,base64;print(base64.b64encode(hashlib.sha256(b"/a:read::tok").digest()).rstrip(b"=").decode())'
        assert_eq!(
            sign("/a", "read", "", "tok", None),
            "v1_2/gNbgFPxFSqkheS/SD0NHlzA121E/nxkOtc/ovxeoI"
        );
        let s = sign("/a", "write", "root", "tok", Some(1700000000));
        assert!(matches(&s, "/a", "write", "root", "tok", Some(1700000000)));
        assert!(!matches(&s, "/a", "write", "root", "tok", Some(1700000001)));
        assert!(!matches(&s, "/a", "read", "root", "tok", Some(1700000000)));
    }

    #[test]
    fn unexpiring_urls_live_for_the_lifetime_from_first_use() {
        let u = Unexpiring::new(Duration::from_secs(10));
        let t0 = Instant::now();
        u.admit("sb", "sig", t0).unwrap();
        u.admit("sb", "sig", t0 + Duration::from_secs(10)).unwrap();
        let e = u
            .admit("sb", "sig", t0 + Duration::from_secs(11))
            .unwrap_err();
        assert!(e.contains("expired") && e.contains("10s"), "{e}");
        // Another URL, or the same on another sandbox, has its own lifetime.
        u.admit("sb", "sig2", t0 + Duration::from_secs(11)).unwrap();
        u.admit("sb2", "sig", t0 + Duration::from_secs(11)).unwrap();
        u.purge(|s| s == "sb");
        assert_eq!(u.len(), 1);
        // Still expired: only deleting the sandbox forgets it.
        assert!(u.admit("sb", "sig", t0 + Duration::from_secs(12)).is_err());
    }

    #[test]
    fn unexpiring_urls_are_bounded_per_sandbox() {
        let u = Unexpiring::new(Duration::from_secs(10));
        let t0 = Instant::now();
        for i in 0..MAX_PER_SANDBOX {
            u.admit("sb", &format!("s{i}"), t0).unwrap();
        }
        let e = u.admit("sb", "one-more", t0).unwrap_err();
        assert!(e.contains("use_signature_expiration"), "{e}");
        u.admit("sb", "s0", t0).unwrap();
        u.admit("other", "one-more", t0).unwrap();
    }
}
