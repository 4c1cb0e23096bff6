//! Narrowing what an older daemon left readable by others: at start, the
//! data dir is made 0700 (in `serve`) and the files that hold secrets
//! (the database, keys, runtime configs with the sandboxes' environment)
//! 0600. New files need none of this: `serve` runs with a 077 umask.
//!
//! Files are opened without following symlinks and changed through their
//! descriptor, and only daemon-owned paths are visited (never a tree a
//! sandbox can write, such as a run dir or a volume).

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Files directly in the data dir that hold secrets.
const TOP: &[&str] = &[
    "dwell.db",
    "dwell.db-wal",
    "dwell.db-shm",
    "secret.key",
    "snapshot.key",
    "admin.key",
];

/// Files in each `sandboxes/<id>/` that hold a sandbox's environment.
const PER_SANDBOX: &[&str] = &["config.json", "sandbox.json", "bundle/config.json"];

/// Narrow the secret files of an existing data dir to 0600, logging what
/// changed; a file that cannot be narrowed is logged, not fatal (the data
/// dir itself is already 0700).
pub fn narrow_existing(data_dir: &Path) {
    let mut files: Vec<_> = TOP.iter().map(|f| data_dir.join(f)).collect();
    if let Ok(dir) = std::fs::read_dir(data_dir.join("sandboxes")) {
        for e in dir.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                files.extend(PER_SANDBOX.iter().map(|f| e.path().join(f)));
            }
        }
    }
    for f in files {
        match narrow(&f) {
            Ok(Some(old)) => tracing::info!(
                "{} was mode {old:o}; narrowed to 0600 (host files are private)",
                f.display()
            ),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                "cannot make {} private (0600): {e}; fix its mode by hand",
                f.display()
            ),
        }
    }
}

/// Make `path` 0600 if it is a regular file others may access; the old mode
/// if it changed it. A missing file (or a symlink) is left alone.
fn narrow(path: &Path) -> std::io::Result<Option<u32>> {
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_file() || mode & 0o077 == 0 {
        return Ok(None);
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))?;
    Ok(Some(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn narrows_secret_files_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let wide = |f: &Path| {
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"x").unwrap();
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
        };
        for f in [
            "dwell.db",
            "admin.key",
            "sandboxes/a/sandbox.json",
            "sandboxes/a/bundle/config.json",
            "other",
        ] {
            wide(&p.join(f));
        }
        // A symlink where a config should be is not followed.
        std::os::unix::fs::symlink(p.join("other"), p.join("sandboxes/a/config.json")).unwrap();
        narrow_existing(p);
        let mode = |f: &str| std::fs::metadata(p.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode("dwell.db"), 0o600);
        assert_eq!(mode("admin.key"), 0o600);
        assert_eq!(mode("sandboxes/a/sandbox.json"), 0o600);
        assert_eq!(mode("sandboxes/a/bundle/config.json"), 0o600);
        assert_eq!(mode("other"), 0o644);
    }
}
