//! The sandbox's service on the daemon's side: its definition resolved at
//! create from the image's config (entrypoint + cmd, health check, stop
//! signal) and the request's overrides, sent to the agent after every
//! start of the sandbox and once per daemon life to a sandbox already
//! running (the agent ignores a definition it already has, so a restarted
//! daemon never starts a second copy), and its events copied into the
//! sandbox's timeline.
//!
//! The agent runs it (see `dwell-agent`'s `service` module); the state
//! lives there, through pause/resume and hibernation.

use std::sync::Mutex;
use std::time::Duration;

use dwell_proto::{HealthCheckSpec, RestartPolicy, ServiceSpec, ServiceStatus};
use dwell_storage::Image;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Record, ServiceArgs};

/// How long the daemon waits for the agent's answer about the service
/// on a user's request.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the periodic sweep waits for one agent (connect + call): the
/// agent runs inside the sandbox and may never answer.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// How many agents the periodic sweep asks at once.
const SWEEP_PARALLEL: usize = 16;

/// The most passes a sandbox whose agent did not answer is skipped for.
const MAX_SKIP: u32 = 16;

/// The most service events copied into one sandbox's timeline per call.
pub(crate) const MAX_EVENTS_PER_CALL: usize = 16;

/// The most service events copied into one sandbox's timeline per minute.
pub(crate) const MAX_EVENTS_PER_MINUTE: usize = 64;

/// A restart policy as `no`, `on-failure[:N]` or `always`.
pub fn parse_restart(s: &str) -> Result<(RestartPolicy, Option<u32>)> {
    let bad = || {
        Error::invalid(
            "service.restart",
            format!("{s:?} is not a restart policy; use no, on-failure, on-failure:N or always"),
        )
    };
    match s.split_once(':') {
        None => match s {
            "no" => Ok((RestartPolicy::No, None)),
            "on-failure" => Ok((RestartPolicy::OnFailure, None)),
            "always" => Ok((RestartPolicy::Always, None)),
            _ => Err(bad()),
        },
        Some(("on-failure", n)) => n
            .parse::<u32>()
            .map(|n| (RestartPolicy::OnFailure, Some(n)))
            .map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// A signal as a name (`SIGTERM`, `TERM`, any case) or a number 1-64.
pub fn parse_signal(s: &str) -> Result<i32> {
    const NAMES: &[(&str, i32)] = &[
        ("HUP", 1),
        ("INT", 2),
        ("QUIT", 3),
        ("KILL", 9),
        ("USR1", 10),
        ("USR2", 12),
        ("TERM", 15),
        ("WINCH", 28),
        ("PWR", 30),
    ];
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let up = t.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(rt) = name.strip_prefix("RTMIN+") {
        if let Ok(k) = rt.parse::<i32>() {
            if (0..=30).contains(&k) {
                return Ok(34 + k);
            }
        }
    }
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            Error::invalid(
                "service.stop_signal",
                format!(
                    "{s:?} is not a signal; use a name like SIGTERM or SIGINT, or a number 1-64"
                ),
            )
        })
}

