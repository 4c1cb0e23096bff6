//! What the daemon lets any one sandbox or tenant hold, whoever asks
//! (admins included):
//!
//! * [`Ceilings`]: the most memory, vCPUs, pids and disk one sandbox may
//!   be created with (`dwell serve --max-sandbox-*`). The defaults come
//!   from the host: its RAM, its CPUs, [`DEFAULT_MAX_PIDS`], and for disk
//!   the free space of the data dir at the time of the create.
//! * [`DefaultQuota`]: the quota of a tenant that has no record of its own
//!   (the `default` tenant of the unix socket and the admin key, and any
//!   tenant acted for before an admin created it), `dwell serve
//!   --default-max-*`. The defaults allow some overcommit (limits are
//!   ceilings, volumes are sparse) but are finite: see [`DefaultQuota::derived`].
//!
//! A request above either fails before anything is made, with the limit,
//! the request and the flag that sets it.

use std::path::Path;

use dwell_store::Tenant;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{HostLimits, SandboxSpec};
use crate::size::format_size;

/// Default `--max-sandbox-pids`.
pub const DEFAULT_MAX_PIDS: u64 = 32_768;
/// Default `--default-max-sandboxes`.
pub const DEFAULT_MAX_SANDBOXES: u64 = 1000;
/// Overcommit of the default quota's memory and storage over the host's
/// RAM and data file system (limits are ceilings, volumes are sparse).
pub const DEFAULT_QUOTA_OVERCOMMIT: u64 = 4;
/// Overcommit of the default quota's vCPUs over the host's CPUs: CPU is
/// shared, not reserved (a vCPU is a `cpu.max` ceiling and idle sandboxes
/// use none), so this bounds fairness, not safety, and must not stop a
/// host from holding many idle sandboxes.
pub const DEFAULT_QUOTA_VCPU_OVERCOMMIT: f64 = 64.0;

/// The daemon's limits, given to the controller.
#[derive(Debug, Clone, Default)]
pub struct DaemonLimits {
    pub ceilings: Ceilings,
    pub default_quota: DefaultQuota,
}

/// The largest sandbox the daemon makes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    pub memory: u64,
    pub vcpus: f64,
    pub pids: u64,
    /// A fixed disk ceiling; the free space of the data dir always applies too.
    pub disk: Option<u64>,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings::from_host(&HostLimits::detect())
    }
}

impl Ceilings {
    /// The host's RAM and CPUs, [`DEFAULT_MAX_PIDS`], and free disk.
    pub fn from_host(host: &HostLimits) -> Ceilings {
        Ceilings {
            memory: host.memory_bytes,
            vcpus: host.cpus,
            pids: DEFAULT_MAX_PIDS,
            disk: None,
        }
    }

    /// Lowers the defaults `req` did not set to the ceilings, so that a
    /// daemon with small ceilings still makes sandboxes created without
    /// sizes (what was asked for is checked, never lowered).
    pub fn clamp_defaults(&self, req: &crate::model::CreateRequest, spec: &mut SandboxSpec) {
        if req.memory.is_none() {
            spec.memory_bytes = spec.memory_bytes.min(self.memory);
        }
        if req.vcpus.is_none() {
            spec.vcpus = spec.vcpus.min(self.vcpus);
        }
        if req.pids.is_none() {
            spec.pids = spec.pids.min(self.pids);
        }
        if let (None, Some(max)) = (&req.disk, self.disk) {
            spec.disk_bytes = spec.disk_bytes.min(max);
        }
    }

    /// The disk a sandbox gets when it does not ask (the size the volume
    /// pool keeps).
    pub fn default_disk(&self) -> u64 {
        crate::model::DEFAULT_DISK.min(self.disk.unwrap_or(u64::MAX))
    }

