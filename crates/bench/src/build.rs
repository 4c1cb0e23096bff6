//! Dockerfile builds through the CLI (`dwell build`, as a user runs it):
//! the first build of a small Dockerfile on the `host` image (two RUN
//! steps, a COPY and metadata), a rebuild with nothing changed (every step
//! a cache hit, no sandbox started), and a rebuild where the last RUN step
//! changed (only it and the metadata after it run again). The counts of
//! steps and cache hits come from the build's own `done` event, so the
//! table shows what was rebuilt as well as how long it took.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::report::{header, row};
use crate::stats::Samples;

pub struct BuildResults {
    pub first: Samples,
    pub unchanged: Samples,
    pub changed_run: Samples,
    /// Steps and cache hits of the last unchanged rebuild.
    pub unchanged_counts: (usize, usize),
    /// Steps and cache hits of the last rebuild with a changed RUN.
    pub changed_counts: (usize, usize),
}

fn dockerfile(round: &str) -> String {
    format!(
        "FROM host\n\
         RUN mkdir -p /opt/app && echo one > /opt/app/one\n\
         COPY input.txt /opt/app/\n\
         ENV APP=/opt/app\n\
         WORKDIR /opt/app\n\
         RUN cat input.txt one > both && echo {round} >> both\n\
         CMD [\"/bin/cat\", \"/opt/app/both\"]\n"
    )
}

/// One `dwell build --json`; returns its (steps, cached) from `done`.
fn build(dwell: &Path, socket: &Path, dir: &Path, tag: &str) -> Result<(usize, usize)> {
    let out = Command::new(dwell)
        .arg("--socket")
        .arg(socket)
        .args(["build", "--json", "-t", tag])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: dwell.display().to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd: format!("dwell build -t {tag} {}", dir.display()),
            status: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    for line in out.stdout.split(|&b| b == b'\n').rev() {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if v["event"] == "done" {
            let n = |k: &str| v[k].as_u64().unwrap_or(0) as usize;
            return Ok((n("steps"), n("cached")));
        }
    }
    Err(Error::BadAnswer {
        what: "dwell build --json".into(),
        detail: "no done event".into(),
    })
}

fn write(dir: &Path, round: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::Other(format!("write the build context: {e}"));
    std::fs::write(dir.join("Dockerfile"), dockerfile(round)).map_err(io)?;
    std::fs::write(dir.join("input.txt"), b"input\n").map_err(io)
}

/// Runs the case: `warmup` unmeasured first builds, then `n` of each kind.
pub fn run(dwell: &Path, socket: &Path, warmup: usize, n: usize) -> Result<BuildResults> {
    let dir = PathBuf::from(format!("/var/tmp/dwell-bench-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Other(format!("{}: {e}", dir.display())))?;
    let r = run_in(dwell, socket, &dir, warmup, n);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(
    dwell: &Path,
    socket: &Path,
    dir: &Path,
    warmup: usize,
    n: usize,
) -> Result<BuildResults> {
    let tag = format!("bench-build-{}:1", std::process::id());
    let mut r = BuildResults {
        first: Samples::default(),
        unchanged: Samples::default(),
        changed_run: Samples::default(),
        unchanged_counts: (0, 0),
        changed_counts: (0, 0),
    };
    for i in 0..warmup + n {
        // A first build: the first RUN's text is new each round, so
        // nothing after FROM is cached.
        write(dir, &format!("first-{i}"))?;
        let df = dockerfile(&format!("first-{i}")).replace(
            "echo one >",
            &format!("echo one-{}-{i} >", std::process::id()),
        );
        std::fs::write(dir.join("Dockerfile"), df)
            .map_err(|e| Error::Other(format!("write the Dockerfile: {e}")))?;
        let t = Instant::now();
        build(dwell, socket, dir, &tag)?;
        let first = t.elapsed();
        // The same again: every step a cache hit.
        let t = Instant::now();
        let c = build(dwell, socket, dir, &tag)?;
        let unchanged = t.elapsed();
        // Change the last RUN only.
        let df = std::fs::read_to_string(dir.join("Dockerfile"))
            .map_err(|e| Error::Other(format!("read the Dockerfile: {e}")))?
            .replace(
                &format!("echo first-{i} >>"),
                &format!("echo changed-{i} >>"),
            );
        std::fs::write(dir.join("Dockerfile"), df)
            .map_err(|e| Error::Other(format!("write the Dockerfile: {e}")))?;
        let t = Instant::now();
        let d = build(dwell, socket, dir, &tag)?;
        let changed = t.elapsed();
        if i >= warmup {
            r.first.push(first);
            r.unchanged.push(unchanged);
            r.changed_run.push(changed);
            r.unchanged_counts = c;
            r.changed_counts = d;
        }
    }
    let _ = Command::new(dwell)
        .arg("--socket")
        .arg(socket)
        .args(["image", "rm", &tag])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    Ok(r)
}

pub fn render(r: &BuildResults) -> String {
    let mut o = String::new();
    let p50 = |s: &Samples| s.summary().map_or(f64::NAN, |m| m.p50);
    let _ = writeln!(o, "### 9. Dockerfile builds\n");
    let _ = writeln!(
        o,
        "`dwell build` (the CLI, context sent as a tar) of a Dockerfile on the `host` image: \
         FROM, RUN, COPY, ENV, WORKDIR, RUN, CMD. A first build (new RUN text each round), the \
         same build again, then with the last RUN changed.\n"
    );
    header(&mut o);
    row(&mut o, "first build (2 RUN steps in sandboxes)", &r.first);
    row(&mut o, "rebuild, nothing changed", &r.unchanged);
    row(&mut o, "rebuild, last RUN changed", &r.changed_run);
    o.push('\n');
    let u = p50(&r.unchanged);
    let _ = writeln!(
        o,
        "- Unchanged rebuild: {} of {} steps cached, p50 {u:.0} ms (bar: under 1 s: {}).",
        r.unchanged_counts.1,
        r.unchanged_counts.0,
        if u < 1000.0 { "**met**" } else { "**missed**" }
    );
    let _ = writeln!(
        o,
        "- Last RUN changed: {} of {} steps cached (only the changed RUN and the CMD after it \
         ran again).\n",
        r.changed_counts.1, r.changed_counts.0
    );
    o
}
