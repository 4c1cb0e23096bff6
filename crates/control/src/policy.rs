//! Lifecycle policies: when a sandbox is paused, stopped or deleted without
//! anyone asking.
//!
//! Every deadline is derived from timestamps in the sandbox's record
//! (creation, last activity, last keepalive, the last state change), never
//! from an in-memory timer, so policies survive daemon restarts and fire
//! late rather than never. The reconciler's deadline timer
//! (`reconcile/deadlines.rs`) wakes at the nearest deadline of [`schedule`]
//! (within a second of it) and its periodic sweep catches anything missed:
//! both ask [`due`] which policy, if any, has fired, write the resulting
//! desired state with the reason, and reconcile.
//!
//! | policy | applies while | fires at | action |
//! |---|---|---|---|
//! | `ttl` | running, paused | max(created + ttl, keepalive hold) | `ttl_action` if set (`pause` keeps memory; E2B's autoPause), else ephemeral: delete; persistent: stop |
//! | `idle_timeout` | running, no open stream | max(max(last activity, became running) + idle, hold) | pause |
//! | `pause_after` | paused | paused since + pause_after | stop (gVisor: hibernate) |
//! | `archive_after` | stopped (persistent) | stopped since + archive_after | archive |
//! | `delete_after` | stopped, error, archived, hibernated | since that state + delete_after | delete |
//! | `max_lifetime` | running, paused | created + max_lifetime | ephemeral: delete; persistent: stop |
//!
//! `archive_after` moves a stopped sandbox's volume into the snapshot store
//! (`reconcile/archive.rs`); `delete_after` then counts from the archiving, so an
//! archived sandbox is still deleted on time.

use crate::model::{Mode, Record, State};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Policies of one sandbox (all optional), durations in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_after_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_lifetime_ms: Option<u64>,
    /// What `ttl` does when it fires; by default delete (ephemeral) or
    /// stop (persistent). `pause` keeps memory and files (E2B's autoPause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_action: Option<Action>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_after_ms: Option<u64>,
    /// Whether an exec, file operation, SSH login or proxied request
    /// resumes the sandbox when it is paused or hibernated (wake on use).
    /// Unset: on when a policy paused or hibernated it, off when a user
    /// did ([`wakes_on_use`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resume: Option<bool>,
}

/// A duration in a request: a string like `10m`, `1h30m`, `7d`, or `off`
/// to clear; or a number of seconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DurationArg {
    Seconds(u64),
    Text(String),
}

impl DurationArg {
    /// `None` means "clear this policy".
    pub fn millis(&self, field: &str) -> Result<Option<u64>> {
        match self {
            DurationArg::Seconds(0) => Ok(None),
            DurationArg::Seconds(s) => s.checked_mul(1000).map(Some).ok_or_else(|| too_long(field)),
            DurationArg::Text(t) if matches!(t.as_str(), "off" | "none" | "0") => Ok(None),
            DurationArg::Text(t) => {
                let d = humantime::parse_duration(t).map_err(|_| {
                    Error::invalid(
                        field,
                        format!("{t:?} is not a duration; write it like 30s, 10m, 1h30m or 7d (or `off` to clear)"),
                    )
                })?;
                u64::try_from(d.as_millis())
                    .map(Some)
                    .map_err(|_| too_long(field))
            }
        }
    }
}

/// Policy settings in a create or update request. Absent fields keep their
/// current value; `off` clears one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PolicyArgs {
    pub ttl: Option<DurationArg>,
    pub idle_timeout: Option<DurationArg>,
    pub pause_after: Option<DurationArg>,
    pub archive_after: Option<DurationArg>,
    pub delete_after: Option<DurationArg>,
    pub max_lifetime: Option<DurationArg>,
    /// `pause`, `stop` or `delete`: what `ttl` does when it fires.
    pub ttl_action: Option<Action>,
    /// Wake on use: `true` or `false` (see [`Policies::auto_resume`]).
    #[serde(default)]
    pub auto_resume: Option<bool>,
}

impl PolicyArgs {
    /// Apply onto `p`.
    pub fn apply(&self, p: &mut Policies) -> Result<()> {
        let set = |slot: &mut Option<u64>, arg: &Option<DurationArg>, field: &str| -> Result<()> {
            if let Some(a) = arg {
                *slot = a.millis(field)?;
            }
            Ok(())
        };
        set(&mut p.ttl_ms, &self.ttl, "ttl")?;
        set(&mut p.idle_timeout_ms, &self.idle_timeout, "idle_timeout")?;
        set(&mut p.pause_after_ms, &self.pause_after, "pause_after")?;
        set(&mut p.delete_after_ms, &self.delete_after, "delete_after")?;
        set(&mut p.max_lifetime_ms, &self.max_lifetime, "max_lifetime")?;
        if let Some(a) = self.ttl_action {
            p.ttl_action = Some(a);
        }
        if let Some(on) = self.auto_resume {
            p.auto_resume = Some(on);
        }
        set(
            &mut p.archive_after_ms,
            &self.archive_after,
            "archive_after",
        )?;
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self == &PolicyArgs::default()
    }
}

