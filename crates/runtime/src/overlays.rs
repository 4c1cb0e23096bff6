//! Where a sandbox's root filesystem lives on the host: the overlays a
//! [`RootfsSpec`] stands for, with their lower, upper and work directories.
//! Both runtimes mount exactly these, and the control plane reads the same
//! upper dirs to tell what a sandbox changed.

use std::path::{Component, Path, PathBuf};

use crate::RootfsSpec;

/// One overlay of a sandbox's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay {
    /// Where it is mounted, as the sandbox sees it (`/`, `/usr`, ...).
    pub at: PathBuf,
    /// Its read-only layers, topmost first.
    pub lowers: Vec<PathBuf>,
    /// Its writable layer on the volume: what the sandbox changed.
    pub upper: PathBuf,
    /// The overlay's work dir on the volume (beside `upper`).
    pub work: PathBuf,
}

impl RootfsSpec {
    /// The root overlay (the image layers under `upper_root/root/upper`)
    /// followed by one overlay per host dir (`upper_root/host/<name>/upper`,
    /// see [`host_dir_name`]), in mount order.
    pub fn overlays(&self) -> Vec<Overlay> {
        let layer = |rel: PathBuf, at: PathBuf, lowers: Vec<PathBuf>| Overlay {
            upper: self.upper_root.join(&rel).join("upper"),
            work: self.upper_root.join(&rel).join("work"),
            at,
            lowers,
        };
        let mut out = vec![layer("root".into(), "/".into(), self.layers.clone())];
        for dir in &self.host_dirs {
            out.push(layer(
                Path::new("host").join(host_dir_name(dir)),
                dir.clone(),
                vec![dir.clone()],
            ));
        }
        out
    }
}

/// Name of a host dir's writable layer: `/usr/local` -> `usr_local`.
pub fn host_dir_name(dir: &Path) -> String {
    dir.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_comes_first_then_one_overlay_per_host_dir() {
        let spec = RootfsSpec {
            layers: vec!["/img/2".into(), "/img/1".into()],
            host_dirs: vec!["/usr/local".into()],
            upper_root: "/vol".into(),
        };
        assert_eq!(
            spec.overlays(),
            [
                Overlay {
                    at: "/".into(),
                    lowers: vec!["/img/2".into(), "/img/1".into()],
                    upper: "/vol/root/upper".into(),
                    work: "/vol/root/work".into(),
                },
                Overlay {
                    at: "/usr/local".into(),
                    lowers: vec!["/usr/local".into()],
                    upper: "/vol/host/usr_local/upper".into(),
                    work: "/vol/host/usr_local/work".into(),
                },
            ]
        );
        assert_eq!(host_dir_name(Path::new("/usr/local")), "usr_local");
    }
}
