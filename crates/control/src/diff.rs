//! Drift: what a sandbox changed relative to its image.
//!
//! Everything a sandbox wrote lives in the upper dirs of its overlays on its
//! volume (`root/upper` for the image's layers, `host/<name>/upper` for each
//! host dir such as `/usr`). Walking them lists files added (no such path in
//! the lower layers), changed (present below too) and deleted (overlay
//! whiteouts), with sizes; comparing the package manager's database in the
//! upper dir with the image's lists packages installed, removed and changed.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

/// One overlay: where the sandbox's changes are, the lower dirs (topmost
/// first), and where it appears inside the sandbox.
pub struct Layer {
    pub upper: PathBuf,
    pub lowers: Vec<PathBuf>,
    pub at: PathBuf,
}

/// Compute the drift of a sandbox from its overlays.
pub fn drift(layers: &[Layer]) -> std::io::Result<Drift> {
    let mut d = Drift::default();
    for l in layers {
        if l.upper.is_dir() {
            walk(l, &l.upper, Path::new(""), &mut d)?;
        }
    }
    d.files.sort_by(|a, b| a.path.cmp(&b.path));
    d.bytes = d.files.iter().map(|f| f.size).sum();
    // Packages: the root overlay holds /var/lib/dpkg.
    if let Some(root) = layers.iter().find(|l| l.at == Path::new("/")) {
        let status = Path::new("var/lib/dpkg/status");
        if let Ok(now) = std::fs::read_to_string(root.upper.join(status)) {
            let before = root
                .lowers
                .iter()
                .find_map(|lo| std::fs::read_to_string(lo.join(status)).ok())
                .unwrap_or_default();
            d.packages = compare(&installed(&before), &installed(&now));
        }
    }
    Ok(d)
}

fn walk(l: &Layer, dir: &Path, rel: &Path, d: &mut Drift) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let rel = rel.join(e.file_name());
        let meta = e.path().symlink_metadata()?;
        let ft = meta.file_type();
        let inside = l.at.join(&rel).display().to_string();
        let below = l
            .lowers
            .iter()
            .any(|lo| lo.join(&rel).symlink_metadata().is_ok());
        if ft.is_char_device() && meta.rdev() == 0 {
            d.files.push(FileChange {
                path: inside,
                change: Change::Deleted,
                size: 0,
                dir: false,
            });
        } else if ft.is_dir() {
            if !below {
                d.files.push(FileChange {
                    path: inside,
                    change: Change::Added,
                    size: 0,
                    dir: true,
                });
            }
            walk(l, &e.path(), &rel, d)?;
        } else {
            d.files.push(FileChange {
                path: inside,
                change: if below {
                    Change::Changed
                } else {
                    Change::Added
                },
                size: if ft.is_file() { meta.len() } else { 0 },
                dir: false,
            });
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
}
