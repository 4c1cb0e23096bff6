//! Writing OCI layers (gzip-compressed tars) and capturing one from a
//! sandbox's writable overlay dir.
//!
//! [`LayerWriter`] hashes as it writes: the digest of the compressed blob
//! (what a manifest names) and of the uncompressed tar (the config's
//! `diff_id`). Paths are relative, without `..` (the writer refuses
//! anything else), and long names use the tar crate's GNU extensions.
//!
//! [`capture`] walks an upper dir the sandbox wrote. Everything in it is
//! hostile, so it is read only through [`dwell_hostfs::Beneath`]: no
//! symlink is ever followed (a symlink becomes a symlink entry, its target
//! never read), fifos, sockets and devices are never opened, regular files
//! are read through a descriptor checked to be a regular file, and the
//! total of file sizes is capped (a 10 GB sparse file is refused before a
//! byte of it is read). Overlay whiteouts (0:0 character devices) become
//! `.wh.NAME` entries and opaque dirs get `.wh..wh..opq`; other device
//! nodes and sockets are left out (reported as skipped); set-id bits are
//! kept (the image store is the daemon's private directory).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

use dwell_hostfs::{Beneath, FileKind};
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::BuildError;

/// A finished layer blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// Where the compressed blob was written.
    pub path: PathBuf,
    /// sha256 (hex) of the compressed blob.
    pub digest: String,
    /// sha256 (hex) of the uncompressed tar.
    pub diff_id: String,
    /// Bytes of the compressed blob.
    pub size: u64,
    /// Entries written (0: the step changed nothing).
    pub entries: usize,
    /// Entries left out (device nodes, sockets).
    pub skipped: Vec<String>,
}

/// Owner, mode and time of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

struct HashW<W: Write> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashW<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Limits of one layer.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Total bytes of file content.
    pub bytes: u64,
    /// Entries.
    pub entries: usize,
}

/// Builds one layer blob.
pub struct LayerWriter {
    tar: tar::Builder<HashW<GzEncoder<HashW<File>>>>,
    path: PathBuf,
    entries: usize,
    bytes: u64,
    limits: Limits,
    skipped: Vec<String>,
}

fn bad_path(p: &Path) -> BuildError {
    BuildError::Internal(format!(
        "layer entry {} is not a clean relative path",
        p.display()
    ))
}

fn check_rel(p: &Path) -> Result<(), BuildError> {
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(bad_path(p));
    }
    // In a layer such a name is a deletion, not a file.
    if p.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b".wh."))
    {
        return Err(BuildError::Refused(format!(
            "/{}: names starting with .wh. are reserved for deletions in image layers; \
             rename it",
            p.display()
        )));
    }
    Ok(())
}

impl LayerWriter {
    /// A new layer written to `path` (created; must not exist).
    pub fn create(path: &Path, limits: Limits) -> Result<LayerWriter, BuildError> {
        let f = File::options()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| BuildError::io("create layer blob", path, e))?;
        let gz = GzEncoder::new(
            HashW {
                inner: f,
                hash: Sha256::new(),
                n: 0,
            },
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(HashW {
            inner: gz,
            hash: Sha256::new(),
            n: 0,
        });
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(LayerWriter {
            tar,
            path: path.to_path_buf(),
            entries: 0,
            bytes: 0,
            limits,
            skipped: Vec::new(),
        })
    }

