//! The machine a run happened on, for the report.

use std::process::Command;

#[derive(Debug, Clone)]
pub struct Machine {
    pub date: String,
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total: String,
    pub os: String,
    pub dwell: String,
    pub bwrap: String,
    pub util_linux: String,
    /// /proc/loadavg when the run started: other work on the machine skews
    /// every number.
    pub load: String,
}

/// The 1, 5 and 15 minute load averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8(out).ok()
        })
        .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

fn field<'a>(text: &'a str, key: &str, sep: char) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(sep)?;
        (k.trim() == key).then(|| v.trim().trim_matches('"'))
    })
}

impl Machine {
    pub fn detect(dwell: &str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        Machine {
            date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            cpu: field(&cpuinfo, "model name", ':')
                .unwrap_or("unknown")
                .to_string(),
            mem_total: field(&meminfo, "MemTotal", ':')
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
                .unwrap_or_else(|| "unknown".into()),
            os: field(&os, "PRETTY_NAME", '=')
                .unwrap_or("unknown")
                .to_string(),
            dwell: first_line(dwell, &["--version"]),
            bwrap: first_line("bwrap", &["--version"]),
            util_linux: first_line("nsenter", &["--version"]),
            load: loadavg(),
        }
    }
}
