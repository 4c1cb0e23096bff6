//! The density section of the report, its bars, and the summaries it is
//! made of (create time per tenth of the fill, milestones, per-sandbox
//! means normalised to a 10 s window).

use std::fmt::Write;
use std::time::Duration;

use super::fill::{Fill, Runtime};
use super::start::{Column, Starts};
use super::DensityResults;
use crate::report::{header, row};
use crate::stats::Samples;

/// Bar: an idle gVisor sandbox uses at most this much CPU per 10 s.
pub const IDLE_CPU_BAR_MS: f64 = 2.0;
/// Bar: exec p50 with 100 idle gVisor sandboxes within this factor of the
/// empty node's.
pub const EXEC_RATIO_BAR: f64 = 1.5;
/// Bar: gVisor create to first exec from the warm pool, p50.
pub const WARM_START_BAR_MS: f64 = 100.0;
/// Bar: host memory per idle namespace sandbox at 1,000.
pub const NS_MEMORY_BAR_MIB: f64 = 1.5;
/// The sandbox counts the bars are stated for.
pub const GVISOR_BAR_N: usize = 100;
pub const NS_BAR_N: usize = 1000;

/// Creates of one tenth of the fill (sandboxes `from..=to`, 1-based).
#[derive(Debug, Clone, PartialEq)]
pub struct Tenth {
    pub from: usize,
    pub to: usize,
    pub p50: f64,
    pub max: f64,
}

fn samples(d: &[Duration]) -> Samples {
    let mut s = Samples::default();
    for x in d {
        s.push(*x);
    }
    s
}

/// The creates (in order) cut into ten consecutive groups; fewer when
/// there are fewer than ten creates.
pub fn tenths(d: &[Duration]) -> Vec<Tenth> {
    let n = d.len();
    (0..10)
        .filter_map(|k| {
            let (a, b) = (k * n / 10, (k + 1) * n / 10);
            let m = samples(&d[a..b]).summary()?;
            Some(Tenth {
                from: a + 1,
                to: b,
                p50: m.p50,
                max: m.max,
            })
        })
        .collect()
}

/// The sandbox counts a fill of `n` is reported at: 1, 10, 100, 500,
/// 1000 (those up to `n`) and `n`.
pub fn milestones(n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = [1, 10, 100, 500, 1000]
        .into_iter()
        .filter(|&k| k <= n)
        .collect();
    if n > 0 && v.last() != Some(&n) {
        v.push(n);
    }
    v
}

/// The median of the (up to) `window` creates ending with the `k`-th
/// (1-based): the create time "at k sandboxes", less noisy than one create.
pub fn at(d: &[Duration], k: usize, window: usize) -> Option<f64> {
    if k == 0 || k > d.len() {
        return None;
    }
    let from = k.saturating_sub(window.max(1));
    samples(&d[from..k]).summary().map(|m| m.p50)
}

/// Mean per sandbox of `v`, in the unit of `v`.
pub fn mean(v: &[u64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<u64>() as f64 / v.len() as f64
}

/// CPU nanoseconds over `window` as milliseconds per 10 s.
pub fn ms_per_10s(ns: f64, window: Duration) -> f64 {
    let secs = window.as_secs_f64();
    if secs <= 0.0 {
        return f64::NAN;
    }
    ns / 1e6 * (10.0 / secs)
}

/// Host memory per sandbox: the drop of MemAvailable over the fill.
pub fn host_per_sandbox(f: &Fill) -> f64 {
    (f.host_used_after as f64 - f.host_used_before as f64) / f.created.max(1) as f64
}

/// Host memory per sandbox the other way: the rise of MemAvailable over
/// the teardown (other work on the host moves either; two estimates that
/// agree are worth more than one).
pub fn host_freed_per_sandbox(f: &Fill) -> f64 {
    (f.host_used_after as f64 - f.host_used_end as f64) / f.created.max(1) as f64
}

/// The two host readings disagree: one is negative, or they are more than
/// half of the larger apart (other work on the host moved MemAvailable).
pub fn host_noisy(f: &Fill) -> bool {
    let (a, b) = (host_per_sandbox(f), host_freed_per_sandbox(f));
    a < 0.0 || b < 0.0 || (a - b).abs() > 0.5 * a.max(b)
}

/// Memory per sandbox by the cgroups: the mean usage of a sandbox's memory
/// cgroup plus the daemon's RSS growth per sandbox.
pub fn cgroup_per_sandbox(f: &Fill) -> f64 {
    let daemon = (f.daemon_rss_after as f64 - f.daemon_rss_before as f64) / f.created.max(1) as f64;
    mean(&f.cg_usage) + daemon.max(0.0)
}

fn mib(b: f64) -> String {
    format!("{:.2} MiB", b / 1048576.0)
}

fn p(s: &Samples, f: impl Fn(&crate::stats::Summary) -> f64) -> f64 {
    s.summary().map_or(f64::NAN, |m| f(&m))
}

fn verdict(met: bool) -> &'static str {
    if met {
        "**met**"
    } else {
        "**missed**"
    }
}

