//! What each state allows, in one place: which requests a state accepts
//! ([`Rules::allows`], read by the request guards in [`crate::controller`]
//! and by the quota and metering rules) and which step the reconciler
//! takes from a recorded and an observed state towards the desired one
//! (`plan`, read by [`crate::reconcile`]). A request the table refuses is
//! answered with a conflict; every request it accepts is one the
//! reconciler's table moves towards (tested below).

use dwell_runtime::Observed;

use crate::error::Error;
use crate::model::{Mode, State};

/// What a user or a policy asks of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Start,
    Stop,
    Pause,
    /// Thaw a paused sandbox or restore a hibernated one. An archived
    /// sandbox resumes only when it was archived hibernated (its memory is
    /// in the archive); the caller checks that.
    Resume,
    Hibernate,
    Archive,
    /// Delete without `--force`.
    Delete,
    /// Exec, files, streams: anything that talks to the agent.
    Exec,
    /// Take a snapshot of the volume.
    Snapshot,
    /// Roll the volume back to a snapshot.
    Restore,
}

/// The rules of [`State`], as an extension of the store's type.
pub trait Rules {
    /// Whether a sandbox in this state accepts `request`.
    fn allows(self, request: Request) -> bool;
    /// Its processes exist (running or frozen in RAM): kernel stats, a
    /// live snapshot, a stop before a restore.
    fn has_processes(self) -> bool;
    /// It holds vCPUs and memory towards its tenant's quota.
    fn holds_compute(self) -> bool;
}

impl Rules for State {
    fn allows(self, request: Request) -> bool {
        use Request::*;
        use State::*;
        match request {
            Start => !matches!(self, Paused),
            Stop => !matches!(self, Archived),
            Pause => matches!(self, Running | Paused),
            Resume => matches!(self, Running | Paused | Hibernated),
            Hibernate => matches!(self, Running | Paused | Hibernated),
            Archive => !matches!(self, Creating),
            Delete => !matches!(self, Creating | Running | Paused),
            Exec => matches!(self, Running),
            Snapshot => !matches!(self, Archived),
            Restore => !matches!(self, Archived | Hibernated),
        }
    }

    fn has_processes(self) -> bool {
        matches!(self, State::Running | State::Paused)
    }

    fn holds_compute(self) -> bool {
        matches!(self, State::Creating | State::Running | State::Paused)
    }
}

/// Which state each lifecycle request asks for: the sandbox's desired
/// state once the request is accepted (`None` for requests that leave it
/// as it is).
impl Request {
    pub fn target(self) -> Option<State> {
        match self {
            Request::Start | Request::Resume => Some(State::Running),
            Request::Stop => Some(State::Stopped),
            Request::Pause => Some(State::Paused),
            Request::Hibernate => Some(State::Hibernated),
            Request::Archive => Some(State::Archived),
            Request::Delete => Some(State::Deleted),
            Request::Exec | Request::Snapshot | Request::Restore => None,
        }
    }

    /// The request's name in events and messages.
    pub fn name(self) -> &'static str {
        match self {
            Request::Start => "start",
            Request::Stop => "stop",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Hibernate => "hibernate",
            Request::Archive => "archive",
            Request::Delete => "delete",
            Request::Exec => "exec",
            Request::Snapshot => "snapshot",
            Request::Restore => "restore",
        }
    }
}

/// The error for sandbox `sb`, whose state does not allow `request`;
/// `message` says so.
pub(crate) fn refused(sb: &crate::model::Sandbox, request: Request, message: String) -> Error {
    Error::Refused {
        sandbox: sb.name.clone(),
        state: sb.state,
        action: request.name(),
        message,
    }
}

