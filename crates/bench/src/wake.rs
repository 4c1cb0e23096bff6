//! Wake on use: what an exec costs when it has to resume the sandbox first
//! (the sandbox's `auto_resume` policy on), against the same exec on the
//! running sandbox. Rounds alternate: an exec on the running sandbox, then
//! the sandbox is put to sleep (untimed), then the exec that wakes it; the
//! wake-up cost is the difference of the medians. Cases: the namespace
//! runtime paused (cgroup freezer), and gVisor paused (`runsc pause`) and
//! hibernated (memory saved to disk, restored by the wake).

use std::fmt::Write;
use std::time::Instant;

use hyper::Method;

use crate::api::Api;
use crate::error::Result;
use crate::report::{header, row};
use crate::stats::Samples;

/// One runtime and way of sleeping.
pub struct WakeCase {
    pub label: &'static str,
    /// Exec of `true` on the running sandbox.
    pub running: Samples,
    /// Exec of `true` that wakes the sleeping sandbox and runs.
    pub woken: Samples,
}

pub struct WakeResults {
    pub cases: Vec<WakeCase>,
}

/// A sandbox of `runtime` (`None`: the daemon's default) that wakes on use.
async fn create(api: &mut Api, name: &str, runtime: Option<&str>) -> Result<String> {
    let mut body = serde_json::json!({ "name": name, "policies": { "auto_resume": true } });
    if let Some(r) = runtime {
        body["runtime"] = r.into();
    }
    api.create_with(body).await
}

/// `rounds` rounds of one case (after `warmup` unmeasured ones); `sleep`
/// is the lifecycle call that puts the sandbox to sleep (`pause`,
/// `hibernate`).
async fn case(
    api: &mut Api,
    label: &'static str,
    runtime: Option<&str>,
    sleep: &str,
    warmup: usize,
    rounds: usize,
) -> Result<WakeCase> {
    let name = format!(
        "bench-{}-wake-{sleep}-{}",
        std::process::id(),
        runtime.unwrap_or("default")
    );
    let id = create(api, &name, runtime).await?;
    let mut r = WakeCase {
        label,
        running: Samples::default(),
        woken: Samples::default(),
    };
    for i in 0..warmup + rounds {
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        let running = t.elapsed();
        api.call(Method::POST, &format!("/v1/sandboxes/{id}/{sleep}"), None)
            .await?;
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        let woken = t.elapsed();
        if i >= warmup {
            r.running.push(running);
            r.woken.push(woken);
        }
    }
    api.delete(&id).await?;
    Ok(r)
}

/// Every case: the namespace runtime paused with `n` rounds, and with
/// `gvisor`, gVisor paused (`n` rounds) and hibernated (`hibernate_rounds`).
pub async fn run(
    api: &mut Api,
    gvisor: bool,
    warmup: usize,
    n: usize,
    hibernate_rounds: usize,
) -> Result<WakeResults> {
    let mut cases = vec![
        case(
            api,
            "namespace runtime, paused (cgroup freezer)",
            Some("ns"),
            "pause",
            warmup,
            n,
        )
        .await?,
    ];
    if gvisor {
        cases.push(
            case(
                api,
                "gVisor, paused (runsc pause)",
                Some("gvisor"),
                "pause",
                warmup,
                n,
            )
            .await?,
        );
        cases.push(
            case(
                api,
                "gVisor, hibernated (memory on disk)",
                Some("gvisor"),
                "hibernate",
                warmup.min(1),
                hibernate_rounds,
            )
            .await?,
        );
    }
    Ok(WakeResults { cases })
}

pub fn render(r: &WakeResults) -> String {
    let mut o = String::new();
    let p50 = |s: &Samples| s.summary().map_or(f64::NAN, |m| m.p50);
    let _ = writeln!(o, "### 6. Wake on use (auto-resume)\n");
    let _ = writeln!(
        o,
        "An exec of `true` through the API on a sandbox with `auto_resume` on, running and \
         then asleep (rounds alternate: exec on the running sandbox, pause or hibernate it \
         untimed, the exec that wakes it). The wake-up cost is the difference of the medians: \
         what a user waits for beyond an ordinary exec when the sandbox was asleep.\n"
    );
    header(&mut o);
    for c in &r.cases {
        row(&mut o, &format!("{}: exec, running", c.label), &c.running);
        row(&mut o, "&nbsp;&nbsp;exec that wakes it", &c.woken);
    }
    o.push('\n');
    for c in &r.cases {
        let _ = writeln!(
            o,
            "- {}: wake-up cost {:.2} ms (p50 {:.2} - {:.2}).",
            c.label,
            p50(&c.woken) - p50(&c.running),
            p50(&c.woken),
            p50(&c.running)
        );
    }
    o.push('\n');
    o
}