/// What a fired policy does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Pause,
    Stop,
    Archive,
    Delete,
}

/// A policy and when it fires next.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scheduled {
    pub policy: String,
    pub action: Action,
    /// Unix milliseconds.
    pub at: i64,
}

/// Every policy that applies in the record's current state, with its
/// deadline, soonest first. `streams_open` suppresses the idle timeout.
pub fn schedule(rec: &Record, p: &Policies, streams_open: bool) -> Vec<Scheduled> {
    let ephemeral = rec.mode == Mode::Ephemeral;
    let end = if ephemeral {
        Action::Delete
    } else {
        Action::Stop
    };
    let hold = rec.hold_until.unwrap_or(i64::MIN);
    let mut out = Vec::new();
    let mut push = |policy: &str, action: Action, at: i64| {
        out.push(Scheduled {
            policy: policy.into(),
            action,
            at,
        })
    };
    match rec.state {
        State::Running | State::Paused => {
            let ttl_action = p.ttl_action.unwrap_or(end);
            // A paused sandbox has nothing left for a pausing TTL to do.
            let ttl_applies = !(rec.state == State::Paused && ttl_action == Action::Pause);
            if let (Some(ttl), true) = (p.ttl_ms, ttl_applies) {
                push("ttl", ttl_action, (rec.created_at + ttl as i64).max(hold));
            }
            if let Some(max) = p.max_lifetime_ms {
                push("max_lifetime", end, rec.created_at + max as i64);
            }
            if rec.state == State::Running && !streams_open {
                if let Some(idle) = p.idle_timeout_ms {
                    // Coming back to running (a resume, a wake on use)
                    // counts as activity: a sandbox is never paused again
                    // for the idleness from before it slept.
                    let last = rec
                        .last_activity_at
                        .unwrap_or(0)
                        .max(rec.started_at.unwrap_or(rec.created_at))
                        .max(rec.state_changed_at);
                    push(
                        "idle_timeout",
                        Action::Pause,
                        (last + idle as i64).max(hold),
                    );
                }
            }
            if rec.state == State::Paused {
                if let Some(after) = p.pause_after_ms {
                    push(
                        "pause_after",
                        Action::Stop,
                        rec.state_changed_at + after as i64,
                    );
                }
            }
        }
        State::Stopped | State::Error | State::Archived | State::Hibernated => {
            if rec.state == State::Stopped && !ephemeral {
                if let Some(after) = p.archive_after_ms {
                    push(
                        "archive_after",
                        Action::Archive,
                        rec.state_changed_at + after as i64,
                    );
                }
            }
            if let Some(after) = p.delete_after_ms {
                push(
                    "delete_after",
                    Action::Delete,
                    rec.state_changed_at + after as i64,
                );
            }
        }
        _ => {}
    }
    out.sort_by_key(|s| s.at);
    out
}

/// The policy that has fired at `now`, if any (the strongest action among
/// those due: delete over stop over pause).
pub fn due(rec: &Record, p: &Policies, streams_open: bool, now: i64) -> Option<Scheduled> {
    schedule(rec, p, streams_open)
        .into_iter()
        .filter(|s| s.at <= now)
        .max_by_key(|s| match s.action {
            Action::Pause => 0,
            Action::Stop => 1,
            Action::Archive => 2,
            Action::Delete => 3,
        })
}

/// How the reason of every transition a policy made begins (the
/// reconciler's record of who paused or hibernated a sandbox).
pub(crate) const POLICY_REASON: &str = "policy ";

/// What the reason of a policy's hibernation (or stop) of a sandbox a user
/// had paused says (the transition may add details after it): the pause
/// was the user's, so it does not wake on use by default.
pub(crate) const AFTER_USER_PAUSE: &str = " (it had been paused on request)";

/// Whether the transition recorded with `reason` was a policy's own (a
/// policy that hibernated a sandbox a user paused does not count).
pub fn by_policy(reason: &str) -> bool {
    reason.starts_with(POLICY_REASON) && !reason.contains(AFTER_USER_PAUSE)
}

/// Whether a sandbox paused or hibernated with `reason` wakes on use: its
/// `auto_resume` policy when set, else only when a policy put it to sleep
/// (a user who paused it explicitly resumes it explicitly).
pub fn wakes_on_use(p: &Policies, reason: &str) -> bool {
    p.auto_resume.unwrap_or_else(|| by_policy(reason))
}

