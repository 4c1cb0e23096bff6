//! Signed `/files` URLs (the SDK's `download_url` / `upload_url`):
//! `signature=v1_<unpadded base64 of sha256("{path}:{read|write}:{user}:{token}[:{expiration}]")>`
//! with an optional `signature_expiration` (Unix seconds). The token is the
//! sandbox's envd access token, so a signature both authorizes the request
//! and, when no sandbox id header comes with it, names the sandbox.

use base64::Engine;
use sha2::{Digest, Sha256};

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
}
