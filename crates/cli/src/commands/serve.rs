//! `dwell serve`: the daemon. Wires the layers of DESIGN.md together:
//! store (SQLite) -> storage (volumes, images) -> runtime (namespaces) ->
//! control (reconciler) -> api (unix socket, optional TCP with API keys).
//!
//! Stopping the daemon (or killing it) never stops sandboxes: on the next
//! start the reconciler adopts them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use dwell_control::{Controller, ControllerOptions};
use dwell_runtime::ns::{NamespaceRuntime, NsOptions};
use dwell_storage::{ImageStore, VolumeManager};
use dwell_store::{ApiKey, Store};

use crate::cli::ServeArgs;
use crate::commands::listener;

/// Where the default daemon keeps its state; other data dirs get their own
/// cgroup parent so daemons side by side never touch each other's sandboxes.
const DEFAULT_DATA_DIR: &str = "/var/lib/dwell";

pub async fn run(mut a: ServeArgs, socket: PathBuf) -> Result<i32> {
    init_logging();
    if unsafe { libc::geteuid() } != 0 {
        bail!("dwell serve needs root: the namespace runtime creates mounts, cgroups and loop devices (run it with sudo)");
    }
    // Flags are checked before anything is made.
    let console = console_settings(&a)?;
    let recheck = Duration::from_millis(a.credential_recheck);
    // Sandboxes' PID 1s are reparented to the daemon when their boot
    // process exits, so that stopping one can reap it (hosts whose init is
    // slow to reap orphans would otherwise keep zombies). They are not tied
    // to the daemon's life: when it dies they move on to the host's init.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Everything the daemon writes is its own: volumes, configs with the
    // environment, the database, keys, snapshot chunks. Sandboxes get 022
    // back (the boot child and the agent set it).
    // SAFETY: umask only changes this process's file creation mask.
    unsafe { libc::umask(0o077) };
    let data_dir = prepare_dir(&a.data_dir)?;
    // Before anything reads or changes the data dir: one daemon per data
    // dir, and none on a socket another daemon serves.
    let _lock = super::data_lock::acquire(&data_dir)?;
    refuse_a_served_socket(&socket).await?;
    super::private::narrow_existing(&data_dir);
    let agent = install_agent(&data_dir, a.agent.as_deref())?;
    let joining = a
        .cluster
        .joining(&data_dir, a.snapshot_store.object_store.as_deref())?;
    // The cluster's secret is checked before anything else of the cluster.
    let cluster_tls = match &joining {
        Some(j) => Some(Arc::new(
            dwell_cluster::ClusterTls::from_secret_file(&j.secret_file, &j.options.node)
                .context("--cluster-secret-file")?,
        )),
        None => None,
    };
    let store = match &joining {
        Some(j) => Store::postgres_with_ca(&j.url, j.ca.as_deref())?,
        None => Store::open(&data_dir.join("dwell.db"))?,
    };
    let default_policies = {
        let args = a.default_policies.to_args();
        // Validate now: a typo must stop the daemon, not every create.
        args.apply(&mut dwell_control::policy::Policies::default())
            .context("bad --default-* policy")?;
        args
    };
    let default_egress = dwell_runtime::host::egress::EgressRules {
        allow: a.allow_out.clone(),
        deny: a.deny_out.clone(),
        precedence: Default::default(),
    };
    dwell_runtime::host::egress::Policy::compile(&default_egress)
        .map_err(|e| anyhow::anyhow!("bad --allow-out/--deny-out: {e}"))?;
    let dns = dns_resolver(&a.dns_upstream)?;
    let snapshot_settings = a.snapshot_store.settings(&data_dir)?;
    let limits = listener::Limits::from_flags(a.max_connections, &a.header_timeout)?;
    let proxy_tls = super::serve_proxy::tls_config(&a)?;
    let daemon_limits = super::limits::from_flags(&a.limits, &data_dir)?;
    let cgroup_parent = cgroup_parent(&data_dir);
    let exe = std::env::current_exe().context("cannot find this binary's path")?;
    let runtime = Arc::new(NamespaceRuntime::new(NsOptions {
        cgroup_parent: cgroup_parent.clone(),
        deny_net: a.deny_net.clone(),
        user_namespaces: a.user_namespaces == "on",
        ..NsOptions::new(exe, vec!["__ns-boot".into()])
    })?);
    // From here on, however `serve` ends (a bad flag, a busy port, or a
    // shutdown), the warm pool stops and empty cgroup parents go.
    let mut _parents = CgroupParents {
        runtime: runtime.clone(),
        gvisor: super::runtimes::gvisor_cgroup_parent(&cgroup_parent),
        gvisor_runtime: None,
    };
    let gvisor_pool = dwell_runtime::gvisor::pool::PoolOptions {
        size: a.gvisor_pool,
        memory_bytes: dwell_control::size::parse_size(&a.gvisor_pool_memory)
            .map_err(|e| anyhow::anyhow!("--gvisor-pool-memory: {e}"))?,
        refill_delay: humantime::parse_duration(&a.gvisor_pool_refill_delay).with_context(
            || {
                format!(
                    "--gvisor-pool-refill-delay {:?} is not a duration; write it like 0s or 200ms",
                    a.gvisor_pool_refill_delay
                )
            },
        )?,
        agent: Some(agent.clone()),
        ..dwell_runtime::gvisor::pool::PoolOptions::disabled(&data_dir.join("runsc"))
    };
    let gvisor = super::runtimes::gvisor(
        &data_dir,
        &cgroup_parent,
        &a.runsc,
        a.gvisor_platform,
        &a.deny_net,
        gvisor_pool,
    );
    _parents.gvisor_runtime = gvisor.as_ref().ok().cloned();
    let default_isolation = super::runtimes::default_isolation(&a.default_isolation, &gvisor)?;
    let volumes = VolumeManager::new(data_dir.join("volumes")).with_pool(
        a.volume_pool as usize,
        daemon_limits.ceilings.default_disk(),
    );
    let images = ImageStore::open(data_dir.join("images"))?;
    let ctl = Controller::new(ControllerOptions {
        data_dir: data_dir.clone(),
        store,
        runtimes: vec![
            (dwell_runtime::Kind::Namespace, Ok(runtime.clone() as _)),
            (
                dwell_runtime::Kind::Gvisor,
                gvisor.map(|g| g as Arc<dyn dwell_runtime::Runtime>),
            ),
        ],
        default_isolation,
        volumes,
        images,
        agent_binary: agent,
        resync_every: Duration::from_secs(a.resync_secs.max(1)),
        clock: Arc::new(dwell_control::clock::SystemClock),
        default_policies,
        prices: dwell_control::metering::Prices {
            vcpu_hour: a.price_vcpu_hour,
            memory_gib_hour: a.price_memory_gib_hour,
            storage_gib_hour: a.price_storage_gib_hour,
        },
        snapshots: {
            let flags = a.snapshot_store.clone();
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || flags.open(&dir)).await??
        },
        snapshot_settings,
        limits: daemon_limits,
        dns: Some(dns),
        default_egress,
        audit_retention: humantime::parse_duration(&a.audit_retention).with_context(|| {
            format!(
                "--audit-retention {:?} is not a duration; write it like 90d",
                a.audit_retention
            )
        })?,
    });
    ctl.set_doze_after(parse_doze_after(&a.doze_after)?);
    ctl.set_backup_settings(dwell_control::backup::BackupSettings {
        min_every: humantime::parse_duration(&a.min_backup_every)
            .ok()
            .filter(|d| *d >= std::time::Duration::from_secs(1))
            .with_context(|| {
                format!(
                    "--min-backup-every {:?} is not a duration of 1s or more; write it like 1m",
                    a.min_backup_every
                )
            })?,
        on_node_loss: dwell_control::backup::OnNodeLoss::parse(&a.on_node_loss)
            .map_err(|e| anyhow::anyhow!("--on-node-loss: {e}"))?,
    });
    // However `serve` ends, the pooled volumes are deleted.
    let _volume_pool = VolumePool(ctl.clone());
    {
        let mut reg = dwell_control::registry::RegistrySettings {
            parallel: a.pull_parallel.max(1),
            ..Default::default()
        };
        for m in &a.registry_mirror {
            reg.add_mirror(m)
                .map_err(|e| anyhow::anyhow!("--registry-mirror: {e}"))?;
        }
        reg.insecure.extend(a.insecure_registry.iter().cloned());
        reg.allowed = a.allowed_registries.as_ref().map(|v| {
            v.iter()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect()
        });
        ctl.set_registry_settings(reg);
        ctl.set_build_limits(dwell_control::build::BuildLimits {
            per_tenant: a.max_builds_per_tenant as usize,
            timeout: std::time::Duration::from_secs(a.build_timeout),
        });
        // Pulled layers are shared with other daemons through the object
        // store, when snapshots go to one.
        if a.snapshot_store.object_store.is_some() {
            ctl.set_image_share(Some(ctl.snapshot_store()));
        }
    }
    // Private networks' peers answer by name through the sandboxes' resolver.
    if let Some(dns) = ctl.dns() {
        dns.set_peer_names(Arc::new(ctl.peer_names()));
    }
    // Build the default image (and host-user, E2B's base, on it) now, not
    // on the first create.
    {
        let ctl = ctl.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = ctl.images().host() {
                tracing::warn!("cannot build the default image: {e}");
            } else if let Err(e) = ctl.images().host_user() {
                tracing::warn!("cannot build the host-user image: {e}");
            }
        });
    }
    if let Some(j) = &joining {
        ctl.join_cluster(j.options.clone())
            .await
            .with_context(|| format!("cannot join the cluster as node {}", j.options.node))?;
    }
    ctl.start_background().await;

    // Every TCP listener is bound before the unix socket appears, so that a
    // client (or a supervisor) that reaches the socket finds the whole
    // daemon up, and a busy port stops the start before anyone connects.
    let mut tasks = tokio::task::JoinSet::new();
    // In a cluster: the node listener (other nodes only, mutual TLS), and
    // the forwarding of requests that another node serves.
    // (It is served once the other planes' routers exist.)
    let mut node_listener = None;
    let mut ssh_remote = None;
    let forward = match (&joining, &cluster_tls) {
        (Some(j), Some(tls)) => {
            let tcp = listener::bind(&j.listen, "--node-listen").await?;
            tracing::info!(
                "node {} of cluster {}: serving other nodes on {} (advertised as {})",
                j.options.node,
                tls.cluster_id(),
                j.listen,
                j.options.advertise
            );
            let forwarder = dwell_cluster::Forwarder::new(tls.clone());
            ssh_remote = Some(super::serve_planes::ssh_remote(forwarder.clone()));
            node_listener = Some((tcp, tls.clone(), j.options.node.clone()));
            Some(forward_fn(forwarder))
        }
        _ => None,
    };
    let state = dwell_api::AppState {
        ctl: ctl.clone(),
        forward: forward.clone(),
        console: console.into(),
        recheck,
    };
    let unix_app = dwell_api::unix_router_in(state.clone());
    if let Some(addr) = &a.listen {
        ensure_admin_key(&ctl, &data_dir)?;
        let tcp = listener::bind(addr, "--listen").await?;
        tracing::info!("also serving on http://{addr} (API key required; the web console at /ui/)");
        // The console's files need no key; everything it does goes through
        // the API's routes, with the session cookie it logs in to.
        let app = dwell_api::tcp_router_in(state).merge(dwell_console::router());
        tasks.spawn(listener::serve_http(tcp, app, "--listen", limits));
    }
    // Before the E2B listeners: the E2B domain defaults to the proxy's;
    // after them, the proxy serves their routers too.
    let proxy = crate::commands::serve_proxy::prepare(&mut a, &ctl, limits, proxy_tls).await?;
    let e2b = crate::commands::serve_e2b::spawn(&a, &ctl, &data_dir, limits, &forward, &mut tasks)
        .await?;
    let proxy = proxy.and_then(|p| p.spawn(&ctl, &e2b, forward.clone(), &mut tasks));
    if let Some((tcp, tls, node)) = node_listener {
        let planes = super::serve_planes::Planes {
            e2b: e2b.node_api,
            envd: e2b.node_envd,
            proxy,
        };
        let rest = dwell_api::node_router(ctl.clone(), forward.clone(), recheck);
        tasks.spawn(dwell_cluster::serve_nodes(
            tcp,
            tls,
            super::serve_planes::node_router(ctl.clone(), rest, planes, &node),
            shutdown(),
        ));
    }
    if let Some(addr) = &a.ssh_listen {
        let idle_timeout = humantime::parse_duration(&a.ssh_idle_timeout).with_context(|| {
            format!(
                "--ssh-idle-timeout {:?} is not a duration; write it like 1h",
                a.ssh_idle_timeout
            )
        })?;
        let login_grace = humantime::parse_duration(&a.ssh_login_grace).with_context(|| {
            format!(
                "--ssh-login-grace {:?} is not a duration; write it like 20s",
                a.ssh_login_grace
            )
        })?;
        anyhow::ensure!(
            !login_grace.is_zero() && a.ssh_max_startups > 0 && a.ssh_max_startups_per_ip > 0,
            "--ssh-login-grace, --ssh-max-startups and --ssh-max-startups-per-ip must be more \
             than zero (nobody could log in); the defaults are 20s, 64 and 10"
        );
        let host = dwell_ssh::host_key::load_or_create(&data_dir)?;
        let tcp = listener::bind(addr, "--ssh-listen").await?;
        tracing::info!(
            "also serving SSH on {addr}, host key {} ({})",
            host.fingerprint(),
            host.path.display()
        );
        let opts = dwell_ssh::Options {
            max_connections: a.ssh_max_connections,
            idle_timeout,
            login_grace,
            max_startups: a.ssh_max_startups,
            max_startups_per_ip: a.ssh_max_startups_per_ip,
            remote: ssh_remote,
        };
        tasks.spawn(dwell_ssh::serve(tcp, ctl.clone(), host, opts, shutdown()));
    }
    let unix = bind_unix(&socket).await?;
    tracing::info!(
        "dwell {} serving on {} (data dir {}, cgroup parent {cgroup_parent})",
        env!("CARGO_PKG_VERSION"),
        socket.display(),
        data_dir.display()
    );
    tasks.spawn(async move {
        axum::serve(unix, unix_app)
            .with_graceful_shutdown(shutdown())
            .await
    });
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped; sandboxes keep running and are adopted on the next start");
    Ok(0)
}

