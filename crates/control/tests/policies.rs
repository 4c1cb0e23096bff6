//! Lifecycle policies fire at the right time: a manual clock drives the
//! control plane against a runtime double, real SQLite and real (directory)
//! volumes. Each sweep is what the daemon's periodic resync does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_control::clock::ManualClock;
use dwell_control::model::CreateRequest;
use dwell_control::policy::{DurationArg, PolicyArgs};
use dwell_control::{Controller, ControllerOptions, Mode, State};
use dwell_runtime::{Observed, Runtime, SandboxConfig, Started, Stats};
use dwell_storage::{ImageStore, VolumeKind, VolumeManager};
use dwell_store::Store;

/// A runtime that only keeps the state of each sandbox.
#[derive(Default)]
struct Double(Mutex<HashMap<String, Observed>>);

impl Double {
    fn set(&self, id: &str, o: Observed) {
        self.0.lock().unwrap().insert(id.to_string(), o);
    }
}

impl Runtime for Double {
    fn name(&self) -> &'static str {
        "ns"
    }
    fn start(&self, c: &SandboxConfig) -> dwell_runtime::Result<Started> {
        self.set(&c.id, Observed::Running);
        Ok(Started {
            pid: 1,
            agent_socket: c.state_dir.join("run/agent.sock"),
        })
    }
    fn observe(&self, c: &SandboxConfig) -> dwell_runtime::Result<Observed> {
        Ok(*self
            .0
            .lock()
            .unwrap()
            .get(&c.id)
            .unwrap_or(&Observed::Stopped))
    }
    fn pause(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.set(&c.id, Observed::Paused);
        Ok(())
    }
    fn resume(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.set(&c.id, Observed::Running);
        Ok(())
    }
    fn stop(&self, c: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.set(&c.id, Observed::Stopped);
        Ok(())
    }
    fn stats(&self, _: &SandboxConfig) -> dwell_runtime::Result<Stats> {
        Ok(Stats::default())
    }
    fn list_host(&self) -> dwell_runtime::Result<Vec<String>> {
        Ok(self.0.lock().unwrap().keys().cloned().collect())
    }
}

struct Env {
    _dir: tempfile::TempDir,
    ctl: Controller,
    clock: Arc<ManualClock>,
}

const MIN: i64 = 60_000;

fn env_with(dir: tempfile::TempDir, runtime: Arc<Double>, clock: Arc<ManualClock>) -> Env {
    let data = dir.path().to_path_buf();
    let ctl = Controller::new(ControllerOptions {
        store: Store::open(&data.join("dwell.db")).unwrap(),
        runtimes: vec![(dwell_runtime::Kind::Namespace, Ok(runtime))],
        default_isolation: dwell_runtime::Kind::Namespace,
        volumes: VolumeManager::with_kind(data.join("volumes"), VolumeKind::Directory),
        images: ImageStore::open(data.join("images")).unwrap(),
        agent_binary: data.join("agent"),
        resync_every: Duration::from_secs(3600),
        clock: clock.clone(),
        default_policies: PolicyArgs::default(),
        prices: Default::default(),
        audit_retention: Duration::from_secs(90 * 86400),
        snapshots: Arc::new(dwell_snapshot::LocalStore::open(data.join("snapshots")).unwrap()),
        snapshot_settings: Default::default(),
        limits: Default::default(),
        dns: None,
        default_egress: Default::default(),
        data_dir: data,
    });
    Env {
        _dir: dir,
        ctl,
        clock,
    }
}

fn env() -> Env {
    env_with(tempfile::tempdir().unwrap(), Arc::default(), Arc::default())
}

fn d(s: &str) -> Option<DurationArg> {
    Some(DurationArg::Text(s.into()))
}