    fn header(
        &mut self,
        kind: tar::EntryType,
        m: Meta,
        size: u64,
    ) -> Result<tar::Header, BuildError> {
        self.entries += 1;
        if self.entries > self.limits.entries {
            return Err(BuildError::TooLarge(format!(
                "the step changed more than {} files; a layer holds at most that many",
                self.limits.entries
            )));
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(m.mode & 0o7777);
        h.set_uid(m.uid as u64);
        h.set_gid(m.gid as u64);
        h.set_mtime(m.mtime.max(0) as u64);
        h.set_size(size);
        Ok(h)
    }

    fn io(&self, e: io::Error) -> BuildError {
        BuildError::io("write layer", &self.path, e)
    }

    pub fn dir(&mut self, rel: &Path, m: Meta) -> Result<(), BuildError> {
        check_rel(rel)?;
        let mut h = self.header(tar::EntryType::Directory, m, 0)?;
        self.tar
            .append_data(&mut h, rel, io::empty())
            .map_err(|e| self.io(e))
    }

    /// A regular file of exactly `size` bytes read from `data` (a shorter
    /// source is padded with zeros, a longer one cut).
    pub fn file(
        &mut self,
        rel: &Path,
        m: Meta,
        size: u64,
        data: impl Read,
    ) -> Result<(), BuildError> {
        check_rel(rel)?;
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.limits.bytes {
            return Err(BuildError::TooLarge(format!(
                "/{} is {size} bytes, which takes the layer over {} bytes (the build's disk \
                 limit); write less in one step or raise the build's disk size",
                rel.display(),
                self.limits.bytes
            )));
        }
        let mut h = self.header(tar::EntryType::Regular, m, size)?;
        let exact = Exact {
            inner: data.take(size),
            left: size,
        };
        self.tar
            .append_data(&mut h, rel, exact)
            .map_err(|e| self.io(e))
    }

    pub fn symlink(&mut self, rel: &Path, m: Meta, target: &Path) -> Result<(), BuildError> {
        check_rel(rel)?;
        let mut h = self.header(tar::EntryType::Symlink, m, 0)?;
        self.tar
            .append_link(&mut h, rel, target)
            .map_err(|e| self.io(e))
    }

    /// A hard link to `target`, an earlier entry of this layer.
    pub fn hardlink(&mut self, rel: &Path, m: Meta, target: &Path) -> Result<(), BuildError> {
        check_rel(rel)?;
        check_rel(target)?;
        let mut h = self.header(tar::EntryType::Link, m, 0)?;
        self.tar
            .append_link(&mut h, rel, target)
            .map_err(|e| self.io(e))
    }

    pub fn fifo(&mut self, rel: &Path, m: Meta) -> Result<(), BuildError> {
        check_rel(rel)?;
        let mut h = self.header(tar::EntryType::Fifo, m, 0)?;
        self.tar
            .append_data(&mut h, rel, io::empty())
            .map_err(|e| self.io(e))
    }

    /// `rel` was deleted: a `.wh.NAME` entry next to it.
    pub fn whiteout(&mut self, rel: &Path) -> Result<(), BuildError> {
        check_rel(rel)?;
        let name = rel.file_name().ok_or_else(|| bad_path(rel))?;
        let mut wh = std::ffi::OsString::from(".wh.");
        wh.push(name);
        let p = rel.with_file_name(wh);
        let zero = Meta {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut h = self.header(tar::EntryType::Regular, zero, 0)?;
        self.tar
            .append_data(&mut h, p, io::empty())
            .map_err(|e| self.io(e))
    }

    /// The dir `rel` hides everything below it in lower layers.
    pub fn opaque(&mut self, rel: &Path) -> Result<(), BuildError> {
        let p = rel.join(".wh..wh..opq");
        let zero = Meta {
            mode: 0,
            uid: 0,
            gid: 0,
            mtime: 0,
        };
        let mut h = self.header(tar::EntryType::Regular, zero, 0)?;
        self.tar
            .append_data(&mut h, p, io::empty())
            .map_err(|e| self.io(e))
    }

    pub fn skip(&mut self, what: String) {
        self.skipped.push(what);
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Finish the archive and the compression; the blob's digests.
    pub fn finish(self) -> Result<LayerBlob, BuildError> {
        let path = self.path.clone();
        let io_err = |e| BuildError::io("finish layer", &path, e);
        let tarw = self.tar.into_inner().map_err(io_err)?;
        let diff_id = hex(&tarw.hash.finalize());
        let mut filew = tarw.inner.finish().map_err(io_err)?;
        filew.flush().map_err(io_err)?;
        filew.inner.sync_all().map_err(io_err)?;
        Ok(LayerBlob {
            path: self.path,
            digest: hex(&filew.hash.finalize()),
            diff_id,
            size: filew.n,
            entries: self.entries,
            skipped: self.skipped,
        })
    }
}

struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = match self.inner.read(&mut buf[..want])? {
            0 => {
                buf[..want].fill(0);
                want
            }
            n => n,
        };
        self.left -= n as u64;
        Ok(n)
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn meta_of(st: &dwell_hostfs::Stat) -> Meta {
    Meta {
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        mtime: st.mtime,
    }
}

/// The longest symlink target copied into a layer.
pub const MAX_LINK: usize = 4096;

fn hostfs_err(e: dwell_hostfs::Error) -> BuildError {
    // What the step planted is the build's own fault, not the daemon's.
    BuildError::Refused(e.to_string())
}

/// Whether the overlay marked the dir `rel` opaque (both the root and the
/// user-namespace spelling of the attribute).
fn is_opaque(upper: &Beneath, rel: &Path) -> Result<bool, BuildError> {
    for attr in ["trusted.overlay.opaque", "user.overlay.opaque"] {
        if upper.dir_xattr(rel, attr).map_err(hostfs_err)?.as_deref() == Some(b"y") {
            return Ok(true);
        }
    }
    for attr in ["trusted.overlay.redirect", "user.overlay.redirect"] {
        if upper.dir_xattr(rel, attr).map_err(hostfs_err)?.is_some() {
            return Err(BuildError::Refused(format!(
                "/{} is a renamed directory (an overlay redirect); dwell build cannot capture \
                 it: copy the directory instead of renaming it",
                rel.display()
            )));
        }
    }
    Ok(false)
}

/// Write everything in the upper dir `upper` into `w`, sorted by name.
pub fn capture(upper: &Beneath, w: &mut LayerWriter) -> Result<(), BuildError> {
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let mut list = Vec::new();
        for e in upper.read_dir(&dir).map_err(hostfs_err)? {
            let e = e.map_err(hostfs_err)?;
            list.push(e);
            if list.len() > w.limits.entries {
                return Err(BuildError::TooLarge(format!(
                    "/{} holds more than {} entries",
                    dir.display(),
                    w.limits.entries
                )));
            }
        }
        list.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subdirs = Vec::new();
        for e in list {
            let rel = dir.join(&e.name);
            let st = e.stat;
            let m = meta_of(&st);
            if !st.is_whiteout() && e.name.as_encoded_bytes().starts_with(b".wh.") {
                // In a layer such a name is a deletion, not a file.
                return Err(BuildError::Refused(format!(
                    "/{}: names starting with .wh. are reserved for deletions in image \
                     layers; rename it",
                    rel.display()
                )));
            }
            match st.kind {
                _ if st.is_whiteout() => w.whiteout(&rel)?,
                FileKind::Dir => {
                    w.dir(&rel, m)?;
                    if is_opaque(upper, &rel)? {
                        w.opaque(&rel)?;
                    }
                    subdirs.push(rel);
                }
                FileKind::File => {
                    if st.size.saturating_add(w.bytes) > w.limits.bytes {
                        // Refused before opening: nothing of it is read.
                        return w.file(&rel, m, st.size, io::empty());
                    }
                    let f = upper.open_file(&rel).map_err(hostfs_err)?;
                    w.file(&rel, m, st.size, f)?;
                }
                FileKind::Symlink => {
                    let target = upper.read_link(&rel, MAX_LINK).map_err(hostfs_err)?;
                    w.symlink(&rel, m, Path::new(&target))?;
                }
                FileKind::Fifo => w.fifo(&rel, m)?,
                k => w.skip(format!("/{} ({k})", rel.display())),
            }
        }
        // Pop in name order.
        dirs.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

/// The first entry of `upper` (a host dir's overlay), `None` when the
/// sandbox changed nothing there or the dir does not exist.
pub fn first_entry(upper: &Path) -> Result<Option<String>, BuildError> {
    let b = match Beneath::open(upper) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(hostfs_err(e)),
    };
    let mut rd = b.read_dir("").map_err(hostfs_err)?;
    match rd.next() {
        None => Ok(None),
        Some(e) => Ok(Some(
            e.map_err(hostfs_err)?.name.to_string_lossy().into_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_entries(p: &Path) -> Vec<(String, tar::EntryType, u64, Option<String>)> {
        let f = File::open(p).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().entry_type(),
                    e.header().size().unwrap(),
                    e.link_name().unwrap().map(|l| l.display().to_string()),
                )
            })
            .collect()
    }

    const LIM: Limits = Limits {
        bytes: 1 << 20,
        entries: 1000,
    };

    #[test]
    fn captures_files_links_whiteouts_and_never_follows() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("upper");
        std::fs::create_dir_all(up.join("etc/sub")).unwrap();
        std::fs::write(up.join("etc/a"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/shadow", up.join("etc/shadow-link")).unwrap();
        std::os::unix::fs::symlink(t.path(), up.join("escape")).unwrap();
        let c = std::ffi::CString::new(up.join("fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            let c = std::ffi::CString::new(up.join("etc/gone").to_str().unwrap()).unwrap();
            // SAFETY: a whiteout (0:0 char device) at a path we own.
            assert_eq!(unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR, 0) }, 0);
            let c = std::ffi::CString::new(up.join("null").to_str().unwrap()).unwrap();
            // SAFETY: /dev/null's numbers, at a path we own.
            assert_eq!(
                unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
                0
            );
        }
        let out = t.path().join("l.tar.gz");
        let mut w = LayerWriter::create(&out, LIM).unwrap();
        capture(&Beneath::open(&up).unwrap(), &mut w).unwrap();
        let blob = w.finish().unwrap();
        let e = read_entries(&out);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        let mut want = vec![
            "escape",
            "etc",
            "fifo",
            "etc/a",
            "etc/shadow-link",
            "etc/sub",
        ];
        if root {
            want = vec![
                "escape",
                "etc",
                "fifo",
                "etc/a",
                "etc/.wh.gone",
                "etc/shadow-link",
                "etc/sub",
            ];
            assert_eq!(blob.skipped, vec!["/null (character device)".to_string()]);
        }
        assert_eq!(names, want);
        let link = e.iter().find(|x| x.0 == "etc/shadow-link").unwrap();
        assert_eq!(link.1, tar::EntryType::Symlink);
        assert_eq!(link.3.as_deref(), Some("/etc/shadow"));
        assert_eq!(e.iter().find(|x| x.0 == "etc/a").unwrap().2, 5);
        assert_eq!(blob.entries, want.len());
    }

    #[test]
    fn a_file_named_like_a_whiteout_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("upper");
        std::fs::create_dir_all(&up).unwrap();
        std::fs::write(up.join(".wh.etc"), "").unwrap();
        let mut w = LayerWriter::create(&t.path().join("l"), LIM).unwrap();
        let e = capture(&Beneath::open(&up).unwrap(), &mut w).unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
    }

    #[test]
    fn a_huge_sparse_file_is_refused_unread() {
        let t = tempfile::tempdir().unwrap();
        let up = t.path().join("upper");
        std::fs::create_dir_all(&up).unwrap();
        let f = File::create(up.join("sparse")).unwrap();
        f.set_len(10 << 30).unwrap();
        let mut w = LayerWriter::create(&t.path().join("l"), LIM).unwrap();
        let e = capture(&Beneath::open(&up).unwrap(), &mut w).unwrap_err();
        assert!(matches!(e, BuildError::TooLarge(_)), "{e}");
        assert!(e.to_string().contains("/sparse"), "{e}");
    }
}
