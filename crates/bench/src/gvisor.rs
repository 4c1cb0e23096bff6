//! gVisor through dwell vs plain runsc: create to first exec, exec round
//! trip, and hibernate/resume of sandboxes of several sizes (see [`CASES`]),
//! each against `runsc checkpoint` / `runsc restore --detach` of the same
//! workload in a hand-written bundle (the floor). Skipped when runsc is
//! missing or the daemon has no gVisor runtime.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dwell_runtime::gvisor::runsc::{Output, Runsc};
use hyper::Method;

use crate::api::Api;
use crate::error::{Error, Result};
use crate::stats::Samples;

/// The runsc used by the baseline.
pub const RUNSC: &str = "/usr/bin/runsc";
/// Memory limit of the sandboxes of the create and exec cases.
pub const MEMORY: &str = "256M";

/// One hibernate/resume case: a sandbox with this memory limit whose
/// workload keeps `data_mib` MiB of random (incompressible) bytes resident.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// `--memory` of the sandbox.
    pub memory: &'static str,
    /// The limit in bytes, for the floor's bundle.
    pub memory_bytes: u64,
    /// Resident random data, MiB.
    pub data_mib: u64,
}

/// The measured sizes: an idle 256 MiB sandbox (a sleeping python), the
/// same one half full, and a 1 GiB sandbox half full.
pub const CASES: [Case; 3] = [
    Case {
        memory: "256M",
        memory_bytes: 256 << 20,
        data_mib: 0,
    },
    Case {
        memory: "256M",
        memory_bytes: 256 << 20,
        data_mib: 128,
    },
    Case {
        memory: "1G",
        memory_bytes: 1 << 30,
        data_mib: 512,
    },
];

impl Case {
    fn label(&self) -> String {
        format!("{} sandbox, {} MiB resident", self.memory, self.data_mib)
    }
}

/// The workload: `data_mib` MiB of random bytes held in memory, then sleep.
fn workload(data_mib: u64) -> String {
    format!(
        "import os, time\nb = os.urandom({data_mib} << 20)\nopen('/tmp/ready', 'w').write('1')\n\
         while True: time.sleep(1)\n"
    )
}

/// Hibernate and resume of one [`Case`], through dwell and plain runsc.
pub struct CaseResults {
    pub case: Case,
    pub hibernate: Samples,
    pub resume: Samples,
    /// Disk bytes of the saved state (dwell).
    pub state_bytes: u64,
    /// `runsc checkpoint` alone.
    pub runsc_checkpoint: Samples,
    /// `runsc checkpoint` and the `runsc delete --force` that frees the host.
    pub runsc_checkpoint_delete: Samples,
    pub runsc_restore: Samples,
    pub runsc_state_bytes: u64,
}

pub struct GvisorResults {
    pub create: Samples,
    pub exec: Samples,
    pub cases: Vec<CaseResults>,
}

fn name(kind: &str, i: usize) -> String {
    format!("bench-{}-gv{kind}-{i}", std::process::id())
}

pub(crate) async fn create(api: &mut Api, name: &str, memory: &str) -> Result<String> {
    api.create_with(serde_json::json!({ "name": name, "runtime": "gvisor", "memory": memory }))
        .await
}

/// Whether runsc is here and the daemon runs gVisor sandboxes.
pub async fn available(api: &mut Api) -> bool {
    if !Path::new(RUNSC).is_file() {
        eprintln!("dwell-bench: skipping gVisor: {RUNSC} is not installed");
        return false;
    }
    match create(api, &name("probe", 0), MEMORY).await {
        Ok(id) => api.delete(&id).await.is_ok(),
        Err(e) => {
            eprintln!("dwell-bench: skipping gVisor: the daemon cannot run it: {e}");
            false
        }
    }
}

pub async fn run(api: &mut Api, warmup: usize, n: usize, rounds: usize) -> Result<GvisorResults> {
    let mut r = GvisorResults {
        create: Samples::default(),
        exec: Samples::default(),
        cases: Vec::new(),
    };
    for i in 0..warmup + n {
        let t0 = Instant::now();
        let id = create(api, &name("c", i), MEMORY).await?;
        api.exec(&id, &["true"]).await?;
        if i >= warmup {
            r.create.push(t0.elapsed());
        }
        api.delete(&id).await?;
    }
    let id = create(api, &name("e", 0), MEMORY).await?;
    for i in 0..warmup + n * 2 {
        let t = Instant::now();
        api.exec(&id, &["true"]).await?;
        if i >= warmup {
            r.exec.push(t.elapsed());
        }
    }
    api.delete(&id).await?;
    make_subreaper()?;
    for (k, case) in CASES.iter().enumerate() {
        r.cases.push(run_case(api, k, *case, warmup, rounds).await?);
    }
    Ok(r)
}

