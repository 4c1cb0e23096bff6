//! `dwell serve`'s `--max-sandbox-*` and `--default-max-*` flags, checked
//! and turned into the controller's [`DaemonLimits`].

use std::path::Path;

use anyhow::{bail, Result};
use dwell_control::limits::{Ceilings, DaemonLimits, DefaultQuota};
use dwell_control::model::HostLimits;
use dwell_control::size::parse_size;

use crate::cli::LimitFlags;

/// The daemon's limits from `f`, with host-derived defaults.
pub fn from_flags(f: &LimitFlags, data_dir: &Path) -> Result<DaemonLimits> {
    let host = HostLimits::detect();
    let mut ceilings = Ceilings::from_host(&host);
    if let Some(m) = &f.max_sandbox_memory {
        ceilings.memory = size("--max-sandbox-memory", m)?;
    }
    if let Some(v) = f.max_sandbox_vcpus {
        if !(v.is_finite() && v > 0.0) {
            bail!(
                "--max-sandbox-vcpus {v} is not a positive number of CPUs; write it like 2 or 0.5"
            );
        }
        ceilings.vcpus = v;
    }
    if f.max_sandbox_pids < 8 {
        bail!(
            "--max-sandbox-pids {} leaves no room for a sandbox; give at least 8",
            f.max_sandbox_pids
        );
    }
    ceilings.pids = f.max_sandbox_pids;
    ceilings.disk = f
        .max_sandbox_disk
        .as_deref()
        .map(|d| size("--max-sandbox-disk", d))
        .transpose()?;
    let mut q = DefaultQuota::derived(&host, data_dir);
    if let Some(v) = &f.default_max_sandboxes {
        q.max_sandboxes = limit("--default-max-sandboxes", v, |s| {
            s.parse::<u64>()
                .map_err(|_| "a whole number like 20".to_string())
        })?;
    }
    if let Some(v) = &f.default_max_vcpus {
        q.max_vcpus = limit("--default-max-vcpus", v, |s| match s.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
            _ => Err("a number of CPUs like 8 or 2.5".to_string()),
        })?;
    }
    if let Some(v) = &f.default_max_memory {
        q.max_memory = limit("--default-max-memory", v, parse_size)?;
    }
    if let Some(v) = &f.default_max_storage {
        q.max_storage = limit("--default-max-storage", v, parse_size)?;
    }
    Ok(DaemonLimits {
        ceilings,
        default_quota: q,
    })
}

fn size(flag: &str, v: &str) -> Result<u64> {
    parse_size(v).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// A default quota limit: `none` for no limit, else what `parse` accepts.
fn limit<T>(flag: &str, v: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Option<T>> {
    if v.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    parse(v)
        .map(Some)
        .map_err(|e| anyhow::anyhow!("{flag} {v:?}: give {e}, or `none` for no limit"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_become_limits_and_bad_ones_say_how_to_fix() {
        let f = LimitFlags {
            max_sandbox_memory: Some("1G".into()),
            max_sandbox_pids: 100,
            max_sandbox_disk: Some("2G".into()),
            default_max_sandboxes: Some("none".into()),
            default_max_memory: Some("3G".into()),
            ..Default::default()
        };
        let l = from_flags(&f, Path::new("/")).unwrap();
        assert_eq!(l.ceilings.memory, 1 << 30);
        assert_eq!(l.ceilings.pids, 100);
        assert_eq!(l.ceilings.disk, Some(2 << 30));
        assert_eq!(l.default_quota.max_sandboxes, None);
        assert_eq!(l.default_quota.max_memory, Some(3 << 30));
        assert!(l.default_quota.max_vcpus.is_some());
        let bad = LimitFlags {
            default_max_vcpus: Some("lots".into()),
            max_sandbox_pids: 100,
            ..Default::default()
        };
        let e = from_flags(&bad, Path::new("/")).unwrap_err().to_string();
        assert!(
            e.contains("--default-max-vcpus") && e.contains("none"),
            "{e}"
        );
        let bad = LimitFlags {
            max_sandbox_pids: 2,
            ..Default::default()
        };
        assert!(from_flags(&bad, Path::new("/")).is_err());
    }
}
