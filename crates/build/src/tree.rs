//! Read-only views of a file tree a build copies from or into: a build
//! context (one directory) or an image (its layers merged as overlayfs
//! would, whiteouts and opaque dirs honoured, plus host dirs such as
//! `/usr` for images built on `host`).
//!
//! Both are untrusted (a context comes from a client's tar, layers from a
//! registry or from earlier RUN steps), so every access goes through
//! [`dwell_hostfs::Beneath`]: a symlink anywhere on a path is never
//! followed (a path through one is reported as such), only regular files
//! are opened, and reads are capped by the caller.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};

use dwell_hostfs::{Beneath, FileKind, Stat};

use crate::BuildError;

/// A tree to read from.
pub struct Tree {
    layers: Vec<Beneath>,
    /// (path inside, e.g. `usr`; the host dir)
    host_dirs: Vec<(PathBuf, Beneath)>,
}

fn open(dir: &Path) -> Result<Beneath, BuildError> {
    Beneath::open(dir).map_err(|e| BuildError::Internal(format!("opening {}: {e}", dir.display())))
}

fn refused(e: dwell_hostfs::Error) -> BuildError {
    BuildError::Refused(e.to_string())
}

/// Where a path was found: the root holding it and its path there.
pub struct Found<'a> {
    pub root: &'a Beneath,
    pub rel: PathBuf,
    pub stat: Stat,
}

impl Tree {
    /// A build context directory.
    pub fn dir(dir: &Path) -> Result<Tree, BuildError> {
        Ok(Tree {
            layers: vec![open(dir)?],
            host_dirs: Vec::new(),
        })
    }

    /// An image: its layer dirs (topmost first) and host dirs.
    pub fn image(layers: &[PathBuf], host_dirs: &[PathBuf]) -> Result<Tree, BuildError> {
        let mut t = Tree {
            layers: Vec::new(),
            host_dirs: Vec::new(),
        };
        for l in layers {
            t.layers.push(open(l)?);
        }
        for h in host_dirs {
            // The daemon's own host dirs: a symlinked one (`/lib` ->
            // `usr/lib`) is resolved here, once.
            let real =
                std::fs::canonicalize(h).map_err(|e| BuildError::io("resolve host dir", h, e))?;
            let inside: PathBuf = h.components().skip(1).collect();
            t.host_dirs.push((inside, open(&real)?));
        }
        Ok(t)
    }

