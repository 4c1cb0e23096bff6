//! Start latency of the namespace runtime, measured against the real
//! kernel: starts and stops one sandbox 20 times and prints the p50 and p90
//! of `start()` (and of pause/resume), with and without a user namespace. Ignored by default because it is a
//! measurement, not a check:
//!
//!     cargo test -p dwell-runtime --test latency -- --ignored --nocapture

mod common;

use std::time::{Duration, Instant};

use common::{TestSandbox, NEEDS};
use dwell_runtime::Runtime;
use dwell_testkit::has_root;

const RUNS: usize = 20;

fn percentile(v: &mut [Duration], p: usize) -> f64 {
    v.sort();
    let i = ((v.len() * p).div_ceil(100)).saturating_sub(1);
    v[i].as_secs_f64() * 1000.0
}

fn measure(name: &str, sb: &TestSandbox) {
    let (mut start, mut pause, mut resume) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        sb.start();
        start.push(t.elapsed());
        let t = Instant::now();
        sb.rt.pause(&sb.config).unwrap();
        pause.push(t.elapsed());
        let t = Instant::now();
        sb.rt.resume(&sb.config).unwrap();
        resume.push(t.elapsed());
        sb.rt.stop(&sb.config).unwrap();
        // Let the pool refill between runs, as between two API creates.
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "{name}: start p50 {:.2} ms p90 {:.2} ms; pause p50 {:.2} ms; resume p50 {:.2} ms ({RUNS} runs)",
        percentile(&mut start, 50),
        percentile(&mut start, 90),
        percentile(&mut pause, 50),
        percentile(&mut resume, 50),
    );
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn start_latency() {
    if !has_root(NEEDS) {
        return;
    }
    let sb = TestSandbox::new("lat");
    // Warm up the page cache and the cgroup parent.
    sb.start();
    sb.rt.stop(&sb.config).unwrap();
    measure("warm pool of 1", &sb);
    drop(sb);

    // What the user namespace costs: the same start with root = host root.
    let mut sb = TestSandbox::new("latroot");
    sb.config.id_map = None;
    sb.start();
    sb.rt.stop(&sb.config).unwrap();
    measure("warm pool of 1, no user namespace", &sb);
    drop(sb);

    let mut opts = common::options();
    opts.pool_size = 0;
    let sb = TestSandbox::with_options("lat0", opts);
    sb.start();
    sb.rt.stop(&sb.config).unwrap();
    measure("no pool", &sb);
}
