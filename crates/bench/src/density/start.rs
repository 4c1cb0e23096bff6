//! gVisor create to first exec, cold and warm, side by side with plain
//! `runsc run` of `true` in a hand-written bundle, in alternating rounds.
//!
//! Cold: a daemon without a warm pool (`dwell serve --gvisor-pool 0`, the
//! bench's second daemon) or, when the main daemon has no pool, the main
//! one. Warm: the main daemon's pool; before each warm create the bench
//! waits (untimed) for a ready pooled sandbox, and a create counts as warm
//! only when the pool's claim counter went up across it (otherwise it is
//! counted as a fallback, not a sample).

use std::time::{Duration, Instant};

use super::{pool_claims, pool_memory, pool_ready};
use crate::api::Api;
use crate::error::Result;
use crate::gvisor::{self, Baseline};
use crate::stats::Samples;

/// How long a warm round waits for the pool to hold a ready sandbox.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// One column: its samples, or why it was not measured.
pub enum Column {
    Measured(Samples),
    NotAvailable(String),
}

pub struct Starts {
    pub rounds: usize,
    /// `--memory` of every sandbox and of the floor's bundle.
    pub memory: String,
    pub cold: Column,
    pub warm: Column,
    /// Warm creates the pool did not serve (it was empty): not samples.
    pub warm_fallbacks: usize,
    /// Cold creates the pool-less daemon served from a pool anyway.
    pub cold_pooled: usize,
    /// `runsc run` of `true`, to its exit.
    pub runsc: Samples,
}

fn name(kind: &str, i: usize) -> String {
    format!("bench-{}-ds-{kind}-{i}", std::process::id())
}

/// Create a gVisor sandbox with `--memory memory` and run the first
/// `true` in it; returns the time from the create call to the exec's
/// answer. The sandbox is deleted (untimed).
async fn create_exec(api: &mut Api, name: &str, memory: &str) -> Result<Duration> {
    let t = Instant::now();
    let id = gvisor::create(api, name, memory).await?;
    let r = api.exec(&id, &["true"]).await;
    let elapsed = t.elapsed();
    api.delete(&id).await?;
    r.map(|_| elapsed)
}

/// `rounds` rounds (after `warmup`), each timing every available column
/// once, in an order that rotates from round to round.
pub async fn run(
    main: &mut Api,
    cold: Option<&mut Api>,
    warmup: usize,
    rounds: usize,
) -> Result<Starts> {
    let main_has_pool = pool_claims(main).await.is_some();
    // The pool serves only creates with its own memory limit: every column
    // uses it (section 5's 256 MiB without a pool), the floor included.
    let memory_bytes = match pool_memory(main).await {
        Some(b) if b > 0 => b,
        _ => 256 << 20,
    };
    let memory = format!("{}M", memory_bytes >> 20);
    // Where cold creates go: the pool-less daemon, else the main one when
    // it has no pool itself.
    let cold_note = if cold.is_none() && main_has_pool {
        "not available: the daemon has a warm pool and no pool-less daemon was given \
         (--cold-socket)"
            .to_string()
    } else {
        String::new()
    };
    let mut cold_api = cold;
    let mut cold_s = Samples::default();
    let mut warm_s = Samples::default();
    let mut runsc_s = Samples::default();
    let (mut fallbacks, mut cold_pooled) = (0, 0);
    let args = ["true".to_string()];
    let base = Baseline::with_process("start", &args, memory_bytes)?;
    for i in 0..warmup + rounds {
        let keep = i >= warmup;
        for k in 0..3 {
            match (i + k) % 3 {
                0 if cold_note.is_empty() => {
                    let api: &mut Api = match cold_api.as_deref_mut() {
                        Some(c) => c,
                        None => &mut *main,
                    };
                    // A daemon with a pool of 0 still counts claims: a
                    // create it served warm is not a cold sample.
                    let before = pool_claims(api).await;
                    let d = create_exec(api, &name("cold", i), &memory).await?;
                    let after = pool_claims(api).await;
                    let pooled = matches!((before, after), (Some(a), Some(b)) if b > a);
                    if keep && !pooled {
                        cold_s.push(d);
                    } else if keep {
                        cold_pooled += 1;
                    }
                }
                1 if main_has_pool => {
                    wait_for_pool(main).await;
                    let before = pool_claims(main).await;
                    let d = create_exec(main, &name("warm", i), &memory).await?;
                    let after = pool_claims(main).await;
                    let warm = matches!((before, after), (Some(a), Some(b)) if b > a);
                    if keep && warm {
                        warm_s.push(d);
                    } else if keep {
                        fallbacks += 1;
                    }
                }
                2 => {
                    let t = Instant::now();
                    let r = base.run_to_exit();
                    let d = t.elapsed();
                    // `runsc run` removes its container on exit; anything
                    // left by a failure goes here (untimed).
                    let _ = base.delete();
                    r?;
                    if keep {
                        runsc_s.push(d);
                    }
                }
                _ => {}
            }
        }
    }
    let cold = if cold_note.is_empty() {
        Column::Measured(cold_s)
    } else {
        Column::NotAvailable(cold_note)
    };
    let warm = if main_has_pool {
        Column::Measured(warm_s)
    } else {
        Column::NotAvailable(
            "not available: the daemon reports no warm gVisor pool \
             (no dwell_gvisor_pool_claims_total in /metrics; `dwell serve --gvisor-pool N`)"
                .into(),
        )
    };
    Ok(Starts {
        rounds,
        memory,
        cold,
        warm,
        warm_fallbacks: fallbacks,
        cold_pooled,
        runsc: runsc_s,
    })
}

/// Wait (at most [`POOL_WAIT`]) until the pool holds a ready sandbox.
async fn wait_for_pool(api: &mut Api) {
    let deadline = Instant::now() + POOL_WAIT;
    while Instant::now() < deadline {
        if pool_ready(api).await.unwrap_or(0.0) >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
