//! Metering: what each sandbox is allocated and uses, turned into usage
//! and cost.
//!
//! The reconciler's sweep calls [`meter`] for every live sandbox: the time
//! since its last mark (stored, so restarts lose nothing) is charged as
//! allocated vCPU-seconds (running only) and memory GiB-seconds (running or
//! paused: memory stays held), measured CPU-seconds and memory GiB-seconds
//! from its cgroups, and storage GiB-seconds for its volume (any state).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::model::{Record, State};
use dwell_store::{UsageDelta, UsageRow};
use serde::{Deserialize, Serialize};

use crate::model::SandboxSpec;

const GIB: f64 = (1u64 << 30) as f64;

/// Prices per hour, in dollars.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Prices {
    pub vcpu_hour: f64,
    pub memory_gib_hour: f64,
    pub storage_gib_hour: f64,
}

impl Default for Prices {
    /// The public prices of a hosted sandbox platform for compute; storage
    /// at $0.10 per GiB-month.
    fn default() -> Self {
        Prices {
            vcpu_hour: 0.01667,
            memory_gib_hour: 0.00833,
            storage_gib_hour: 0.10 / 730.0,
        }
    }
}

/// Last CPU counter read per sandbox, to turn the cgroup's cumulative
/// counter into deltas.
#[derive(Default)]
pub struct CpuMarks(Mutex<HashMap<String, u64>>);

/// The usage of one sandbox since `last` (Unix ms) until `now`.
pub fn delta(
    rec: &Record,
    spec: &SandboxSpec,
    stats: Option<&dwell_runtime::Stats>,
    marks: &CpuMarks,
    last: i64,
    now: i64,
) -> UsageDelta {
    let secs = ((now - last).max(0)) as f64 / 1000.0;
    let mut d = UsageDelta {
        // An archived sandbox's volume is in the snapshot store, not on disk.
        storage_gib_seconds: if rec.state == State::Archived {
            0.0
        } else {
            spec.disk_bytes as f64 / GIB * secs
        },
        ..Default::default()
    };
    match rec.state {
        State::Running => {
            d.vcpu_seconds = spec.vcpus * secs;
            d.memory_gib_seconds = spec.memory_bytes as f64 / GIB * secs;
        }
        State::Paused => d.memory_gib_seconds = spec.memory_bytes as f64 / GIB * secs,
        _ => {}
    }
    if let Some(s) = stats {
        d.memory_used_gib_seconds = s.memory_bytes as f64 / GIB * secs;
        let mut m = marks.0.lock().unwrap_or_else(|p| p.into_inner());
        let prev = m.insert(rec.id.clone(), s.cpu_usage_ns);
        if let Some(prev) = prev {
            d.cpu_used_seconds = s.cpu_usage_ns.saturating_sub(prev) as f64 / 1e9;
        }
    }
    d
}

/// Usage of a set of sandboxes, with cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub since: i64,
    pub prices: Option<Prices>,
    pub sandboxes: Vec<ReportRow>,
    pub total: Totals,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ReportRow {
    pub sandbox_id: String,
    pub name: String,
    pub tenant: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Usage in the units people pay in.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub vcpu_hours: f64,
    pub memory_gib_hours: f64,
    pub storage_gib_hours: f64,
    pub cpu_used_hours: f64,
    pub memory_used_gib_hours: f64,
    pub cost_usd: f64,
}

impl Totals {
    pub(crate) fn from(u: &UsageDelta, p: &Prices) -> Totals {
        let t = Totals {
            vcpu_hours: u.vcpu_seconds / 3600.0,
            memory_gib_hours: u.memory_gib_seconds / 3600.0,
            storage_gib_hours: u.storage_gib_seconds / 3600.0,
            cpu_used_hours: u.cpu_used_seconds / 3600.0,
            memory_used_gib_hours: u.memory_used_gib_seconds / 3600.0,
            cost_usd: 0.0,
        };
        Totals {
            cost_usd: t.vcpu_hours * p.vcpu_hour
                + t.memory_gib_hours * p.memory_gib_hour
                + t.storage_gib_hours * p.storage_gib_hour,
            ..t
        }
    }

    fn add(&mut self, o: &Totals) {
        self.vcpu_hours += o.vcpu_hours;
        self.memory_gib_hours += o.memory_gib_hours;
        self.storage_gib_hours += o.storage_gib_hours;
        self.cpu_used_hours += o.cpu_used_hours;
        self.memory_used_gib_hours += o.memory_used_gib_hours;
        self.cost_usd += o.cost_usd;
    }
}

/// Build a report from stored rows; `names` maps ids to names.
/// Usage and cost per tenant over time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Series {
    pub since: i64,
    pub until: i64,
    pub step_secs: u64,
    pub prices: Option<Prices>,
    pub points: Vec<SeriesPoint>,
}

