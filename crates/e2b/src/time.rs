//! Timestamps as the E2B API writes them (RFC 3339, UTC) and reads them
//! (RFC 3339 with `Z` or a `±HH:MM` offset, as Python's `isoformat()`).

use std::time::{Duration, UNIX_EPOCH};

/// Unix milliseconds as `2026-01-02T03:04:05.678Z`.
/// Clamped to the years 1970..=9999, which RFC 3339 can write.
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.clamp(0, 253_402_300_799_999) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// An RFC 3339 timestamp as Unix milliseconds.
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    let (base, offset_min) = match s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        Some(b) => (b, 0i64),
        None => {
            // A trailing `+HH:MM` / `-HH:MM` after the time part.
            let at = s.len().checked_sub(6)?;
            // `get` rather than `split_at`: `at` may fall inside a
            // multi-byte character of a hostile input.
            let (b, off) = (s.get(..at)?, s.get(at..)?);
            let sign = match off.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return humantime::parse_rfc3339_weak(s).ok().map(to_ms),
            };
            let h: i64 = off.get(1..3)?.parse().ok()?;
            let m: i64 = off.get(4..6)?.parse().ok()?;
            (b, sign * (h * 60 + m))
        }
    };
    let t = humantime::parse_rfc3339_weak(base).ok()?;
    Some(to_ms(t) - offset_min * 60_000)
}

fn to_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_offsets() {
        let ms = 1_790_000_000_123;
        assert_eq!(parse_ms(&format_ms(ms)), Some(ms));
        let z = parse_ms("2026-11-28T19:00:00Z").unwrap();
        assert_eq!(parse_ms("2026-11-28T19:00:00.000000+00:00"), Some(z));
        assert_eq!(parse_ms("2026-11-28T20:30:00+01:30"), Some(z));
        assert_eq!(parse_ms("2026-11-28T14:00:00-05:00"), Some(z));
        assert_eq!(parse_ms("yesterday"), None);
        // Multi-byte characters where the offset would start: no panic.
        assert_eq!(parse_ms("2026-11-28T19:00:00ééé"), None);
        assert_eq!(parse_ms("日本語"), None);
        assert_eq!(format_ms(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