/// What the reconciler does next to move a sandbox from its recorded
/// state, and what the runtime observes of it, towards its desired state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Nothing: it is where it should be, or waits for a request.
    Nothing,
    /// Record what runs as the sandbox's state (a restarted daemon found
    /// it so); a saved state older than what runs is discarded first.
    Adopt(State),
    /// Thaw frozen processes.
    Thaw,
    /// Bring a sandbox without processes up: from its archive when that
    /// was left warm, from its saved state when hibernated, else a cold
    /// start.
    BringUp,
    /// Its processes are gone though it should have some: mark it so.
    Vanished,
    /// Freeze its processes.
    Freeze,
    /// Save it whole to disk.
    Hibernate,
    /// It should be hibernated and nothing runs: adopt a saved state the
    /// daemon left, or it vanished.
    AdoptSaved,
    /// Stop it (`release`: processes or a mounted volume may be left),
    /// then delete it when it is ephemeral.
    Stop { release: bool, then_delete: bool },
    /// Archive it: stop, move the volume into the snapshot store.
    Archive,
    /// Delete it with its data.
    Delete,
}

/// Why the reconciler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A request or a policy just wrote the desired state: act on it, even
    /// from `error`.
    Asked,
    /// The periodic sweep: repair drift, never retry a failed sandbox.
    Sweep,
}

/// Whether the reconciler has nothing to do before it even observes the
/// sandbox: it is deleted, or it failed and only a request may retry it.
pub(crate) fn settled(state: State, desired: State, cause: Cause) -> bool {
    state == State::Deleted
        || (state == State::Error && cause == Cause::Sweep && desired != State::Deleted)
}

