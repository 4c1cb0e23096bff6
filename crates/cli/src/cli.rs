//! The command line: every subcommand and flag, as clap sees them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// dwell: persistent sandbox environments.
///
/// Files, installed packages and running processes of a sandbox survive
/// between sessions. Start the daemon with `dwell serve`, then use the other
/// commands; they talk to it over a unix socket (or TCP with an API key).
#[derive(Debug, Parser)]
#[command(name = "dwell", version, propagate_version = true)]
pub struct Cli {
    /// The daemon's unix socket.
    #[arg(
        long,
        global = true,
        env = "DWELL_SOCKET",
        default_value = "/run/dwell/dwell.sock"
    )]
    pub socket: PathBuf,
    /// Talk to a daemon over TCP instead (`host:port`); needs an API key.
    #[arg(long, global = true, env = "DWELL_HOST")]
    pub host: Option<String>,
    /// API key for --host.
    #[arg(long, global = true, env = "DWELL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Act for this tenant (admin keys and the local socket only): list,
    /// inspect, stop or delete its sandboxes as it would.
    #[arg(long, global = true, env = "DWELL_AS_TENANT")]
    pub as_tenant: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve(Box<ServeArgs>),
    /// Create a sandbox and start it.
    Create(Box<CreateArgs>),
    /// List sandboxes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show everything about a sandbox.
    Inspect(NameJson),
    /// Run a command in a sandbox; exits with the command's exit code. A
    /// paused or hibernated sandbox whose auto-resume is on (the default
    /// after a policy such as --idle-timeout paused it) is resumed first;
    /// otherwise this exits 75 and says how to resume it.
    Exec(ExecArgs),
    /// Open an interactive shell (a PTY that follows your terminal's size).
    Shell(ShellArgs),
    /// Copy a file between this machine and a sandbox: `cp ./a.txt work:/root/` or `cp work:/root/a.txt .`
    Cp(CpArgs),
    /// Show a sandbox's service output (its image's start command; see
    /// `create --restart`), else its lifecycle events (also with --events),
    /// or a process's output with --pid.
    Logs(LogsArgs),
    /// Start, stop or restart a sandbox's service (stop: its stop signal,
    /// then SIGKILL after the stop timeout; it stays stopped until started
    /// or until the sandbox starts again).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// List processes started in a sandbox (by exec, shell, or in the background).
    Ps(NameJson),
    /// Send a signal to a process in a sandbox.
    Kill(KillArgs),
    /// Freeze every process of a sandbox (memory stays; nothing runs). A
    /// sandbox paused this way is not woken by exec or file operations
    /// unless its --auto-resume policy is on.
    Pause(Names),
    /// Thaw a paused sandbox, or restore a hibernated one (from disk, or from its archive).
    Resume(Names),
    /// Save a gVisor sandbox whole to disk (memory, processes, files); `resume` continues it.
    Hibernate(Names),
    /// Stop a sandbox: persistent ones keep their files, ephemeral ones are deleted.
    Stop(Names),
    /// Start a stopped sandbox (an archived one is restored from its archive first).
    Start(Names),
    /// Archive sandboxes: stop, move the volume (and a hibernated one's memory) into the snapshot store, free local disk.
    Archive(Names),
    /// Delete sandboxes and wipe their data.
    Rm(RmArgs),
    /// Push a sandbox's idle and TTL timers, as an agent's heartbeat would.
    Keepalive(KeepaliveArgs),
    /// Change a sandbox's lifecycle policies (live), or its private networks (while stopped).
    Update(UpdateArgs),
    /// Show the live resource usage of a sandbox.
    Stats(NameJson),
    /// The URL of a port of a sandbox (exposing it privately first if it is
    /// not exposed), with a one-time browser link; without PORT, list the
    /// exposed ports. Needs `dwell serve --proxy-listen`.
    Port(PortArgs),
    /// Expose a port of a sandbox through the port proxy: private (a token
    /// is printed once) unless --public.
    Expose(ExposeArgs),
    /// Stop exposing a port (its token, links and cookies stop working).
    Unexpose(UnexposeArgs),
    /// What a sandbox changed relative to its image: packages and files.
    Diff(NameJson),
    /// Snapshots: point-in-time copies of a sandbox's files.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Roll a sandbox back to a snapshot.
    Restore {
        /// Sandbox name or id.
        sandbox: String,
        /// Snapshot name or id.
        snapshot: String,
    },
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Build an image from a Dockerfile: RUN steps run in sandboxes of your
    /// tenant (no network unless --net), each step becomes a layer, and an
    /// unchanged step is taken from the cache.
    Build(BuildArgs),
    /// Registry logins of your tenant, used by its pulls.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// Manage tenants and their quotas (admin).
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// SSH public keys of your tenant, for `ssh -p PORT SANDBOX@HOST`
    /// through the daemon's SSH gateway (`dwell serve --ssh-listen`).
    #[command(subcommand, name = "ssh-key")]
    SshKey(SshKeyCommand),
    /// Private networks: sandboxes on one reach each other by name.
    #[command(subcommand)]
    Network(NetworkCommand),
    /// The web console (served by `dwell serve --listen` at /ui/): print a
    /// one-time login URL for you (and open it where a browser is at hand);
    /// `ui sessions` lists your tenant's console sessions, `ui revoke` ends them.
    Ui(UiArgs),
    /// The nodes of a cluster (`dwell serve --cluster ...`; admin).
    #[command(subcommand)]
    Node(NodeCommand),
    /// Move a sandbox to another node of the cluster (admin): cold (its files move, its
    /// processes start again) or --warm (a running gVisor sandbox keeps memory and processes).
    Move(MoveArgs),
    /// Named volumes: storage that lives on its own and is bound into sandboxes
    /// (`dwell create --volume NAME:/path[:ro]`).
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Usage and cost: vCPU-hours, GiB-hours of memory and storage.
    Usage(UsageArgs),
    /// The audit log: who did what to which sandbox, when.
    Audit(AuditArgs),
    /// Check what this host supports.
    Doctor(JsonFlag),
    /// Internal: builds a sandbox's namespaces (started by the daemon).
    #[command(name = "__ns-boot", hide = true)]
    NsBoot { state_dir: PathBuf },
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Name of the image, NAME:TAG (repeatable: several tags).
    #[arg(short = 't', long = "tag", required = true, value_name = "NAME:TAG")]
    pub tags: Vec<String>,
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Build argument KEY=VALUE for ARG (repeatable); KEY alone takes the
    /// value from this environment.
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,
    /// Build up to this stage (FROM ... AS STAGE).
    #[arg(long)]
    pub target: Option<String>,
    /// Run every step, ignoring the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Isolation of the RUN steps: `namespace` or `gvisor` (default: the daemon's).
    #[arg(long)]
    pub isolation: Option<String>,
    /// Give RUN steps outbound network access (NAT); default: none.
    #[arg(long)]
    pub net: bool,
    /// Destinations RUN steps may connect to (as for `create`; implies --net).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub allow_out: Option<Vec<String>>,
    /// With --net: destinations refused (as for `create`).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub deny_out: Option<Vec<String>>,
    /// Disk of each RUN sandbox (e.g. 4G); also the most one layer may hold.
    #[arg(long)]
    pub disk: Option<String>,
    /// Memory of each RUN sandbox (e.g. 1G).
    #[arg(long)]
    pub memory: Option<String>,
    /// How long the whole build may take: `30m`, `2h`, or seconds
    /// (default: the daemon's, 1 h unless changed; at most 24h). Past it
    /// the build is stopped.
    #[arg(long, value_name = "DURATION", value_parser = build_timeout_secs)]
    pub timeout: Option<u64>,
    /// Print only the image digest.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print the build's events as JSON lines.
    #[arg(long)]
    pub json: bool,
    /// The build context: a directory sent to the daemon (less what
    /// .dockerignore excludes).
    pub context: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where the daemon keeps its database, volumes and images.
    #[arg(long, env = "DWELL_DATA_DIR", default_value = "/var/lib/dwell")]
    pub data_dir: PathBuf,
    /// A mirror pulls try before a registry: `REGISTRY=URL`, e.g.
    /// `docker.io=http://127.0.0.1:5000` (repeatable; an `http://` mirror
    /// is reached over plain HTTP).
    #[arg(long, value_name = "REGISTRY=URL")]
    pub registry_mirror: Vec<String>,
    /// A registry reached over plain HTTP (`HOST:PORT`, repeatable).
    /// Loopback addresses always are, as in Docker.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub insecure_registry: Vec<String>,
    /// Layers one pull downloads at once.
    #[arg(long, default_value_t = 4)]
    pub pull_parallel: usize,
    /// Builds one tenant may run at once (more are refused with a 409).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_builds_per_tenant: u64,
    /// Seconds a build may take when it does not ask for its own limit
    /// (`dwell build --timeout`); at most 86400.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub build_timeout: u64,
    /// Pull only from these registry hosts (comma-separated `HOST[:PORT]`;
    /// `loopback` allows every loopback address); unset: any registry.
    #[arg(long, env = "DWELL_ALLOWED_REGISTRIES", value_delimiter = ',')]
    pub allowed_registries: Option<Vec<String>>,
    /// Also listen on TCP (`127.0.0.1:7070`); every request there needs an
    /// API key (or a web console session). The web console is served there
    /// at /ui/ (`dwell ui` prints a login URL).
    #[arg(long)]
    pub listen: Option<String>,
    /// Where browsers reach the web console, if not at `http://<--listen>`
    /// (e.g. `https://dwell.example.com` behind a TLS proxy; an https URL
    /// makes the session cookie `Secure`).
    #[arg(long, value_name = "URL")]
    pub console_url: Option<String>,
    /// How long a web console session lives at most.
    #[arg(long, value_name = "DURATION", default_value = "12h", value_parser = duration_ms)]
    pub console_session_ttl: u64,
    /// A web console session ends after this long without a request.
    #[arg(long, value_name = "DURATION", default_value = "2h", value_parser = duration_ms)]
    pub console_idle_timeout: u64,
    /// How often what is still open on the REST API (a terminal or attach
    /// WebSocket, a followed log or download, a request still running)
    /// re-checks the API key or console session it was opened with: it
    /// ends within this long after the key or session is revoked or
    /// expires. At least 100ms.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = recheck_ms)]
    pub credential_recheck: u64,
    /// Serve the E2B-compatible control plane on TCP (`127.0.0.1:3000`):
    /// the E2B SDKs' `E2B_API_URL`, with a dwell API key as `E2B_API_KEY`.
    #[arg(long)]
    pub e2b_listen: Option<String>,
    /// Serve the E2B sandbox data plane ("envd") on TCP
    /// (`127.0.0.1:49983`): the SDKs' `E2B_SANDBOX_URL`.
    #[arg(long)]
    pub e2b_sandbox_listen: Option<String>,
    /// Serve SSH on TCP (`0.0.0.0:2222`): `ssh -p 2222 SANDBOX@HOST` (or
    /// `SANDBOX+TENANT@HOST`, needed when several tenants registered the
    /// key) logs in to a sandbox with a key its tenant registered
    /// (`dwell ssh-key add`);
    /// shells, commands, scp/sftp and `ssh -L` forwarding. The host key is
    /// made once in the data dir (`ssh_host_ed25519_key`); its fingerprint
    /// is logged at start and shown by `dwell doctor`.
    #[arg(long, value_name = "ADDR")]
    pub ssh_listen: Option<String>,
    /// SSH connections served at once (`--ssh-listen`); more are closed.
    #[arg(long, default_value_t = 256)]
    pub ssh_max_connections: usize,
    /// An SSH connection with no traffic for this long is closed.
    #[arg(long, default_value = "1h")]
    pub ssh_idle_timeout: String,
    /// How long an SSH client has to log in after connecting.
    #[arg(long, default_value = "20s")]
    pub ssh_login_grace: String,
    /// SSH connections not logged in yet, in all (like OpenSSH's
    /// MaxStartups); more are closed, so logged-in users keep the rest of
    /// --ssh-max-connections.
    #[arg(long, default_value_t = 64)]
    pub ssh_max_startups: usize,
    /// SSH connections not logged in yet from one source address.
    #[arg(long, default_value_t = 10)]
    pub ssh_max_startups_per_ip: usize,
    /// How long an E2B signed file URL without an expiration stays valid
    /// after its first use (the SDK's `download_url`/`upload_url` without
    /// `use_signature_expiration`).
    #[arg(long, default_value = "1h")]
    pub signed_url_lifetime: String,
    /// The domain reported to E2B clients; they reach envd at
    /// `https://49983-{id}.{domain}` unless E2B_SANDBOX_URL is set. Default
    /// with `--proxy-listen`: the proxy's `--domain` (and port, unless it
    /// is the scheme's default, 443 with TLS or 80), so the SDKs'
    /// `getHost(port)` names the proxy.
    #[arg(long)]
    pub e2b_domain: Option<String>,
    /// Serve the port proxy on TCP (`127.0.0.1:8081`): ports exposed with
    /// `dwell expose` / `dwell port` are reached as `http://PORT-ID.DOMAIN/`
    /// (HTTP/1.1, WebSocket, and raw TCP through CONNECT; https with
    /// --proxy-tls-cert). With the E2B listeners it also serves envd as
    /// `sandbox.DOMAIN` and `49983-ID.DOMAIN` for the SDKs; with
    /// --proxy-e2b-api, the control plane as `api.DOMAIN` too.
    #[arg(long)]
    pub proxy_listen: Option<String>,
    /// The domain of the port proxy's host names (`PORT-ID.DOMAIN`); point
    /// a wildcard DNS record (`*.DOMAIN`) at the proxy. `localhost` works
    /// in browsers without DNS.
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// The port in URLs the daemon prints for exposed ports and in the
    /// domain reported to E2B clients (default: the `--proxy-listen` port;
    /// give 443 (with TLS) or 80 when the domain is served on the standard
    /// port, e.g. by a front proxy or a port forward; that port is then
    /// left out of URLs).
    #[arg(long)]
    pub proxy_url_port: Option<u16>,
    /// Serve the port proxy over TLS (HTTPS, HTTP/1.1) with this PEM
    /// certificate chain (server certificate first); it should cover
    /// `*.DOMAIN` (the E2B SDKs reach `PORT-ID.DOMAIN`, `api.DOMAIN`,
    /// `sandbox.DOMAIN` over https). Needs --proxy-tls-key. Read at startup
    /// and again on SIGHUP (a renewed certificate; if the files do not load
    /// then, the one in use stays).
    #[arg(long)]
    pub proxy_tls_cert: Option<PathBuf>,
    /// The PEM private key of --proxy-tls-cert.
    #[arg(long)]
    pub proxy_tls_key: Option<PathBuf>,
    /// Also serve the E2B control plane (--e2b-listen's API, same API keys)
    /// on the port proxy as `api.DOMAIN`, so the E2B SDKs need only
    /// `E2B_DOMAIN`. Off by default: the proxy is often reachable from
    /// where --e2b-listen, bound to loopback, is not.
    #[arg(long)]
    pub proxy_e2b_api: bool,
    /// Connections the port proxy holds open to one sandbox at once (kept
    /// HTTP connections, WebSockets, CONNECT tunnels); more get 503.
    #[arg(long, default_value_t = 128)]
    pub proxy_max_per_sandbox: usize,
    /// Connections the port proxy serves at once from one client address
    /// (IPv6: one /64); more get 503, so one client cannot take all of
    /// `--max-connections`.
    #[arg(long, default_value_t = 64)]
    pub proxy_max_per_ip: usize,
    /// A proxied WebSocket or CONNECT tunnel with no traffic for this long is
    /// closed; also the longest wait for a sandbox server's answer.
    #[arg(long, default_value = "10m")]
    pub proxy_idle_timeout: String,
    /// Ceilings of one sandbox and the quota of tenants without a record.
    #[command(flatten)]
    pub limits: LimitFlags,
    /// Connections each TCP listener (`--listen`, `--e2b-listen`,
    /// `--e2b-sandbox-listen`, `--proxy-listen`) serves at once; more wait
    /// in the backlog.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Time a TCP client has to send its request headers (and the idle
    /// limit between keep-alive requests) before it is dropped.
    #[arg(long, default_value = "30s")]
    pub header_timeout: String,
    /// The static dwell-agent binary (default: next to this binary).
    #[arg(long, env = "DWELL_AGENT")]
    pub agent: Option<PathBuf>,
    /// Seconds between sweeps that compare records with what runs and fire
    /// lifecycle policies.
    #[arg(long, default_value_t = 10)]
    pub resync_secs: u64,
    /// How long the audit log keeps entries.
    #[arg(long, default_value = "90d")]
    pub audit_retention: String,
    /// Price of a vCPU-hour in usage reports (dollars).
    #[arg(long, default_value_t = 0.01667)]
    pub price_vcpu_hour: f64,
    /// Price of a GiB-hour of memory.
    #[arg(long, default_value_t = 0.00833)]
    pub price_memory_gib_hour: f64,
    /// Price of a GiB-hour of volume storage (default: $0.10 per GiB-month).
    #[arg(long, default_value_t = 0.10 / 730.0)]
    pub price_storage_gib_hour: f64,
    /// Policies for sandboxes created without any (`--default-idle-timeout 1h` ...).
    #[command(flatten)]
    pub default_policies: DefaultPolicyFlags,
    /// Snapshot store, encryption and collection.
    #[command(flatten)]
    pub snapshot_store: crate::commands::snapstore::StoreFlags,
    /// Joining a cluster of nodes.
    #[command(flatten)]
    pub cluster: crate::commands::cluster_flags::ClusterFlags,
    /// Isolation of sandboxes created without --isolation: namespace or gvisor.
    #[arg(long, env = "DWELL_DEFAULT_ISOLATION", default_value = "namespace")]
    pub default_isolation: String,
    /// The runsc binary of the gVisor runtime (gVisor is off when it is missing).
    #[arg(long, env = "DWELL_RUNSC", default_value = "/usr/bin/runsc")]
    pub runsc: PathBuf,
    /// Freeze a running gVisor sandbox after it has been idle this long
    /// (only its agent runs, no command, file or stream call): runsc's
    /// sentry otherwise burns ~27 ms of CPU a second doing nothing. It
    /// stays `running` and thaws on the next call, in about a
    /// millisecond. `off` never freezes.
    #[arg(long, default_value = "2s", value_name = "DURATION|off")]
    pub doze_after: String,
    /// The shortest `create --backup-every` this daemon takes.
    #[arg(long, default_value = "1m", value_name = "DURATION")]
    pub min_backup_every: String,
    /// In a cluster, what becomes of a lost node's sandboxes: `restart`
    /// runs those with a backup or an archive on another node from the
    /// newest of them (changes after it are lost); `keep` leaves them with
    /// their node until it comes back.
    #[arg(long, default_value = "restart", value_name = "restart|keep")]
    pub on_node_loss: String,
    /// How gVisor's sentry intercepts system calls: systrap (fast system
    /// calls; an idle sandbox with a process of its own costs ~27 ms of CPU
    /// a second), ptrace (10-20x slower system calls; idle costs nothing)
    /// or kvm (needs a host whose KVM runs runsc's guest). Applies to
    /// sandboxes started (or resumed) afterwards.
    #[arg(long, default_value = "systrap")]
    pub gvisor_platform: dwell_runtime::gvisor::platform::Platform,
    /// gVisor sandboxes kept started ahead (frozen, no CPU) so that a gVisor create
    /// only adds its container to one (0: every gVisor create boots a sandbox).
    #[arg(long, env = "DWELL_GVISOR_POOL", default_value_t = 2, value_name = "N")]
    pub gvisor_pool: usize,
    /// Memory limit of each pooled gVisor sandbox; only creates with exactly this
    /// memory start from the pool (the default is the default sandbox memory).
    #[arg(
        long,
        env = "DWELL_GVISOR_POOL_MEMORY",
        default_value = "512M",
        value_name = "SIZE"
    )]
    pub gvisor_pool_memory: String,
    /// How long the pool waits after a warm create before it starts the replacement
    /// (booting one takes a few hundred ms of CPU, which the new sandbox's first
    /// commands would share).
    #[arg(
        long,
        env = "DWELL_GVISOR_POOL_REFILL_DELAY",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub gvisor_pool_refill_delay: String,
    /// Networks NAT sandboxes may not reach (CIDR or address, comma-separated or
    /// repeated), on top of those always blocked: cloud metadata (169.254.0.0/16,
    /// fe80::/10, fd00:ec2::254, fd20:ce::254, 100.100.100.200, 168.63.129.16,
    /// 192.0.0.192), the other sandboxes and the host's own addresses.
    #[arg(long, value_delimiter = ',', value_name = "CIDR")]
    pub deny_net: Vec<String>,
    /// Egress allow list of NAT sandboxes created without rules whose tenant has
    /// no defaults (CIDRs, domains, *.domain; comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub allow_out: Vec<String>,
    /// Egress deny list of those sandboxes (0.0.0.0/0: deny everything not
    /// allowed).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub deny_out: Vec<String>,
    /// Where the sandboxes' DNS resolver sends the names it may resolve:
    /// IP[:PORT], comma-separated or repeated, tried in order. Default: the
    /// nameservers of this host's /etc/resolv.conf.
    #[arg(long, value_delimiter = ',', value_name = "IP[:PORT]")]
    pub dns_upstream: Vec<String>,
    /// Namespace sandboxes in user namespaces of their own (root inside is
    /// an unprivileged host uid range): on or off. Off: sandbox root is
    /// host root (for hosts without idmapped mounts; `dwell doctor` tells).
    #[arg(long, env = "DWELL_USER_NAMESPACES", default_value = "on", value_parser = ["on", "off"])]
    pub user_namespaces: String,
    /// Sandbox volumes of the default size kept formatted ahead of time
    /// (image files, not mounted), so a create skips copying one (each is
    /// used by one sandbox, never reused; 0 turns the pool off).
    #[arg(long, env = "DWELL_VOLUME_POOL", default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub volume_pool: u16,
}

