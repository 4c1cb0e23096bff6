//! E2B's sandbox timeout on dwell's policies. A timeout is an instant:
//! `ttl` is set so that `created + ttl` is that instant, and a keepalive
//! hold at the same instant replaces any earlier, longer hold (so a timeout
//! can be shortened too, down to now). `ttl_action` says what happens then:
//! `delete` (E2B's kill), `pause` (autoPause, memory kept) or `stop`
//! (autoPause with `keep_memory=False`: the files only; connect boots the
//! sandbox again). A paused sandbox has no timeout, as on E2B: pausing
//! clears `ttl`, connecting sets it again. dwell's deadline timer fires it
//! within a second of its time.

use dwell_control::policy::{Action, DurationArg, PolicyArgs};
use dwell_control::{Controller, Sandbox};

use crate::error::{E2bError, E2bResult};

/// The timeout of a sandbox when the request gives none (seconds), as the
/// SDKs document.
pub const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The longest timeout accepted (30 days).
pub const MAX_TIMEOUT_SECS: u64 = 30 * 24 * 3600;

/// Check a new timeout of a running sandbox (seconds): 0 times it out now,
/// as on E2B.
pub fn check_new(timeout: u64) -> E2bResult<u64> {
    if timeout > MAX_TIMEOUT_SECS {
        return Err(E2bError::bad_request(format!(
            "timeout {timeout} is out of range; give 0 (now) to {MAX_TIMEOUT_SECS} seconds"
        )));
    }
    Ok(timeout)
}

/// What a sandbox does at its timeout, from a create request's `autoPause`
/// and `autoPauseMemory` (E2B's `lifecycle.on_timeout` and `keep_memory`):
/// delete (kill), pause with memory, or stop (a pause that keeps the
/// files only). Waking on use needs the memory kept.
pub fn on_timeout(
    auto_pause: bool,
    keep_memory: Option<bool>,
    auto_resume: bool,
) -> E2bResult<Action> {
    match (auto_pause, keep_memory) {
        (false, _) => Ok(Action::Delete),
        (true, Some(false)) if auto_resume => Err(E2bError::bad_request(
            "autoResume needs the memory kept: a filesystem-only pause (autoPauseMemory: false) \
             is resumed by connect only; drop one of the two",
        )),
        (true, Some(false)) => Ok(Action::Stop),
        (true, _) => Ok(Action::Pause),
    }
}

/// Check a requested timeout (seconds).
pub fn check(timeout: u64) -> E2bResult<u64> {
    if timeout == 0 || timeout > MAX_TIMEOUT_SECS {
        return Err(E2bError::bad_request(format!(
            "timeout {timeout} is out of range; give 1 to {MAX_TIMEOUT_SECS} seconds"
        )));
    }
    Ok(timeout)
}

/// The policies of a new sandbox that times out after `timeout` seconds,
/// doing `action` then (see [`on_timeout`]), and woken by the requests that
/// reach it while paused when `auto_resume` (off unless asked for, as on
/// E2B; `Sandbox.connect()` resumes it either way).
pub fn create_policies(timeout: u64, action: Action, auto_resume: bool) -> PolicyArgs {
    PolicyArgs {
        ttl: Some(DurationArg::Text(format!("{timeout}s"))),
        ttl_action: Some(action),
        auto_resume: Some(auto_resume),
        ..Default::default()
    }
}

/// Make `sb` time out `timeout` seconds from now.
pub fn set(ctl: &Controller, tenant: &str, sb: &Sandbox, timeout: u64) -> E2bResult<Sandbox> {
    let now = now_ms();
    let end = now + (timeout as i64) * 1000;
    // (At least 1 ms: a TTL of 0 would mean none.)
    let ttl_ms = (end - sb.created_at).max(1);
    ctl.update_policies(
        tenant,
        &sb.id,
        &PolicyArgs {
            ttl: Some(DurationArg::Text(format!("{ttl_ms}ms"))),
            // The TTL action stays what it was: E2B-made sandboxes set one
            // at create; sandboxes made outside E2B keep theirs, and none
            // means the mode's default (stop a persistent sandbox, delete
            // an ephemeral one), never a delete in its place.
            ttl_action: None,
            ..Default::default()
        },
    )?;
    Ok(ctl.keepalive(tenant, &sb.id, timeout * 1000)?)
}