/// "" when the fill reached the bar's count, else why the verdict is only
/// indicative.
fn short_of(f: &Fill, n: usize) -> String {
    if f.created >= n {
        String::new()
    } else {
        format!(
            " (measured with {} sandboxes, not the bar's {n})",
            f.created
        )
    }
}

/// The verdict lines of the bars.
pub fn bars(r: &DensityResults) -> Vec<String> {
    let mut v = Vec::new();
    match &r.gvisor {
        Some(g) => {
            let cpu = ms_per_10s(mean(&g.cpu_ns), g.window);
            v.push(format!(
                "An idle gVisor sandbox uses <= {IDLE_CPU_BAR_MS} ms of CPU per 10 s: {} \
                 ({cpu:.1} ms per 10 s, mean of {} sandboxes).",
                verdict(cpu <= IDLE_CPU_BAR_MS),
                g.cpu_ns.len()
            ));
            let (full, empty) = (p(&g.exec_full, |m| m.p50), p(&g.exec_empty, |m| m.p50));
            let ratio = full / empty;
            v.push(format!(
                "{GVISOR_BAR_N} idle gVisor sandboxes leave exec p50 within {EXEC_RATIO_BAR}x of \
                 the empty node: {} ({full:.2} ms vs {empty:.2} ms, {ratio:.2}x){}.",
                verdict(ratio <= EXEC_RATIO_BAR),
                short_of(g, GVISOR_BAR_N)
            ));
        }
        None => v.push(format!(
            "The idle gVisor bars: not measured ({}).",
            r.gvisor_skipped.as_deref().unwrap_or("--density-gvisor 0")
        )),
    }
    match r.starts.as_ref().map(|s| &s.warm) {
        Some(Column::Measured(s)) if s.summary().is_some() => {
            let w = p(s, |m| m.p50);
            v.push(format!(
                "gVisor create to first exec <= {WARM_START_BAR_MS:.0} ms p50 from the warm \
                 pool: {} ({w:.1} ms).",
                verdict(w <= WARM_START_BAR_MS)
            ));
        }
        Some(Column::Measured(_)) => v.push(
            "gVisor create to first exec from the warm pool: **not measured** (the pool never \
             served a create)."
                .into(),
        ),
        Some(Column::NotAvailable(why)) => v.push(format!(
            "gVisor create to first exec from the warm pool: {why}."
        )),
        None => v.push("gVisor create to first exec from the warm pool: not measured.".into()),
    }
    match &r.ns {
        Some(n) => {
            // The larger host reading: noise must not make the bar.
            let host = host_per_sandbox(n).max(host_freed_per_sandbox(n)) / 1048576.0;
            let cg = cgroup_per_sandbox(n) / 1048576.0;
            let noise = if host_noisy(n) {
                format!(
                    "; the host readings disagree ({:.2} MiB over the fill, {:.2} MiB over the \
                     teardown): other work on the machine moved MemAvailable, so the cgroup \
                     figure is the one to trust",
                    host_per_sandbox(n) / 1048576.0,
                    host_freed_per_sandbox(n) / 1048576.0
                )
            } else {
                String::new()
            };
            v.push(format!(
                "{NS_BAR_N} idle namespace sandboxes fit in <= {NS_MEMORY_BAR_MIB} MiB of host \
                 memory each, by both measures: {} ({host:.2} MiB each by MemAvailable, the \
                 larger of its drop over the fill and its rise over the teardown; {cg:.2} MiB by \
                 cgroup usage + daemon growth{noise}){}.",
                verdict(host <= NS_MEMORY_BAR_MIB && cg <= NS_MEMORY_BAR_MIB),
                short_of(n, NS_BAR_N)
            ));
        }
        None => v.push("The namespace memory bar: not measured (--density-ns 0).".into()),
    }
    let fills = [&r.ns, &r.gvisor];
    for f in fills.into_iter().flatten() {
        let clean = f.leftovers.is_empty() && f.delete_errors.is_empty();
        v.push(format!(
            "Teardown of the {} sandboxes leaves nothing: {}{}.",
            f.runtime.label(),
            verdict(clean),
            if clean {
                String::new()
            } else {
                format!(
                    " ({} failed deletes; left: {})",
                    f.delete_errors.len(),
                    f.leftovers.describe()
                )
            }
        ));
    }
    v
}