    /// Checks `spec` against the ceilings; `free_disk` is the free space
    /// of the data dir now (`None` when it cannot be read).
    pub fn check(&self, spec: &SandboxSpec, free_disk: Option<u64>) -> Result<()> {
        let over = |field: &str, asked: String, ceiling: String, flag: &str| {
            Err(Error::invalid(
                field,
                format!(
                    "{asked} is above this daemon's per-sandbox ceiling of {ceiling}; ask for at most {ceiling} (--{field}), or have the operator raise `dwell serve --{flag}`"
                ),
            ))
        };
        if spec.memory_bytes > self.memory {
            let (a, c) = (format_size(spec.memory_bytes), format_size(self.memory));
            return over("memory", a, c, "max-sandbox-memory");
        }
        if spec.vcpus > self.vcpus + 1e-9 {
            return over(
                "cpus",
                format!("{} vCPUs", spec.vcpus),
                format!("{} vCPUs", self.vcpus),
                "max-sandbox-vcpus",
            );
        }
        if spec.pids > self.pids {
            return over(
                "pids",
                spec.pids.to_string(),
                self.pids.to_string(),
                "max-sandbox-pids",
            );
        }
        if let Some(max) = self.disk {
            if spec.disk_bytes > max {
                let (a, c) = (format_size(spec.disk_bytes), format_size(max));
                return over("disk", a, c, "max-sandbox-disk");
            }
        }
        if let Some(free) = free_disk {
            if spec.disk_bytes > free {
                return Err(Error::invalid(
                    "disk",
                    format!(
                        "{} is more than the {} free in the daemon's data dir, the ceiling of a sandbox's disk; ask for less (--disk), or free space on the host",
                        format_size(spec.disk_bytes),
                        format_size(free)
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Bytes free to unprivileged users on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    fs_stat(dir).map(|s| s.bavail)
}

struct FsStat {
    bavail: u64,
    total: u64,
}

fn fs_stat(dir: &Path) -> Option<FsStat> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed out-parameter of the right type.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(FsStat {
        bavail: (st.f_bavail as u64).saturating_mul(frsize),
        total: (st.f_blocks as u64).saturating_mul(frsize),
    })
}

/// The quota of tenants without a record; `None` fields are unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DefaultQuota {
    pub max_sandboxes: Option<u64>,
    pub max_vcpus: Option<f64>,
    pub max_memory: Option<u64>,
    pub max_storage: Option<u64>,
}

impl DefaultQuota {
    /// [`DEFAULT_MAX_SANDBOXES`] sandboxes, [`DEFAULT_QUOTA_VCPU_OVERCOMMIT`]
    /// times the host's CPUs, and [`DEFAULT_QUOTA_OVERCOMMIT`] times its RAM
    /// and the size of the data dir's file system.
    pub fn derived(host: &HostLimits, data_dir: &Path) -> DefaultQuota {
        let k = DEFAULT_QUOTA_OVERCOMMIT;
        DefaultQuota {
            max_sandboxes: Some(DEFAULT_MAX_SANDBOXES),
            max_vcpus: Some(host.cpus * DEFAULT_QUOTA_VCPU_OVERCOMMIT),
            max_memory: Some(host.memory_bytes.saturating_mul(k)),
            max_storage: fs_stat(data_dir).map(|s| s.total.saturating_mul(k)),
        }
    }

    /// The limits of `name`, a tenant without a record.
    pub fn tenant(&self, name: &str) -> Tenant {
        Tenant {
            name: name.to_string(),
            max_sandboxes: self.max_sandboxes,
            max_vcpus: self.max_vcpus,
            max_memory: self.max_memory,
            max_storage: self.max_storage,
            created_at: 0,
            default_policies: None,
            default_egress: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(memory: u64, vcpus: f64, pids: u64, disk: u64) -> SandboxSpec {
        SandboxSpec {
            vcpus,
            memory_bytes: memory,
            pids,
            disk_bytes: disk,
            ..serde_json::from_value(serde_json::json!({
                "vcpus": 1.0, "memory_bytes": 1, "pids": 8, "disk_bytes": 1
            }))
            .unwrap()
        }
    }

    #[test]
    fn each_ceiling_names_itself_and_its_flag() {
        let c = Ceilings {
            memory: 1 << 30,
            vcpus: 2.0,
            pids: 100,
            disk: Some(2 << 30),
        };
        assert!(c.check(&spec(1 << 30, 2.0, 100, 2 << 30), None).is_ok());
        let e = c
            .check(&spec(2 << 30, 1.0, 8, 1 << 30), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2GiB")
                && e.contains("ceiling of 1GiB")
                && e.contains("--max-sandbox-memory"),
            "{e}"
        );
        let e = c
            .check(&spec(1 << 20, 3.0, 8, 1 << 30), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-sandbox-vcpus"), "{e}");
        let e = c
            .check(&spec(1 << 20, 1.0, 101, 1 << 30), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("101") && e.contains("--max-sandbox-pids"), "{e}");
        let e = c
            .check(&spec(1 << 20, 1.0, 8, 3 << 30), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--max-sandbox-disk"), "{e}");
        let e = c
            .check(&spec(1 << 20, 1.0, 8, 1 << 30), Some(512 << 20))
            .unwrap_err()
            .to_string();
        assert!(e.contains("512MiB free"), "{e}");
    }

    #[test]
    fn defaults_are_lowered_to_the_ceilings_but_requests_are_not() {
        let c = Ceilings {
            memory: 256 << 20,
            vcpus: 0.5,
            pids: 100,
            disk: Some(1 << 30),
        };
        let host = HostLimits {
            cpus: 2.0,
            memory_bytes: 8 << 30,
        };
        let req = crate::model::CreateRequest::default();
        let mut s = req.to_spec(&host).unwrap();
        c.clamp_defaults(&req, &mut s);
        assert_eq!(
            (s.memory_bytes, s.vcpus, s.pids, s.disk_bytes),
            (256 << 20, 0.5, 100, 1 << 30)
        );
        assert!(c.check(&s, None).is_ok());
        let req = crate::model::CreateRequest {
            pids: Some(1000),
            ..Default::default()
        };
        let mut s = req.to_spec(&host).unwrap();
        c.clamp_defaults(&req, &mut s);
        assert_eq!(s.pids, 1000);
        assert!(c.check(&s, None).is_err());
    }

    #[test]
    fn derived_defaults_are_finite() {
        let host = HostLimits {
            cpus: 2.0,
            memory_bytes: 8 << 30,
        };
        let q = DefaultQuota::derived(&host, Path::new("/"));
        assert_eq!(q.max_sandboxes, Some(DEFAULT_MAX_SANDBOXES));
        assert_eq!(q.max_vcpus, Some(128.0));
        assert_eq!(q.max_memory, Some(32 << 30));
        assert!(q.max_storage.is_some_and(|s| s > 0));
        assert!(free_bytes(Path::new("/")).is_some());
        let t = q.tenant("ghost");
        assert_eq!((t.name.as_str(), t.max_memory), ("ghost", Some(32 << 30)));
    }
}
