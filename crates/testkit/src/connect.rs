//! The wire format of E2B's envd as its SDKs speak it: Connect streaming
//! envelopes, standard base64, and signed file URLs.

use serde_json::Value;
use sha2::Digest;

/// One Connect envelope (flags 0) carrying `v` as JSON.
pub fn envelope(v: &Value) -> Vec<u8> {
    let p = serde_json::to_vec(v).unwrap();
    let mut b = vec![0u8];
    b.extend_from_slice(&(p.len() as u32).to_be_bytes());
    b.extend_from_slice(&p);
    b
}

/// The envelopes of a streaming body: (flags, JSON); panics on trailing
/// bytes.
pub fn envelopes(body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    let mut b = body;
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        out.push((b[0], serde_json::from_slice(&b[5..5 + len]).unwrap()));
        b = &b[5 + len..];
    }
    assert!(b.is_empty(), "trailing bytes after the envelopes");
    out
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64, padded.
pub fn b64(b: &[u8]) -> String {
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Decodes standard base64 (padding optional).
pub fn unb64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=').map(val).collect();
    let mut out = Vec::new();
    for c in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &v) in c.iter().enumerate() {
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..c.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// A file URL's signature for `raw` (`path:operation:user:token[:expiry]`):
/// `v1_` and the unpadded base64 of its SHA-256, escaped for a query.
pub fn signature(raw: &str) -> String {
    let d = sha2::Sha256::digest(raw.as_bytes());
    format!("v1_{}", b64(&d).trim_end_matches('='))
        .replace('/', "%2F")
        .replace('+', "%2B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_padding() {
        for s in [&b""[..], b"h", b"hi", b"hi\n", b"stty size; exit 7\n"] {
            assert_eq!(unb64(&b64(s)), s);
        }
        assert_eq!(b64(b"hi\n"), "aGkK");
        assert_eq!(b64(b"oops\n"), "b29wcwo=");
    }

    #[test]
    fn envelopes_read_back_what_envelope_wrote() {
        let v = serde_json::json!({"a": 1});
        let mut body = envelope(&v);
        body.extend(envelope(&serde_json::json!({})));
        body[5 + 7] = 2; // the second envelope's flags: end of stream
        assert_eq!(envelopes(&body), vec![(0, v), (2, serde_json::json!({}))]);
    }
}