/// The service of a new sandbox from `image`'s config and the request's
/// overrides; `None` when there is no command to run (the `host` image
/// has none) or the request disables it.
pub fn resolve(image: &Image, args: Option<&ServiceArgs>) -> Result<Option<ServiceSpec>> {
    let default = ServiceArgs::default();
    let a = args.unwrap_or(&default);
    if a.disabled {
        return Ok(None);
    }
    // The built-in `host` image's CMD (a shell) is for interactive use,
    // not a service: only the request makes one there.
    let (image_entrypoint, image_cmd) = if image.name == dwell_storage::HOST_IMAGE {
        (Vec::new(), Vec::new())
    } else {
        (image.entrypoint.clone(), image.cmd.clone())
    };
    let entrypoint = a.entrypoint.clone().unwrap_or(image_entrypoint);
    let cmd = match (&a.cmd, &a.entrypoint) {
        (Some(c), _) => c.clone(),
        // A new entrypoint drops the image's CMD (as Docker does).
        (None, Some(_)) => Vec::new(),
        (None, None) => image_cmd,
    };
    let command: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if command.is_empty() {
        let asked = a.restart.is_some() || a.healthcheck.is_some() || a.stop_signal.is_some();
        if asked {
            return Err(Error::invalid(
                "service",
                format!(
                    "image {} has no start command, so there is no service to restart or check; \
                     give one with --entrypoint/--cmd",
                    image.name
                ),
            ));
        }
        return Ok(None);
    }
    let (restart, max_retries) = match &a.restart {
        Some(r) => parse_restart(r)?,
        None => (RestartPolicy::No, None),
    };
    let healthcheck = if a.no_healthcheck {
        None
    } else {
        match &a.healthcheck {
            Some(h) => Some(h.clone()),
            None => image
                .healthcheck
                .as_ref()
                // Docker's ["NONE"] disables an inherited check.
                .filter(|h| h.test.first().is_some_and(|t| t != "NONE"))
                .map(|h| HealthCheckSpec {
                    test: h.test.clone(),
                    interval_ms: h.interval_ms,
                    timeout_ms: h.timeout_ms,
                    start_period_ms: h.start_period_ms,
                    retries: h.retries,
                }),
        }
    };
    let stop_signal = match a.stop_signal.as_ref().or(image.stop_signal.as_ref()) {
        Some(s) => Some(parse_signal(s)?),
        None => None,
    };
    let spec = ServiceSpec {
        command,
        env: Default::default(),
        workdir: None,
        user: None,
        restart,
        max_retries,
        healthcheck,
        stop_signal,
        stop_timeout_ms: a.stop_timeout_ms,
    };
    spec.validate().map_err(|m| Error::invalid("service", m))?;
    Ok(Some(spec))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unreachable(id: &str, e: impl std::fmt::Display) -> Error {
    Error::Conflict(format!(
        "cannot reach the agent of sandbox {id} about its service: {e}"
    ))
}

/// Sends `rec`'s service definition to its (just started) agent; the
/// agent's events start over.
pub(crate) async fn send_at_start(inner: &Context, rec: &Record) -> Result<()> {
    lock(&inner.services.seen).insert(rec.id.clone(), 0);
    send(inner, rec, CALL_TIMEOUT).await
}

async fn send(inner: &Context, rec: &Record, wait: Duration) -> Result<()> {
    let client = crate::connections::client(inner, &rec.id)
        .await
        .map_err(|e| unreachable(&rec.id, e))?
        .with_call_timeout(wait);
    let r = client.service_set(rec.spec.service.clone()).await;
    match r {
        Ok(_) => {
            lock(&inner.services.sent).insert(rec.id.clone());
            Ok(())
        }
        Err(dwell_proto::Error::Remote(e)) => Err(Error::invalid(
            "service",
            format!("the sandbox's agent refused the service: {}", e.message),
        )),
        Err(e) => Err(unreachable(&rec.id, e)),
    }
}

/// Checks that the image's USER and WORKDIR work in the new sandbox.
pub(crate) async fn check_defaults(inner: &Context, rec: &Record) -> Result<()> {
    let client = crate::connections::client(inner, &rec.id)
        .await
        .map_err(|e| unreachable(&rec.id, e))?
        .with_call_timeout(CALL_TIMEOUT);
    let h = client.health().await.map_err(|e| unreachable(&rec.id, e))?;
    match h.defaults_error {
        Some(why) => Err(Error::invalid(
            "image",
            format!("image {}: {why}; fix the image, or pick another", rec.image),
        )),
        None => Ok(()),
    }
}

/// Forgets a sandbox that stopped: its next agent needs the definition.
pub(crate) fn forget(inner: &Context, id: &str) {
    lock(&inner.services.sent).remove(id);
    lock(&inner.services.backoff).remove(id);
}

/// The periodic service pass, run in a task of its own beside the
/// reconcile passes (an agent lives in its sandbox and may stall, so it
/// must never hold up policies or metering): every running sandbox with
/// a service gets its definition once per daemon life and has its
/// agent's new events copied into its timeline. Agents are asked
/// [`SWEEP_PARALLEL`] at a time, each given [`POLL_TIMEOUT`]; one that
/// does not answer is skipped for a growing number of passes.
pub(crate) async fn sweep_all(inner: &std::sync::Arc<Context>) {
    use futures_util::StreamExt;
    let recs = match inner.own_sandboxes() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("service sweep: cannot list sandboxes: {e}");
            return;
        }
    };
    {
        let live: std::collections::HashSet<&str> = recs.iter().map(|r| r.id.as_str()).collect();
        lock(&inner.services.backoff).retain(|id, _| live.contains(id.as_str()));
        lock(&inner.services.copied).retain(|id, _| live.contains(id.as_str()));
        lock(&inner.services.seen).retain(|id, _| live.contains(id.as_str()));
    }
    let due: Vec<Record> = recs
        .into_iter()
        .filter(|r| r.spec.service.is_some() && r.state == crate::model::State::Running)
        .filter(|r| {
            let mut b = lock(&inner.services.backoff);
            match b.get_mut(&r.id) {
                Some((skip, _)) if *skip > 0 => {
                    *skip -= 1;
                    false
                }
                _ => true,
            }
        })
        .collect();
    futures_util::stream::iter(due)
        .map(|rec| async move {
            let ok = tokio::time::timeout(POLL_TIMEOUT, sweep(inner, &rec))
                .await
                .unwrap_or(false);
            let mut b = lock(&inner.services.backoff);
            if ok {
                b.remove(&rec.id);
            } else {
                let e = b.entry(rec.id.clone()).or_insert((0, 0));
                e.1 = e.1.saturating_add(1);
                e.0 = 1u32.checked_shl(e.1 - 1).unwrap_or(MAX_SKIP).min(MAX_SKIP);
                tracing::warn!(
                    sandbox = %rec.id,
                    "service: the agent did not answer within {} s; asking again in {} passes",
                    POLL_TIMEOUT.as_secs(),
                    e.0
                );
            }
        })
        .buffer_unordered(SWEEP_PARALLEL)
        .collect::<Vec<()>>()
        .await;
}

