//! A tiny parallel map over a slice on scoped threads: each worker takes the next index from a
//! shared counter, and the first error stops the others early.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Applies `f` to every item with `threads` workers and returns the results in input order.
pub fn map<T, R, F>(items: &[T], threads: usize, f: F) -> Result<Vec<R>>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> Result<R> + Sync,
{
    let threads = threads.clamp(1, items.len().max(1));
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, Error)>> = Mutex::new(None);
    let mut slots: Vec<Option<R>> = Vec::with_capacity(items.len());
    slots.resize_with(items.len(), || None);
    let slots = Mutex::new(slots);
    let worker = || {
        let mut local = Vec::new();
        loop {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items.len() {
                break;
            }
            match f(&items[i]) {
                Ok(r) => local.push((i, r)),
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                    // Keep the error of the earliest item, so reports are deterministic.
                    if !matches!(g.as_ref(), Some((j, _)) if *j <= i) {
                        *g = Some((i, e));
                    }
                    break;
                }
            }
        }
        let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
        for (i, r) in local {
            s[i] = Some(r);
        }
    };
    let panicked = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        let mut panicked = None;
        for h in hs {
            if let Err(p) = h.join() {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                panicked = Some(msg);
            }
        }
        panicked
    });
    if let Some(msg) = panicked {
        return Err(Error::WorkerPanic(msg));
    }
    if let Some((_, e)) = first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(slots
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect())
}
