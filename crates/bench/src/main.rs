//! `dwell-bench`: measures a running dwell daemon side by side with the
//! nearest non-dwell equivalents (bwrap, nsenter, the raw cgroup freezers)
//! in one run, and writes the results into BENCHMARKS.md.
//!
//! Run it through `scripts/bench.sh`, which builds release binaries, starts
//! a private daemon and cleans everything up. Every sandbox this program
//! creates is deleted again, also when a step fails.

mod api;
mod baseline;
mod build;
mod cases;
mod cluster;
mod console;
mod density;
mod e2b;
mod error;
mod gvisor;
mod machine;
mod memory;
mod proxy;
mod pull;
mod report;
mod stats;
mod wake;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use api::Api;
use baseline::{Freezer, FreezerKind};
use error::{Error, Result};

const HELP: &str = "\
dwell-bench: latency and memory of dwell vs bwrap, nsenter and the cgroup freezer

USAGE: dwell-bench --socket PATH --data-dir DIR --dwell PATH --daemon-pid PID [options]

  --socket PATH          the daemon's unix socket
  --data-dir DIR         the daemon's --data-dir (for pid files)
  --dwell PATH           the dwell binary (for the CLI cases)
  --daemon-pid PID       the daemon's pid (for its memory)
  --out FILE             report file [BENCHMARKS.md]
  --iterations N         create-to-first-exec runs through the API [100]
  --exec-iterations N    exec, bwrap, nsenter and freezer runs [200]
  --cli-iterations N     runs of each CLI case [30]
  --pause-iterations N   pause+resume runs through the API [100]
  --idle N               idle sandboxes for the memory case [10]
  --settle-ms MS         idle time before memory is read [2000]
  --warmup N             unmeasured runs before each case [3]
  --gvisor-iterations N  gVisor create and exec runs (0 skips gVisor) [10]
  --gvisor-rounds N      hibernate+resume rounds, dwell and plain runsc, alternating [10]
  --wake-iterations N    wake-on-use rounds per case: exec on a running sandbox,
                         then on a paused one that wakes (0 skips the case) [20]
  --only-gvisor yes      run only the gVisor cases; print them, write nothing
  --only-wake yes        run only the wake-on-use cases; print them, write nothing
  --proxy ADDR           the daemon's --proxy-listen address (skips the proxy case when absent)
  --proxy-domain D       the daemon's --domain [localhost]
  --proxy-iterations N   GETs direct and through the proxy [500]
  --only-proxy yes       run only the port proxy case; print it, write nothing
  --pull-mib N           size of the registry pull case's image (0 skips the case) [100]
  --pull-rounds N        pulls each way, dwell and skopeo, alternating [5]
  --pull-iterations N    create-to-first-exec runs from the pulled and the host image [30]
  --only-pull yes        run only the registry pull case; print it, write nothing
  --build-iterations N   Dockerfile builds of each kind (0 skips the case) [5]
  --only-build yes       run only the build case; print it, write nothing
  --e2b ADDR             the daemon's --e2b-listen address (skips the E2B case when absent)
  --e2b-envd ADDR        the daemon's --e2b-sandbox-listen address
  --e2b-key-file FILE    an API key of the daemon (its admin.key)
  --e2b-iterations N     E2B create+run and dwell create+exec rounds, alternating [30]
  --only-e2b yes         run only the E2B case; print it, write nothing
  --density-ns N         idle namespace sandboxes of the density case (0 skips) [1000]
  --density-gvisor N     idle gVisor sandboxes to aim for, fewer if they do not fit (0 skips) [100]
  --density-memory SIZE  --memory of each density sandbox [64M]
  --density-disk SIZE    --disk of each density sandbox [1G]
  --density-exec N       execs per exec measurement of the density case [100]
  --density-settle-ms MS idle time before the idle-CPU window [5000]
  --density-window-ms MS the idle-CPU window [10000]
  --density-starts N     rounds of gVisor create to first exec, cold / warm / plain runsc (0 skips) [20]
  --cold-socket PATH     a second daemon started with `--gvisor-pool 0` (the cold column)
  --only-density yes     run only the density case; print it, write nothing
  --console ADDR         the daemon's --listen address: the web console's first load and
                         its list of the density case's namespace sandboxes are measured
                         there in headless Chromium (skipped when absent)
  --cluster-direct PATH  the socket of the cluster node that owns the sandboxes (placement
                         puts them there; skips the cluster case when absent)
  --cluster-forwarded PATH  the socket of another node of that cluster (forwards to the owner)
  --cluster-s3 URL       the nodes' --s3-endpoint (raw transfers go there too)
  --cluster-bucket NAME  the bucket of the nodes' --object-store [dwell-bench]
  --cluster-scratch DIR  where the raw transfers' file of random bytes is made [$TMPDIR]
  --cluster-iterations N execs each way, direct and forwarded, alternating [200]
  --cluster-move-mib N   MiB written before each cold move (0 skips the moves) [1024]
  --cluster-move-rounds N  moves (a new sandbox each) and raw transfers [2]
  --only-cluster yes     run only the cluster case; print it, write nothing