/// On a user's request: a running sandbox whose agent has not got its
/// service definition in this daemon's life gets it now.
pub(crate) async fn ensure_sent(inner: &Context, rec: &Record) {
    if rec.spec.service.is_none()
        || rec.state != crate::model::State::Running
        || lock(&inner.services.sent).contains(&rec.id)
    {
        return;
    }
    if let Err(e) = send(inner, rec, CALL_TIMEOUT).await {
        tracing::warn!(sandbox = %rec.id, "service: {e}");
    }
}

/// One sandbox's part of [`sweep_all`]; whether its agent answered.
async fn sweep(inner: &Context, rec: &Record) -> bool {
    if !lock(&inner.services.sent).contains(&rec.id) {
        if let Err(e) = send(inner, rec, POLL_TIMEOUT).await {
            tracing::warn!(sandbox = %rec.id, "service: {e}");
            return false;
        }
    }
    status_within(inner, &rec.id, POLL_TIMEOUT).await.is_ok()
}

/// The service's status from the agent (its new events copied into the
/// timeline on the way).
pub(crate) async fn status(inner: &Context, id: &str) -> Result<Option<ServiceStatus>> {
    status_within(inner, id, CALL_TIMEOUT).await
}

async fn status_within(inner: &Context, id: &str, wait: Duration) -> Result<Option<ServiceStatus>> {
    let client = crate::connections::client(inner, id)
        .await
        .map_err(|e| unreachable(id, e))?
        .with_call_timeout(wait);
    let st = client
        .service_status()
        .await
        .map_err(|e| unreachable(id, e))?;
    if let Some(s) = &st {
        record_events(inner, id, s);
    }
    Ok(st)
}