/// The section.
pub fn render(r: &DensityResults) -> String {
    let mut o = String::new();
    let fills: Vec<&Fill> = [&r.ns, &r.gvisor].into_iter().flatten().collect();
    let _ = writeln!(o, "### 11. Density: idle sandboxes on one node\n");
    if let Some(f) = fills.first() {
        let _ = writeln!(
            o,
            "Per runtime: one unmeasured warm-up sandbox, then sandboxes \
             (`--memory {} --disk {}`) created one by one through the API, each running one \
             `true`, as many as fit up to the number asked (filling stops before the \
             host's MemAvailable falls under 2 GiB or at the first failed create). With all of \
             them idle for {:?} more, a quiet window of {:.1} s with no API traffic, over which \
             each sandbox's cgroup CPU time (cpuacct) and the daemon's own CPU time are read; \
             then exec `true` over one kept-alive connection in the first sandbox (the \
             empty-node figure is the same exec measured right after that sandbox was created, \
             alone on the node) and spread over all of them; then every sandbox deleted one by \
             one, and the host searched for cgroup directories, mounts and loop devices \
             naming any of them.\n",
            f.memory,
            f.disk,
            f.settle,
            f.window.as_secs_f64()
        );
    }
    if !fills.is_empty() {
        table(&mut o, &fills);
        create_table(&mut o, &fills);
    }
    if let Some(s) = &r.starts {
        starts(&mut o, s);
    }
    o.push_str("Bars:\n");
    for b in bars(r) {
        let _ = writeln!(o, "- {b}");
    }
    o.push('\n');
    o
}