impl DefaultPolicyFlags {
    /// As the API's policy arguments.
    pub fn to_args(&self) -> dwell_control::policy::PolicyArgs {
        let d = |v: &Option<String>| v.clone().map(dwell_control::policy::DurationArg::Text);
        dwell_control::policy::PolicyArgs {
            ttl: d(&self.default_ttl),
            idle_timeout: d(&self.default_idle_timeout),
            pause_after: d(&self.default_pause_after),
            archive_after: d(&self.default_archive_after),
            delete_after: d(&self.default_delete_after),
            max_lifetime: d(&self.default_max_lifetime),
            ttl_action: None,
            auto_resume: self.default_auto_resume,
        }
    }
}

/// What one sandbox, and a tenant without a record, may hold. Sizes like
/// `8G`; `none` lifts a default quota limit.
#[derive(Debug, Args, Default, Clone)]
pub struct LimitFlags {
    /// Most memory one sandbox may ask for (default: the host's RAM).
    #[arg(long)]
    pub max_sandbox_memory: Option<String>,
    /// Most vCPUs one sandbox may ask for (default: the host's CPUs).
    #[arg(long)]
    pub max_sandbox_vcpus: Option<f64>,
    /// Most processes and threads one sandbox may ask for.
    #[arg(long, default_value_t = dwell_control::limits::DEFAULT_MAX_PIDS)]
    pub max_sandbox_pids: u64,
    /// Largest disk one sandbox may ask for; never more than the data
    /// dir's free space at create time (the default ceiling).
    #[arg(long)]
    pub max_sandbox_disk: Option<String>,
    /// Sandboxes of a tenant without a record (default 1000; `none`: no limit).
    #[arg(long)]
    pub default_max_sandboxes: Option<String>,
    /// vCPUs of a tenant without a record (default: 64 x the host's CPUs).
    #[arg(long)]
    pub default_max_vcpus: Option<String>,
    /// Memory of a tenant without a record (default: 4 x the host's RAM).
    #[arg(long)]
    pub default_max_memory: Option<String>,
    /// Storage of a tenant without a record (default: 4 x the size of the
    /// data dir's file system).
    #[arg(long)]
    pub default_max_storage: Option<String>,
}