";

const PREAMBLE: &str = "# Benchmarks

How fast dwell creates sandboxes, runs commands in them and pauses them, and
what an idle sandbox costs, measured side by side in one run with the
nearest non-dwell equivalents on the same machine.

How to reproduce (as root, needs `bubblewrap` and util-linux):

    scripts/bench.sh

It builds release binaries, starts a private daemon (own `--data-dir` and
`--socket` under a temp dir), runs `dwell-bench`, deletes every sandbox it
made, stops the daemon and rewrites the generated block below. When `dwell
serve` has `--cluster`, it also starts two cluster nodes on a private
PostgreSQL server and a `moto_server` S3 endpoint for the cluster section, and
tears them down the same way. The web console's section measures the console
the daemon serves on its `--listen` address in headless Chromium (Debian's
`chromium` and `chromium-driver`; skipped, saying why, without them).
Percentiles are nearest-rank over the stated number of runs, after 3
unmeasured warm-up runs per case.
";

struct Opts {
    socket: PathBuf,
    data_dir: PathBuf,
    dwell: PathBuf,
    daemon_pid: u32,
    out: PathBuf,
    iterations: usize,
    exec_iterations: usize,
    cli_iterations: usize,
    pause_iterations: usize,
    idle: usize,
    settle: Duration,
    warmup: usize,
    gvisor_iterations: usize,
    gvisor_rounds: usize,
    wake_iterations: usize,
    only_gvisor: bool,
    only_wake: bool,
    proxy: Option<std::net::SocketAddr>,
    proxy_domain: String,
    proxy_iterations: usize,
    only_proxy: bool,
    pull_mib: usize,
    pull_rounds: usize,
    pull_iterations: usize,
    only_pull: bool,
    build_iterations: usize,
    only_build: bool,
    e2b: Option<std::net::SocketAddr>,
    e2b_envd: Option<std::net::SocketAddr>,
    e2b_key_file: Option<PathBuf>,
    e2b_iterations: usize,
    only_e2b: bool,
    density: density::DensityOpts,
    cold_socket: Option<PathBuf>,
    only_density: bool,
    cluster_direct: Option<PathBuf>,
    cluster_forwarded: Option<PathBuf>,
    cluster_s3: Option<String>,
    cluster_bucket: String,
    cluster_scratch: PathBuf,
    cluster_iterations: usize,
    cluster_move_mib: usize,
    cluster_move_rounds: usize,
    only_cluster: bool,
}

