//! The isolation runtimes one daemon offers: the namespace runtime always,
//! gVisor when runsc is installed. Each sandbox names its runtime in its
//! record (`ns` or `gvisor`), and every operation on it goes to that one.

use std::sync::Arc;

use dwell_runtime::Runtime;

use crate::error::{Error, Result};

/// The record's name of the namespace runtime.
pub const NS: &str = "ns";
/// The record's name of the gVisor runtime.
pub const GVISOR: &str = "gvisor";

/// The runtime a user's word names (`namespace`/`ns`, `gvisor`/`runsc`),
/// as stored in records.
pub fn canonical(name: &str) -> Result<&'static str> {
    match name {
        "ns" | "namespace" | "namespaces" => Ok(NS),
        "gvisor" | "runsc" => Ok(GVISOR),
        other => Err(Error::invalid(
            "isolation",
            format!("{other:?} is not an isolation runtime; use namespace (ns) or gvisor"),
        )),
    }
}

/// Every runtime of the daemon, and the one new sandboxes get by default.
#[derive(Clone)]
pub struct Runtimes {
    ns: Arc<dyn Runtime>,
    /// gVisor, or why this host cannot run it.
    gvisor: std::result::Result<Arc<dyn Runtime>, String>,
    default: &'static str,
}

impl Runtimes {
    /// `gvisor` is the gVisor runtime or why it is unavailable; `default`
    /// names the runtime of sandboxes created without `--isolation`.
    pub fn new(
        ns: Arc<dyn Runtime>,
        gvisor: std::result::Result<Arc<dyn Runtime>, String>,
        default: &str,
    ) -> Result<Runtimes> {
        let r = Runtimes {
            ns,
            gvisor,
            default: canonical(default)?,
        };
        r.get(r.default)?;
        Ok(r)
    }

    /// Only the namespace runtime (gVisor unavailable for `why`).
    pub fn ns_only(ns: Arc<dyn Runtime>, why: &str) -> Runtimes {
        Runtimes {
            ns,
            gvisor: Err(why.to_string()),
            default: NS,
        }
    }

    /// The runtime a record names.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Runtime>> {
        match canonical(name)? {
            NS => Ok(self.ns.clone()),
            _ => self.gvisor.clone().map_err(|why| {
                Error::Runtime(dwell_runtime::Error::Unsupported {
                    what: "the gVisor runtime".into(),
                    why,
                    fix: "install runsc (`scripts/install-deps.sh --gvisor`) and \
                          restart the daemon, or create the sandbox with --isolation namespace"
                        .into(),
                })
            }),
        }
    }

    /// The default runtime's name.
    pub fn default_name(&self) -> &'static str {
        self.default
    }

    /// The runtimes this daemon can use, default first.
    pub fn available(&self) -> Vec<Arc<dyn Runtime>> {
        let mut out = vec![self.ns.clone()];
        if let Ok(g) = &self.gvisor {
            out.push(g.clone());
        }
        if self.default == GVISOR {
            out.reverse();
        }
        out
    }
}
