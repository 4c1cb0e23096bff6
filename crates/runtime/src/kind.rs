//! The runtimes this crate provides, known by name without an instance, and
//! what each can do beyond the common [`Runtime`](crate::Runtime)
//! operations.
//!
//! A sandbox's record names its runtime, and the control plane must answer
//! questions about it ("can it hibernate?", "is this memory image
//! complete?") even on a host where that runtime is not installed. So the
//! answers are static: [`Kind::capabilities`] needs no runtime instance,
//! and [`Runtime::capabilities`](crate::Runtime::capabilities) returns the
//! same for a running one. The control plane branches on capabilities,
//! never on a runtime's name.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One of the isolation runtimes of this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Kind {
    /// Linux namespaces, cgroups, seccomp ([`crate::ns`]).
    #[default]
    #[serde(rename = "ns")]
    Namespace,
    /// gVisor's user-space kernel under runsc ([`crate::gvisor`]).
    #[serde(rename = "gvisor")]
    Gvisor,
}

impl Kind {
    /// Release what a sandbox of this kind may have left on the host (its
    /// mounts under the state dir, its network), the way
    /// [`crate::Runtime::release_leftovers`] does, but without the
    /// runtime itself: the daemon's orphan sweep cleans a gVisor sandbox's
    /// leftovers even on a daemon that cannot run gVisor (runsc removed).
    /// `config` may name only the id and the state dir.
    pub fn release_leftovers(self, config: &crate::SandboxConfig) {
        let host = crate::host::Kernel;
        match self {
            Kind::Namespace => crate::ns::release_leftovers(&host, config),
            Kind::Gvisor => crate::gvisor::release_host(&host, config),
        }
    }

    /// Every runtime of this crate, the default first.
    pub const ALL: [Kind; 2] = [Kind::Namespace, Kind::Gvisor];

    /// The name records store and [`Runtime::name`](crate::Runtime::name)
    /// returns (`ns`, `gvisor`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "ns",
            Kind::Gvisor => "gvisor",
        }
    }

    /// The runtime's name in prose (`namespace`, `gVisor`).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Namespace => "namespace",
            Kind::Gvisor => "gVisor",
        }
    }

    /// The runtime a user's word names: its name or an alias
    /// (`namespace`, `namespaces`; `runsc`).
    pub fn parse(word: &str) -> Result<Kind, UnknownRuntime> {
        match word {
            "ns" | "namespace" | "namespaces" => Ok(Kind::Namespace),
            "gvisor" | "runsc" => Ok(Kind::Gvisor),
            other => Err(UnknownRuntime(other.to_string())),
        }
    }

    /// What the runtime can do, whether or not this host has it.
    pub fn capabilities(self) -> Capabilities {
        match self {
            Kind::Namespace => Capabilities {
                hibernate: None,
                id_map: true,
                // An idle namespace sandbox costs no CPU: its processes
                // sleep in the host kernel.
                doze: false,
            },
            Kind::Gvisor => Capabilities {
                hibernate: Some(crate::gvisor::hibernate::IMAGE_FORMAT),
                id_map: false,
                doze: true,
            },
        }
    }

    /// The error for a sandbox of this runtime on a host that cannot run
    /// it (`why`), with how to get it or what to use instead.
    pub fn unavailable(self, why: String) -> Error {
        let (what, fix) = match self {
            Kind::Namespace => (
                "the namespace runtime",
                "run the daemon as root on Linux with cgroups mounted, or create the sandbox \
                 with --isolation gvisor",
            ),
            Kind::Gvisor => (
                "the gVisor runtime",
                "install runsc (`scripts/install-deps.sh --gvisor`) and restart the daemon, or \
                 create the sandbox with --isolation namespace",
            ),
        };
        Error::Unsupported {
            what: what.into(),
            why,
            fix: fix.into(),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Kind {
    type Err = UnknownRuntime;

    fn from_str(s: &str) -> Result<Kind, UnknownRuntime> {
        Kind::parse(s)
    }
}

/// A word that names no runtime of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an isolation runtime; use namespace (ns) or gvisor")]
pub struct UnknownRuntime(pub String);

/// What a runtime can do beyond the operations every runtime has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// `hibernate` and `restore` save a sandbox's memory and processes to
    /// a directory in this format and bring them back. `None`: they refuse
    /// ([`crate::not_hibernatable`]); pause keeps memory in RAM only.
    pub hibernate: Option<ImageFormat>,
    /// The runtime runs a sandbox's root as the host uid/gid range of
    /// [`SandboxConfig::id_map`](crate::SandboxConfig::id_map): the control
    /// plane reserves one slot per sandbox and gives it
    /// [`IdMap::of_slot`](crate::IdMap::of_slot). Other runtimes ignore the
    /// field.
    pub id_map: bool,
    /// A running sandbox with nothing to do costs CPU unless frozen:
    /// [`Runtime::doze`](crate::Runtime::doze) freezes it and
    /// [`Runtime::wake`](crate::Runtime::wake) thaws it. The control plane
    /// dozes such a sandbox when only its agent runs and nobody uses it.
    pub doze: bool,
}

/// The directory `hibernate` writes: what makes it complete, what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageFormat {
    /// The file whose presence marks a complete image: a directory without
    /// it must never be restored.
    pub complete_file: &'static str,
}

impl ImageFormat {
    /// Whether `dir` holds a complete image.
    pub fn is_complete(&self, dir: &Path) -> bool {
        dir.join(self.complete_file).is_file()
    }

    /// The image's files in `dir` (its regular files, by name), to store or
    /// copy elsewhere: placed under these names in another directory they
    /// make the same image.
    pub fn files(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let io = |p: &Path, source| Error::Io {
            context: format!("listing the image {}", p.display()),
            source,
        };
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let e = e.map_err(|e| io(dir, e))?;
            if !e.file_type().map_err(|er| io(&e.path(), er))?.is_file() {
                continue;
            }
            let name = e.file_name().into_string().map_err(|n| {
                Error::Other(format!(
                    "{}: a file name that is not UTF-8: {n:?}",
                    dir.display()
                ))
            })?;
            out.push((name, e.path()));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse_to_the_same_runtime() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Ok(k));
            assert_eq!(k.to_string().parse::<Kind>(), Ok(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.name()));
        }
        assert_eq!(Kind::parse("namespace"), Ok(Kind::Namespace));
        assert_eq!(Kind::parse("runsc"), Ok(Kind::Gvisor));
        let e = Kind::parse("vm").unwrap_err();
        assert!(e.to_string().contains("\"vm\" is not an isolation runtime"));
    }

    #[test]
    fn only_a_runtime_with_an_image_format_hibernates() {
        assert!(Kind::Namespace.capabilities().hibernate.is_none());
        assert!(Kind::Gvisor.capabilities().hibernate.is_some());
        assert!(Kind::Namespace.capabilities().id_map);
        assert!(!Kind::Gvisor.capabilities().id_map);
    }

    #[test]
    fn an_image_is_complete_with_its_file_and_lists_its_regular_files() {
        let f = ImageFormat {
            complete_file: "state.img",
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pages.img"), b"p").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(!f.is_complete(dir.path()));
        std::fs::write(dir.path().join("state.img"), b"s").unwrap();
        assert!(f.is_complete(dir.path()));
        let names: Vec<String> = f
            .files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["pages.img", "state.img"]);
        assert!(f.files(&dir.path().join("missing")).is_err());
    }
}