/// Human text of a duration in milliseconds.
pub fn human(ms: u64) -> String {
    humantime::format_duration(std::time::Duration::from_millis(ms / 1000 * 1000)).to_string()
}

/// The refusal of a duration whose milliseconds do not fit in 64 bits.
fn too_long(field: &str) -> Error {
    Error::invalid(
        field,
        "the duration is longer than this daemon can count (about 584 million years); give a shorter one or `off`",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_duration_past_64_bits_of_milliseconds_is_refused_not_wrapped() {
        let e = DurationArg::Seconds(u64::MAX / 10)
            .millis("ttl")
            .unwrap_err();
        assert!(e.to_string().contains("ttl"), "{e}");
        let e = DurationArg::Text("600000000years".into()).millis("idle_timeout");
        assert!(e.is_err(), "{e:?}");
        assert_eq!(
            DurationArg::Seconds(90).millis("ttl").unwrap(),
            Some(90_000)
        );
    }

    fn rec(state: State, mode: Mode) -> Record {
        Record {
            id: "x".into(),
            name: "x".into(),
            tenant: "t".into(),
            image: "host".into(),
            mode,
            runtime: dwell_store::RuntimeName::new(dwell_runtime::Kind::default().name()),
            spec: crate::model::CreateRequest::default()
                .to_spec(&crate::model::HostLimits {
                    cpus: 1.0,
                    memory_bytes: 1 << 30,
                })
                .unwrap(),
            state,
            desired_state: state,
            reason: String::new(),
            created_at: 1_000_000,
            updated_at: 1_000_000,
            state_changed_at: 1_000_000,
            started_at: Some(1_000_000),
            stopped_at: None,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
            node: None,
        }
    }

    const MIN: i64 = 60_000;

    #[test]
    fn idle_pauses_after_the_last_activity_unless_a_stream_is_open() {
        let p = Policies {
            idle_timeout_ms: Some(10 * MIN as u64),
            ..Default::default()
        };
        let mut r = rec(State::Running, Mode::Persistent);
        r.last_activity_at = Some(1_000_000 + 5 * MIN);
        assert_eq!(due(&r, &p, false, 1_000_000 + 14 * MIN), None);
        let d = due(&r, &p, false, 1_000_000 + 15 * MIN).unwrap();
        assert_eq!(
            (d.policy.as_str(), d.action),
            ("idle_timeout", Action::Pause)
        );
        assert_eq!(due(&r, &p, true, 1_000_000 + 60 * MIN), None);
        r.hold_until = Some(1_000_000 + 30 * MIN);
        assert_eq!(due(&r, &p, false, 1_000_000 + 29 * MIN), None);
        // Resumed (or woken) at minute 40: idle counts from then.
        r.state_changed_at = 1_000_000 + 40 * MIN;
        assert_eq!(due(&r, &p, false, 1_000_000 + 49 * MIN), None);
        assert!(due(&r, &p, false, 1_000_000 + 50 * MIN).is_some());
    }

    #[test]
    fn ttl_ends_ephemeral_by_delete_and_persistent_by_stop() {
        let p = Policies {
            ttl_ms: Some(15 * MIN as u64),
            ..Default::default()
        };
        let r = rec(State::Running, Mode::Ephemeral);
        assert_eq!(
            due(&r, &p, true, 1_000_000 + 15 * MIN).unwrap().action,
            Action::Delete
        );
        let r = rec(State::Paused, Mode::Persistent);
        assert_eq!(
            due(&r, &p, false, 1_000_000 + 15 * MIN).unwrap().action,
            Action::Stop
        );
        let mut r = rec(State::Running, Mode::Persistent);
        r.hold_until = Some(1_000_000 + 20 * MIN);
        assert_eq!(
            due(&r, &p, false, 1_000_000 + 16 * MIN),
            None,
            "keepalive pushes the TTL"
        );
    }

    #[test]
    fn ttl_can_pause_instead_and_then_rests() {
        let p = Policies {
            ttl_ms: Some(15 * MIN as u64),
            ttl_action: Some(Action::Pause),
            ..Default::default()
        };
        let r = rec(State::Running, Mode::Persistent);
        let d = due(&r, &p, true, 1_000_000 + 15 * MIN).unwrap();
        assert_eq!((d.policy.as_str(), d.action), ("ttl", Action::Pause));
        let r = rec(State::Paused, Mode::Persistent);
        assert_eq!(due(&r, &p, false, 1_000_000 + 60 * MIN), None);
    }

    #[test]
    fn paused_stops_and_stopped_deletes() {
        let p = Policies {
            pause_after_ms: Some(60 * MIN as u64),
            delete_after_ms: Some(30 * 24 * 60 * MIN as u64),
            ..Default::default()
        };
        let r = rec(State::Paused, Mode::Persistent);
        assert_eq!(due(&r, &p, false, 1_000_000 + 59 * MIN), None);
        assert_eq!(
            due(&r, &p, false, 1_000_000 + 60 * MIN).unwrap().action,
            Action::Stop
        );
        let r = rec(State::Stopped, Mode::Persistent);
        assert_eq!(
            due(&r, &p, false, 1_000_000 + 30 * 24 * 60 * MIN)
                .unwrap()
                .action,
            Action::Delete
        );
        assert_eq!(
            schedule(&rec(State::Deleted, Mode::Persistent), &p, false),
            vec![]
        );
        // Archive fires from stopped (persistent only); delete still counts from the stop.
        let p = Policies {
            archive_after_ms: Some(60 * MIN as u64),
            delete_after_ms: Some(120 * MIN as u64),
            ..Default::default()
        };
        let d = due(
            &rec(State::Stopped, Mode::Persistent),
            &p,
            false,
            1_000_000 + 60 * MIN,
        )
        .unwrap();
        assert_eq!(
            (d.policy.as_str(), d.action),
            ("archive_after", Action::Archive)
        );
        assert_eq!(
            due(
                &rec(State::Archived, Mode::Persistent),
                &p,
                false,
                1_000_000 + 61 * MIN
            ),
            None
        );
        assert_eq!(
            due(
                &rec(State::Archived, Mode::Persistent),
                &p,
                false,
                1_000_000 + 120 * MIN
            )
            .unwrap()
            .action,
            Action::Delete
        );
    }

    #[test]
    fn max_lifetime_is_a_hard_cap_and_the_strongest_action_wins() {
        let p = Policies {
            max_lifetime_ms: Some(24 * 60 * MIN as u64),
            idle_timeout_ms: Some(MIN as u64),
            ..Default::default()
        };
        let mut r = rec(State::Running, Mode::Persistent);
        r.hold_until = Some(i64::MAX);
        let d = due(&r, &p, true, 1_000_000 + 24 * 60 * MIN).unwrap();
        assert_eq!(
            (d.policy.as_str(), d.action),
            ("max_lifetime", Action::Stop)
        );
    }

    #[test]
    fn args_parse_and_clear() {
        let mut p = Policies::default();
        let a: PolicyArgs = serde_json::from_str(r#"{"idle_timeout":"10m","ttl":900}"#).unwrap();
        a.apply(&mut p).unwrap();
        assert_eq!(p.idle_timeout_ms, Some(600_000));
        assert_eq!(p.ttl_ms, Some(900_000));
        let a: PolicyArgs = serde_json::from_str(r#"{"idle_timeout":"off"}"#).unwrap();
        a.apply(&mut p).unwrap();
        assert_eq!(p.idle_timeout_ms, None);
        let a: PolicyArgs = serde_json::from_str(r#"{"archive_after":"7d"}"#).unwrap();
        a.apply(&mut p).unwrap();
        assert_eq!(p.archive_after_ms, Some(7 * 24 * 3_600_000));
        let a: PolicyArgs = serde_json::from_str(r#"{"auto_resume":false}"#).unwrap();
        a.apply(&mut p).unwrap();
        assert_eq!(p.auto_resume, Some(false));
        assert_eq!(p.archive_after_ms, Some(7 * 24 * 3_600_000), "kept");
        let a: PolicyArgs = serde_json::from_str(r#"{"ttl":"soon"}"#).unwrap();
        assert!(a.apply(&mut p).unwrap_err().to_string().contains("30s"));
    }

    #[test]
    fn a_policy_pause_wakes_on_use_and_a_user_pause_does_not_unless_set() {
        let why = format!("{POLICY_REASON}idle_timeout fired (0s late): paused");
        let p = Policies::default();
        assert!(wakes_on_use(&p, &why));
        assert!(!wakes_on_use(&p, "paused on request"));
        assert!(!wakes_on_use(&p, "paused (adopted)"));
        let hib = format!(
            "{POLICY_REASON}pause_after fired (0s late): hibernated{AFTER_USER_PAUSE} (12 MiB of memory and processes saved in 80 ms)"
        );
        assert!(!wakes_on_use(&p, &hib), "the pause was the user's");
        let on = Policies {
            auto_resume: Some(true),
            ..Default::default()
        };
        assert!(wakes_on_use(&on, "paused on request"));
        let off = Policies {
            auto_resume: Some(false),
            ..Default::default()
        };
        assert!(!wakes_on_use(&off, &why));
    }
}
