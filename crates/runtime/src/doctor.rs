//! What `dwell doctor` reports of a host: one [`Check`] per finding, from
//! each runtime's own inspection (`ns::doctor`, `gvisor::doctor`).

use serde::Serialize;

/// One finding about the host.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Short name ("cgroups", "overlayfs", ...).
    pub name: String,
    /// Whether the runtime that checked can use it.
    pub ok: bool,
    /// What was found, and how to fix it when not ok.
    pub detail: String,
}