/// A tenant's usage in one bucket of a [`Series`].
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SeriesPoint {
    pub start: i64,
    pub tenant: String,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Prices the store's buckets.
pub fn series(
    buckets: &[dwell_store::UsageBucket],
    prices: &Prices,
    since: i64,
    until: i64,
    step_ms: i64,
) -> Series {
    Series {
        since,
        until,
        step_secs: (step_ms / 1000) as u64,
        prices: Some(*prices),
        points: buckets
            .iter()
            .map(|b| SeriesPoint {
                start: b.start,
                tenant: b.tenant.clone(),
                totals: Totals::from(&b.usage, prices),
            })
            .collect(),
    }
}

pub fn report(
    rows: &[UsageRow],
    names: &HashMap<String, String>,
    prices: &Prices,
    since: i64,
) -> Report {
    let mut r = Report {
        since,
        prices: Some(*prices),
        ..Default::default()
    };
    for row in rows {
        let t = Totals::from(&row.usage, prices);
        r.total.add(&t);
        r.sandboxes.push(ReportRow {
            sandbox_id: row.sandbox_id.clone(),
            name: names
                .get(&row.sandbox_id)
                .cloned()
                .unwrap_or_else(|| "(deleted)".into()),
            tenant: row.tenant.clone(),
            totals: t,
        });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(state: State) -> Record {
        Record {
            id: "m".into(),
            name: "m".into(),
            tenant: "t".into(),
            image: "host".into(),
            mode: dwell_store::Mode::Persistent,
            runtime: dwell_store::RuntimeName::new(dwell_runtime::Kind::default().name()),
            spec: spec(),
            state,
            desired_state: state,
            reason: String::new(),
            created_at: 0,
            updated_at: 0,
            state_changed_at: 0,
            started_at: None,
            stopped_at: None,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
            node: None,
        }
    }

    fn spec() -> SandboxSpec {
        SandboxSpec {
            vcpus: 2.0,
            memory_bytes: 1 << 30,
            pids: 100,
            disk_bytes: 4 << 30,
            env: Default::default(),
            labels: Default::default(),
            network: Default::default(),
            policies: Default::default(),
            secret_env_names: Vec::new(),
            sealed_env: None,
            allow_raw_sockets: false,
            allow_core_dumps: false,
            egress: Default::default(),
            volumes: Vec::new(),
            service: None,
            node_selector: Default::default(),
            backup_every_ms: None,
        }
    }

    #[test]
    fn running_paused_and_stopped_hours_are_charged_by_state() {
        let marks = CpuMarks::default();
        let hour = 3_600_000;
        let stats = dwell_runtime::Stats {
            memory_bytes: 1 << 29,
            cpu_usage_ns: 1_000_000_000,
            ..Default::default()
        };
        let d = delta(&rec(State::Running), &spec(), Some(&stats), &marks, 0, hour);
        assert_eq!(
            (d.vcpu_seconds, d.memory_gib_seconds, d.storage_gib_seconds),
            (7200.0, 3600.0, 4.0 * 3600.0)
        );
        assert_eq!(d.memory_used_gib_seconds, 1800.0);
        assert_eq!(
            d.cpu_used_seconds, 0.0,
            "the first reading only sets the mark"
        );
        let later = dwell_runtime::Stats {
            cpu_usage_ns: 31_000_000_000,
            ..stats
        };
        let d = delta(
            &rec(State::Running),
            &spec(),
            Some(&later),
            &marks,
            hour,
            2 * hour,
        );
        assert_eq!(d.cpu_used_seconds, 30.0);
        let d = delta(&rec(State::Paused), &spec(), None, &marks, 0, hour);
        assert_eq!(
            (d.vcpu_seconds, d.memory_gib_seconds),
            (0.0, 3600.0),
            "paused: memory held, no CPU"
        );
        let d = delta(&rec(State::Stopped), &spec(), None, &marks, 0, hour);
        assert_eq!(
            (d.vcpu_seconds, d.memory_gib_seconds, d.storage_gib_seconds),
            (0.0, 0.0, 4.0 * 3600.0)
        );
        let t = Totals::from(
            &delta(&rec(State::Running), &spec(), None, &marks, 0, hour),
            &Prices::default(),
        );
        let want = 2.0 * 0.01667 + 0.00833 + 4.0 * 0.10 / 730.0;
        assert!(
            (t.cost_usd - want).abs() < 1e-12,
            "{} != {want}",
            t.cost_usd
        );
    }

    #[test]
    fn an_hour_of_one_vcpu_and_one_gib_costs_the_list_price() {
        let u = UsageDelta {
            vcpu_seconds: 3600.0,
            memory_gib_seconds: 3600.0,
            ..Default::default()
        };
        let t = Totals::from(&u, &Prices::default());
        assert!((t.cost_usd - (0.01667 + 0.00833)).abs() < 1e-9);
    }
}
