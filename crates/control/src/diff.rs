//! Drift: what a sandbox changed relative to its image.
//!
//! Everything a sandbox wrote lives in the upper dirs of its overlays on its
//! volume (`root/upper` for the image's layers, `host/<name>/upper` for each
//! host dir such as `/usr`). Walking them lists files added (no such path in
//! the lower layers), changed (present below too) and deleted (overlay
//! whiteouts), with sizes; comparing the package manager's database in the
//! upper dir with the image's lists packages installed, removed and changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dwell_hostfs::{Beneath, FileKind};

use serde::{Deserialize, Serialize};

/// How a path differs from the image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    Added,
    Changed,
    Deleted,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileChange {
    pub path: String,
    pub change: Change,
    /// Bytes of the new content (0 for deletions and directories).
    pub size: u64,
    pub dir: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// For changed packages: the image's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Packages {
    pub installed: Vec<Package>,
    pub removed: Vec<Package>,
    pub changed: Vec<Package>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Drift {
    pub packages: Packages,
    pub files: Vec<FileChange>,
    /// Bytes added or changed in all.
    pub bytes: u64,
}

/// The overlays of a sandbox's volume mounted at `root`, over `image`:
/// the root filesystem's, then one per host dir the image shares.
/// (The runtime says where they are: [`dwell_runtime::RootfsSpec::overlays`].)
pub fn layers(image: &dwell_storage::Image, root: &std::path::Path) -> Vec<Layer> {
    dwell_runtime::RootfsSpec {
        layers: image.layers.clone(),
        host_dirs: image.host_dirs.clone(),
        upper_root: root.to_path_buf(),
    }
    .overlays()
    .into_iter()
    .map(|o| Layer {
        upper: o.upper,
        lowers: o.lowers,
        at: o.at,
    })
    .collect()
}

/// One overlay: where the sandbox's changes are, the lower dirs (topmost
/// first), and where it appears inside the sandbox.
pub struct Layer {
    pub upper: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub at: PathBuf,
}

/// The most bytes of a dpkg status file read (a large Debian system's is a
/// few MiB); a bigger one is refused, never read whole.
pub const STATUS_CAP: u64 = 64 << 20;

/// The most entries of upper dirs listed: a sandbox with more changed
/// files gets an error, not a daemon that runs out of memory.
pub const MAX_ENTRIES: usize = 1_000_000;

const STATUS: &str = "var/lib/dpkg/status";

/// Compute the drift of a sandbox from its overlays.
///
/// The upper dirs are written by the sandbox: everything in them is read
/// through [`dwell_hostfs::Beneath`] (no symlink followed, special files
/// refused, reads capped). A dpkg status file that is a symlink, a special
/// file or larger than [`STATUS_CAP`] is an error that names it.
pub fn drift(layers: &[Layer]) -> std::io::Result<Drift> {
    let mut d = Drift::default();
    for l in layers {
        let Some(upper) = open_root(&l.upper)? else {
            continue;
        };
        let lowers: Vec<Beneath> = l.lowers.iter().filter_map(|lo| open_lower(lo)).collect();
        walk(l, &upper, &lowers, &mut d)?;
    }
    d.files.sort_by(|a, b| a.path.cmp(&b.path));
    d.bytes = d.files.iter().map(|f| f.size).sum();
    // Packages: the root overlay holds /var/lib/dpkg.
    if let Some(root) = layers.iter().find(|l| l.at == Path::new("/")) {
        if let Some(upper) = open_root(&root.upper)? {
            if let Some(now) = status_now(&upper)? {
                let before = root
                    .lowers
                    .iter()
                    .filter_map(|lo| open_lower(lo))
                    .find_map(|lo| lo.read_string_capped(STATUS, STATUS_CAP).ok())
                    .unwrap_or_default();
                d.packages = compare(&installed(&before), &installed(&now));
            }
        }
    }
    Ok(d)
}

/// The upper dir `dir` as a root, `None` when there is none.
fn open_root(dir: &Path) -> std::io::Result<Option<Beneath>> {
    match Beneath::open(dir) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A lower dir (an image layer or a host dir such as `/usr`: the daemon's,
/// so a symlink to it, as `/lib -> usr/lib` on merged-/usr hosts, is
/// followed); what is beneath it is still resolved without symlinks.
fn open_lower(dir: &Path) -> Option<Beneath> {
    Beneath::open(std::fs::canonicalize(dir).ok()?).ok()
}

/// The sandbox's dpkg status file; `None` when it did not write one (or
/// deleted it: a whiteout).
fn status_now(upper: &Beneath) -> std::io::Result<Option<String>> {
    match upper.try_stat(STATUS)? {
        None => Ok(None),
        Some(st) if st.is_whiteout() => Ok(None),
        Some(_) => Ok(Some(upper.read_string_capped(STATUS, STATUS_CAP)?)),
    }
}

/// List the upper dir of `l` depth first, without recursion (a sandbox
/// chooses the depth) and without following a symlink.
fn walk(l: &Layer, upper: &Beneath, lowers: &[Beneath], d: &mut Drift) -> std::io::Result<()> {
    let mut dirs = vec![PathBuf::new()];
    let mut seen = 0usize;
    while let Some(dir) = dirs.pop() {
        for e in upper.read_dir(&dir)? {
            let e = e?;
            seen += 1;
            if seen > MAX_ENTRIES {
                return Err(std::io::Error::other(format!(
                    "{} holds more than {MAX_ENTRIES} changed files; the daemon lists at most \
                     that many (delete files in the sandbox, or snapshot it instead)",
                    upper.root().display()
                )));
            }
            let rel = dir.join(&e.name);
            let inside = l.at.join(&rel).display().to_string();
            let below = lowers
                .iter()
                .any(|lo| matches!(lo.try_stat(&rel), Ok(Some(_))));
            let st = e.stat;
            if st.is_whiteout() {
                d.files.push(FileChange {
                    path: inside,
                    change: Change::Deleted,
                    size: 0,
                    dir: false,
                });
            } else if st.kind == FileKind::Dir {
                if !below {
                    d.files.push(FileChange {
                        path: inside,
                        change: Change::Added,
                        size: 0,
                        dir: true,
                    });
                }
                dirs.push(rel);
            } else {
                d.files.push(FileChange {
                    path: inside,
                    change: if below {
                        Change::Changed
                    } else {
                        Change::Added
                    },
                    size: if st.kind == FileKind::File {
                        st.size
                    } else {
                        0
                    },
                    dir: false,
                });
            }
        }
    }
    Ok(())
}

/// Installed packages (name -> version) from a dpkg status file.
fn installed(status: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for para in status.split("\n\n") {
        let field = |k: &str| {
            para.lines()
                .find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string()))
        };
        let (Some(name), Some(st)) = (field("Package:"), field("Status:")) else {
            continue;
        };
        if st.ends_with(" installed") {
            let arch = field("Architecture:").filter(|a| a != "all" && a != "amd64");
            let key = match arch {
                Some(a) => format!("{name}:{a}"),
                None => name,
            };
            out.insert(key, field("Version:").unwrap_or_default());
        }
    }
    out
}

fn compare(before: &BTreeMap<String, String>, now: &BTreeMap<String, String>) -> Packages {
    let mut p = Packages::default();
    for (n, v) in now {
        match before.get(n) {
            None => p.installed.push(Package {
                name: n.clone(),
                version: v.clone(),
                was: None,
            }),
            Some(old) if old != v => p.changed.push(Package {
                name: n.clone(),
                version: v.clone(),
                was: Some(old.clone()),
            }),
            _ => {}
        }
    }
    for (n, v) in before {
        if !now.contains_key(n) {
            p.removed.push(Package {
                name: n.clone(),
                version: v.clone(),
                was: None,
            });
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_packages() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        let upper = t.path().join("upper");
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::create_dir_all(lower.join("var/lib/dpkg")).unwrap();
        std::fs::write(lower.join("etc/a"), "a").unwrap();
        std::fs::write(lower.join("etc/gone"), "x").unwrap();
        std::fs::write(lower.join("var/lib/dpkg/status"), "Package: old\nStatus: install ok installed\nVersion: 1\n\nPackage: kept\nStatus: install ok installed\nVersion: 1\n").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::create_dir_all(upper.join("root/new")).unwrap();
        std::fs::create_dir_all(upper.join("var/lib/dpkg")).unwrap();
        std::fs::write(upper.join("etc/a"), "changed").unwrap();
        std::fs::write(upper.join("root/new/f"), "12345").unwrap();
        std::fs::write(upper.join("var/lib/dpkg/status"), "Package: kept\nStatus: install ok installed\nVersion: 2\n\nPackage: cowsay\nStatus: install ok installed\nVersion: 3.03\n").unwrap();
        let whiteout =
            std::ffi::CString::new(upper.join("etc/gone").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mknod of a 0:0 char device (an overlay whiteout) at a path we own.
        if unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR, 0) } != 0 {
            eprintln!("SKIP part: mknod needs CAP_MKNOD");
        }
        let d = drift(&[Layer {
            upper,
            lowers: vec![lower],
            at: "/".into(),
        }])
        .unwrap();
        let find = |p: &str| d.files.iter().find(|f| f.path == p).map(|f| f.change);
        assert_eq!(find("/etc/a"), Some(Change::Changed));
        assert_eq!(find("/root/new/f"), Some(Change::Added));
        assert_eq!(find("/root"), Some(Change::Added));
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(find("/etc/gone"), Some(Change::Deleted));
        }
        assert_eq!(
            d.packages.installed,
            vec![Package {
                name: "cowsay".into(),
                version: "3.03".into(),
                was: None
            }]
        );
        assert_eq!(d.packages.removed[0].name, "old");
        assert_eq!(d.packages.changed[0].was.as_deref(), Some("1"));
    }

    fn root_layer(upper: &Path) -> Vec<Layer> {
        vec![Layer {
            upper: upper.to_path_buf(),
            lowers: vec![],
            at: "/".into(),
        }]
    }

    #[test]
    fn a_status_file_the_sandbox_points_elsewhere_is_never_read() {
        let t = tempfile::tempdir().unwrap();
        let host = t.path().join("host-secret");
        std::fs::write(
            &host,
            "Package: host-only\nStatus: install ok installed\nVersion: 9\n",
        )
        .unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("var/lib/dpkg")).unwrap();
        for target in [host.as_path(), Path::new("/dev/zero")] {
            let status = upper.join(STATUS);
            let _ = std::fs::remove_file(&status);
            std::os::unix::fs::symlink(target, &status).unwrap();
            let e = drift(&root_layer(&upper)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("never follows symlinks"), "{e}");
        }
        // The directory on the way as a symlink.
        std::fs::remove_dir_all(upper.join("var/lib/dpkg")).unwrap();
        std::os::unix::fs::symlink(t.path(), upper.join("var/lib/dpkg")).unwrap();
        std::fs::write(
            t.path().join("status"),
            "Package: x\nStatus: install ok installed\n",
        )
        .unwrap();
        let e = drift(&root_layer(&upper)).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }

    #[test]
    fn a_fifo_as_status_file_is_refused_without_hanging() {
        let t = tempfile::tempdir().unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(upper.join("var/lib/dpkg")).unwrap();
        let fifo =
            std::ffi::CString::new(upper.join(STATUS).as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let e = drift(&root_layer(&upper)).unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
    }

    #[test]
    fn symlinked_dirs_in_the_upper_dir_are_listed_not_walked() {
        let t = tempfile::tempdir().unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("deep")).unwrap();
        std::fs::write(outside.join("deep/host-file"), "x").unwrap();
        let upper = t.path().join("upper");
        std::fs::create_dir_all(&upper).unwrap();
        std::os::unix::fs::symlink(&outside, upper.join("escape")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root", upper.join("hostroot")).unwrap();
        let d = drift(&root_layer(&upper)).unwrap();
        let paths: Vec<&str> = d.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["/escape", "/hostroot"]);
        assert!(d.files.iter().all(|f| !f.dir && f.size == 0));
    }
}
