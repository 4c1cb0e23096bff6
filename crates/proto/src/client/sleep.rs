//! Connections whose agent may be asleep: frozen by its runtime while its
//! sandbox has nothing to do (a dozing gVisor sandbox, whose user-space
//! kernel would otherwise wake thousands of times a second doing nothing).
//!
//! A [`SleepGate`] belongs to one sandbox and is shared by every connection
//! to its agent ([`AgentClient::use_sleep_gate`](super::AgentClient::use_sleep_gate)).
//! The connections stay open while the agent is frozen; a frozen agent
//! cannot answer, so every call first passes [`SleepGate::enter`]: when the
//! gate is asleep, its wake hook runs (it thaws the sandbox) before the
//! request is sent. The gate's owner puts it to sleep only through
//! [`SleepGate::fall_asleep`], which refuses while any call on any of the
//! sandbox's connections is open or being opened, or when there was
//! activity (a call started or ended) since the owner last looked: an
//! opener raises its count before it reads the flag, and the owner sets
//! the flag before it reads the counts (all sequentially consistent), so
//! either the owner sees the call and stays awake, or the call sees the
//! flag and wakes the agent first. No call is ever sent to a frozen agent.
//! (Frames on a stream already open need no gate: an open stream keeps the
//! gate awake.)

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;

use crate::error::{Error, Result};

/// What wakes a sleeping agent: thaws its sandbox and returns once the
/// agent runs again, or says why it cannot.
pub type WakeHook = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>> + Send + Sync,
>;

/// The sleep state of one sandbox's agent, shared by its connections.
#[derive(Default)]
pub struct SleepGate {
    asleep: AtomicBool,
    /// Calls between [`SleepGate::enter`] and their stream's registration.
    opening: AtomicUsize,
    /// Streams open on any connection using the gate.
    open: AtomicUsize,
    /// Bumped when a call starts and when the last open stream ends.
    activity: AtomicU64,
    /// None: nothing can wake the agent, so the gate never sleeps (the
    /// gate of a connection nobody gave one).
    hook: Option<WakeHook>,
}

/// Held by a call from [`SleepGate::enter`] until its stream is registered
/// (then the stream's [`OpenStream`] keeps the gate awake).
pub(crate) struct Opening(Arc<SleepGate>);

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, SeqCst);
    }
}

/// Held by an open stream (in its connection's table) until it ends.
pub(crate) struct OpenStream(Arc<SleepGate>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, SeqCst) == 1 {
            // Quiet counts from the end of the last call, not its start.
            self.0.activity.fetch_add(1, SeqCst);
        }
    }
}

impl SleepGate {
    /// A gate whose agent `hook` wakes.
    pub fn new(hook: WakeHook) -> Arc<SleepGate> {
        Arc::new(SleepGate {
            hook: Some(hook),
            ..SleepGate::default()
        })
    }

    /// Counts a call in and, when the gate is asleep, wakes the agent
    /// before returning.
    pub(crate) async fn enter(self: &Arc<Self>) -> Result<Opening> {
        self.opening.fetch_add(1, SeqCst);
        self.activity.fetch_add(1, SeqCst);
        let opening = Opening(self.clone());
        if self.asleep.load(SeqCst) {
            if let Some(wake) = &self.hook {
                wake()
                    .await
                    .map_err(|why| Error::Unreachable(format!("cannot wake the sandbox: {why}")))?;
            }
            self.asleep.store(false, SeqCst);
        }
        Ok(opening)
    }

    /// Counts a registered stream until the guard drops.
    pub(crate) fn stream_opened(self: &Arc<Self>) -> OpenStream {
        self.open.fetch_add(1, SeqCst);
        OpenStream(self.clone())
    }

    /// Changes whenever a call starts or the last open one ends: an owner
    /// that reads the same value twice knows the agent was not used in
    /// between.
    pub fn activity(&self) -> u64 {
        self.activity.load(SeqCst)
    }

    /// Whether a call is open or being opened.
    pub fn busy(&self) -> bool {
        self.opening.load(SeqCst) > 0 || self.open.load(SeqCst) > 0
    }

    /// Marks the gate asleep unless a call is open or being opened, or
    /// there was activity since [`SleepGate::activity`] returned
    /// `activity`, or the gate has no wake hook. True when it is now
    /// asleep: the owner may freeze the agent, and must call
    /// [`SleepGate::woke`] if it does not.
    pub fn fall_asleep(&self, activity: u64) -> bool {
        if self.hook.is_none() {
            return false;
        }
        self.asleep.store(true, SeqCst);
        if !self.busy() && self.activity.load(SeqCst) == activity {
            return true;
        }
        self.asleep.store(false, SeqCst);
        false
    }

    /// The agent runs again (thawed, or never frozen after
    /// [`SleepGate::fall_asleep`]).
    pub fn woke(&self) {
        self.asleep.store(false, SeqCst);
    }

    /// Whether the gate is asleep.
    pub fn is_asleep(&self) -> bool {
        self.asleep.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counting(n: Arc<AtomicU32>) -> Arc<SleepGate> {
        SleepGate::new(Arc::new(move || {
            let n = n.clone();
            Box::pin(async move {
                n.fetch_add(1, SeqCst);
                Ok(())
            })
        }))
    }

    #[tokio::test]
    async fn a_call_on_a_sleeping_gate_runs_the_hook_first() {
        // Without a hook nothing may put a gate to sleep.
        assert!(!Arc::new(SleepGate::default()).fall_asleep(0));
        let woken = Arc::new(AtomicU32::new(0));
        let gate = counting(woken.clone());
        assert!(gate.fall_asleep(gate.activity()));
        assert!(gate.is_asleep());
        drop(gate.enter().await.unwrap());
        assert_eq!(woken.load(SeqCst), 1);
        assert!(!gate.is_asleep());
        // Awake: no more wake-ups.
        drop(gate.enter().await.unwrap());
        assert_eq!(woken.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn the_gate_stays_awake_while_a_call_is_open_opening_or_recent() {
        let gate = counting(Arc::new(AtomicU32::new(0)));
        let seen = gate.activity();
        let opening = gate.enter().await.unwrap();
        assert!(!gate.fall_asleep(gate.activity()), "a call being opened");
        let stream = gate.stream_opened();
        drop(opening);
        assert!(gate.busy());
        assert!(!gate.fall_asleep(gate.activity()), "an open stream");
        assert!(!gate.is_asleep());
        assert!(!gate.fall_asleep(seen), "a call since the owner looked");
        let before_end = gate.activity();
        drop(stream);
        assert!(!gate.fall_asleep(before_end), "the last stream just ended");
        assert!(gate.fall_asleep(gate.activity()));
    }

    #[tokio::test]
    async fn a_hook_that_fails_fails_the_call_and_leaves_the_gate_asleep() {
        let gate = SleepGate::new(Arc::new(|| {
            Box::pin(async { Err("the sandbox is gone".to_string()) })
        }));
        assert!(gate.fall_asleep(gate.activity()));
        let e = gate.enter().await.err().unwrap();
        assert!(e.to_string().contains("the sandbox is gone"), "{e}");
        assert!(gate.is_asleep());
    }
}