/// Hibernate and resume `rounds` times through dwell, then the same with
/// plain runsc.
async fn run_case(
    api: &mut Api,
    k: usize,
    case: Case,
    warmup: usize,
    rounds: usize,
) -> Result<CaseResults> {
    let mut r = CaseResults {
        case,
        hibernate: Samples::default(),
        resume: Samples::default(),
        state_bytes: 0,
        runsc_checkpoint: Samples::default(),
        runsc_checkpoint_delete: Samples::default(),
        runsc_restore: Samples::default(),
        runsc_state_bytes: 0,
    };
    let id = create(api, &name("h", k), case.memory).await?;
    let measured = measure_case(api, &id, case, warmup, rounds, &mut r).await;
    // Delete dwell's sandbox whatever happened (the floor's goes on drop).
    let deleted = api.delete(&id).await;
    measured?;
    deleted?;
    Ok(r)
}

/// The rounds of one case on dwell's sandbox `id` and a floor sandbox.
async fn measure_case(
    api: &mut Api,
    id: &str,
    case: Case,
    warmup: usize,
    rounds: usize,
    r: &mut CaseResults,
) -> Result<()> {
    let script = format!(
        "python3 -c \"{}\" > /dev/null 2>&1 &",
        workload(case.data_mib).replace('"', "\\\"")
    );
    api.exec(id, &["sh", "-c", &script]).await?;
    wait_ready(api, id).await?;
    let base = Baseline::new(case)?;
    base.run()?;
    base.wait_ready()?;
    // Both sandboxes live side by side and the rounds alternate which goes
    // first (dwell, floor; floor, dwell; ...), with a `sync` before each
    // half: load that comes and goes, and the writeback of the previous
    // half's image, land on both columns alike.
    for i in 0..warmup + rounds {
        let keep = i >= warmup;
        for dwell_turn in [i % 2 == 0, i % 2 != 0] {
            sync();
            if dwell_turn {
                let t0 = Instant::now();
                let v = api
                    .call(Method::POST, &format!("/v1/sandboxes/{id}/hibernate"), None)
                    .await?;
                let t1 = Instant::now();
                r.state_bytes = v["saved_state_bytes"].as_u64().unwrap_or(0);
                api.resume(id).await?;
                let t2 = Instant::now();
                api.exec(id, &["true"]).await?;
                if keep {
                    r.hibernate.push(t1 - t0);
                    r.resume.push(t2 - t1);
                }
            } else {
                let t0 = Instant::now();
                base.checkpoint()?;
                let t_ckpt = Instant::now();
                base.delete()?;
                let t1 = Instant::now();
                r.runsc_state_bytes = dir_bytes(&base.image());
                base.restore()?;
                let t2 = Instant::now();
                if keep {
                    r.runsc_checkpoint.push(t_ckpt - t0);
                    r.runsc_checkpoint_delete.push(t1 - t0);
                    r.runsc_restore.push(t2 - t1);
                }
            }
        }
    }
    Ok(())
}

/// Flush dirty pages (the images just written) so their writeback does
/// not land on the next measurement.
fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

