//! The reconciler's recovery of an interrupted fill, which the
//! controller-level tests (`tests/reconciler.rs`) cannot reach without
//! loop volumes: a record still `creating` with the fill marker of a
//! daemon that died mid-fill is deleted, with everything of it, on the
//! next pass, and the runtime is never asked to start it. Its controller
//! over an idle runtime serves other modules' tests too.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dwell_runtime::{Kind, Observed, Runtime, SandboxConfig, Started, Stats};

use crate::model::{CreateRequest, Mode, Record, State};
use crate::{Controller, ControllerOptions};

/// A runtime with nothing running that records what it is asked.
#[derive(Default)]
pub(crate) struct Idle(Mutex<Vec<&'static str>>);

impl Runtime for Idle {
    fn name(&self) -> &'static str {
        Kind::default().name()
    }
    fn start(&self, _: &SandboxConfig) -> dwell_runtime::Result<Started> {
        self.0.lock().unwrap().push("start");
        Err(dwell_runtime::Error::Other("not in this test".into()))
    }
    fn observe(&self, _: &SandboxConfig) -> dwell_runtime::Result<Observed> {
        Ok(Observed::Stopped)
    }
    fn pause(&self, _: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.0.lock().unwrap().push("pause");
        Ok(())
    }
    fn resume(&self, _: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.0.lock().unwrap().push("resume");
        Ok(())
    }
    fn stop(&self, _: &SandboxConfig) -> dwell_runtime::Result<()> {
        self.0.lock().unwrap().push("stop");
        Ok(())
    }
    fn stats(&self, _: &SandboxConfig) -> dwell_runtime::Result<Stats> {
        Ok(Stats::default())
    }
    fn list_host(&self) -> dwell_runtime::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

pub(crate) fn controller(dir: &std::path::Path, runtime: Arc<Idle>) -> Controller {
    controller_with(dir, runtime, Arc::new(crate::clock::ManualClock::default()))
}

/// [`controller`] with a clock of the test's choice (sweeps every hour).
pub(crate) fn controller_with(
    dir: &std::path::Path,
    runtime: Arc<Idle>,
    clock: Arc<dyn crate::clock::Clock>,
) -> Controller {
    Controller::new(ControllerOptions {
        store: dwell_store::Store::open(&dir.join("dwell.db")).unwrap(),
        runtimes: vec![(Kind::default(), Ok(runtime))],
        default_isolation: Kind::default(),
        volumes: dwell_storage::VolumeManager::with_kind(
            dir.join("volumes"),
            dwell_storage::VolumeKind::Directory,
        ),
        images: dwell_storage::ImageStore::open(dir.join("images")).unwrap(),
        agent_binary: dir.join("agent"),
        resync_every: Duration::from_secs(3600),
        clock,
        default_policies: Default::default(),
        prices: Default::default(),
        audit_retention: Duration::from_secs(86400),
        snapshots: Arc::new(dwell_snapshot::LocalStore::open(dir.join("snapshots")).unwrap()),
        snapshot_settings: Default::default(),
        limits: Default::default(),
        dns: None,
        default_egress: Default::default(),
        data_dir: dir.to_path_buf(),
    })
}

/// A record as `create` writes it before the fill.
pub(crate) fn creating(ctl: &Controller, id: &str) -> Record {
    let spec = CreateRequest::default().to_spec(&ctl.inner.host).unwrap();
    Record {
        id: id.into(),
        name: "half".into(),
        tenant: "t".into(),
        image: "host".into(),
        mode: Mode::Persistent,
        runtime: dwell_store::RuntimeName::new(Kind::default().name()),
        spec,
        state: State::Creating,
        desired_state: State::Running,
        reason: "create requested".into(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_the_daemon_died_in_is_deleted_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(Idle::default());
    let ctl = controller(dir.path(), runtime.clone());
    let id = "halffilled01";
    // What the dead daemon left: the marker, a half-copied volume, the
    // record.
    super::fill::begin(&ctl.inner, id).unwrap();
    ctl.inner.volumes.create(id, 64 << 20).unwrap();
    ctl.inner.store.insert_sandbox(&creating(&ctl, id)).unwrap();
    assert!(super::fill::interrupted(&ctl.inner, id));

    super::resync_all(&ctl.inner).await;

    let rec: Record = ctl.inner.store.get_sandbox(id).unwrap().unwrap();
    assert_eq!(rec.state, State::Deleted, "{}", rec.reason);
    assert!(rec.reason.contains("being filled"), "{}", rec.reason);
    assert!(!ctl.inner.state_dir(id).exists(), "the marker goes with it");
    assert!(ctl.inner.volumes.info(id).is_err(), "the half copy goes");
    assert!(
        !runtime.0.lock().unwrap().contains(&"start"),
        "a half-filled volume is never started"
    );
}

/// A status as a lying agent gives it: `n` events from seq `from` on.
fn status_with(from: u64, n: u64) -> dwell_proto::ServiceStatus {
    dwell_proto::ServiceStatus {
        state: dwell_proto::ServiceState::Running,
        pid: None,
        restarts: 0,
        started_at_ms: None,
        last_exit: None,
        last_exit_at_ms: None,
        next_start_at_ms: None,
        error: None,
        health: None,
        health_failures: 0,
        health_output: None,
        events: (from..from + n)
            .map(|seq| dwell_proto::ServiceEvent {
                seq,
                at_ms: u64::MAX / 2,
                kind: "started".into(),
                message: "x".repeat(4096),
            })
            .collect(),
    }
}

#[tokio::test]
async fn a_lying_agent_cannot_flood_the_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path(), Default::default());
    let id = "liar00000001";
    let rows = || ctl.inner.store.events(id, 0, 10_000).unwrap().len();
    let st = status_with(1, 64);
    crate::service::record_events(&ctl.inner, id, &st);
    let first = rows();
    assert!(first > 0, "nothing was copied at all");
    assert!(
        first <= crate::service::MAX_EVENTS_PER_CALL + 1,
        "{first} rows from one call"
    );
    // The same events again copy nothing.
    crate::service::record_events(&ctl.inner, id, &st);
    assert_eq!(rows(), first, "events already seen were copied again");
    // Ever new seqs, call after call: capped per minute.
    for i in 1..20 {
        crate::service::record_events(&ctl.inner, id, &status_with(1 + 64 * i, 64));
    }
    let n = rows();
    assert!(
        n <= crate::service::MAX_EVENTS_PER_MINUTE
            + crate::service::MAX_EVENTS_PER_MINUTE / crate::service::MAX_EVENTS_PER_CALL,
        "{n} rows in a minute"
    );
    assert!(ctl
        .inner
        .store
        .events(id, 0, 10_000)
        .unwrap()
        .iter()
        .all(|e| e.message.len() < 600));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volume_work_outside_the_lock_still_counts_against_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path(), Default::default());
    ctl.create_tenant(&dwell_store::Tenant {
        name: "t".into(),
        max_sandboxes: None,
        max_vcpus: None,
        max_memory: None,
        max_storage: Some(1 << 30),
        created_at: 0,
        default_policies: None,
        default_egress: None,
    })
    .unwrap();
    let more = crate::quota::Held {
        storage: 1 << 20,
        ..Default::default()
    };
    // A resize holding the whole quota, its e2fsck running unlocked.
    let held =
        crate::volumes::Pending::reserve(&ctl.inner, "resize:v1".into(), "t", 1 << 30).unwrap();
    assert!(
        ctl.inner.quota_lock.try_lock().is_ok(),
        "the quota lock is free"
    );
    assert!(
        crate::volumes::Pending::reserve(&ctl.inner, "resize:v1".into(), "t", 1).is_none(),
        "a second resize of the same volume"
    );
    assert!(
        ctl.check_quota("t", &more).await.is_err(),
        "the running resize's bytes were not counted"
    );
    assert!(ctl.check_quota("other", &more).await.is_ok());
    drop(held);
    assert!(ctl.check_quota("t", &more).await.is_ok());
    assert_eq!(crate::volumes::pending_bytes(&ctl.inner, "t"), 0);
}