async fn create(e: &Env, name: &str, mode: Mode, p: PolicyArgs) -> String {
    let sb = e
        .ctl
        .create(
            "t",
            CreateRequest {
                name: Some(name.into()),
                mode: Some(mode),
                policies: Some(p),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(sb.state, State::Running);
    sb.id
}

fn state(e: &Env, id: &str) -> State {
    e.ctl
        .get("t", id)
        .map(|s| s.state)
        .unwrap_or(State::Deleted)
}

async fn after(e: &Env, ms: i64) {
    e.clock.advance(ms);
    e.ctl.sweep().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_then_paused_then_stopped_then_deleted() {
    let e = env();
    let id = create(
        &e,
        "agent1",
        Mode::Persistent,
        PolicyArgs {
            idle_timeout: d("10m"),
            pause_after: d("1h"),
            delete_after: d("30d"),
            ..Default::default()
        },
    )
    .await;
    let sched = e.ctl.get("t", &id).unwrap().schedule;
    assert_eq!(sched[0].policy, "idle_timeout");
    after(&e, 9 * MIN).await;
    assert_eq!(state(&e, &id), State::Running);
    after(&e, 2 * MIN).await;
    assert_eq!(state(&e, &id), State::Paused);
    let sb = e.ctl.get("t", &id).unwrap();
    assert!(sb.reason.contains("idle_timeout"), "{}", sb.reason);
    assert_eq!(sb.schedule[0].policy, "pause_after");
    after(&e, 59 * MIN).await;
    assert_eq!(state(&e, &id), State::Paused);
    after(&e, 2 * MIN).await;
    assert_eq!(state(&e, &id), State::Stopped);
    after(&e, 30 * 24 * 60 * MIN).await;
    assert_eq!(state(&e, &id), State::Deleted);
    let events = e.ctl.events("t", &id, 0).unwrap();
    let policy_events: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "policy")
        .map(|e| e.message.clone())
        .collect();
    assert_eq!(policy_events.len(), 3, "{policy_events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_keepalive_and_open_streams_push_the_idle_timer() {
    let e = env();
    let id = create(
        &e,
        "busy",
        Mode::Persistent,
        PolicyArgs {
            idle_timeout: d("10m"),
            ..Default::default()
        },
    )
    .await;
    after(&e, 8 * MIN).await;
    e.ctl.touch(&id);
    after(&e, 8 * MIN).await;
    assert_eq!(
        state(&e, &id),
        State::Running,
        "activity pushes the idle timer"
    );
    e.ctl.keepalive("t", &id, 30 * MIN as u64).unwrap();
    after(&e, 25 * MIN).await;
    assert_eq!(
        state(&e, &id),
        State::Running,
        "keepalive holds the idle timer"
    );
    {
        let _stream = e.ctl.stream_opened(&id);
        after(&e, 60 * MIN).await;
        assert_eq!(state(&e, &id), State::Running, "an open stream is activity");
    }
    after(&e, 11 * MIN).await;
    assert_eq!(state(&e, &id), State::Paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_wipes_ephemeral_and_max_lifetime_caps_persistent() {
    let e = env();
    let job = create(
        &e,
        "job",
        Mode::Ephemeral,
        PolicyArgs {
            ttl: d("15m"),
            ..Default::default()
        },
    )
    .await;
    let capped = create(
        &e,
        "capped",
        Mode::Persistent,
        PolicyArgs {
            max_lifetime: d("24h"),
            ..Default::default()
        },
    )
    .await;
    after(&e, 14 * MIN).await;
    assert_eq!(state(&e, &job), State::Running);
    after(&e, MIN).await;
    assert_eq!(state(&e, &job), State::Deleted);
    assert!(
        !e._dir.path().join("volumes").join(&job).exists(),
        "the TTL must wipe the data"
    );
    after(&e, 24 * 60 * MIN).await;
    assert_eq!(state(&e, &capped), State::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_editable_live_and_survive_a_daemon_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let runtime: Arc<Double> = Arc::default();
    let clock: Arc<ManualClock> = Arc::default();
    let e = env_with(dir, runtime.clone(), clock.clone());
    let id = create(&e, "w", Mode::Persistent, PolicyArgs::default()).await;
    assert!(e.ctl.get("t", &id).unwrap().schedule.is_empty());
    e.ctl
        .update_policies(
            "t",
            &id,
            &PolicyArgs {
                idle_timeout: d("5m"),
                ..Default::default()
            },
        )
        .unwrap();
    let sb = e
        .ctl
        .update_policies(
            "t",
            &id,
            &PolicyArgs {
                archive_after: d("7d"),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        sb.spec.policies.archive_after_ms,
        Some(7 * 24 * 60 * MIN as u64)
    );
    e.ctl
        .update_policies(
            "t",
            &id,
            &PolicyArgs {
                archive_after: d("off"),
                ..Default::default()
            },
        )
        .unwrap();
    // A "restart": a new controller on the same database, no in-memory timers.
    let Env { _dir, ctl, .. } = e;
    drop(ctl);
    let e2 = env_with(_dir, runtime, clock);
    assert_eq!(e2._dir.path(), path);
    after(&e2, 6 * MIN).await;
    assert_eq!(state(&e2, &id), State::Paused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_defaults_apply_to_sandboxes_without_policies_and_usage_accrues() {
    let e = env();
    e.ctl
        .create_tenant(&dwell_store::Tenant {
            name: "t".into(),
            default_policies: Some(serde_json::json!({"idle_timeout": "5m"})),
            ..Default::default()
        })
        .unwrap();
    let id = create(&e, "d", Mode::Persistent, PolicyArgs::default()).await;
    assert_eq!(
        e.ctl.get("t", &id).unwrap().spec.policies.idle_timeout_ms,
        Some(300_000)
    );
    after(&e, 4 * MIN).await;
    after(&e, 2 * MIN).await;
    assert_eq!(state(&e, &id), State::Paused);
    // Running until the sweep at minute 6 paused it (1 vCPU, 512 MiB by
    // default), then 2 minutes paused: memory is still held, CPU is not.
    after(&e, 2 * MIN).await;
    let r = e.ctl.usage(Some("t"), 0).unwrap();
    let t = r.total;
    assert!((t.vcpu_hours - 6.0 / 60.0).abs() < 1e-3, "{t:?}");
    assert!(
        (t.memory_gib_hours - 0.5 * 8.0 / 60.0).abs() < 1e-3,
        "{t:?}"
    );
    assert!(
        (t.storage_gib_hours - 4.0 * 8.0 / 60.0).abs() < 1e-3,
        "{t:?}"
    );
    assert!(t.cost_usd > 0.0);
}