/// What the sandbox's TTL does when it fires: its `ttl_action`, or the
/// mode's default (`policy::schedule`): stop when persistent, delete when
/// ephemeral.
pub fn effective_action(sb: &Sandbox) -> Action {
    sb.spec.policies.ttl_action.unwrap_or(match sb.mode {
        dwell_control::Mode::Ephemeral => Action::Delete,
        dwell_control::Mode::Persistent => Action::Stop,
    })
}

/// The policies that put `sb`'s timeout back as it is now.
pub fn current(sb: &Sandbox) -> PolicyArgs {
    PolicyArgs {
        ttl: Some(match sb.spec.policies.ttl_ms {
            Some(ms) => DurationArg::Text(format!("{ms}ms")),
            None => DurationArg::Text("off".into()),
        }),
        ..Default::default()
    }
}

/// Drop the timeout (before a pause). Returns the policies to put back if
/// the pause fails.
///
/// A sandbox that wakes on use and pauses on timeout keeps its TTL: a
/// pausing TTL does nothing while it is paused, and when a request wakes
/// it the TTL gives it a timeout again (at least five minutes, as E2B's
/// auto-resume does) instead of none.
pub fn clear(ctl: &Controller, tenant: &str, sb: &Sandbox) -> E2bResult<PolicyArgs> {
    let before = current(sb);
    if sb.spec.policies.auto_resume == Some(true) && effective_action(sb) == Action::Pause {
        return Ok(before);
    }
    ctl.update_policies(
        tenant,
        &sb.id,
        &PolicyArgs {
            ttl: Some(DurationArg::Text("off".into())),
            ..Default::default()
        },
    )?;
    Ok(before)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwell_control::policy::Policies;

    /// The create request's `autoPause` and `autoResume.enabled` land on
    /// `ttl_action` and `auto_resume`; without `autoResume` a paused
    /// sandbox does not wake (E2B's default), whoever paused it.
    #[test]
    fn auto_resume_maps_onto_the_policy_and_is_off_unless_enabled() {
        let body: crate::wire::NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","timeout":60,"autoPause":true,"autoResume":{"enabled":true}}"#,
        )
        .unwrap();
        let resume = body.auto_resume.is_some_and(|a| a.enabled);
        let action = on_timeout(
            body.auto_pause.unwrap_or(false),
            body.auto_pause_memory,
            resume,
        )
        .unwrap();
        let args = create_policies(60, action, resume);
        let mut p = Policies::default();
        args.apply(&mut p).unwrap();
        assert_eq!(p.ttl_action, Some(Action::Pause));
        assert_eq!(p.auto_resume, Some(true));
        assert!(dwell_control::policy::wakes_on_use(&p, "paused on request"));

        let body: crate::wire::NewSandbox =
            serde_json::from_str(r#"{"templateID":"base","autoPause":true}"#).unwrap();
        let resume = body.auto_resume.is_some_and(|a| a.enabled);
        let action = on_timeout(
            body.auto_pause.unwrap_or(false),
            body.auto_pause_memory,
            resume,
        )
        .unwrap();
        let args = create_policies(60, action, resume);
        let mut p = Policies::default();
        args.apply(&mut p).unwrap();
        assert_eq!(p.auto_resume, Some(false));
        assert!(!dwell_control::policy::wakes_on_use(
            &p,
            "policy ttl fired (0s late): paused"
        ));
    }

    /// `keep_memory=False` (autoPauseMemory false) pauses by stopping
    /// (files only); absent or null keeps memory; it cannot wake on use.
    #[test]
    fn keep_memory_false_stops_and_refuses_auto_resume() {
        assert_eq!(on_timeout(true, Some(false), false).unwrap(), Action::Stop);
        assert_eq!(on_timeout(true, None, false).unwrap(), Action::Pause);
        assert_eq!(on_timeout(true, Some(true), true).unwrap(), Action::Pause);
        assert_eq!(
            on_timeout(false, Some(false), false).unwrap(),
            Action::Delete
        );
        assert!(on_timeout(true, Some(false), true).is_err());
        assert!(check_new(0).is_ok(), "a timeout of 0 times it out now");
        assert!(check_new(MAX_TIMEOUT_SECS + 1).is_err());
    }
}
