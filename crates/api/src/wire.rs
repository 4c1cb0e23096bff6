//! The edge between the control plane and the HTTP contract: values of
//! control's (and the store's, storage's and agent's) types become the
//! contract's `dwell_contract` types, and requests go the other way.
//!
//! Both sides carry the same serde shape, so the mapping goes through
//! that shape: a field the contract lacks or spells differently fails
//! here (a 500 that names the type, and the `wire` tests) instead of
//! silently changing what clients see.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};

/// `from`, as the contract (or internal) type `T` with the same JSON shape.
pub fn map<F: Serialize, T: DeserializeOwned>(from: &F) -> ApiResult<T> {
    serde_json::to_value(from)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            ApiError::internal(format!(
                "{} does not map onto {}: {e}",
                std::any::type_name::<F>(),
                std::any::type_name::<T>()
            ))
        })
}

/// Every element of `from`, mapped.
pub fn map_all<F: Serialize, T: DeserializeOwned>(from: &[F]) -> ApiResult<Vec<T>> {
    from.iter().map(map).collect()
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde::Serialize;
    use serde_json::{json, Value};

    /// `v`, read as the internal type `F` and mapped onto the contract's
    /// `T`, serializes back to `v`: the JSON clients see is unchanged.
    fn same_shape<F: Serialize + DeserializeOwned, T: Serialize + DeserializeOwned>(v: Value) {
        let internal: F = serde_json::from_value(v.clone()).expect("the internal type reads it");
        let wire: T = super::map(&internal).expect("maps onto the contract");
        assert_eq!(serde_json::to_value(&internal).unwrap(), v, "internal");
        assert_eq!(serde_json::to_value(&wire).unwrap(), v, "contract");
    }

    fn sandbox() -> Value {
        json!({
            "id": "a1", "name": "work", "tenant": "default", "image": "host",
            "mode": "persistent", "runtime": "ns", "state": "running",
            "desired_state": "running", "reason": "started",
            "spec": {
                "vcpus": 1.0, "memory_bytes": 536870912u64, "pids": 1024, "disk_bytes": 4294967296u64,
                "env": {"A": "1"}, "labels": {"team": "x"}, "network": "nat",
                "policies": {"ttl_ms": 60000, "ttl_action": "archive", "archive_after_ms": 5, "auto_resume": true},
                "secret_env_names": ["TOKEN"],
                "allow_raw_sockets": false, "allow_core_dumps": true,
                "egress": {"allow": ["*.example.com", "10.0.0.0/8"], "deny": ["0.0.0.0/0"], "precedence": "allow_wins"},
                "volumes": [{"name": "pgdata", "path": "/data", "read_only": false}],
                "backup_every_ms": 900000
            },
            "created_at": 1, "updated_at": 2, "state_changed_at": 3,
            "started_at": 4, "stopped_at": null,
            "volume": {"kind": "loop", "size_bytes": 10, "used_bytes": 5, "mounted": true, "limit_enforced": true},
            "last_activity_at": 5, "hold_until": null,
            "schedule": [{"policy": "ttl", "action": "archive", "at": 9}],
            "stats": {"memory_bytes": 1, "memory_limit_bytes": 2, "cpu_usage_ns": 3, "pids": 4, "oom_kills": 0},
            "archive": {"snapshot": "s", "volume_size": 1, "data_bytes": 1, "stored_bytes": 1, "archived_at": "t", "hibernated": true},
            "saved_state_bytes": 7, "wakes_on_use": false, "last_backup_at": 8,
            "networks": [{"network": "team", "address": "10.210.0.2", "subnet": "10.210.0.0/24", "interface": "eth1"}]
        })
    }

    #[test]
    fn networks_keep_their_shape() {
        same_shape::<dwell_control::volumes::NamedVolumeView, dwell_contract::NamedVolume>(json!({
            "id": "v1", "name": "pgdata", "size_bytes": 1, "used_bytes": 2, "mounted": true,
            "used_by": ["db"], "created_at": 3
        }));
        same_shape::<dwell_control::networks::NetworkView, dwell_contract::Network>(json!({
            "id": "n1", "name": "team", "subnet": "10.210.0.0/24", "bridge": "dwb0000abcd",
            "created_at": 1,
            "members": [{"sandbox_id": "a1", "sandbox": "db", "address": "10.210.0.2", "state": "stopped"}]
        }));
    }

    #[test]
    fn sandboxes_keep_their_shape() {
        same_shape::<dwell_control::Sandbox, dwell_contract::Sandbox>(sandbox());
        let mut bare = sandbox();
        for k in [
            "volume",
            "stats",
            "archive",
            "saved_state_bytes",
            "wakes_on_use",
            "networks",
            "last_backup_at",
        ] {
            bare.as_object_mut().unwrap().remove(k);
        }
        same_shape::<dwell_control::Sandbox, dwell_contract::Sandbox>(bare);
    }

    #[test]
    fn requests_keep_their_shape() {
        same_shape::<dwell_control::CreateRequest, dwell_contract::CreateRequest>(json!({
            "name": "w", "image": "host", "mode": "ephemeral", "vcpus": 0.5, "memory": "256M",
            "pids": 64, "disk": 1073741824u64, "env": {"A": "1"}, "labels": {"k": "v"}, "network": "none",
            "runtime": "gvisor", "backup_every": "15m",
            "policies": {"ttl": "1h", "idle_timeout": 600, "pause_after": null, "archive_after": null,
                         "delete_after": null, "max_lifetime": null, "ttl_action": "pause",
                         "auto_resume": false},
            "secret_env": {"T": "s"}, "from": "snap", "allow_raw_sockets": true, "allow_core_dumps": false,
            "allow_out": ["pypi.org"], "deny_out": ["0.0.0.0/0"],
            "networks": ["team", "db"],
            "volumes": [{"name": "pgdata", "path": "/data", "read_only": true}],
            "service": {"entrypoint": ["sh"], "cmd": ["-c", "x"], "disabled": false,
                        "restart": "on-failure:3", "no_healthcheck": false,
                        "healthcheck": {"test": ["CMD-SHELL", "true"], "interval_ms": 5},
                        "stop_signal": "SIGINT", "stop_timeout_ms": 7}
        }));
        same_shape::<dwell_proto::ServiceStatus, dwell_contract::service::ServiceStatus>(json!({
            "state": "backing_off", "pid": 4, "restarts": 2, "started_at_ms": 1,
            "last_exit": {"code": null, "signal": 9, "timed_out": false}, "last_exit_at_ms": 2,
            "next_start_at_ms": 3, "error": "e", "health": "unhealthy", "health_failures": 3,
            "health_output": "o", "events": [{"seq": 1, "at_ms": 1, "kind": "started", "message": "m"}]
        }));
        same_shape::<dwell_proto::ServiceSpec, dwell_contract::service::ServiceSpec>(json!({
            "command": ["a"], "env": {"A": "1"}, "workdir": "/w", "user": "u", "restart": "always",
            "max_retries": 1, "healthcheck": {"test": ["CMD", "x"], "interval_ms": 1, "timeout_ms": 2,
            "start_period_ms": 3, "retries": 4}, "stop_signal": 2, "stop_timeout_ms": 5
        }));
        same_shape::<dwell_proto::ExecRequest, dwell_contract::ExecRequest>(json!({
            "argv": ["ls"], "shell": null, "env": {"A": "1"}, "cwd": "/", "user": "root",
            "timeout_ms": 5, "stdin": true, "tty": {"rows": 1, "cols": 2}, "background": false, "tag": "t"
        }));
    }

    #[test]
    fn reports_keep_their_shape() {
        same_shape::<dwell_control::diff::Drift, dwell_contract::sandbox::Drift>(json!({
            "packages": {"installed": [{"name": "a", "version": "1"}], "removed": [],
                         "changed": [{"name": "b", "version": "2", "was": "1"}]},
            "files": [{"path": "/x", "change": "added", "size": 1, "dir": false}], "bytes": 1
        }));
        let totals = json!({"vcpu_hours": 1.0, "memory_gib_hours": 1.0, "storage_gib_hours": 1.0,
                            "cpu_used_hours": 1.0, "memory_used_gib_hours": 1.0, "cost_usd": 1.0});
        let mut row = totals.clone();
        row.as_object_mut().unwrap().extend(
            json!({"sandbox_id": "a", "name": "w", "tenant": "t"})
                .as_object()
                .unwrap()
                .clone(),
        );
        same_shape::<dwell_control::metering::Report, dwell_contract::tenants::Report>(json!({
            "since": 0, "prices": {"vcpu_hour": 1.0, "memory_gib_hour": 1.0, "storage_gib_hour": 1.0},
            "sandboxes": [row], "total": totals
        }));
        let mut point = totals.clone();
        point.as_object_mut().unwrap().extend(
            json!({"start": 0, "tenant": "t"})
                .as_object()
                .unwrap()
                .clone(),
        );
        same_shape::<dwell_control::metering::Series, dwell_contract::tenants::UsageSeries>(
            json!({
                "since": 0, "until": 1, "step_secs": 3600,
                "prices": {"vcpu_hour": 1.0, "memory_gib_hour": 1.0, "storage_gib_hour": 1.0},
                "points": [point]
            }),
        );
        same_shape::<dwell_store::KeyRecord, dwell_contract::tenants::ApiKey>(json!({
            "id": "k", "tenant": "t", "name": "api", "admin": false, "created_at": 1,
            "revoked_at": null, "last_used_at": 2
        }));
        same_shape::<dwell_store::Tenant, dwell_contract::tenants::Tenant>(json!({
            "name": "t", "max_sandboxes": 1, "max_vcpus": 2.0, "max_memory": null, "max_storage": 4,
            "created_at": 1,
            "default_policies": {"ttl": "1h", "idle_timeout": null, "pause_after": null, "archive_after": null,
                                 "delete_after": null, "max_lifetime": null, "ttl_action": null,
                                 "auto_resume": null},
            "default_egress": {"allow": ["pypi.org"], "deny": ["0.0.0.0/0"], "precedence": "deny_wins"}
        }));
        same_shape::<dwell_proto::ProcessInfo, dwell_contract::ProcessInfo>(json!({
            "pid": 1, "argv": ["sh"], "tag": null, "background": true, "tty": false, "running": false,
            "exit": {"code": 0, "signal": null, "timed_out": false}, "started_at_ms": 3
        }));
        same_shape::<dwell_proto::FileInfo, dwell_contract::FileInfo>(json!({
            "name": "x", "path": "/x", "kind": "symlink", "size": 1, "mode": 420, "uid": 0, "gid": 0,
            "modified_ms": 1, "symlink_target": "/y"
        }));
        same_shape::<dwell_storage::Image, dwell_contract::Image>(json!({
            "name": "host", "reference": null, "digest": null, "id": "sha256:0", "layers": ["/a"], "host_dirs": ["/usr"], "created_at": 1,
            "size_bytes": 2, "source": "host:/", "env": ["A=1"], "entrypoint": [], "cmd": ["sh"],
            "workdir": null, "user": "root", "labels": {"k": "v"}, "exposed_ports": ["80/tcp"],
            "healthcheck": {"test": ["CMD", "true"], "interval_ms": 1, "timeout_ms": null,
                            "start_period_ms": null, "retries": 2},
            "stop_signal": "SIGINT"
        }));
        same_shape::<dwell_control::snapshot_gc::GcSummary, dwell_contract::snapshots::GcSummary>(
            json!({"orphan_archives_deleted": 1, "manifests": 2, "chunks_examined": 3, "chunks_deleted": 4,
                   "bytes_freed": 5, "kept_leased": 6, "kept_young": 7}),
        );
    }
}