/// Default policies (of the daemon, or of a tenant).
#[derive(Debug, Args, Default)]
pub struct DefaultPolicyFlags {
    /// Default --ttl (like 15m) for sandboxes created without policies.
    #[arg(long)]
    pub default_ttl: Option<String>,
    /// Default --idle-timeout (like 10m).
    #[arg(long)]
    pub default_idle_timeout: Option<String>,
    /// Default --pause-after (like 1h).
    #[arg(long)]
    pub default_pause_after: Option<String>,
    /// Default --archive-after (like 7d): stopped persistent sandboxes move to the snapshot store.
    #[arg(long)]
    pub default_archive_after: Option<String>,
    /// Default --delete-after (like 30d).
    #[arg(long)]
    pub default_delete_after: Option<String>,
    /// Default --max-lifetime (like 24h).
    #[arg(long)]
    pub default_max_lifetime: Option<String>,
    /// Default --auto-resume (wake on use when paused or hibernated):
    /// `--default-auto-resume` or `--default-auto-resume=false`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "true|false")]
    pub default_auto_resume: Option<bool>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name (lowercase letters, digits, '-', '_', '.'); generated when omitted.
    #[arg(long)]
    pub name: Option<String>,
    /// Image: `host` (a read-only view of this host's system), `host-user`
    /// (the same with an account `user`, uid 1000, passwordless sudo, as
    /// the default user: E2B's base), a stored image, or a registry
    /// reference (`python:3.12`), pulled first when missing.
    #[arg(long, default_value = "host")]
    pub image: String,
    /// Keep files across stop/start (the default).
    #[arg(long, conflicts_with = "ephemeral")]
    pub persistent: bool,
    /// Delete the sandbox and its data when it stops.
    #[arg(long)]
    pub ephemeral: bool,
    /// Memory limit, like 512M or 2G.
    #[arg(long)]
    pub memory: Option<String>,
    /// CPU limit in cores, like 1 or 0.5.
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Size of the sandbox's writable volume, like 4G.
    #[arg(long)]
    pub disk: Option<String>,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Label KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l')]
    pub labels: Vec<String>,
    /// In a cluster: only a node with this label (KEY=VALUE, as its
    /// `serve --node-label`; repeatable: all of them).
    #[arg(long = "node-selector", value_name = "KEY=VALUE")]
    pub node_selector: Vec<String>,
    /// Back the sandbox up into the object store this often (`15m`, `1h`;
    /// `off`: never): in a cluster, it runs again on another node from its
    /// last backup when its node is lost. The newest two are kept.
    #[arg(long, value_name = "DURATION|off")]
    pub backup_every: Option<String>,
    /// Secret variable KEY=VALUE, or KEY to take the value from this
    /// environment (repeatable): sealed at rest, never shown, given to every exec.
    #[arg(long = "secret-env")]
    pub secret_env: Vec<String>,
    /// Give the sandbox outbound network access (NAT); default: loopback only.
    #[arg(long)]
    pub net: bool,
    /// With --net: destinations the sandbox may connect to, comma-separated or
    /// repeated: CIDR blocks (10.1.2.0/24, 2001:db8::/32), addresses, domain names
    /// (pypi.org) and patterns (*.example.com: names below it). Domains follow DNS:
    /// the sandbox's resolver lets it reach the addresses it hands out for them.
    /// Without --allow-out/--deny-out: the tenant's default rules, else the daemon's.
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub allow_out: Option<Vec<String>>,
    /// With --net: destinations refused (at once, with a reset). 0.0.0.0/0 denies
    /// everything --allow-out does not allow; a listed deny wins over an allow.
    /// The host, cloud metadata and link-local networks are always refused.
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub deny_out: Option<Vec<String>>,
    /// Put the sandbox on this private network (repeatable; `dwell network create`
    /// makes one). Its peers there reach it as NAME and NAME.NETWORK; a network
    /// gives no internet access (that is --net).
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Bind a named volume (`dwell volume create` makes one) at /path inside,
    /// read-only with `:ro` (repeatable). Several sandboxes may bind one volume
    /// read-write at once: they share its files. The volume must exist; it
    /// outlives the sandbox.
    #[arg(long = "volume", short = 'v', value_name = "NAME:/PATH[:ro]")]
    pub volumes: Vec<String>,
    /// Isolation: `namespace` (Linux namespaces) or `gvisor` (runsc's user-space kernel;
    /// can hibernate). Default: the daemon's --default-isolation.
    #[arg(long, alias = "runtime")]
    pub isolation: Option<String>,
    /// Start from a snapshot (id or name): its files, and its volume size; or from a
    /// hibernated gVisor sandbox: a warm copy of its memory, processes and files.
    #[arg(long)]
    pub from: Option<String>,
    /// Keep CAP_NET_RAW: raw and packet sockets (ping via raw sockets, traceroute,
    /// tcpdump). Off by default: raw sockets can forge packets.
    #[arg(long)]
    pub allow_raw_sockets: bool,
    /// Allow core dumps (RLIMIT_CORE is 1, which stops file and piped dumps, and cannot be changed otherwise). Refused
    /// while the host's kernel.core_pattern pipes dumps into a program.
    #[arg(long)]
    pub allow_core_dumps: bool,
    /// Create this many independent sandboxes, named NAME-1 ... NAME-N.
    #[arg(long, default_value_t = 1)]
    pub count: u32,
    #[command(flatten)]
    pub service: ServiceFlags,
    #[command(flatten)]
    pub policies: PolicyFlags,
    /// Print the sandbox as JSON.
    #[arg(long)]
    pub json: bool,
    /// After `--`: the service's CMD, as separate words (like --cmd).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The sandbox's service: the image's start command (ENTRYPOINT + CMD),
/// run and supervised by the sandbox's agent from the start; `dwell logs`
/// shows its output, `inspect` its state. A service sandbox serving
/// connections the daemon cannot see should have no (or a long)
/// --idle-timeout: only execs, files, the port proxy and SSH count as use.
#[derive(Debug, Args, Default)]
pub struct ServiceFlags {
    /// Replace the image's ENTRYPOINT (its CMD is dropped unless --cmd is
    /// given too, as in Docker). With the `host` image, this (or --cmd)
    /// makes a service.
    #[arg(long, value_name = "PROGRAM", allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Replace the image's CMD: a command line split like a shell would
    /// (`--cmd 'python3 -m http.server 8000'`).
    #[arg(long, value_name = "COMMAND", allow_hyphen_values = true)]
    pub cmd: Option<String>,
    /// Run no service, whatever the image says.
    #[arg(long, conflicts_with_all = ["entrypoint", "cmd", "restart", "health_cmd"])]
    pub no_service: bool,
    /// Restart policy: no (default), on-failure, on-failure:N (at most N
    /// restarts) or always. Restarts back off from 100 ms, doubling to 30 s.
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Health check command run with /bin/sh -c on an interval (replaces
    /// the image's); `none` disables the image's.
    #[arg(long, value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between health checks (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub health_interval: Option<String>,
    /// A check running longer fails (default 30s).
    #[arg(long, value_name = "DURATION")]
    pub health_timeout: Option<String>,
    /// Consecutive failures that make it unhealthy (default 3).
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u32>,
    /// Failures in this time after a start do not count (default 0s).
    #[arg(long, value_name = "DURATION")]
    pub health_start_period: Option<String>,
    /// Signal that stops the service (name or number; default the image's
    /// STOPSIGNAL, else SIGTERM).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Grace after the stop signal before SIGKILL (default 10s).
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,
}

/// Lifecycle policies (durations like 30s, 10m, 1h30m, 7d; `off` clears).
#[derive(Debug, Args, Default)]
pub struct PolicyFlags {
    /// Stop (ephemeral: delete) this long after creation or the last keepalive.
    #[arg(long)]
    pub ttl: Option<String>,
    /// Pause after this long without an exec, file operation, open stream or keepalive.
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// Stop after being paused this long.
    #[arg(long)]
    pub pause_after: Option<String>,
    /// Archive after being stopped this long (volume moved to the snapshot store).
    #[arg(long)]
    pub archive_after: Option<String>,
    /// Delete after being stopped this long.
    #[arg(long)]
    pub delete_after: Option<String>,
    /// Hard cap on the sandbox's life from creation (default: none).
    #[arg(long)]
    pub max_lifetime: Option<String>,
    /// Wake on use: when paused or hibernated, an exec, file operation,
    /// shell, SSH login or proxied request resumes it first. Default: on
    /// when a policy (idle timeout, TTL) put it to sleep, off when a user
    /// paused it. `--auto-resume` or `--auto-resume=false`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "true|false")]
    pub auto_resume: Option<bool>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only sandboxes in this state.
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub json: bool,
    /// Print ids only.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// The port a server listens on inside the sandbox.
    pub port: Option<u16>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExposeArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// The port a server listens on inside the sandbox.
    pub port: u16,
    /// Anyone who knows the URL may use it, without a token.
    #[arg(long)]
    pub public: bool,
    /// Make a new token for a private port (voids the old one, its links
    /// and cookies).
    #[arg(long, conflicts_with = "public")]
    pub new_token: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UnexposeArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// The exposed port.
    pub port: u16,
}

#[derive(Debug, Args)]
pub struct NameJson {
    /// Sandbox name or id.
    pub sandbox: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Names {
    /// Sandbox names or ids.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct KeepaliveArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// How long to hold the idle and TTL policies off, like 30m.
    pub duration: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    #[command(flatten)]
    pub policies: PolicyFlags,
    /// Replace the egress allow list of a --net sandbox (CIDRs, domains,
    /// *.domain patterns; '' clears it). A running sandbox gets the new rules at
    /// once, without a restart.
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub allow_out: Option<Vec<String>>,
    /// Replace the egress deny list (0.0.0.0/0: deny everything not allowed; ''
    /// clears it).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub deny_out: Option<Vec<String>>,
    /// Put the (stopped) sandbox on this private network (repeatable); its
    /// interface comes up at its next start.
    #[arg(long = "network-add", value_name = "NETWORK")]
    pub network_add: Vec<String>,
    /// Take the (stopped) sandbox off this private network (repeatable).
    #[arg(long = "network-rm", value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Sandbox names or ids.
    #[arg(required = true)]
    pub sandboxes: Vec<String>,
    /// Remove running sandboxes too.
    #[arg(long, short = 'f')]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// The command and its arguments (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
    /// Pass this terminal's stdin to the command.
    #[arg(long, short = 'i')]
    pub interactive: bool,
    /// Allocate a PTY.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// Environment variable KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e')]
    pub env: Vec<String>,
    /// Working directory inside the sandbox.
    #[arg(long, short = 'w')]
    pub workdir: Option<String>,
    /// User name or uid[:gid] to run as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Kill the command after this long (like 30s or 5m).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Start in the background and print its pid; it keeps running after this command returns.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// A tag for the process list (with --detach).
    #[arg(long)]
    pub tag: Option<String>,
    /// Print the result as JSON (stdout, stderr, exit) instead of streaming.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Shell to run.
    #[arg(long, default_value = "/bin/bash")]
    pub shell: String,
    /// User to run as.
    #[arg(long, short = 'u')]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct CpArgs {
    /// Source: a local path or SANDBOX:/path.
    pub src: String,
    /// Destination: a local path or SANDBOX:/path (a trailing / or an existing directory keeps the file name).
    pub dst: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Show the output of this process (recent output, then live with --follow).
    #[arg(long, conflicts_with = "events")]
    pub pid: Option<u32>,
    /// Show the lifecycle events, also of a sandbox with a service (whose
    /// output `logs` shows otherwise).
    #[arg(long)]
    pub events: bool,
    /// Keep following.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Service output: only the last N lines recorded.
    #[arg(long, value_name = "N")]
    pub tail: Option<u64>,
    /// Service output: only what came in this long ago or later (`10m`, `1h`).
    #[arg(long, value_name = "DURATION")]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Start the service if it is not running.
    Start(NameJson),
    /// Stop the service (no restart until started).
    Stop(NameJson),
    /// Stop, then start the service.
    Restart(NameJson),
    /// Show the service's state.
    Status(NameJson),
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Sandbox name or id.
    pub sandbox: String,
    /// Process id inside the sandbox (see `dwell ps`).
    pub pid: u32,
    /// Signal name or number.
    #[arg(long, short = 's', default_value = "TERM")]
    pub signal: String,
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List images.
    Ls(JsonFlag),
    /// Import an OCI image layout directory or a `docker save` tarball.
    Import {
        /// Reference to give the image (`mytool:1`; short names are
        /// Docker Hub's: `mytool:1` is `docker.io/library/mytool:1`).
        name: String,
        /// Path (on the daemon's host) of the OCI layout dir or tarball.
        path: PathBuf,
    },
    /// Pull an image from its registry (`python:3.12`,
    /// `registry.local:5000/team/app:1`, `app@sha256:...`); layers already
    /// stored are not downloaded again, an interrupted pull resumes.
    Pull {
        /// Image reference.
        reference: String,
        /// Print the pulled image as JSON (no progress bar).
        #[arg(long)]
        json: bool,
    },
    /// Remove an image no sandbox uses (admin).
    Rm {
        /// Image reference (`python:3.12`, `app@sha256:...`).
        reference: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove every image no sandbox uses, and the blobs and layers no
    /// image needs (admin).
    Prune(JsonFlag),
    /// Export an image: an OCI image layout directory (`-o DIR`), or a tar
    /// archive (`-o FILE.tar`, or `-o -` for stdout) that `skopeo`
    /// (`oci-archive:`) and, with `--format docker`, `docker load` read.
    Export {
        /// Image reference.
        reference: String,
        /// Output: a new (or empty) directory, or a file ending in .tar.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// `oci` (OCI image layout) or `docker` (adds docker save's
        /// manifest.json; always a tar file).
        #[arg(long, default_value = "oci")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RegistryCommand {
    /// Store a login for a registry (the password is sealed; only your
    /// tenant's pulls use it): `echo $TOKEN | dwell registry login
    /// registry.local:5000 -u me --password-stdin`.
    Login {
        /// Registry host (`HOST[:PORT]`, `docker.io`).
        registry: String,
        /// User name.
        #[arg(long, short = 'u')]
        username: String,
        /// Read the password from stdin (the only way to give it).
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// Forget the login for a registry.
    Logout {
        /// Registry host.
        registry: String,
    },
    /// List your tenant's registry logins (no passwords).
    Ls(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes: state, address, capacity and what is held of it,
    /// sandboxes, last heartbeat, labels.
    Ls(JsonFlag),
    /// Set a node draining: it keeps what it runs, new sandboxes go to
    /// the other nodes.
    Drain {
        node: String,
        #[arg(long)]
        json: bool,
        /// Wait until every sandbox of the node has moved to another node.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (`30s`, `10m`).
        #[arg(long, default_value = "30m")]
        timeout: String,
    },
    /// Set a draining node up again: it takes new sandboxes.
    Undrain {
        node: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct MoveArgs {
    /// The sandbox (id or name).
    pub sandbox: String,
    /// The node to move it to (default: the node placement picks).
    #[arg(long)]
    pub to: Option<String>,
    /// Keep its memory and processes (gVisor: hibernate, move, resume).
    #[arg(long)]
    pub warm: bool,
    /// Print the moved sandbox as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UiArgs {
    #[command(subcommand)]
    pub command: Option<UiCommand>,
    /// How long the login URL may be used (once): `5m`, `1h`, at most `24h`.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = ui_valid_secs)]
    pub valid: u64,
    /// Only print the URL; do not try to open a browser.
    #[arg(long)]
    pub no_open: bool,
    /// Print the login link as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum UiCommand {
    /// Your tenant's live console sessions: id, key, started, last seen, ends.
    Sessions(JsonFlag),
    /// End a console session (its next request is refused), or all of them.
    Revoke {
        /// The session's id, from `dwell ui sessions`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        session: Option<String>,
        /// Every console session of your tenant.
        #[arg(long)]
        all: bool,
    },
}

fn ui_valid_secs(v: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("{e}; give a duration such as 5m or 1h"))?;
    match d.as_secs() {
        0 => Err(format!("{v} is under a second; give e.g. 5m")),
        s if s > 86_400 => Err(format!("{v} is over 24h, the longest a login URL may live")),
        s => Ok(s),
    }
}

fn duration_ms(v: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("{e}; give a duration such as 30m or 12h"))?;
    if d.as_secs() < 60 {
        return Err(format!("{v} is under a minute; give e.g. 30m"));
    }
    Ok(d.as_millis() as u64)
}

/// `--credential-recheck`: a duration of at least 100ms (every open
/// stream queries the store that often).
fn recheck_ms(v: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("{e}; give a duration such as 30s or 1m"))?;
    if d.as_millis() < 100 {
        return Err(format!(
            "{v} is too short: every open stream would query the database that often; \
             give at least 100ms, e.g. 30s"
        ));
    }
    Ok(d.as_millis() as u64)
}

#[derive(Debug, Subcommand)]
pub enum SshKeyCommand {
    /// Register a public key: `dwell ssh-key add ~/.ssh/id_ed25519.pub`
    /// (`-` reads it from stdin). Then `ssh -p 2222 SANDBOX@HOST` logs in
    /// to any sandbox of your tenant with its private half (as
    /// `SANDBOX+TENANT@HOST` when other tenants registered it too).
    Add {
        /// The public key file (one OpenSSH line), or `-` for stdin.
        file: String,
        /// A name for it (default: the key's comment).
        #[arg(long)]
        name: Option<String>,
        /// Print the registered key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your tenant's SSH keys: id, name, fingerprint, added, last login.
    Ls(JsonFlag),
    /// Remove a key by id or name; logins with it are refused from now on
    /// and connections logged in with it are closed at once.
    Rm {
        /// The key's id or name, from `dwell ssh-key ls`.
        key: String,
        /// Print the removed key as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant; prints its first API key (shown once).
    Create(TenantArgs),
    /// Replace a tenant's limits (omitted limits become unlimited).
    Update(TenantArgs),
    /// List tenants with their limits and what they hold.
    Ls(JsonFlag),
    /// Issue another API key for a tenant (`tenant key NAME`), or list
    /// (`tenant key ls NAME`) and revoke (`tenant key revoke NAME KEY_ID`) its keys.
    Key(KeyArgs),
}

/// `dwell network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a private network. Sandboxes join it with `dwell create --network NAME`
    /// and reach each other by name (`db`, or `db.NAME`); nothing of other networks,
    /// other tenants or the host is reachable through it, and it gives no internet
    /// access (that is `--net`).
    Create {
        /// Network name: 1-32 lowercase letters, digits and '-', starting with a letter.
        name: String,
        /// IPv4 subnet such as 10.211.5.0/24 (/16 to /29, private ranges).
        /// Default: the first free /24 of 10.210.0.0/16.
        #[arg(long)]
        subnet: Option<String>,
        /// Print the network as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your private networks with their member counts.
    #[command(alias = "list")]
    Ls(JsonFlag),
    /// Show a network: subnet, bridge, and each member's name, address and state.
    Inspect {
        /// Network name or id.
        name: String,
        /// Print the network and its members as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a network. Refused while sandboxes are on it: remove them (`dwell rm`)
    /// or take them off while stopped (`dwell update NAME --network-rm NETWORK`) first.
    Rm {
        /// Network names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `dwell volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume: an ext4 filesystem with a hard size limit (writes past
    /// it fail with "no space"), counted in your storage quota whether used or not.
    Create {
        /// Volume name: 1-63 lowercase letters, digits, '-', '_' or '.'.
        name: String,
        /// Size limit, 32M to 64T (e.g. 20G). Volumes above 16T need the daemon's
        /// data dir on xfs or btrfs (ext4 files end at 16 TiB). Required unless --from.
        #[arg(long, required_unless_present = "from")]
        size: Option<String>,
        /// Fill it from a volume snapshot (`dwell volume snapshot`); it gets the
        /// snapshot's size.
        #[arg(long)]
        from: Option<String>,
        /// Print the volume as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List your named volumes: size, use, and how many sandboxes use each.
    #[command(alias = "list")]
    Ls(JsonFlag),
    /// Show a volume: size, bytes used, whether mounted, the sandboxes that use it.
    Inspect {
        /// Volume name or id.
        name: String,
        /// Print the volume as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Grow a volume. While sandboxes use it, it grows online where the host allows
    /// (the daemon needs CAP_SYS_RESOURCE), else stop them first. Never shrinks.
    Resize {
        /// Volume name or id.
        name: String,
        /// The new size limit (e.g. 40G), not smaller than the current one.
        #[arg(long)]
        size: String,
        /// Print the volume as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Snapshot a volume into the snapshot store (listed by `dwell snapshot ls`,
    /// removed by `dwell snapshot rm`). A volume in use is frozen while it is read.
    Snapshot {
        /// Volume name or id.
        name: String,
        /// A name for the snapshot.
        #[arg(long = "name", value_name = "SNAPSHOT")]
        snapshot_name: Option<String>,
        /// Print the snapshot as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Put a volume back to a snapshot of it (of the same size). Refused while a
    /// sandbox that uses it runs: stop those first.
    Restore {
        /// Volume name or id.
        name: String,
        /// Snapshot id or name.
        snapshot: String,
    },
    /// Remove volumes and their data. Refused while any sandbox (running or
    /// stopped) uses one: the error names them; delete those sandboxes first.
    Rm {
        /// Volume names or ids.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct KeyArgs {
    #[command(subcommand)]
    pub command: Option<KeyCommand>,
    /// Tenant name (issue a new key for it).
    pub name: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// List a tenant's keys: ids, names, created, last used, revoked (never secrets).
    Ls {
        /// Tenant name (`default` for the admin key's tenant).
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key: every listener refuses it with 401 from now on.
    Revoke {
        /// Tenant name.
        name: String,
        /// The key's id, from `dwell tenant key ls`.
        key_id: String,
    },
}

#[derive(Debug, Args)]
pub struct TenantArgs {
    /// Tenant name.
    pub name: String,
    /// Most sandboxes (of any state but deleted).
    #[arg(long)]
    pub max_sandboxes: Option<u64>,
    /// Most vCPUs held by creating, running and paused sandboxes.
    #[arg(long)]
    pub max_vcpus: Option<f64>,
    /// Most memory held by creating, running and paused sandboxes, like 32G.
    #[arg(long)]
    pub max_memory: Option<String>,
    /// Most volume storage, like 500G.
    #[arg(long)]
    pub max_storage: Option<String>,
    /// Default policies of the tenant's sandboxes that set none.
    #[command(flatten)]
    pub defaults: DefaultPolicyFlags,
    /// Default egress allow list of the tenant's --net sandboxes that give no
    /// rules (CIDRs, domains, *.domain; comma-separated or repeated).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub default_allow_out: Vec<String>,
    /// Default egress deny list (0.0.0.0/0: deny everything not allowed).
    #[arg(long, value_delimiter = ',', value_name = "CIDR|DOMAIN")]
    pub default_deny_out: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// Tenant (admins; default: all for admins, your own otherwise).
    #[arg(long)]
    pub tenant: Option<String>,
    /// From this date (2026-11-01) or time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Over time instead of per sandbox: a row per tenant and `hour` or
    /// `day` (the last 30 days unless --since).
    #[arg(long, value_name = "STEP", value_parser = ["hour", "day"])]
    pub by: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// From this date (2026-11-01) or time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Snapshot a sandbox (frozen for the capture if it runs).
    Create {
        /// Sandbox name or id.
        sandbox: String,
        /// Name of the snapshot.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List snapshots.
    Ls {
        /// Only snapshots of this sandbox.
        #[arg(long)]
        sandbox: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show a snapshot.
    Inspect {
        /// Snapshot name or id.
        snapshot: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete snapshots (and the stored data no other snapshot shares).
    Rm {
        /// Snapshot names or ids.
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Delete stored chunks no snapshot references (admin; the daemon also does it periodically).
    Gc {
        #[arg(long)]
        json: bool,
    },
}

/// `--timeout` of `dwell build`: plain seconds or a duration (`30m`).
fn build_timeout_secs(v: &str) -> Result<u64, String> {
    if let Ok(n) = v.parse::<u64>() {
        return Ok(n);
    }
    let d = humantime::parse_duration(v)
        .map_err(|e| format!("{e}; give seconds or a duration such as 30m or 2h"))?;
    if d.as_secs() == 0 {
        return Err(format!(
            "{v} is under a second; a build needs at least 1s (give e.g. 30m)"
        ));
    }
    Ok(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::build_timeout_secs;

    #[test]
    fn build_timeouts_take_seconds_or_durations_of_at_least_a_second() {
        assert_eq!(build_timeout_secs("90"), Ok(90));
        assert_eq!(build_timeout_secs("30m"), Ok(1800));
        assert_eq!(build_timeout_secs("2h"), Ok(7200));
        assert!(build_timeout_secs("500ms")
            .unwrap_err()
            .contains("at least 1s"));
        assert!(build_timeout_secs("soon")
            .unwrap_err()
            .contains("30m or 2h"));
    }
}