fn table(o: &mut String, fills: &[&Fill]) {
    let mut head = String::from("| per runtime |");
    let mut line = String::from("|---|");
    for f in fills {
        let _ = write!(head, " {} |", f.runtime.label());
        line.push_str("---:|");
    }
    let _ = writeln!(o, "{head}\n{line}");
    let mut add = |label: &str, cell: &dyn Fn(&Fill) -> String| {
        let mut l = format!("| {label} |");
        for f in fills {
            let _ = write!(l, " {} |", cell(f));
        }
        let _ = writeln!(o, "{l}");
    };
    add("idle sandboxes made (asked)", &|f| {
        format!("{} ({})", f.created, f.asked)
    });
    add("fill: every create + first exec", &|f| {
        format!("{:.1} s", f.fill_time.as_secs_f64())
    });
    add(
        "creates served by the warm gVisor pool",
        &|f| match (f.runtime, f.pooled_creates) {
            (Runtime::Namespace, _) => "-".into(),
            (_, Some(n)) => n.to_string(),
            (_, None) => "no pool".into(),
        },
    );
    add(
        "host memory / sandbox (MemAvailable drop over the fill)",
        &|f| mib(host_per_sandbox(f)),
    );
    add(
        "host memory / sandbox (MemAvailable rise over the teardown)",
        &|f| mib(host_freed_per_sandbox(f)),
    );
    add("cgroup memory / sandbox (usage, mean)", &|f| {
        mib(mean(&f.cg_usage))
    });
    add("&nbsp;&nbsp;of which anonymous (rss)", &|f| {
        mib(mean(&f.cg_anon))
    });
    add("cgroup usage + daemon RSS growth, per sandbox", &|f| {
        mib(cgroup_per_sandbox(f))
    });
    add("daemon RSS growth / sandbox", &|f| {
        mib((f.daemon_rss_after as f64 - f.daemon_rss_before as f64) / f.created.max(1) as f64)
    });
    add("asleep (cgroup frozen) when the window opened", &|f| {
        format!("{} of {}", f.frozen, f.created)
    });
    add("idle CPU / sandbox per 10 s (cgroup cpuacct, mean)", &|f| {
        format!("{:.2} ms", ms_per_10s(mean(&f.cpu_ns), f.window))
    });
    add("&nbsp;&nbsp;the busiest sandbox", &|f| {
        let max = f.cpu_ns.iter().copied().max().unwrap_or(0) as f64;
        format!("{:.2} ms", ms_per_10s(max, f.window))
    });
    add("all sandboxes together (cores busy)", &|f| {
        let total: u64 = f.cpu_ns.iter().sum();
        format!("{:.3}", total as f64 / 1e9 / f.window.as_secs_f64())
    });
    add("daemon CPU per 10 s", &|f| match f.daemon_cpu_ns {
        Some(ns) => format!("{:.1} ms", ms_per_10s(ns as f64, f.window)),
        None => "?".into(),
    });
    add("exec `true` p50 / p99, empty node", &|f| {
        format!(
            "{:.2} / {:.2} ms",
            p(&f.exec_empty, |m| m.p50),
            p(&f.exec_empty, |m| m.p99)
        )
    });
    add("exec `true` p50 / p99, all running (same sandbox)", &|f| {
        format!(
            "{:.2} / {:.2} ms",
            p(&f.exec_full, |m| m.p50),
            p(&f.exec_full, |m| m.p99)
        )
    });
    add("&nbsp;&nbsp;p50 over the empty node's", &|f| {
        format!(
            "{:.2}x",
            p(&f.exec_full, |m| m.p50) / p(&f.exec_empty, |m| m.p50)
        )
    });
    add("exec `true` p50 / p99, spread over all sandboxes", &|f| {
        format!(
            "{:.2} / {:.2} ms",
            p(&f.exec_spread, |m| m.p50),
            p(&f.exec_spread, |m| m.p99)
        )
    });
    add("teardown: all, one by one", &|f| {
        format!("{:.1} s", f.teardown_total.as_secs_f64())
    });
    add("teardown per sandbox p50 / max", &|f| {
        format!(
            "{:.1} / {:.1} ms",
            p(&f.teardown, |m| m.p50),
            p(&f.teardown, |m| m.max)
        )
    });
    add(
        "the leftover search, run while they were running (finds them)",
        &|f| f.live.counts(),
    );
    add(
        "left behind after teardown (cgroups, mounts, loop devices)",
        &|f| {
            if f.leftovers.is_empty() && f.delete_errors.is_empty() {
                "nothing".into()
            } else {
                format!(
                    "{}; {} failed deletes",
                    f.leftovers.describe(),
                    f.delete_errors.len()
                )
            }
        },
    );
    o.push('\n');
    for f in fills {
        if let Some(why) = &f.stopped {
            let _ = writeln!(o, "- {}: {why}", f.runtime.label());
        }
        for e in f.delete_errors.iter().take(3) {
            let _ = writeln!(o, "- {}: delete failed: {e}", f.runtime.label());
        }
    }
    if fills
        .iter()
        .any(|f| f.stopped.is_some() || !f.delete_errors.is_empty())
    {
        o.push('\n');
    }
}

fn create_table(o: &mut String, fills: &[&Fill]) {
    let _ = writeln!(
        o,
        "Create time (POST /v1/sandboxes alone) as the node fills, per tenth of the fill:\n"
    );
    let mut head = String::from("| tenth |");
    let mut line = String::from("|---|");
    for f in fills {
        let _ = write!(
            head,
            " {0} sandboxes | {0} p50 ms | {0} max ms |",
            f.runtime.label()
        );
        line.push_str("---:|---:|---:|");
    }
    let _ = writeln!(o, "{head}\n{line}");
    let cut: Vec<Vec<Tenth>> = fills.iter().map(|f| tenths(&f.create)).collect();
    for k in 0..10 {
        if cut.iter().all(|c| c.get(k).is_none()) {
            continue;
        }
        let mut l = format!("| {} |", k + 1);
        for c in &cut {
            match c.get(k) {
                Some(t) => {
                    let _ = write!(l, " {}-{} | {:.1} | {:.1} |", t.from, t.to, t.p50, t.max);
                }
                None => l.push_str(" - | - | - |"),
            }
        }
        let _ = writeln!(o, "{l}");
    }
    o.push('\n');
    for f in fills {
        let points: Vec<String> = milestones(f.create.len())
            .into_iter()
            .filter_map(|k| Some(format!("{:.1} ms at {k}", at(&f.create, k, 10)?)))
            .collect();
        let _ = writeln!(
            o,
            "- {}: {} (median of the 10 creates up to that count).",
            f.runtime.label(),
            points.join(", ")
        );
    }
    o.push('\n');
}

