//! Keeping the pool of ready sandbox volumes full (see the storage crate's
//! `volume::pool`): filled once at start, refilled after each create, off
//! the request path, and drained when the daemon stops.

use std::sync::Arc;
use std::time::Duration;

use crate::context::Context;
use crate::Controller;

/// How long a refill waits after a create: the new sandbox's first exec
/// usually follows at once and should not share the CPUs with a refill.
const REFILL_DELAY: Duration = Duration::from_millis(20);

/// Refill the pool in the background, a little later.
pub(crate) fn refill_soon(inner: &Arc<Context>) {
    if inner.volumes.pool_status().target == 0 {
        return;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(REFILL_DELAY).await;
        fill(inner).await;
    });
}

/// Fill the pool now (in a worker thread); failures are logged, and
/// creates then make their volumes as without a pool.
pub(crate) async fn fill(inner: Arc<Context>) {
    let r = tokio::task::spawn_blocking(move || inner.volumes.fill_pool()).await;
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("volume pool: cannot make a volume ahead: {e}"),
        Err(e) => tracing::warn!("volume pool: the fill failed: {e}"),
    }
}

impl Controller {
    /// What the pool of ready sandbox volumes holds.
    pub fn volume_pool(&self) -> dwell_storage::PoolStatus {
        self.inner.volumes.pool_status()
    }

    /// Delete the pooled volumes (the daemon stops; sandboxes
    /// keep theirs).
    pub fn drain_volume_pool(&self) {
        self.inner.volumes.drain_pool();
    }
}