/// Requests for other nodes, sent with `fwd`; a node that cannot be
/// reached is a 502 that names it.
fn forward_fn(fwd: dwell_cluster::Forwarder) -> dwell_api::forward::ForwardFn {
    Arc::new(move |to: dwell_control::controller::Elsewhere, req| {
        let fwd = fwd.clone();
        Box::pin(async move {
            match fwd.forward(&to.node, &to.advertise, req).await {
                Ok(r) => r,
                Err(e) => dwell_api::forward::unreachable(&to.node, &e.failure.to_string()),
            }
        })
    })
}

/// The daemon's cgroup parents (namespace and gVisor), removed when
/// `serve` ends, together with the warm pool. A parent that still holds a
/// running sandbox's cgroups cannot be removed (`rmdir` of a non-empty
/// cgroup fails) and stays for the next start to adopt.
struct CgroupParents {
    runtime: Arc<NamespaceRuntime>,
    gvisor: String,
    /// Its warm pool's waiting sandboxes go before the parent.
    gvisor_runtime: Option<Arc<dwell_runtime::gvisor::GvisorRuntime>>,
}

impl Drop for CgroupParents {
    fn drop(&mut self) {
        self.runtime.shutdown_pool();
        if let Some(g) = &self.gvisor_runtime {
            g.shutdown_pool();
        }
        self.runtime.remove_cgroup_parent();
        dwell_runtime::gvisor::remove_cgroup_parent(&self.gvisor);
    }
}