fn starts(o: &mut String, s: &Starts) {
    let _ = writeln!(
        o,
        "gVisor create to first exec (`--memory {}`, the warm pool's size when there is one; \
         create, then exec `true`, through the API), \
         cold (a daemon without a warm pool: the second one bench.sh starts with `--gvisor-pool 0`, \
         or the bench daemon if it has none) and warm (the bench daemon's pool; each warm \
         create waits untimed for a ready pooled sandbox, and counts only if the pool's claim \
         counter went up), beside plain `runsc run` of `true` in a hand-written bundle (host \
         root read-only, tmpfs /tmp, the same memory limit) to its exit; {} rounds, the order \
         rotating each round.\n",
        s.memory,
        s.rounds
    );
    header(o);
    let mut col = |label: &str, c: &Column| match c {
        Column::Measured(x) => row(o, label, x),
        Column::NotAvailable(why) => {
            let _ = writeln!(o, "| {label}: {why} | 0 | - | - | - | - | - | - |");
        }
    };
    col("dwell API: gVisor create + first exec, cold", &s.cold);
    col("dwell API: gVisor create + first exec, warm pool", &s.warm);
    row(o, "plain `runsc run` of `true` (floor)", &s.runsc);
    o.push('\n');
    if s.warm_fallbacks > 0 {
        let _ = writeln!(
            o,
            "- {} warm creates found the pool empty and were left out of the warm row.",
            s.warm_fallbacks
        );
    }
    if s.cold_pooled > 0 {
        let _ = writeln!(
            o,
            "- {} cold creates were served by a pool anyway and were left out of the cold row.",
            s.cold_pooled
        );
    }
    if s.warm_fallbacks > 0 || s.cold_pooled > 0 {
        o.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::density::host::Leftovers;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn tenths_cut_in_order() {
        let d = ms(&(1..=100).collect::<Vec<_>>());
        let t = tenths(&d);
        assert_eq!(t.len(), 10);
        assert_eq!((t[0].from, t[0].to), (1, 10));
        assert_eq!((t[9].from, t[9].to), (91, 100));
        assert!((t[0].p50 - 5.0).abs() < 1e-9 && (t[0].max - 10.0).abs() < 1e-9);
        assert!((t[9].p50 - 95.0).abs() < 1e-9);
        // Fewer than ten creates: one group each, none empty.
        let t = tenths(&ms(&[7, 8, 9]));
        assert_eq!(t.len(), 3);
        assert_eq!((t[2].from, t[2].to), (3, 3));
        assert!(tenths(&[]).is_empty());
    }

    #[test]
    fn milestones_and_medians_at_them() {
        assert_eq!(milestones(1000), vec![1, 10, 100, 500, 1000]);
        assert_eq!(milestones(50), vec![1, 10, 50]);
        assert_eq!(milestones(1), vec![1]);
        assert!(milestones(0).is_empty());
        let d = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(at(&d, 1, 10), Some(1.0));
        assert_eq!(at(&d, 100, 10), Some(95.0));
        assert_eq!(at(&d, 101, 10), None);
        assert_eq!(at(&d, 0, 10), None);
    }

    #[test]
    fn cpu_is_normalised_to_ten_seconds() {
        assert!((ms_per_10s(4e6, Duration::from_secs(20)) - 2.0).abs() < 1e-9);
        assert!((ms_per_10s(1e6, Duration::from_secs(10)) - 1.0).abs() < 1e-9);
        assert!(ms_per_10s(1.0, Duration::ZERO).is_nan());
        assert!(mean(&[]).is_nan());
        assert!((mean(&[1, 2, 3]) - 2.0).abs() < 1e-9);
    }

    fn fill(rt: Runtime, n: usize, cpu_ms: u64, exec_empty: u64, exec_full: u64) -> Fill {
        let s = |v: u64| {
            let mut s = Samples::default();
            s.push(Duration::from_millis(v));
            s
        };
        Fill {
            runtime: rt,
            asked: n,
            created: n,
            stopped: None,
            memory: "64M".into(),
            disk: "1G".into(),
            create: ms(&vec![20; n]),
            fill_time: Duration::from_secs(1),
            pooled_creates: None,
            exec_empty: s(exec_empty),
            exec_full: s(exec_full),
            exec_spread: s(exec_full),
            host_used_before: 0,
            host_used_after: n as u64 * (1 << 20),
            host_used_end: 0,
            daemon_rss_before: 0,
            daemon_rss_after: 0,
            cg_usage: vec![1 << 20; n],
            cg_anon: vec![0; n],
            cgroup_parent: "dwell-x".into(),
            settle: Duration::from_secs(3),
            window: Duration::from_secs(10),
            cpu_ns: vec![cpu_ms * 1_000_000; n],
            frozen: 0,
            daemon_cpu_ns: Some(5_000_000),
            teardown_total: Duration::from_secs(1),
            teardown: s(10),
            delete_errors: Vec::new(),
            live: Leftovers::default(),
            leftovers: Leftovers::default(),
            console: None,
        }
    }

    #[test]
    fn bars_say_met_missed_and_not_available() {
        let r = DensityResults {
            ns: Some(fill(Runtime::Namespace, 1000, 0, 2, 2)),
            gvisor: Some(fill(Runtime::Gvisor, 100, 270, 30, 60)),
            gvisor_skipped: None,
            starts: Some(Starts {
                rounds: 1,
                memory: "256M".into(),
                cold: Column::Measured(Samples::default()),
                warm: Column::NotAvailable("not available: no pool".into()),
                warm_fallbacks: 0,
                cold_pooled: 0,
                runsc: Samples::default(),
            }),
            console: None,
        };
        let b = bars(&r);
        assert!(
            b[0].contains("**missed**") && b[0].contains("270.0 ms"),
            "{b:?}"
        );
        assert!(
            b[1].contains("**missed**") && b[1].contains("2.00x"),
            "{b:?}"
        );
        assert!(b[2].contains("not available"), "{b:?}");
        assert!(
            b[3].contains("**met**") && b[3].contains("1.00 MiB"),
            "{b:?}"
        );
        assert!(
            b[4].contains("namespace") && b[4].contains("**met**"),
            "{b:?}"
        );
        let text = render(&r);
        assert!(text.contains("| idle sandboxes made (asked) | 1000 (1000) | 100 (100) |"));
        assert!(text.contains("| 10 | 901-1000 | 20.0 | 20.0 | 91-100 | 20.0 | 20.0 |"));
        assert!(text.contains("warm pool: not available: no pool | 0 |"));
    }

    #[test]
    fn the_larger_host_reading_decides() {
        let mut n = fill(Runtime::Namespace, 1000, 0, 2, 2);
        // 1 MiB each over the fill, 2 MiB each back over the teardown.
        n.host_used_before = 2000 << 20;
        n.host_used_after = 3000 << 20;
        n.host_used_end = 1000 << 20;
        assert!(!host_noisy(&n));
        let r = DensityResults {
            ns: Some(n),
            gvisor: None,
            gvisor_skipped: Some("skipped".into()),
            starts: None,
            console: None,
        };
        let b = bars(&r);
        let line = b
            .iter()
            .find(|l| l.contains("namespace sandboxes fit"))
            .unwrap();
        assert!(
            line.contains("**missed**") && line.contains("2.00 MiB each"),
            "{line}"
        );
        assert!(!line.contains("disagree"), "{line}");
    }

    #[test]
    fn bars_note_a_short_fill_and_leftovers() {
        let mut g = fill(Runtime::Gvisor, 5, 1, 30, 30);
        g.asked = 100;
        g.leftovers.mounts.push("/x/abc".into());
        let r = DensityResults {
            ns: None,
            gvisor: Some(g),
            gvisor_skipped: None,
            starts: None,
            console: None,
        };
        let b = bars(&r);
        assert!(b[0].contains("**met**"), "{b:?}");
        assert!(b[1].contains("measured with 5 sandboxes, not the bar's 100"));
        assert!(b
            .iter()
            .any(|l| l.contains("not measured (--density-ns 0)")));
        assert!(b.last().unwrap().contains("**missed**") && b.last().unwrap().contains("1 mounts"));
    }
}