/// The reconciler's table: the next step from `state` (recorded) and
/// `observed` (the runtime's view) towards `desired`.
pub(crate) fn plan(
    state: State,
    desired: State,
    observed: Observed,
    mode: Mode,
    cause: Cause,
) -> Step {
    use Observed as O;
    match (desired, observed) {
        (State::Running, O::Running) if state != State::Running => Step::Adopt(State::Running),
        (State::Running, O::Running) => Step::Nothing,
        (State::Running, O::Paused) => Step::Thaw,
        (State::Running, O::Stopped) if cause == Cause::Sweep && state.has_processes() => {
            Step::Vanished
        }
        (State::Running, O::Stopped) => Step::BringUp,
        (State::Paused, O::Running) => Step::Freeze,
        (State::Paused, O::Paused) if state != State::Paused => Step::Adopt(State::Paused),
        (State::Paused, O::Paused) => Step::Nothing,
        (State::Paused, O::Stopped) => Step::Vanished,
        (State::Hibernated, O::Running | O::Paused) => Step::Hibernate,
        (State::Hibernated, O::Stopped) if state == State::Hibernated => Step::Nothing,
        (State::Hibernated, O::Stopped) => Step::AdoptSaved,
        (State::Stopped, _) => Step::Stop {
            release: observed != O::Stopped || state != State::Stopped,
            then_delete: mode == Mode::Ephemeral,
        },
        (State::Archived, _) if observed != O::Stopped || state != State::Archived => Step::Archive,
        (State::Archived, _) => Step::Nothing,
        (State::Deleted, _) => Step::Delete,
        (State::Creating | State::Error, _) => Step::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paused_sandbox_resumes_and_an_archived_one_starts() {
        assert!(!State::Paused.allows(Request::Start));
        assert!(State::Paused.allows(Request::Resume));
        assert!(State::Archived.allows(Request::Start));
        assert!(!State::Archived.allows(Request::Stop));
        assert!(!State::Archived.allows(Request::Snapshot));
    }

    #[test]
    fn only_a_running_sandbox_execs_and_live_ones_need_force_to_delete() {
        for s in State::ALL {
            assert_eq!(s.allows(Request::Exec), s == State::Running, "{s}");
            assert_eq!(
                s.allows(Request::Delete),
                !s.holds_compute(),
                "{s}: delete without force is for sandboxes holding nothing"
            );
        }
    }

    /// What the runtime sees of a sandbox in a settled state.
    fn seen(s: State) -> Observed {
        match s {
            State::Running => Observed::Running,
            State::Paused => Observed::Paused,
            _ => Observed::Stopped,
        }
    }

    const LIFECYCLE: [Request; 7] = [
        Request::Start,
        Request::Stop,
        Request::Pause,
        Request::Resume,
        Request::Hibernate,
        Request::Archive,
        Request::Delete,
    ];

    #[test]
    fn every_accepted_request_is_one_the_reconciler_acts_on() {
        for s in State::ALL {
            for r in LIFECYCLE {
                if !s.allows(r) || settled(s, State::Running, Cause::Asked) {
                    continue;
                }
                let t = r.target().unwrap();
                let step = plan(s, t, seen(s), Mode::Persistent, Cause::Asked);
                assert!(
                    step != Step::Nothing || s == t,
                    "{s} accepts {} but the reconciler would leave it",
                    r.name()
                );
            }
        }
    }

    #[test]
    fn the_reconciler_moves_each_state_the_way_asked() {
        use Observed as O;
        let p = |s, d, o| plan(s, d, o, Mode::Persistent, Cause::Asked);
        assert_eq!(p(State::Stopped, State::Running, O::Stopped), Step::BringUp);
        assert_eq!(p(State::Paused, State::Running, O::Paused), Step::Thaw);
        assert_eq!(p(State::Running, State::Paused, O::Running), Step::Freeze);
        assert_eq!(
            p(State::Paused, State::Hibernated, O::Paused),
            Step::Hibernate
        );
        assert_eq!(
            p(State::Hibernated, State::Running, O::Stopped),
            Step::BringUp
        );
        assert_eq!(
            p(State::Running, State::Archived, O::Running),
            Step::Archive
        );
        assert_eq!(
            p(State::Archived, State::Archived, O::Stopped),
            Step::Nothing
        );
        assert_eq!(p(State::Error, State::Deleted, O::Stopped), Step::Delete);
        assert_eq!(
            p(State::Running, State::Stopped, O::Running),
            Step::Stop {
                release: true,
                then_delete: false
            }
        );
        assert_eq!(
            plan(
                State::Running,
                State::Stopped,
                O::Running,
                Mode::Ephemeral,
                Cause::Asked
            ),
            Step::Stop {
                release: true,
                then_delete: true
            }
        );
    }

    #[test]
    fn a_restarted_daemon_adopts_what_runs_and_notices_what_vanished() {
        use Observed as O;
        let sweep = |s, d, o| plan(s, d, o, Mode::Persistent, Cause::Sweep);
        // Killed after the runtime started it, before it recorded so.
        assert_eq!(
            sweep(State::Stopped, State::Running, O::Running),
            Step::Adopt(State::Running)
        );
        assert_eq!(
            sweep(State::Running, State::Paused, O::Paused),
            Step::Adopt(State::Paused)
        );
        // Killed after the checkpoint: adopt the saved state if complete.
        assert_eq!(
            sweep(State::Running, State::Hibernated, O::Stopped),
            Step::AdoptSaved
        );
        // Its processes went: the sweep says so; a request starts it.
        assert_eq!(
            sweep(State::Running, State::Running, O::Stopped),
            Step::Vanished
        );
        assert_eq!(
            plan(
                State::Running,
                State::Running,
                O::Stopped,
                Mode::Persistent,
                Cause::Asked
            ),
            Step::BringUp
        );
        assert_eq!(
            sweep(State::Paused, State::Paused, O::Stopped),
            Step::Vanished
        );
    }

    #[test]
    fn a_failed_sandbox_waits_for_a_request_and_a_deleted_one_for_nothing() {
        assert!(settled(State::Error, State::Running, Cause::Sweep));
        assert!(!settled(State::Error, State::Running, Cause::Asked));
        assert!(!settled(State::Error, State::Deleted, Cause::Sweep));
        for c in [Cause::Asked, Cause::Sweep] {
            assert!(settled(State::Deleted, State::Deleted, c));
        }
    }

    #[test]
    fn processes_exist_only_where_they_can_be_paused() {
        for s in State::ALL {
            assert_eq!(s.has_processes(), s.allows(Request::Pause), "{s}");
        }
    }
}