#[test]
fn a_volume_under_maintenance_is_not_mounted() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path(), Default::default());
    let b = crate::volumes::Busy::mark(&ctl.inner, "v1").unwrap();
    assert!(crate::volumes::Busy::mark(&ctl.inner, "v1").is_none());
    assert!(ctl.inner.named_busy.lock().unwrap().contains("v1"));
    drop(b);
    assert!(ctl.inner.named_busy.lock().unwrap().is_empty());
}

/// F6: a tenant's builds beyond the cap are refused with a 409; other
/// tenants are not affected, and a finished build frees its slot.
#[tokio::test]
async fn build_slots_are_per_tenant_and_freed_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path(), Arc::new(Idle::default()));
    ctl.set_build_limits(crate::build::BuildLimits {
        per_tenant: 2,
        timeout: Duration::from_secs(60),
    });
    let a1 = ctl.build_permit("a").unwrap();
    let _a2 = ctl.build_permit("a").unwrap();
    let e = ctl.build_permit("a").err().unwrap();
    assert_eq!(e.status(), 409);
    assert!(e.to_string().contains("already runs 2 builds"), "{e}");
    let _b = ctl.build_permit("b").unwrap();
    drop(a1);
    let _a3 = ctl.build_permit("a").unwrap();
}

/// A TTL and an idle timeout fire within a second of their deadlines, by
/// the deadline timer, not at the next sweep (here an hour away); a TTL
/// shortened while the timer sleeps towards a far deadline fires at its new
/// time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ttl_fires_within_a_second_of_its_deadline_not_at_the_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller_with(
        dir.path(),
        Arc::new(Idle::default()),
        Arc::new(crate::clock::SystemClock),
    );
    let now = dwell_store::now_ms();
    let mut rec = creating(&ctl, "ttlsoon00001");
    rec.tenant = "t".into();
    (rec.state, rec.desired_state) = (State::Paused, State::Paused);
    (rec.created_at, rec.state_changed_at) = (now, now);
    // Stop at the TTL (a persistent sandbox's default).
    rec.spec.policies.ttl_ms = Some(1500);
    ctl.inner.store.insert_sandbox(&rec).unwrap();
    let mut far = rec.clone();
    far.id = "ttlfar000001".into();
    far.name = "far".into();
    far.spec.policies.ttl_ms = Some(3_600_000);
    ctl.inner.store.insert_sandbox(&far).unwrap();
    // dwell's own idle timeout too: pause 1.2 s after the last activity.
    let mut idle = rec.clone();
    idle.id = "idlesoon0001".into();
    idle.name = "idle".into();
    (idle.state, idle.desired_state) = (State::Running, State::Running);
    (idle.started_at, idle.last_activity_at) = (Some(now), Some(now));
    idle.spec.policies.ttl_ms = None;
    idle.spec.policies.idle_timeout_ms = Some(1200);
    ctl.inner.store.insert_sandbox(&idle).unwrap();
    tokio::spawn(super::deadlines::timer(ctl.inner.clone()));

    let desired = |id: &str| -> State {
        let r: Record = ctl.inner.store.get_sandbox(id).unwrap().unwrap();
        r.desired_state
    };
    // When `policy` fired on `id` (its event), less `deadline`.
    let fired_within = |id: &'static str, deadline: i64, policy: &'static str| {
        let ctl = ctl.clone();
        async move {
            loop {
                let fired = ctl
                    .inner
                    .store
                    .events(id, 0, 100)
                    .unwrap()
                    .into_iter()
                    .find(|e| e.kind == "policy" && e.message.contains(policy));
                if let Some(e) = fired {
                    return e.at - deadline;
                }
                assert!(
                    dwell_store::now_ms() < deadline + 3000,
                    "{id}: {policy} had not fired 3 s after its deadline"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let late = fired_within("idlesoon0001", now + 1200, "idle_timeout fired").await;
    assert!(
        (-50..=1000).contains(&late),
        "the idle timeout fired {late} ms after its deadline"
    );
    let late = fired_within("ttlsoon00001", now + 1500, "ttl fired").await;
    assert!(
        (-50..=1000).contains(&late),
        "fired {late} ms after its deadline"
    );
    assert_eq!(desired("ttlfar000001"), State::Paused, "the far one waits");

    // Shortened to 1 s from now while the timer sleeps towards an hour.
    let asked = dwell_store::now_ms();
    ctl.update_policies(
        "t",
        "ttlfar000001",
        &crate::policy::PolicyArgs {
            ttl: Some(crate::policy::DurationArg::Text(format!(
                "{}ms",
                asked + 1000 - now
            ))),
            ..Default::default()
        },
    )
    .unwrap();
    let late = fired_within("ttlfar000001", asked + 1000, "ttl fired").await;
    assert!(
        (-50..=1000).contains(&late),
        "the shortened TTL fired {late} ms after its deadline"
    );
}

/// A burst of activity (streams closing, keepalives) costs the deadline
/// timer a read of the sandboxes it names, never a read of every sandbox
/// per wake: many wakes make no full rescan, and a deadline the activity
/// moved still fires within a second of its new time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_activity_does_not_make_the_deadline_timer_rescan_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller_with(
        dir.path(),
        Arc::new(Idle::default()),
        Arc::new(crate::clock::SystemClock),
    );
    let now = dwell_store::now_ms();
    let mut idle = creating(&ctl, "idleburst001");
    (idle.state, idle.desired_state) = (State::Running, State::Running);
    (idle.created_at, idle.state_changed_at) = (now, now);
    (idle.started_at, idle.last_activity_at) = (Some(now), Some(now));
    idle.spec.policies.ttl_ms = None;
    idle.spec.policies.idle_timeout_ms = Some(1500);
    ctl.inner.store.insert_sandbox(&idle).unwrap();
    // Others that the burst must not make the timer read.
    for i in 0..50 {
        let mut other = idle.clone();
        other.id = format!("other{i:07}");
        other.name = format!("other{i}");
        other.spec.policies.idle_timeout_ms = Some(3_600_000);
        ctl.inner.store.insert_sandbox(&other).unwrap();
    }
    tokio::spawn(super::deadlines::timer(ctl.inner.clone()));
    let scans = || ctl.inner.deadlines.full_scans();
    while scans() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = scans();

    // Spread out, as a client's requests come: each finds the timer idle.
    const N: u64 = 200;
    for i in 0..N {
        drop(ctl.stream_opened("idleburst001"));
        if i % 20 == 0 {
            ctl.keepalive("t", "idleburst001", 0).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let made = scans() - before;
    assert!(
        made <= 1,
        "{N} activity wakes made {made} full rescans of the store"
    );

    // The idle timeout counts from the last activity written.
    let rec: Record = ctl
        .inner
        .store
        .get_sandbox("idleburst001")
        .unwrap()
        .unwrap();
    let deadline = rec.last_activity_at.unwrap() + 1500;
    let fired = loop {
        let fired = ctl
            .inner
            .store
            .events("idleburst001", 0, 1000)
            .unwrap()
            .into_iter()
            .find(|e| e.kind == "policy" && e.message.contains("idle_timeout fired"));
        if let Some(e) = fired {
            break e.at;
        }
        assert!(
            dwell_store::now_ms() < deadline + 3000,
            "the idle timeout had not fired 3 s after its deadline"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let late = fired - deadline;
    assert!(
        (-50..=1000).contains(&late),
        "the idle timeout fired {late} ms after its deadline"
    );
    assert!(
        scans() - before <= 1,
        "firing made {} full rescans",
        scans() - before
    );
}