/// Longest service event text copied into the timeline.
const MAX_EVENT_TEXT: usize = 512;

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Copies the agent's service events not copied yet into the timeline.
///
/// The agent is the sandbox's and may lie: only events past the last seq
/// copied count, at most [`MAX_EVENTS_PER_CALL`] of them (the newest) per
/// call and [`MAX_EVENTS_PER_MINUTE`] per sandbox per minute; the rest is
/// dropped with one line saying so.
pub(crate) fn record_events(inner: &Context, id: &str, st: &ServiceStatus) {
    let minute = inner.clock.now_ms() / 60_000;
    let mut seen = lock(&inner.services.seen);
    let first = !seen.contains_key(id);
    let last = seen.get(id).copied().unwrap_or(0);
    let fresh: Vec<_> = st
        .events
        .iter()
        .filter(|e| e.seq > last && !(first && e.at_ms < inner.services.since_ms))
        .collect();
    let newest = st.events.iter().map(|e| e.seq).fold(last, u64::max);
    seen.insert(id.to_string(), newest);
    drop(seen);
    let room = {
        let mut copied = lock(&inner.services.copied);
        let c = copied.entry(id.to_string()).or_insert((minute, 0));
        if c.0 != minute {
            *c = (minute, 0);
        }
        let room = MAX_EVENTS_PER_MINUTE
            .saturating_sub(c.1)
            .min(MAX_EVENTS_PER_CALL)
            .min(fresh.len());
        c.1 += room;
        room
    };
    let dropped = fresh.len() - room;
    for e in &fresh[fresh.len() - room..] {
        // What the agent says is the sandbox's to say: kept short.
        let text = format!("{}: {}", e.kind, e.message);
        let _ = inner
            .store
            .add_event(id, "service", &cut(&text, MAX_EVENT_TEXT));
    }
    if dropped > 0 && room > 0 {
        let _ = inner.store.add_event(
            id,
            "service",
            &format!("{dropped} older service events not copied (too many at once)"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> Image {
        Image {
            name: "t".into(),
            reference: None,
            digest: None,
            blobs: vec![],
            tenants: None,
            id: "sha256:0".into(),
            layers: vec![],
            host_dirs: vec![],
            created_at: 0,
            size_bytes: 0,
            source: String::new(),
            env: vec![],
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            workdir: None,
            user: None,
            labels: Default::default(),
            exposed_ports: vec![],
            healthcheck: None,
            stop_signal: Some("SIGINT".into()),
        }
    }

    #[test]
    fn entrypoint_and_cmd_make_the_command() {
        let s = resolve(&image(&["docker-entrypoint.sh"], &["postgres"]), None)
            .unwrap()
            .unwrap();
        assert_eq!(s.command, ["docker-entrypoint.sh", "postgres"]);
        assert_eq!(s.restart, RestartPolicy::No);
        assert_eq!(s.stop_signal, Some(2));
        let a = ServiceArgs {
            cmd: Some(vec!["postgres".into(), "-c".into(), "x=1".into()]),
            restart: Some("on-failure:3".into()),
            ..Default::default()
        };
        let s = resolve(&image(&["ep"], &["postgres"]), Some(&a))
            .unwrap()
            .unwrap();
        assert_eq!(s.command, ["ep", "postgres", "-c", "x=1"]);
        assert_eq!(
            (s.restart, s.max_retries),
            (RestartPolicy::OnFailure, Some(3))
        );
        let a = ServiceArgs {
            entrypoint: Some(vec!["sh".into()]),
            ..Default::default()
        };
        let s = resolve(&image(&["ep"], &["postgres"]), Some(&a))
            .unwrap()
            .unwrap();
        assert_eq!(s.command, ["sh"], "a new entrypoint drops the image's cmd");
    }

    #[test]
    fn no_command_no_service() {
        assert_eq!(resolve(&image(&[], &[]), None).unwrap(), None);
        let mut host = image(&[], &["/bin/bash"]);
        host.name = dwell_storage::HOST_IMAGE.into();
        assert_eq!(
            resolve(&host, None).unwrap(),
            None,
            "host's shell is no service"
        );
        let a = ServiceArgs {
            cmd: Some(vec!["sleep".into(), "9".into()]),
            ..Default::default()
        };
        assert_eq!(
            resolve(&host, Some(&a)).unwrap().unwrap().command,
            ["sleep", "9"]
        );
        let off = ServiceArgs {
            disabled: true,
            ..Default::default()
        };
        assert_eq!(resolve(&image(&["x"], &[]), Some(&off)).unwrap(), None);
        let a = ServiceArgs {
            restart: Some("always".into()),
            ..Default::default()
        };
        assert!(resolve(&image(&[], &[]), Some(&a)).is_err());
    }

    #[test]
    fn policies_and_signals_parse() {
        assert!(parse_restart("sometimes").is_err());
        assert!(parse_restart("always:3").is_err());
        assert_eq!(
            parse_restart("always").unwrap(),
            (RestartPolicy::Always, None)
        );
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("int").unwrap(), 2);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("SIGRTMIN+3").unwrap(), 37);
        assert!(parse_signal("SIGNOPE").is_err());
        assert!(parse_signal("99").is_err());
    }
}