/// Drains the pool of ready volumes when `serve` ends (they belong to no
/// sandbox; a crash leaves them to the next start, which removes them).
struct VolumePool(Controller);

impl Drop for VolumePool {
    fn drop(&mut self) {
        self.0.drain_volume_pool();
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("DWELL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub(crate) async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn prepare_dir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
    // 0700: no other user reaches anything in it. Sandboxes get their agent
    // and volume through mounts the daemon (root) makes, not through paths.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make the data dir {} private (0700)", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    for sub in ["sandboxes", "volumes", "images", "bin"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    Ok(dir)
}

/// The cgroup parent of a data dir: `dwell` for the default one,
/// `dwell-<hash>` for others.
fn cgroup_parent(data_dir: &Path) -> String {
    if data_dir == Path::new(DEFAULT_DATA_DIR) {
        return "dwell".into();
    }
    // FNV-1a: a stable short name, not a security boundary.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data_dir.as_os_str().as_encoded_bytes() {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("dwell-{:08x}", h as u32)
}

/// Copy the agent into the data dir, so every sandbox (and every restart)
/// uses a binary that cannot move or change under it.
fn install_agent(data_dir: &Path, given: Option<&Path>) -> Result<PathBuf> {
    let src = match given {
        Some(p) => p.to_path_buf(),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            let candidates = [
                dir.join("dwell-agent"),
                dir.join("../lib/dwell/dwell-agent"),
            ];
            match candidates.iter().find(|p| p.is_file()) {
                Some(p) => p.clone(),
                None => bail!(
                    "cannot find dwell-agent next to {}; build it with `scripts/build.sh` or pass --agent PATH (DWELL_AGENT)",
                    exe.display()
                ),
            }
        }
    };
    let bytes = std::fs::read(&src)
        .with_context(|| format!("cannot read the agent binary {}", src.display()))?;
    if !bytes.starts_with(b"\x7fELF") {
        bail!(
            "{} is not an executable (ELF) file; point --agent at the built dwell-agent",
            src.display()
        );
    }
    if has_interpreter(&bytes) {
        bail!(
            "{} is dynamically linked, but it runs as PID 1 inside images that may have no C library; \
             build the static agent with `scripts/build.sh` (or point --agent at target/<triple>/<profile>/dwell-agent)",
            src.display()
        );
    }
    // One file per agent version, never overwritten: a hibernated gVisor
    // sandbox has the agent's code mapped from its file, and restoring it
    // over a replaced binary would run other code (it dies of SIGTRAP).
    let dst = data_dir
        .join("bin")
        .join(dwell_control::agents::file_name(&bytes));
    if std::fs::read(&dst).ok().as_deref() != Some(&bytes[..]) {
        let tmp = data_dir.join("bin/.dwell-agent.tmp");
        std::fs::write(&tmp, &bytes)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &dst)?;
    }
    Ok(dst)
}

