//! Per-tenant quotas: sandbox count, vCPUs, memory and storage bytes. A
//! request that would exceed one fails before anything is made, naming the
//! limit, the usage and the request.
//!
//! Counting: every live (not deleted) sandbox counts towards `sandboxes`
//! and, with its volume size, towards `storage`, as do the stored bytes of
//! the tenant's snapshots; sandboxes that hold
//! compute (creating, running, paused) count towards `vcpus` and `memory`.

use crate::model::{Record, State};
use crate::transitions::Rules;
use dwell_store::Tenant;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::size::format_size;

/// What a tenant holds now.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Held {
    pub sandboxes: u64,
    pub vcpus: f64,
    pub memory: u64,
    pub storage: u64,
}

/// Sum what `recs` (one tenant's live sandboxes) hold.
pub fn held(recs: &[Record]) -> Held {
    let mut h = Held::default();
    for r in recs {
        let spec = &r.spec;
        h.sandboxes += 1;
        // An archived volume is counted as its snapshot's stored bytes.
        if r.state != State::Archived {
            h.storage += spec.disk_bytes;
        }
        if r.state.holds_compute() {
            h.vcpus += spec.vcpus;
            h.memory += spec.memory_bytes;
        }
    }
    h
}

/// Check that adding `more` to `held` stays within `t`'s limits.
pub fn check(t: &Tenant, held: &Held, more: &Held) -> Result<()> {
    let over = |what: &str, limit: String, used: String, asked: String| {
        Err(Error::Quota(Box::new(crate::error::QuotaExceeded {
            message: format!(
                "tenant {} would exceed its {what} quota: limit {limit}, in use {used}, this request adds {asked}; free some (stop or remove sandboxes) or have an admin raise the quota (a tenant without a record of its own is held to the daemon's default quota)",
                t.name
            ),
            tenant: t.name.clone(),
            resource: what.to_string(),
            limit,
            used,
            asked,
        })))
    };
    if let Some(max) = t.max_sandboxes {
        if held.sandboxes + more.sandboxes > max {
            return over(
                "sandboxes",
                max.to_string(),
                held.sandboxes.to_string(),
                more.sandboxes.to_string(),
            );
        }
    }
    if let Some(max) = t.max_vcpus {
        if held.vcpus + more.vcpus > max + 1e-9 {
            return over(
                "vcpus",
                max.to_string(),
                held.vcpus.to_string(),
                more.vcpus.to_string(),
            );
        }
    }
    if let Some(max) = t.max_memory {
        if held.memory + more.memory > max {
            return over(
                "memory",
                format_size(max),
                format_size(held.memory),
                format_size(more.memory),
            );
        }
    }
    if let Some(max) = t.max_storage {
        if held.storage + more.storage > max {
            return over(
                "storage",
                format_size(max),
                format_size(held.storage),
                format_size(more.storage),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_limit_the_usage_and_the_request() {
        let t = Tenant {
            name: "acme".into(),
            max_memory: Some(1 << 30),
            ..Default::default()
        };
        let held = Held {
            memory: 768 << 20,
            ..Default::default()
        };
        let err = check(
            &t,
            &held,
            &Held {
                memory: 512 << 20,
                ..Default::default()
            },
        )
        .unwrap_err();
        assert_eq!(err.code(), "quota_exceeded");
        let facts = err.facts();
        assert_eq!(facts["tenant"], "acme");
        assert_eq!(facts["resource"], "memory");
        assert_eq!(
            (&*facts["limit"], &*facts["used"], &*facts["asked"]),
            ("1GiB", "768MiB", "512MiB")
        );
        let e = err.to_string();
        assert!(
            e.contains("memory quota")
                && e.contains("1GiB")
                && e.contains("768MiB")
                && e.contains("512MiB"),
            "{e}"
        );
        assert!(check(
            &t,
            &held,
            &Held {
                memory: 256 << 20,
                ..Default::default()
            }
        )
        .is_ok());
    }
}
