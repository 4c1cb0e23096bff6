//! The local-directory backend: each key is a file under the root directory. Objects are written
//! to a hidden temporary file in the same directory and renamed into place, so a crash leaves
//! either the old state or the whole new object, plus at worst a `.tmp.*` file that listings
//! ignore and garbage collection removes. Chunk writes are not fsynced one by one; [`sync`]
//! (`syncfs`) makes them durable in one call before a manifest is published, and manifests and
//! leases are fsynced with their directory.
//!
//! [`sync`]: ChunkStore::sync

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ChunkStore, ObjectInfo};
use crate::error::{Error, Result};

/// Prefix of temporary files; never a valid key component.
pub const TMP_PREFIX: &str = ".tmp.";

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    parallelism: usize,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        let root = root.into();
        for d in ["chunks", "manifests", "leases"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| Error::io("create store directory", &p, e))?;
        }
        let parallelism = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, 8);
        Ok(LocalStore { root, parallelism })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file backing `key` (for tests and tooling).
    pub fn path_of(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Removes `.tmp.*` files older than `age` left by crashed writers; returns how many.
    pub fn remove_stale_tmp(&self, age: std::time::Duration) -> Result<usize> {
        let mut n = 0;
        let now = std::time::SystemTime::now();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("list", &dir, e))?;
                let ft = ent
                    .file_type()
                    .map_err(|e| Error::io("stat", ent.path(), e))?;
                if ft.is_dir() {
                    stack.push(ent.path());
                } else if ent.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                    let old = ent
                        .metadata()
                        .and_then(|m| m.modified())
                        .map(|m| now.duration_since(m).unwrap_or_default() >= age)
                        .unwrap_or(false);
                    if old && fs::remove_file(ent.path()).is_ok() {
                        n += 1;
                    }
                }
            }
        }
        Ok(n)
    }
}

fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.starts_with(TMP_PREFIX));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "invalid object key {key:?} (a bug in the caller)"
        )))
    }
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync directory", dir, e))
}

impl ChunkStore for LocalStore {
    fn describe(&self) -> String {
        format!("dir:{}", self.root.display())
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path_of(key)?;
        let dir = path.parent().expect("a key has a parent directory");
        fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))?;
        let name = path
            .file_name()
            .expect("a key has a name")
            .to_string_lossy();
        let tmp = dir.join(format!(
            "{TMP_PREFIX}{name}.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // Manifests are fsynced with their directory. Chunks are made durable by `sync` before
        // a manifest that needs them is published; leases only matter while their writer lives.
        let durable = key.starts_with("manifests/");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            if durable {
                f.sync_all()?;
            }
            Ok(())
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("write", &tmp, e));
        }
        if let Err(e) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(Error::io("rename into place", &path, e));
        }
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path_of(key)?;
        match fs::read(&path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", &path, e)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path_of(key)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.len(),
                modified: m.modified().map_err(|e| Error::io("stat", &path, e))?,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("stat", &path, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("remove", &path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let base = prefix.trim_end_matches('/');
        check_key(base)?;
        let mut out = Vec::new();
        let mut stack = vec![(self.root.join(base), base.to_string())];
        while let Some((dir, key)) = stack.pop() {
            let rd = match fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("list", &dir, e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io("list", &dir, e))?;
                let name = ent.file_name().to_string_lossy().into_owned();
                if name.starts_with(TMP_PREFIX) {
                    continue;
                }
                let k = format!("{key}/{name}");
                let md = match ent.metadata() {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(Error::io("stat", ent.path(), e)),
                };
                if md.is_dir() {
                    stack.push((ent.path(), k));
                } else {
                    out.push(ObjectInfo {
                        key: k,
                        size: md.len(),
                        modified: md
                            .modified()
                            .map_err(|e| Error::io("stat", ent.path(), e))?,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        let f = File::open(&self.root).map_err(|e| Error::io("open", &self.root, e))?;
        // SAFETY: syncfs on a descriptor we own.
        if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
            return Err(Error::io(
                "syncfs",
                &self.root,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn cleanup_tmp(&self, age: std::time::Duration) -> Result<usize> {
        self.remove_stale_tmp(age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_list_delete() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        s.put("chunks/ab/cd", b"x").unwrap();
        s.put("manifests/a.json", b"{}").unwrap();
        assert_eq!(s.get("chunks/ab/cd").unwrap().unwrap(), b"x");
        assert_eq!(s.get("chunks/ab/zz").unwrap(), None);
        let l = s.list("chunks/").unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].key, "chunks/ab/cd");
        assert_eq!(s.head("chunks/ab/cd").unwrap().unwrap().size, 1);
        s.delete("chunks/ab/cd").unwrap();
        s.delete("chunks/ab/cd").unwrap();
        assert!(s.list("chunks/").unwrap().is_empty());
        assert!(s.put("../x", b"").is_err());
        s.sync().unwrap();
    }
}
