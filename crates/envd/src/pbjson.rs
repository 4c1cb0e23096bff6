//! The proto3 JSON mapping pieces the envd messages need: integers that
//! arrive as numbers or strings, `bytes` as base64, timestamps as RFC 3339,
//! and Go's `FileMode` rendering of permissions.

use base64::Engine;
use serde::{Deserialize, Deserializer};

/// Deserializes a proto3 integer written as a JSON number or string
/// (missing or `null` is the default, 0).
pub fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u32),
        Str(String),
        Null(()),
    }
    match N::deserialize(d)? {
        N::Num(n) => Ok(n),
        N::Str(s) => s.trim().parse().map_err(serde::de::Error::custom),
        N::Null(()) => Ok(0),
    }
}

/// Like [`uint`], for an `optional` field.
pub fn opt_uint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    uint(d).map(Some)
}

/// Deserializes a proto3 `bytes` field (standard or URL-safe base64).
pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    match s {
        None => Ok(None),
        Some(s) => decode_b64(&s).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Decodes base64 in any of the forms proto3 JSON allows.
pub fn decode_b64(s: &str) -> Result<Vec<u8>, String> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    let t = s.trim_end_matches('=');
    let padded = format!("{t}{}", "=".repeat((4 - t.len() % 4) % 4));
    STANDARD
        .decode(&padded)
        .or_else(|_| URL_SAFE.decode(&padded))
        .map_err(|e| format!("invalid base64 in a bytes field: {e}"))
}

/// Encodes bytes as standard, padded base64.
pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z).
const MAX_RFC3339_MS: i64 = 253_402_300_799_999;

/// An RFC 3339 timestamp from Unix milliseconds, clamped to the years
/// 1970..=9999 (a file's mtime can be anything; the formatter cannot).
pub fn timestamp(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_RFC3339_MS) as u64;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Go's `os.FileMode` type bits, which envd reports in `mode`.
pub const GO_MODE_DIR: u32 = 1 << 31;
pub const GO_MODE_SYMLINK: u32 = 1 << 27;
const GO_MODE_SETUID: u32 = 1 << 23;
const GO_MODE_SETGID: u32 = 1 << 22;
const GO_MODE_STICKY: u32 = 1 << 20;

/// Go's `FileMode` from a kind and Unix permission bits (`st_mode & 0o7777`).
pub fn go_mode(kind: dwell_proto::FileKind, unix: u32) -> u32 {
    let mut m = unix & 0o777;
    match kind {
        dwell_proto::FileKind::Dir => m |= GO_MODE_DIR,
        dwell_proto::FileKind::Symlink => m |= GO_MODE_SYMLINK,
        _ => {}
    }
    if unix & 0o4000 != 0 {
        m |= GO_MODE_SETUID;
    }
    if unix & 0o2000 != 0 {
        m |= GO_MODE_SETGID;
    }
    if unix & 0o1000 != 0 {
        m |= GO_MODE_STICKY;
    }
    m
}

/// Go's `FileMode.String()`: type letters (or `-`), then `rwxrwxrwx`.
pub fn permissions(go: u32) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (GO_MODE_DIR, 'd'),
        (GO_MODE_SYMLINK, 'L'),
        (GO_MODE_SETUID, 'u'),
        (GO_MODE_SETGID, 'g'),
        (GO_MODE_STICKY, 't'),
    ] {
        if go & bit != 0 {
            s.push(c);
        }
    }
    if s.is_empty() {
        s.push('-');
    }
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if go & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_clamp_out_of_range_times() {
        assert_eq!(timestamp(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(timestamp(300_000_000_000_000), "9999-12-31T23:59:59.999Z");
    }
    use dwell_proto::FileKind;

    #[test]
    fn integers_as_numbers_or_strings() {
        #[derive(Deserialize)]
        struct M {
            #[serde(deserialize_with = "uint", default)]
            pid: u32,
        }
        let a: M = serde_json::from_str(r#"{"pid": 42}"#).unwrap();
        let b: M = serde_json::from_str(r#"{"pid": "42"}"#).unwrap();
        let c: M = serde_json::from_str(r#"{}"#).unwrap();
        assert_eq!((a.pid, b.pid, c.pid), (42, 42, 0));
    }

    #[test]
    fn base64_forms() {
        assert_eq!(decode_b64("YQo=").unwrap(), b"a\n");
        assert_eq!(decode_b64("YQo").unwrap(), b"a\n");
        assert_eq!(decode_b64("_-8").unwrap(), [0xff, 0xef]);
        assert_eq!(b64(b"hi\n"), "aGkK");
    }

    #[test]
    fn go_file_modes() {
        assert_eq!(permissions(go_mode(FileKind::File, 0o644)), "-rw-r--r--");
        assert_eq!(permissions(go_mode(FileKind::Dir, 0o755)), "drwxr-xr-x");
        assert_eq!(permissions(go_mode(FileKind::Symlink, 0o777)), "Lrwxrwxrwx");
        assert_eq!(permissions(go_mode(FileKind::Dir, 0o1777)), "dtrwxrwxrwx");
        assert_eq!(go_mode(FileKind::Dir, 0o755), (1 << 31) | 0o755);
    }

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(timestamp(1_500), "1970-01-01T00:00:01.500Z");
    }
}
