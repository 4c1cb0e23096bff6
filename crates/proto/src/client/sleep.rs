//! A connection whose agent may be asleep: frozen by its runtime while its
//! sandbox has nothing to do (a dozing gVisor sandbox, whose user-space
//! kernel would otherwise wake thousands of times a second doing nothing).
//!
//! The connection stays open while the agent is frozen; a frozen agent
//! cannot answer, so every call first passes [`SleepGate::enter`]: when the
//! connection is marked asleep, the owner's wake hook runs (it thaws the
//! sandbox) before the request is sent. The owner puts a connection to
//! sleep only through [`SleepGate::fall_asleep`], which refuses while any
//! call is open or being opened, or when one started since the owner last
//! looked: the opener raises its count before it reads the flag, and the
//! owner sets the flag before it reads the counts (all sequentially
//! consistent), so either the owner sees the call and stays awake, or the
//! call sees the flag and wakes the agent first. No call is ever sent to a
//! frozen agent.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// What wakes a sleeping agent: thaws its sandbox and returns once the
/// agent runs again, or says why it cannot.
pub type WakeHook = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = std::result::Result<(), String>> + Send>> + Send + Sync,
>;

/// The sleep state of one connection.
#[derive(Default)]
pub(crate) struct SleepGate {
    asleep: AtomicBool,
    /// Calls between [`SleepGate::enter`] and their stream's registration.
    opening: AtomicUsize,
    /// Calls ever started on the connection.
    started: AtomicU64,
    hook: Mutex<Option<WakeHook>>,
}

/// Held by a call from [`SleepGate::enter`] until its stream is registered
/// (then the open stream itself keeps the connection awake).
pub(crate) struct Opening<'a>(&'a SleepGate);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, SeqCst);
    }
}

impl SleepGate {
    /// Counts a call in and, when the connection is asleep, wakes the agent
    /// before returning.
    pub(crate) async fn enter(&self) -> Result<Opening<'_>> {
        self.opening.fetch_add(1, SeqCst);
        self.started.fetch_add(1, SeqCst);
        let opening = Opening(self);
        if self.asleep.load(SeqCst) {
            // (Without a hook nothing has put it to sleep.)
            let hook = self.hook.lock().unwrap().clone();
            if let Some(wake) = hook {
                wake()
                    .await
                    .map_err(|why| Error::Unreachable(format!("cannot wake the sandbox: {why}")))?;
            }
            self.asleep.store(false, SeqCst);
        }
        Ok(opening)
    }

    pub(crate) fn set_hook(&self, hook: WakeHook) {
        *self.hook.lock().unwrap() = Some(hook);
    }

    pub(crate) fn started(&self) -> u64 {
        self.started.load(SeqCst)
    }

    /// Marks the connection asleep unless a call is being opened, `open`
    /// calls are open, or a call started since `started` was read. True
    /// when it is now asleep: the owner may freeze the agent.
    pub(crate) fn fall_asleep(&self, started: u64, open: impl FnOnce() -> usize) -> bool {
        if self.hook.lock().unwrap().is_none() {
            return false;
        }
        self.asleep.store(true, SeqCst);
        if self.opening.load(SeqCst) == 0 && open() == 0 && self.started.load(SeqCst) == started {
            return true;
        }
        self.asleep.store(false, SeqCst);
        false
    }

    /// The owner thawed the agent (or failed to freeze it).
    pub(crate) fn woke(&self) {
        self.asleep.store(false, SeqCst);
    }

    pub(crate) fn is_asleep(&self) -> bool {
        self.asleep.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn counting_hook(n: Arc<AtomicU32>) -> WakeHook {
        Arc::new(move || {
            let n = n.clone();
            Box::pin(async move {
                n.fetch_add(1, SeqCst);
                Ok(())
            })
        })
    }

    #[tokio::test]
    async fn a_call_on_a_sleeping_connection_runs_the_hook_first() {
        let gate = SleepGate::default();
        let woken = Arc::new(AtomicU32::new(0));
        // Without a hook nothing may put the connection to sleep.
        assert!(!gate.fall_asleep(0, || 0));
        gate.set_hook(counting_hook(woken.clone()));
        assert!(gate.fall_asleep(0, || 0));
        assert!(gate.is_asleep());
        drop(gate.enter().await.unwrap());
        assert_eq!(woken.load(SeqCst), 1);
        assert!(!gate.is_asleep());
        // Awake: no more wake-ups.
        drop(gate.enter().await.unwrap());
        assert_eq!(woken.load(SeqCst), 1);
    }

    #[tokio::test]
    async fn the_connection_stays_awake_while_a_call_is_open_opening_or_new() {
        let gate = SleepGate::default();
        gate.set_hook(counting_hook(Arc::new(AtomicU32::new(0))));
        let seen = gate.started();
        assert!(!gate.fall_asleep(seen, || 1), "an open stream");
        assert!(!gate.is_asleep());
        let opening = gate.enter().await.unwrap();
        assert!(
            !gate.fall_asleep(gate.started(), || 0),
            "a call being opened"
        );
        drop(opening);
        assert!(
            !gate.fall_asleep(seen, || 0),
            "a call since the owner looked"
        );
        assert!(gate.fall_asleep(gate.started(), || 0));
    }

    #[tokio::test]
    async fn a_hook_that_fails_fails_the_call_and_leaves_it_asleep() {
        let gate = SleepGate::default();
        gate.set_hook(Arc::new(|| {
            Box::pin(async { Err("the sandbox is gone".to_string()) })
        }));
        assert!(gate.fall_asleep(0, || 0));
        let e = gate.enter().await.err().unwrap();
        assert!(e.to_string().contains("the sandbox is gone"), "{e}");
        assert!(gate.is_asleep());
    }
}
