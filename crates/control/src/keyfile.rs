//! Private key files: created 0600 atomically, never readable by anyone but
//! the owner at any moment.
//!
//! A key is written to a fresh temporary file opened with `O_CREAT|O_EXCL`
//! and mode 0600 (then `fchmod`ed to exactly 0600, whatever the umask),
//! fsynced, and hard-linked to its final name, which fails rather than
//! replace a key that appeared meanwhile; the directory is fsynced last.
//! So the key's name only ever points at a complete, private file. Used for
//! the daemon's `secret.key`, the snapshot master key and `admin.key`.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The only mode a key file has.
pub const KEY_MODE: u32 = 0o600;

/// Write `bytes` to a new private file at `path`. Fails with
/// `AlreadyExists` if `path` exists (never replaces a key).
pub fn create(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent(path);
    let tmp = temp_name(path)?;
    let result = write_new(&tmp, bytes).and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    result?;
    File::open(dir)?.sync_all()
}

/// Read the key at `path` (it must be `len` bytes), or make one of `len`
/// random bytes there if there is none. An existing key file that others
/// may read is narrowed to 0600 (a daemon upgraded from a release that made
/// it wider), with a warning.
pub fn load_or_create(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    match read(path, len) {
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        other => return other,
    }
    let mut key = vec![0u8; len];
    getrandom::fill(&mut key)
        .map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
    match create(path, &key) {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == ErrorKind::AlreadyExists => read(path, len),
        Err(e) => Err(e),
    }
}

/// Read an existing key file (not through a symlink), narrowing its mode to
/// 0600 if it is wider.
pub fn read(path: &Path, len: usize) -> std::io::Result<Vec<u8>> {
    // O_NONBLOCK: a fifo given as a key file must not hang the daemon's
    // start (`narrow` then refuses what is not a regular file).
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::other(format!(
                "{} is a symlink; a key file must be a regular file (replace the link with the file it points at)",
                path.display()
            )),
            _ => e,
        })?;
    narrow(&f, path)?;
    let mut key = Vec::with_capacity(len);
    (&mut f).take(len as u64 + 1).read_to_end(&mut key)?;
    if key.len() != len {
        return Err(std::io::Error::other(format!(
            "{} is not a {len}-byte key; restore it from a backup (what it sealed cannot be read otherwise)",
            path.display()
        )));
    }
    Ok(key)
}

/// Narrow an open key file to 0600 if group or others have any access.
pub fn narrow(f: &File, path: &Path) -> std::io::Result<()> {
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file; a key file must be one",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "{} was readable by others (mode {:o}); narrowing it to 0600",
            path.display(),
            meta.permissions().mode() & 0o7777
        );
        f.set_permissions(std::fs::Permissions::from_mode(KEY_MODE))?;
    }
    Ok(())
}

fn write_new(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(KEY_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(tmp)?;
    // The umask can only have taken bits away; make it exactly 0600.
    f.set_permissions(std::fs::Permissions::from_mode(KEY_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `.<name>.tmp.<pid>.<random>` beside `path`.
fn temp_name(path: &Path) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} names no file", path.display())))?;
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
    Ok(parent(path).join(format!(
        ".{}.tmp.{}.{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        u64::from_le_bytes(r)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_private_even_under_an_open_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        // SAFETY: umask only changes the file creation mask; restored below.
        let old = unsafe { libc::umask(0) };
        let r = create(&p, b"0123");
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(std::fs::read(&p).unwrap(), b"0123");
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn never_replaces_an_existing_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        create(&p, b"first").unwrap();
        let e = create(&p, b"second").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        // A dangling symlink at the name is not followed either.
        let q = d.path().join("q");
        std::os::unix::fs::symlink(d.path().join("elsewhere"), &q).unwrap();
        assert_eq!(
            create(&q, b"x").unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        assert!(!d.path().join("elsewhere").exists());
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 2);
    }

    #[test]
    fn no_window_with_a_wider_mode() {
        // The name appears only by link(2) of a file that is already 0600 and
        // complete: a watcher polling the name never sees another mode or a
        // short key.
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&p) {
                        seen.push((m.mode() & 0o7777, m.len()));
                    }
                }
                seen
            })
        };
        for i in 0..200 {
            let _ = std::fs::remove_file(&p);
            create(&p, &[i as u8; 32]).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = watcher.join().unwrap();
        assert!(!seen.is_empty());
        assert!(
            seen.iter().all(|&(m, len)| m == 0o600 && len == 32),
            "{seen:?}"
        );
    }

    #[test]
    fn load_or_create_makes_once_and_narrows_old_wide_files() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        let k = load_or_create(&p, 32).unwrap();
        assert_eq!(k.len(), 32);
        assert_eq!(load_or_create(&p, 32).unwrap(), k);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read(&p, 32).unwrap(), k);
        assert_eq!(mode(&p), 0o600);
        let e = read(&p, 16).unwrap_err().to_string();
        assert!(e.contains("not a 16-byte key"), "{e}");
        let l = d.path().join("link");
        std::os::unix::fs::symlink(&p, &l).unwrap();
        let e = read(&l, 32).unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
    }
}