    /// The roots to search for `rel` and the path in them.
    fn roots<'a>(&'a self, rel: &Path) -> (Vec<&'a Beneath>, PathBuf) {
        for (at, b) in &self.host_dirs {
            if let Ok(sub) = rel.strip_prefix(at) {
                return (vec![b], sub.to_path_buf());
            }
        }
        (self.layers.iter().collect(), rel.to_path_buf())
    }

    /// Whether `rel` names a host dir's mount point or something below it.
    pub fn in_host_dir(&self, rel: &Path) -> Option<&Path> {
        self.host_dirs
            .iter()
            .find(|(at, _)| rel.starts_with(at))
            .map(|(at, _)| at.as_path())
    }

    /// `lstat` of `rel` in the merged view; `None` when absent (or
    /// deleted by a whiteout). A symlink on the way is an error.
    pub fn stat(&self, rel: &Path) -> Result<Option<Found<'_>>, BuildError> {
        let (roots, rel) = self.roots(rel);
        if rel.as_os_str().is_empty() {
            let st = roots[0].stat("").map_err(refused)?;
            return Ok(Some(Found {
                root: roots[0],
                rel,
                stat: st,
            }));
        }
        let comps: Vec<PathBuf> = rel
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
            .map(Path::to_path_buf)
            .collect();
        'layers: for root in roots {
            let mut opaque_above = false;
            for (i, p) in comps.iter().enumerate() {
                let last = i + 1 == comps.len();
                let st = match root.try_stat(p) {
                    Ok(s) => s,
                    Err(e) => return Err(refused(e)),
                };
                match st {
                    None => {
                        if opaque_above {
                            return Ok(None);
                        }
                        continue 'layers;
                    }
                    Some(s) if s.is_whiteout() => return Ok(None),
                    Some(s) if last => {
                        return Ok(Some(Found {
                            root,
                            rel: p.clone(),
                            stat: s,
                        }))
                    }
                    Some(s) if s.kind == FileKind::Symlink => {
                        return Err(BuildError::Refused(format!(
                            "/{} goes through the symlink /{}; dwell build never follows \
                             symlinks: name the real path",
                            rel.display(),
                            p.display()
                        )))
                    }
                    Some(s) if s.kind != FileKind::Dir => return Ok(None),
                    Some(_) => {
                        if is_opaque(root, p)? {
                            opaque_above = true;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// The entries of the dir `rel` in the merged view, by name.
    pub fn list(&self, rel: &Path) -> Result<BTreeMap<OsString, Stat>, BuildError> {
        let (roots, sub) = self.roots(rel);
        let mut out = BTreeMap::new();
        let mut hidden = std::collections::BTreeSet::new();
        let only_first = self.stat(rel)?.is_none();
        if only_first {
            return Ok(out);
        }
        for root in roots {
            let st = match root.try_stat(&sub).map_err(refused)? {
                Some(s) => s,
                None => continue,
            };
            if st.is_whiteout() || st.kind != FileKind::Dir {
                break;
            }
            for e in root.read_dir(&sub).map_err(refused)? {
                let e = e.map_err(refused)?;
                if out.contains_key(&e.name) || hidden.contains(&e.name) {
                    continue;
                }
                if e.stat.is_whiteout() {
                    hidden.insert(e.name);
                } else {
                    out.insert(e.name, e.stat);
                }
            }
            if is_opaque(root, &sub)? {
                break;
            }
        }
        // A host dir mounted at a child of `rel` shows as a dir.
        for (at, b) in &self.host_dirs {
            if at.parent() == Some(rel) {
                if let Some(name) = at.file_name() {
                    let st = b.stat("").map_err(refused)?;
                    out.insert(name.to_os_string(), st);
                }
            }
        }
        Ok(out)
    }

    /// Open the regular file found at `f`.
    pub fn open_file(f: &Found<'_>) -> Result<File, BuildError> {
        f.root.open_file(&f.rel).map_err(refused)
    }

    /// Read the regular file `rel` (at most `cap` bytes); `None` if absent.
    pub fn read_capped(&self, rel: &Path, cap: u64) -> Result<Option<Vec<u8>>, BuildError> {
        match self.stat(rel)? {
            Some(f) if f.stat.kind == FileKind::File => {
                Ok(Some(f.root.read_capped(&f.rel, cap).map_err(refused)?))
            }
            _ => Ok(None),
        }
    }
}

fn is_opaque(root: &Beneath, rel: &Path) -> Result<bool, BuildError> {
    for attr in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if root.dir_xattr(rel, attr).map_err(refused)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_view_and_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        std::fs::create_dir_all(a.join("d")).unwrap();
        std::fs::create_dir_all(b.join("d")).unwrap();
        std::fs::write(a.join("d/top"), "1").unwrap();
        std::fs::write(b.join("d/low"), "2").unwrap();
        std::fs::write(b.join("d/top"), "old").unwrap();
        std::os::unix::fs::symlink("/etc", b.join("link")).unwrap();
        let tree = Tree::image(&[a.clone(), b.clone()], &[]).unwrap();
        let names: Vec<_> = tree.list(Path::new("d")).unwrap().into_keys().collect();
        assert_eq!(names, vec![OsString::from("low"), OsString::from("top")]);
        assert_eq!(
            tree.read_capped(Path::new("d/top"), 10).unwrap().unwrap(),
            b"1"
        );
        let e = tree.stat(Path::new("link/passwd")).err().unwrap();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert_eq!(
            tree.stat(Path::new("link")).unwrap().unwrap().stat.kind,
            FileKind::Symlink
        );
        assert!(tree.stat(Path::new("nope/x")).unwrap().is_none());
    }
}