/// Whether an ELF64 file asks for a dynamic loader (has a PT_INTERP
/// program header).
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |o: usize| {
        elf.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (
        elf.get(0x20..0x28)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize),
        u16_at(0x36),
        u16_at(0x38),
    ) else {
        return false;
    };
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
            == Some(PT_INTERP)
    })
}

/// Refuses to start on a socket another daemon (of another data dir)
/// serves; a stale socket file is removed when the socket is bound.
async fn refuse_a_served_socket(socket: &Path) -> Result<()> {
    if tokio::net::UnixStream::connect(socket).await.is_ok() {
        bail!(
            "another dwell daemon already serves {}; stop it first or use another --socket",
            socket.display()
        );
    }
    Ok(())
}

async fn bind_unix(socket: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    refuse_a_served_socket(socket).await?;
    if socket.exists() {
        std::fs::remove_file(socket)?;
    }
    let l = tokio::net::UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Make the admin API key on the first TCP start and keep it in
/// `<data-dir>/admin.key` (mode 0600); only its hash is in the database.
pub(crate) fn ensure_admin_key(ctl: &Controller, data_dir: &Path) -> Result<()> {
    let path = data_dir.join("admin.key");
    if ctl.has_admin_key()? && path.exists() {
        return Ok(());
    }
    let key = dwell_api::auth::new_key();
    ctl.add_api_key(
        &ApiKey {
            id: format!("key-{}", &dwell_api::auth::hash_key(&key)[..12]),
            tenant: dwell_api::auth::DEFAULT_TENANT.into(),
            name: "admin".into(),
            admin: true,
            created_at: dwell_store::now_ms(),
        },
        &dwell_api::auth::hash_key(&key),
    )?;
    // A stale admin.key (its hash gone from the database) is replaced: the
    // new one goes in beside it, 0600 from its creation, then renamed over.
    let fresh = data_dir.join(".admin.key.new");
    let _ = std::fs::remove_file(&fresh);
    dwell_control::keyfile::create(&fresh, format!("{key}\n").as_bytes())
        .and_then(|()| std::fs::rename(&fresh, &path))
        .with_context(|| format!("cannot write the admin API key to {}", path.display()))?;
    tracing::info!("admin API key written to {}", path.display());
    Ok(())
}

/// The DNS resolver of NAT sandboxes, forwarding to `--dns-upstream` or
/// to this host's name servers.
fn dns_resolver(upstream: &[String]) -> Result<Arc<dwell_dns::Resolver>> {
    let upstreams = if upstream.is_empty() {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let found = dwell_dns::upstreams_from_resolv_conf(&conf);
        if found.is_empty() {
            tracing::warn!(
                "no nameserver in /etc/resolv.conf: NAT sandboxes resolve only peer names \
                 until the daemon runs with --dns-upstream IP[:PORT]"
            );
        }
        found
    } else {
        upstream
            .iter()
            .map(|u| {
                dwell_dns::parse_upstream(u).map_err(|e| anyhow::anyhow!("--dns-upstream: {e}"))
            })
            .collect::<Result<_>>()?
    };
    Ok(dwell_dns::Resolver::new(dwell_dns::Options {
        upstreams,
        ..Default::default()
    }))
}

/// `--doze-after`: a duration of at least 100 ms, or `off`.
fn parse_doze_after(v: &str) -> anyhow::Result<Option<std::time::Duration>> {
    if v == "off" {
        return Ok(None);
    }
    let d = humantime::parse_duration(v).map_err(|e| {
        anyhow::anyhow!("--doze-after {v:?} is not a duration ({e}); write it like 2s, or off")
    })?;
    if d < std::time::Duration::from_millis(100) {
        anyhow::bail!(
            "--doze-after {v} is too short: a sandbox would freeze between two calls; \
             give 100ms or more, or off"
        );
    }
    Ok(Some(d))
}

/// Where browsers reach the web console and how long its sessions live.
fn console_settings(a: &ServeArgs) -> Result<dwell_api::session::ConsoleSettings> {
    if let Some(u) = &a.console_url {
        if !(u.starts_with("http://") || u.starts_with("https://")) || u.contains(['?', '#', ' ']) {
            bail!("--console-url {u:?} is not an http(s) URL of the console's host (e.g. https://dwell.example.com)");
        }
    }
    let url = a.console_url.clone().or_else(|| {
        a.listen.as_deref().map(|addr| {
            // A wildcard address is no place to send a browser: this
            // host's loopback is (--console-url says otherwise).
            let addr = addr
                .replacen("0.0.0.0:", "127.0.0.1:", 1)
                .replacen("[::]:", "[::1]:", 1);
            format!("http://{addr}")
        })
    });
    Ok(dwell_api::session::ConsoleSettings {
        url,
        session_ttl: Duration::from_millis(a.console_session_ttl),
        idle_timeout: Duration::from_millis(a.console_idle_timeout),
    })
}

#[cfg(test)]
mod doze_after_tests {
    use super::parse_doze_after;
    use std::time::Duration;

    #[test]
    fn doze_after_takes_a_duration_or_off_and_refuses_too_short_ones() {
        assert_eq!(
            parse_doze_after("2s").unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_doze_after("off").unwrap(), None);
        let e = parse_doze_after("10ms").unwrap_err().to_string();
        assert!(e.contains("too short") && e.contains("off"), "{e}");
        let e = parse_doze_after("soon").unwrap_err().to_string();
        assert!(e.contains("not a duration"), "{e}");
    }
}
