//! The typed columns of a sandbox record: its lifecycle [`State`], its
//! [`Mode`] and the [`RuntimeName`] it runs on. Rows keep them as text;
//! they are parsed once, when a row is read, and a row holding a value this
//! build does not know is reported as corrupt instead of guessed at.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Lifecycle states. `creating -> running <-> paused -> stopped -> deleted`,
/// plus `error` (the reason says why) and `hibernated` (sandboxes saved to
/// disk, memory and processes included; `resume` restores them).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Creating,
    Running,
    Paused,
    Stopped,
    Deleted,
    Error,
    /// Stopped, its volume moved into the snapshot store and freed
    /// locally; `start` brings it back.
    Archived,
    /// Frozen to disk: memory and processes saved, nothing running;
    /// `resume` restores it.
    Hibernated,
}

impl State {
    /// Every state, in lifecycle order.
    pub const ALL: [State; 8] = [
        State::Creating,
        State::Running,
        State::Paused,
        State::Hibernated,
        State::Stopped,
        State::Archived,
        State::Deleted,
        State::Error,
    ];

    /// The name rows, events and the API use.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Creating => "creating",
            State::Running => "running",
            State::Paused => "paused",
            State::Stopped => "stopped",
            State::Deleted => "deleted",
            State::Error => "error",
            State::Archived => "archived",
            State::Hibernated => "hibernated",
        }
    }

    /// The state named `s`, if it is one.
    pub fn parse(s: &str) -> Option<State> {
        State::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a sandbox outlives a stop.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Files, packages and working dirs survive stop/start and restarts.
    #[default]
    Persistent,
    /// Any stop deletes the sandbox and wipes its data.
    Ephemeral,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent",
            Mode::Ephemeral => "ephemeral",
        }
    }

    /// The mode named `s`, if it is one.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Persistent, Mode::Ephemeral]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name of the isolation runtime a sandbox runs on, as its record
/// keeps it. The store does not know which runtimes exist; the control
/// plane resolves the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuntimeName(String);

impl RuntimeName {
    pub fn new(name: impl Into<String>) -> RuntimeName {
        RuntimeName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuntimeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{s}\""));
        }
        assert_eq!(State::parse("Running"), None);
        assert_eq!(Mode::parse("ephemeral"), Some(Mode::Ephemeral));
        assert_eq!(Mode::parse("both"), None);
    }
}
