//! The reconciler's journal: every transition is recorded (state, reason
//! and an event) and every step is written down before it is taken, so a
//! daemon killed midway finds what it was doing.

use crate::context::Context;
use crate::error::Result;
use crate::model::State;

/// Record a transition: the state, its reason, and an event.
pub(crate) fn record(inner: &Context, id: &str, state: State, reason: &str) -> Result<()> {
    // One commit for both.
    inner.store.set_state_with_event(
        id,
        state,
        reason,
        "state",
        &format!("{}: {reason}", state.as_str()),
    )?;
    Ok(())
}

/// Record a step about to be taken.
pub(crate) fn step_event(inner: &Context, id: &str, what: &str) -> Result<()> {
    Ok(inner.store.add_event(id, "step", what)?)
}
