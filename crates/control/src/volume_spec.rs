//! Named volume requests as a sandbox's spec carries them
//! (`NAME:/path[:ro]`), and the rules for names, sizes and mount paths:
//! checked at create, before anything is made (see [`crate::volumes`]).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A named volume bound into a sandbox: `NAME:/path[:ro]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The tenant's volume (name).
    pub name: String,
    /// Absolute path inside the sandbox.
    pub path: String,
    #[serde(default)]
    pub read_only: bool,
}

/// The directory of named volumes under the data dir.
pub const DIR: &str = "named-volumes";
/// Smallest named volume.
pub const MIN_SIZE: u64 = 32 << 20;
/// Largest named volume.
pub const MAX_SIZE: u64 = dwell_storage::MAX_NAMED_VOLUME_SIZE;
/// Most volumes one sandbox binds.
pub const MAX_MOUNTS: usize = 16;

/// Paths inside a sandbox no volume may cover: kernel filesystems, the
/// agent's directories, and the root itself.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run/dwell", "/.dwell"];

/// A volume name: 1-63 lowercase letters, digits, '-', '_' or '.',
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::invalid(
            "volume",
            format!(
                "{name:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a \
                 letter or digit"
            ),
        ));
    }
    Ok(())
}

/// A named volume's size: 32 MiB to 64 TiB.
pub fn check_size(bytes: u64) -> Result<()> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&bytes) {
        return Err(Error::invalid(
            "size",
            format!(
                "{} is out of range: a volume is 32MiB to 64TiB (e.g. --size 20G)",
                crate::size::format_size(bytes)
            ),
        ));
    }
    Ok(())
}

/// Check a path inside the sandbox for a volume: absolute, normalized, not
/// `/` nor a reserved path, below one or above one.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(
            "volumes",
            format!("mount path {path:?} {why}"),
        ))
    };
    if !path.starts_with('/') {
        return bad("must be absolute (e.g. /data)");
    }
    if path.len() > 1024 || path.contains('\0') {
        return bad("is too long or holds a NUL byte");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if path == "/" || parts.iter().all(|p| p.is_empty()) {
        return bad("is the sandbox's root; mount the volume on a directory such as /data");
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return bad("must be normalized (no '//', '.', '..' or trailing '/')");
    }
    for r in RESERVED {
        if r.starts_with(&format!("{path}/")) {
            return bad(&format!(
                "would cover {r}, which belongs to the kernel or to dwell's agent; choose \
                 another directory"
            ));
        }
        if path == *r || path.starts_with(&format!("{r}/")) {
            return bad(&format!(
                "is reserved ({r} belongs to the kernel or to dwell's agent); choose another \
                 directory"
            ));
        }
    }
    Ok(())
}

/// Check a create request's volume list: names and paths valid, no path
/// twice, none inside another (a bind inside another volume would be
/// made through a directory other sandboxes can change).
pub fn check_mounts(mounts: &[VolumeMount]) -> Result<Vec<VolumeMount>> {
    if mounts.len() > MAX_MOUNTS {
        return Err(Error::invalid(
            "volumes",
            format!(
                "{} volumes; a sandbox binds at most {MAX_MOUNTS}",
                mounts.len()
            ),
        ));
    }
    for (i, m) in mounts.iter().enumerate() {
        validate_name(&m.name)?;
        check_path(&m.path)?;
        for o in &mounts[..i] {
            let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if nested(&m.path, &o.path) || nested(&o.path, &m.path) {
                return Err(Error::invalid(
                    "volumes",
                    format!(
                        "mount paths {} and {} overlap; give each volume its own directory, \
                         neither inside the other",
                        o.path, m.path
                    ),
                ));
            }
        }
    }
    Ok(mounts.to_vec())
}

/// Parse `NAME:/path[:ro|:rw]` (the CLI's and the API's short form).
pub fn parse_mount(s: &str) -> Result<VolumeMount> {
    let bad = || {
        Error::invalid(
            "volumes",
            format!("{s:?}: use NAME:/path or NAME:/path:ro (e.g. pgdata:/var/lib/data)"),
        )
    };
    let (name, rest) = s.split_once(':').ok_or_else(bad)?;
    let (path, read_only) = match rest.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some(_) => return Err(bad()),
        None => (rest, false),
    };
    let m = VolumeMount {
        name: name.to_string(),
        path: path.to_string(),
        read_only,
    };
    check_mounts(std::slice::from_ref(&m))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_syntax_and_paths() {
        let m = parse_mount("pgdata:/var/lib/data:ro").unwrap();
        assert_eq!(
            (m.name.as_str(), m.path.as_str(), m.read_only),
            ("pgdata", "/var/lib/data", true)
        );
        assert!(!parse_mount("a:/data").unwrap().read_only);
        for bad in [
            "a",
            "a:data",
            "a:/",
            "a:/proc",
            "a:/proc/x",
            "a:/dev",
            "a:/sys/fs",
            "a:/run/dwell",
            "a:/.dwell",
            "a:/x/../y",
            "a:/x//y",
            "a:/x/",
            "a:/x:rx",
            "A:/x",
            ":/x",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
        // /proc-like names that are not /proc are fine.
        parse_mount("a:/process").unwrap();
        parse_mount("a:/run/postgresql").unwrap();
        let two =
            |a: &str, b: &str| check_mounts(&[parse_mount(a).unwrap(), parse_mount(b).unwrap()]);
        assert!(two("a:/data", "b:/data").is_err());
        assert!(two("a:/data", "b:/data/x").is_err());
        assert!(two("a:/data/x", "b:/data").is_err());
        two("a:/data", "b:/data2").unwrap();
        two("a:/data", "a:/again").unwrap();
    }

    #[test]
    fn size_range() {
        assert!(check_size((32 << 20) - 1).is_err());
        check_size(32 << 20).unwrap();
        check_size(64 << 40).unwrap();
        let e = check_size((64 << 40) + 1).unwrap_err().to_string();
        assert!(e.contains("32MiB to 64TiB"), "{e}");
    }
}