async fn wait_ready(api: &mut Api, id: &str) -> Result<()> {
    let t = Instant::now();
    while api.exec(id, &["test", "-e", "/tmp/ready"]).await.is_err() {
        if t.elapsed() > Duration::from_secs(60) {
            return Err(Error::Other(
                "the gVisor workload did not fill its memory within 60 s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| std::os::unix::fs::MetadataExt::blocks(&m) * 512)
        .sum()
}

/// Become the subreaper of the baseline's sandboxes, as `dwell serve` is of
/// its own. `runsc run --detach` exits while the sandbox lives on; when the
/// sandbox ends (after a checkpoint) it must be reaped before `runsc delete`
/// sees it gone. Left to the host's init, which may reap late (here it took
/// 1.4 s), the floor would measure the init instead of runsc.
fn make_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments only changes this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::Other(format!(
            "cannot become a child subreaper for the runsc baseline: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The floor's memory limit: the sandbox's plus the headroom dwell gives a
/// checkpoint. The image's page cache is charged to the sandbox's cgroup,
/// and at the bare limit reclaim slowed the floor's checkpoint + delete of
/// the 1 GiB case from about 0.9 s to 1.3 s: a floor must not be slower
/// than what it is the floor of.
fn floor_limit(memory_bytes: u64) -> u64 {
    memory_bytes + dwell_runtime::gvisor::headroom::for_checkpoint(memory_bytes)
}

/// A plain runsc container (host root read-only, tmpfs /tmp) under its own
/// runsc root; deleted with everything it made on drop. Also the floor of
/// the density case's create to first exec ([`Baseline::with_process`]).
pub(crate) struct Baseline {
    dir: PathBuf,
    id: String,
}

impl Baseline {
    fn new(case: Case) -> Result<Baseline> {
        let args = ["python3".to_string(), "-c".into(), workload(case.data_mib)];
        Baseline::with_process("ckpt", &args, floor_limit(case.memory_bytes))
    }

    /// A bundle whose process is `args`, limited to `memory_limit` bytes;
    /// `tag` keeps its directory apart from other baselines of this run.
    pub(crate) fn with_process(tag: &str, args: &[String], memory_limit: u64) -> Result<Baseline> {
        let dir =
            std::env::temp_dir().join(format!("dwell-bench-runsc-{}-{tag}", std::process::id()));
        let bundle = dir.join("bundle");
        std::fs::create_dir_all(&bundle).map_err(|e| Error::Other(format!("{e}")))?;
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/bin:/bin"],
                "cwd": "/"
            },
            "root": {"path": "/", "readonly": true},
            "hostname": "bench",
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs"}
            ],
            "linux": {
                "resources": {"memory": {"limit": memory_limit}},
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}, {"type": "network"}]
            }
        });
        std::fs::write(bundle.join("config.json"), spec.to_string())
            .map_err(|e| Error::Other(format!("writing the baseline bundle: {e}")))?;
        Ok(Baseline {
            dir,
            id: format!("bench-runsc-{}-{tag}", std::process::id()),
        })
    }

    /// `runsc run` in the foreground: returns when the process has exited
    /// and runsc has torn its sandbox down.
    pub(crate) fn run_to_exit(&self) -> Result<()> {
        self.runsc(&["run", "--bundle", &self.bundle(), &self.id])
    }

    fn image(&self) -> PathBuf {
        self.dir.join("image")
    }

    /// Run runsc to its end, the way dwell's runtime does: through
    /// [`dwell_runtime::gvisor::runsc::Runsc`], output to a log file (never
    /// a pipe: `run`/`restore --detach` leave processes behind that inherit
    /// it), reaping the sandbox processes that end meanwhile (see
    /// [`make_subreaper`]).
    fn runsc(&self, args: &[&str]) -> Result<()> {
        let runsc = Runsc {
            binary: RUNSC.into(),
            global: vec![
                "--root".into(),
                self.dir.join("root").display().to_string(),
                "--network=none".into(),
                "--overlay2=none".into(),
            ],
            hide_sysctl_net: false,
        };
        runsc
            .run(
                args,
                Output::Console(&self.dir.join("runsc.log")),
                Duration::from_secs(120),
            )
            .map(drop)
            .map_err(|e| Error::Other(format!("the runsc baseline: {e}")))
    }

    fn bundle(&self) -> String {
        self.dir.join("bundle").display().to_string()
    }

    fn run(&self) -> Result<()> {
        self.runsc(&["run", "--detach", "--bundle", &self.bundle(), &self.id])
    }

    fn wait_ready(&self) -> Result<()> {
        let t = Instant::now();
        while self
            .runsc(&["exec", &self.id, "test", "-e", "/tmp/ready"])
            .is_err()
        {
            if t.elapsed() > Duration::from_secs(60) {
                return Err(Error::Other(
                    "the runsc workload did not fill its memory within 60 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn checkpoint(&self) -> Result<()> {
        let _ = std::fs::remove_dir_all(self.image());
        let image = format!("--image-path={}", self.image().display());
        // The flags dwell's runtime uses (`gvisor::hibernate::CHECKPOINT_FLAGS`).
        self.runsc(&[
            "checkpoint",
            "--compression=none",
            "--exclude-committed-zero-pages",
            &image,
            &self.id,
        ])
    }

    /// Free the host after a checkpoint (the sandbox process exits).
    pub(crate) fn delete(&self) -> Result<()> {
        self.runsc(&["delete", "--force", &self.id])
    }

    fn restore(&self) -> Result<()> {
        let image = format!("--image-path={}", self.image().display());
        self.runsc(&[
            "restore",
            "--detach",
            &image,
            "--bundle",
            &self.bundle(),
            &self.id,
        ])
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.runsc(&["delete", "--force", &self.id]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Target of the issue: resume of a 256 MiB sandbox in at most 300 ms.
pub const RESUME_TARGET_MS: f64 = 300.0;
/// Target of the issue: dwell adds at most 10% to runsc's own numbers.
pub const OVERHEAD_TARGET: f64 = 0.10;

/// The report section.
pub fn render(r: &GvisorResults) -> String {
    use crate::report::{header, row};
    use std::fmt::Write;
    let mut o = String::new();
    let p50 = |s: &Samples| s.summary().map_or(f64::NAN, |m| m.p50);
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let mib = |b: u64| b as f64 / 1048576.0;
    let _ = writeln!(o, "### 5. gVisor: create, exec, hibernate and resume\n");
    let _ = writeln!(
        o,
        "Create and exec: sandboxes with `--isolation gvisor --memory {MEMORY}`. Hibernation: a \
         python process keeps the stated amount of random bytes resident. The floor is plain \
         runsc on the same workload (host root read-only, tmpfs /tmp, the memory limit plus the \
         headroom dwell gives a checkpoint), run by this program as a \
         subreaper the way the daemon runs runsc: `runsc checkpoint` (alone, and with the \
         `delete --force` that frees the host, which a hibernation does too: its floor), and \
         `runsc restore --detach`. Both sandboxes live side by side; rounds alternate which of \
         them goes first, after a `sync`, so both columns see the same machine. Targets: resume <= {RESUME_TARGET_MS:.0} ms for a 256 MiB \
         sandbox; dwell within {:.0}% of runsc's own time.\n",
        OVERHEAD_TARGET * 100.0
    );
    let _ = writeln!(
        o,
        "| sandbox | resume p50 ms | runsc restore p50 ms | dwell over runsc | hibernate p50 ms \
         | runsc checkpoint p50 ms | runsc checkpoint + delete p50 ms | dwell over runsc \
         | state dwell MiB | state runsc MiB |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in &r.cases {
        let (res, floor) = (p50(&c.resume), p50(&c.runsc_restore));
        let over = res / floor - 1.0;
        let target = if c.case.memory_bytes == 256 << 20 {
            format!(
                ", <= {RESUME_TARGET_MS:.0}: {}",
                verdict(res <= RESUME_TARGET_MS)
            )
        } else {
            String::new()
        };
        let (hib, hib_floor) = (p50(&c.hibernate), p50(&c.runsc_checkpoint_delete));
        let hib_over = hib / hib_floor - 1.0;
        let _ = writeln!(
            o,
            "| {} | {res:.0}{target} | {floor:.0} | {:+.0}% ({}) | {hib:.0} | {:.0} \
             | {hib_floor:.0} | {:+.0}% ({}) | {:.1} | {:.1} |",
            c.case.label(),
            over * 100.0,
            verdict(over <= OVERHEAD_TARGET),
            p50(&c.runsc_checkpoint),
            hib_over * 100.0,
            verdict(hib_over <= OVERHEAD_TARGET),
            mib(c.state_bytes),
            mib(c.runsc_state_bytes),
        );
    }
    o.push('\n');
    header(&mut o);
    row(
        &mut o,
        "dwell API: create + first exec `true` (gVisor)",
        &r.create,
    );
    row(&mut o, "dwell API: exec `true` (gVisor)", &r.exec);
    for c in &r.cases {
        let l = c.case.label();
        row(&mut o, &format!("dwell API: hibernate, {l}"), &c.hibernate);
        row(
            &mut o,
            &format!("runsc checkpoint (floor), {l}"),
            &c.runsc_checkpoint,
        );
        row(
            &mut o,
            &format!("runsc checkpoint + delete --force (floor), {l}"),
            &c.runsc_checkpoint_delete,
        );
        row(&mut o, &format!("dwell API: resume, {l}"), &c.resume);
        row(
            &mut o,
            &format!("runsc restore --detach (floor), {l}"),
            &c.runsc_restore,
        );
    }
    o.push('\n');
    o
}
