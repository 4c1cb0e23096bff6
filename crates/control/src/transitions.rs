//! What each state allows: the one table the request guards (in
//! [`crate::controller`]), the quota and metering rules and the reconciler
//! read. A request the table refuses is answered with a conflict that says
//! what to do instead; the reconciler never drives a sandbox through a
//! transition the table does not list.

use crate::model::State;

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

    #[test]
    fn processes_exist_only_where_they_can_be_paused() {
        for s in State::ALL {
            assert_eq!(s.has_processes(), s.allows(Request::Pause), "{s}");
        }
    }
}