fn parse() -> Result<Opts> {
    let mut o = Opts {
        socket: PathBuf::new(),
        data_dir: PathBuf::new(),
        dwell: PathBuf::new(),
        daemon_pid: 0,
        out: PathBuf::from("BENCHMARKS.md"),
        iterations: 100,
        exec_iterations: 200,
        cli_iterations: 30,
        pause_iterations: 100,
        idle: 10,
        settle: Duration::from_millis(2000),
        warmup: 3,
        gvisor_iterations: 10,
        gvisor_rounds: 10,
        wake_iterations: 20,
        only_gvisor: false,
        only_wake: false,
        proxy: None,
        proxy_domain: "localhost".into(),
        proxy_iterations: 500,
        only_proxy: false,
        pull_mib: 100,
        pull_rounds: 5,
        pull_iterations: 30,
        only_pull: false,
        build_iterations: 5,
        only_build: false,
        e2b: None,
        e2b_envd: None,
        e2b_key_file: None,
        e2b_iterations: 30,
        only_e2b: false,
        density: density::DensityOpts::default(),
        cold_socket: None,
        only_density: false,
        cluster_direct: None,
        cluster_forwarded: None,
        cluster_s3: None,
        cluster_bucket: "dwell-bench".into(),
        cluster_scratch: std::env::temp_dir(),
        cluster_iterations: 200,
        cluster_move_mib: 1024,
        cluster_move_rounds: 2,
        only_cluster: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            print!("{HELP}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))?;
        let num = |v: &str| {
            v.parse::<usize>()
                .map_err(|_| Error::Usage(format!("{flag} wants a number, not {v:?}")))
        };
        match flag.as_str() {
            "--socket" => o.socket = value.into(),
            "--data-dir" => o.data_dir = value.into(),
            "--dwell" => o.dwell = value.into(),
            "--daemon-pid" => o.daemon_pid = num(&value)? as u32,
            "--out" => o.out = value.into(),
            "--iterations" => o.iterations = num(&value)?,
            "--exec-iterations" => o.exec_iterations = num(&value)?,
            "--cli-iterations" => o.cli_iterations = num(&value)?,
            "--pause-iterations" => o.pause_iterations = num(&value)?,
            "--idle" => o.idle = num(&value)?.max(1),
            "--settle-ms" => o.settle = Duration::from_millis(num(&value)? as u64),
            "--warmup" => o.warmup = num(&value)?,
            "--gvisor-iterations" => o.gvisor_iterations = num(&value)?,
            "--gvisor-rounds" => o.gvisor_rounds = num(&value)?.max(1),
            "--wake-iterations" => o.wake_iterations = num(&value)?,
            "--only-gvisor" => o.only_gvisor = value == "yes",
            "--only-wake" => o.only_wake = value == "yes",
            "--proxy" => {
                o.proxy = Some(value.parse().map_err(|_| {
                    Error::Usage(format!(
                        "--proxy wants an address like 127.0.0.1:8081, not {value:?}"
                    ))
                })?)
            }
            "--proxy-domain" => o.proxy_domain = value,
            "--only-proxy" => o.only_proxy = value == "yes",
            "--proxy-iterations" => o.proxy_iterations = num(&value)?.max(1),
            "--pull-mib" => o.pull_mib = num(&value)?,
            "--pull-rounds" => o.pull_rounds = num(&value)?.max(1),
            "--pull-iterations" => o.pull_iterations = num(&value)?.max(1),
            "--only-pull" => o.only_pull = value == "yes",
            "--build-iterations" => o.build_iterations = num(&value)?,
            "--only-build" => o.only_build = value == "yes",
            "--e2b" => o.e2b = Some(addr("--e2b", &value)?),
            "--e2b-envd" => o.e2b_envd = Some(addr("--e2b-envd", &value)?),
            "--e2b-key-file" => o.e2b_key_file = Some(value.into()),
            "--e2b-iterations" => o.e2b_iterations = num(&value)?.max(1),
            "--only-e2b" => o.only_e2b = value == "yes",
            "--density-ns" => o.density.ns = num(&value)?,
            "--density-gvisor" => o.density.gvisor = num(&value)?,
            "--density-memory" => o.density.memory = value,
            "--density-disk" => o.density.disk = value,
            "--density-exec" => o.density.exec = num(&value)?.max(1),
            "--density-settle-ms" => o.density.settle = Duration::from_millis(num(&value)? as u64),
            "--density-window-ms" => {
                o.density.window = Duration::from_millis(num(&value)?.max(1) as u64)
            }
            "--density-starts" => o.density.starts = num(&value)?,
            "--cold-socket" => o.cold_socket = Some(value.into()),
            "--only-density" => o.only_density = value == "yes",
            "--console" => o.density.console = Some(addr("--console", &value)?),
            "--cluster-direct" => o.cluster_direct = Some(value.into()),
            "--cluster-forwarded" => o.cluster_forwarded = Some(value.into()),
            "--cluster-s3" => o.cluster_s3 = Some(value),
            "--cluster-bucket" => o.cluster_bucket = value,
            "--cluster-scratch" => o.cluster_scratch = value.into(),
            "--cluster-iterations" => o.cluster_iterations = num(&value)?.max(1),
            "--cluster-move-mib" => o.cluster_move_mib = num(&value)?,
            "--cluster-move-rounds" => o.cluster_move_rounds = num(&value)?.max(1),
            "--only-cluster" => o.only_cluster = value == "yes",
            _ => return Err(Error::Usage(format!("unknown option {flag}"))),
        }
    }
    for (name, missing) in [
        ("--socket", o.socket.as_os_str().is_empty()),
        ("--data-dir", o.data_dir.as_os_str().is_empty()),
        ("--dwell", o.dwell.as_os_str().is_empty()),
        ("--daemon-pid", o.daemon_pid == 0),
    ] {
        if missing {
            return Err(Error::Usage(format!("{name} is required")));
        }
    }
    Ok(o)
}

/// An address option's value.
fn addr(flag: &str, value: &str) -> Result<std::net::SocketAddr> {
    value.parse().map_err(|_| {
        Error::Usage(format!(
            "{flag} wants an address like 127.0.0.1:3000, not {value:?}"
        ))
    })
}

/// The cluster case's nodes when `--cluster-direct` and
/// `--cluster-forwarded` are both given.
fn cluster_target(o: &Opts) -> Result<Option<cluster::ClusterTarget>> {
    match (&o.cluster_direct, &o.cluster_forwarded) {
        (Some(direct), Some(forwarded)) => Ok(Some(cluster::ClusterTarget {
            direct: direct.clone(),
            forwarded: forwarded.clone(),
            s3: o.cluster_s3.clone(),
            bucket: o.cluster_bucket.clone(),
            scratch: o.cluster_scratch.clone(),
        })),
        (None, None) => Ok(None),
        _ => Err(Error::Usage(
            "--cluster-direct and --cluster-forwarded go together".into(),
        )),
    }
}

/// The cluster case's counts.
fn cluster_opts(o: &Opts) -> cluster::ClusterOpts {
    cluster::ClusterOpts {
        warmup: o.warmup,
        iterations: o.cluster_iterations,
        move_mib: o.cluster_move_mib,
        move_rounds: o.cluster_move_rounds,
    }
}

/// The E2B case's target when `--e2b`, `--e2b-envd` and `--e2b-key-file`
/// are all given; the key is sent in its `e2b_` form, as the SDKs send it.
fn e2b_target(o: &Opts) -> Result<Option<e2b::E2bTarget>> {
    let (Some(api), Some(envd), Some(file)) = (o.e2b, o.e2b_envd, &o.e2b_key_file) else {
        return Ok(None);
    };
    let key = std::fs::read_to_string(file).map_err(|e| {
        Error::Usage(format!(
            "cannot read --e2b-key-file {}: {e}",
            file.display()
        ))
    })?;
    let key = key.trim();
    let key = match key.strip_prefix("dwk_") {
        Some(hex) => format!("e2b_{hex}"),
        None => key.to_string(),
    };
    Ok(Some(e2b::E2bTarget { api, envd, key }))
}

fn step(what: &str) {
    eprintln!("dwell-bench: {what}");
}

async fn run(api: &mut Api, o: &Opts) -> Result<report::Results> {
    let start = Instant::now();
    let (w, n) = (o.warmup, o.exec_iterations);
    let machine = machine::Machine::detect(&o.dwell.to_string_lossy());

    step("baselines: bwrap");
    let bwrap = cases::time_command("bwrap", baseline::BWRAP_TRUE, w, n)?;
    step("baselines: nsenter");
    let nsenter = if cases::available("nsenter") && cases::available("unshare") {
        Some(cases::nsenter(w, n)?)
    } else {
        eprintln!("dwell-bench: skipping nsenter: nsenter/unshare not installed");
        None
    };
    step("baselines: cgroup freezers");
    let freezer = |kind| match Freezer::root(kind) {
        Some(_) => cases::freezer(kind, w, n).map(Some),
        None => {
            eprintln!("dwell-bench: skipping the {kind:?} freezer: not on this host");
            Ok(None)
        }
    };
    let freezer_v1 = freezer(FreezerKind::V1)?;
    let freezer_v2 = freezer(FreezerKind::V2)?;

    step("baselines: moving a process into a new cgroup");
    let gap = Duration::from_millis(100);
    let move_n = (n / 4).max(10);
    let move_v1 = cases::optional(baseline::cgroup_move("pids", move_n, gap))?;
    let move_v2 = cases::optional(baseline::cgroup_move("unified", move_n, gap))?;

    step("dwell: create to first exec (API)");
    let create = cases::create_api(api, w, o.iterations).await?;
    step("dwell: create to first exec (CLI)");
    let create_cli = cases::create_cli(api, &o.dwell, &o.socket, w, o.cli_iterations).await?;
    step("dwell: exec round trip");
    let exec = cases::exec_api(api, &o.dwell, &o.socket, w, n, o.cli_iterations).await?;
    let proxy = match o.proxy {
        Some(addr) => {
            step("dwell: port proxy overhead");
            let target = proxy::ProxyTarget {
                addr,
                domain: o.proxy_domain.clone(),
            };
            Some(proxy::run(api, &o.data_dir, &target, w, o.proxy_iterations).await?)
        }
        None => {
            eprintln!("dwell-bench: skipping the port proxy: no --proxy");
            None
        }
    };
    step("dwell: pause + resume");
    let pause = cases::pause_api(api, w, o.pause_iterations).await?;
    step("dwell: idle memory");
    let idle = cases::idle(api, &o.data_dir, o.daemon_pid, o.idle, o.settle).await?;
    let has_gvisor = o.gvisor_iterations > 0 && gvisor::available(api).await;
    let gvisor = if has_gvisor {
        step("gVisor: create, exec, hibernate/resume, plain runsc");
        Some(gvisor::run(api, w.min(1), o.gvisor_iterations, o.gvisor_rounds).await?)
    } else {
        None
    };
    let wake = if o.wake_iterations > 0 {
        step("dwell: wake on use (exec on a paused or hibernated sandbox)");
        Some(wake::run(api, has_gvisor, w, o.wake_iterations, o.gvisor_rounds).await?)
    } else {
        None
    };

    let pull = if o.pull_mib > 0 && pull::available() {
        step("dwell: registry pull vs skopeo, create from a pulled image");
        Some(pull::run(api, o.pull_mib, o.pull_rounds, w, o.pull_iterations).await?)
    } else {
        None
    };

    let build = if o.build_iterations > 0 {
        step("dwell: Dockerfile builds (first, unchanged, one RUN changed)");
        Some(build::run(
            &o.dwell,
            &o.socket,
            w.min(1),
            o.build_iterations,
        )?)
    } else {
        None
    };

    let e2b = match e2b_target(o)? {
        Some(t) => {
            step("dwell: E2B create to first command vs dwell create + exec");
            Some(e2b::run(api, &t, w, o.e2b_iterations).await?)
        }
        None => {
            eprintln!("dwell-bench: skipping the E2B case: no --e2b/--e2b-envd/--e2b-key-file");
            None
        }
    };

    let density = if o.density.ns + o.density.gvisor + o.density.starts > 0 {
        step("density: idle sandboxes per node");
        Some(run_density(api, o).await?)
    } else {
        None
    };

    let cluster = match cluster_target(o)? {
        Some(t) => {
            step("cluster: forwarded exec, cold moves vs raw S3 transfers");
            Some(cluster::run(&t, &cluster_opts(o)).await?)
        }
        None => {
            eprintln!(
                "dwell-bench: skipping the cluster case: no --cluster-direct/--cluster-forwarded"
            );
            None
        }
    };

    Ok(report::Results {
        cluster,
        density,
        e2b,
        pull,
        build,
        machine,
        create,
        create_cli,
        bwrap,
        move_v1,
        move_v2,
        exec,
        nsenter,
        pause,
        freezer_v1,
        freezer_v2,
        idle,
        gvisor,
        wake,
        proxy,
        elapsed_s: start.elapsed().as_secs_f64(),
        load_after: machine::loadavg(),
    })
}

/// The density case, with the pool-less daemon of `--cold-socket` if given.
async fn run_density(api: &mut Api, o: &Opts) -> Result<density::DensityResults> {
    let mut cold = o.cold_socket.as_deref().map(Api::new);
    density::run(
        api,
        cold.as_mut(),
        &o.density,
        o.daemon_pid,
        o.warmup.min(1),
    )
    .await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("dwell-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut api = Api::new(&o.socket);
    if o.only_gvisor {
        let r = if gvisor::available(&mut api).await {
            gvisor::run(
                &mut api,
                o.warmup.min(1),
                o.gvisor_iterations,
                o.gvisor_rounds,
            )
            .await
        } else {
            Err(Error::Other("gVisor is not available (see above)".into()))
        };
        let leftovers = api.delete_all().await;
        match r {
            Ok(r) => print!("{}", gvisor::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(if leftovers.is_empty() { 0 } else { 1 });
    }
    if o.only_wake {
        let has_gvisor = gvisor::available(&mut api).await;
        let r = wake::run(
            &mut api,
            has_gvisor,
            o.warmup,
            o.wake_iterations.max(1),
            o.gvisor_rounds,
        )
        .await;
        let leftovers = api.delete_all().await;
        match r {
            Ok(r) => print!("{}", wake::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(if leftovers.is_empty() { 0 } else { 1 });
    }
    if o.only_density {
        let r = run_density(&mut api, &o).await;
        let leftovers = api.delete_all().await;
        for e in &leftovers {
            eprintln!("dwell-bench: cleanup: {e}");
        }
        let console_failed = match r {
            Ok(r) => {
                print!("{}", density::render::render(&r));
                let c = report::console_of(Some(&r));
                print!("{}", console::render(&c));
                c.failure().is_some()
            }
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        };
        std::process::exit(if leftovers.is_empty() && !console_failed {
            0
        } else {
            1
        });
    }
    if o.only_cluster {
        let r = match cluster_target(&o) {
            Ok(Some(t)) => cluster::run(&t, &cluster_opts(&o)).await,
            Ok(None) => Err(Error::Usage(
                "--only-cluster needs --cluster-direct and --cluster-forwarded (scripts/bench.sh \
                 gives them when `dwell serve --help` lists --cluster)"
                    .into(),
            )),
            Err(e) => Err(e),
        };
        match r {
            Ok(r) => {
                print!("{}", cluster::render(&r));
                if let Some(e) = r.failure() {
                    eprintln!("dwell-bench: cluster: a move failed: {e}");
                    std::process::exit(1);
                }
            }
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(0);
    }
    if o.only_e2b {
        let r = match e2b_target(&o) {
            Ok(Some(t)) => e2b::run(&mut api, &t, o.warmup, o.e2b_iterations).await,
            Ok(None) => Err(Error::Usage(
                "--only-e2b needs --e2b, --e2b-envd and --e2b-key-file".into(),
            )),
            Err(e) => Err(e),
        };
        let leftovers = api.delete_all().await;
        match r {
            Ok(r) => print!("{}", e2b::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(if leftovers.is_empty() { 0 } else { 1 });
    }
    if o.only_build {
        match build::run(
            &o.dwell,
            &o.socket,
            o.warmup.min(1),
            o.build_iterations.max(1),
        ) {
            Ok(r) => print!("{}", build::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(0);
    }
    if o.only_pull {
        let r = if pull::available() {
            pull::run(
                &mut api,
                o.pull_mib.max(1),
                o.pull_rounds,
                o.warmup,
                o.pull_iterations,
            )
            .await
        } else {
            Err(Error::Other("docker-registry or skopeo is missing".into()))
        };
        let leftovers = api.delete_all().await;
        match r {
            Ok(r) => print!("{}", pull::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(if leftovers.is_empty() { 0 } else { 1 });
    }
    if o.only_proxy {
        let Some(addr) = o.proxy else {
            eprintln!("dwell-bench: --only-proxy needs --proxy ADDR");
            std::process::exit(2);
        };
        let target = proxy::ProxyTarget {
            addr,
            domain: o.proxy_domain.clone(),
        };
        let r = proxy::run(&mut api, &o.data_dir, &target, o.warmup, o.proxy_iterations).await;
        let leftovers = api.delete_all().await;
        match r {
            Ok(r) => print!("{}", proxy::render(&r)),
            Err(e) => {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
        }
        std::process::exit(if leftovers.is_empty() { 0 } else { 1 });
    }
    let result = run(&mut api, &o).await;
    // Whatever happened, leave no sandbox behind.
    let leftovers = api.delete_all().await;
    for e in &leftovers {
        eprintln!("dwell-bench: cleanup: {e}");
    }
    match result {
        Ok(r) => {
            let block = report::render(&r);
            print!("{block}");
            if let Err(e) = report::write(&o.out, &block, PREAMBLE) {
                eprintln!("dwell-bench: {e}");
                std::process::exit(1);
            }
            eprintln!("dwell-bench: wrote {}", o.out.display());
            // Written, so the rest of the run is kept, but not a success.
            if let Some(e) = r.cluster.as_ref().and_then(|c| c.failure()) {
                eprintln!("dwell-bench: cluster: a move failed (see section 12): {e}");
                std::process::exit(1);
            }
            if let Some(e) = report::console_of(r.density.as_ref()).failure() {
                eprintln!("dwell-bench: console: the measurement failed (see section 13): {e}");
                std::process::exit(1);
            }
            if !leftovers.is_empty() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("dwell-bench: {e}");
            std::process::exit(1);
        }
    }
}
