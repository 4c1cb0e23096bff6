//! The agent's service supervisor against the real agent binary: an
//! idempotent definition, restarts by policy, the stop signal then
//! SIGKILL, the log's tail and follow.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dwell_proto::{
    AgentClient, ErrorKind, LogChunk, RestartPolicy, ServiceAction, ServiceSpec, ServiceState,
    ServiceStatus,
};

fn spec(script: &str, restart: RestartPolicy) -> ServiceSpec {
    ServiceSpec {
        command: vec!["/bin/sh".into(), "-c".into(), script.into()],
        restart,
        ..Default::default()
    }
}

async fn wait_for(
    c: &AgentClient,
    what: &str,
    ok: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let t0 = Instant::now();
    loop {
        let st = c.service_status().await.unwrap().expect("a service is set");
        if ok(&st) {
            return st;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "{what}: {st:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_logs(c: &AgentClient, tail: Option<u64>) -> String {
    let mut l = c.service_logs(false, tail, None).await.unwrap();
    let mut out = String::new();
    while let Some(chunk) = l.next().await.unwrap() {
        let (LogChunk::Stdout(b) | LogChunk::Stderr(b)) = chunk;
        out.push_str(&String::from_utf8_lossy(&b));
    }
    out
}

#[tokio::test]
async fn the_same_definition_twice_runs_one_copy_and_a_new_one_replaces_it() {
    let a = Agent::start();
    let c = a.client().await;
    assert_eq!(c.service_status().await.unwrap(), None);
    let s = spec("echo one; echo two; exec sleep 1000", RestartPolicy::No);
    let st = c.service_set(Some(s.clone())).await.unwrap().unwrap();
    assert_eq!(
        st.state,
        ServiceState::Running,
        "the first start is done at once"
    );
    let pid = st.pid.unwrap();
    let again = c.service_set(Some(s)).await.unwrap().unwrap();
    assert_eq!((again.pid, again.restarts), (Some(pid), 0));
    let tagged = c
        .processes()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.tag.as_deref() == Some("service") && p.running)
        .count();
    assert_eq!(tagged, 1);
    let t0 = Instant::now();
    while !all_logs(&c, None).await.contains("two") {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(all_logs(&c, Some(1)).await, "two\n");

    // A different definition stops the old one and starts the new.
    let st = c
        .service_set(Some(spec("exec sleep 999", RestartPolicy::No)))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(st.pid, Some(pid));
    // SAFETY: kill with signal 0 only checks the pid.
    assert!(
        unsafe { libc::kill(pid as i32, 0) } != 0,
        "the old copy is gone"
    );
    // None removes it.
    assert_eq!(c.service_set(None).await.unwrap(), None);
    assert_eq!(c.service_status().await.unwrap(), None);
    let e = c.service_control(ServiceAction::Start).await.unwrap_err();
    assert!(
        matches!(e, dwell_proto::Error::Remote(ref r) if r.kind == ErrorKind::NotFound),
        "{e}"
    );
}

#[tokio::test]
async fn stop_sends_the_stop_signal_then_sigkill_after_the_timeout() {
    let a = Agent::start();
    let c = a.client().await;
    let mut s = spec(
        "trap '' TERM; echo up; while :; do sleep 0.05; done",
        RestartPolicy::Always,
    );
    s.stop_timeout_ms = Some(300);
    c.service_set(Some(s)).await.unwrap();
    let t0 = Instant::now();
    while !all_logs(&c, None).await.contains("up") {
        assert!(t0.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t0 = Instant::now();
    let st = c.service_control(ServiceAction::Stop).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "SIGTERM was ignored: the grace"
    );
    assert_eq!(st.state, ServiceState::Stopped);
    assert_eq!(st.last_exit.unwrap().signal, Some(9));
    // Stopped stays stopped (no restart, `always` or not) until started.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let st = c.service_status().await.unwrap().unwrap();
    assert_eq!((st.state, st.restarts), (ServiceState::Stopped, 0));
    let st = c.service_control(ServiceAction::Start).await.unwrap();
    assert_eq!(st.state, ServiceState::Running);
}

#[tokio::test]
async fn on_failure_with_a_limit_gives_up_and_a_missing_user_is_refused() {
    let a = Agent::start();
    let c = a.client().await;
    let mut s = spec("echo try; exit 4", RestartPolicy::OnFailure);
    s.max_retries = Some(2);
    c.service_set(Some(s)).await.unwrap();
    let st = wait_for(&c, "giving up", |s| s.state == ServiceState::Exited).await;
    assert_eq!(st.restarts, 2);
    assert_eq!(st.last_exit.unwrap().code, Some(4));
    assert!(st.events.iter().any(|e| e.kind == "gave_up"), "{st:#?}");
    assert_eq!(all_logs(&c, None).await, "try\ntry\ntry\n");

    let mut s = spec("true", RestartPolicy::No);
    s.user = Some("no-such-user-here".into());
    let e = c.service_set(Some(s)).await.unwrap_err();
    assert!(e.to_string().contains("no-such-user-here"), "{e}");
}

#[tokio::test]
async fn follow_streams_output_across_restarts() {
    let a = Agent::start();
    let c = a.client().await;
    c.service_set(Some(spec(
        "echo started; exec sleep 1000",
        RestartPolicy::No,
    )))
    .await
    .unwrap();
    let mut f = c.service_logs(true, None, None).await.unwrap();
    let mut seen = String::new();
    let mut restarted = false;
    let t0 = Instant::now();
    while seen.matches("started").count() < 2 {
        assert!(t0.elapsed() < Duration::from_secs(10), "{seen}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), f.next())
            .await
            .expect("follow stalled")
            .unwrap()
            .expect("follow ended");
        let (LogChunk::Stdout(b) | LogChunk::Stderr(b)) = chunk;
        seen.push_str(&String::from_utf8_lossy(&b));
        if !restarted && seen.contains("started") {
            restarted = true;
            c.service_control(ServiceAction::Restart).await.unwrap();
        }
    }
}
