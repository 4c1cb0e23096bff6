//! Start: write the config to the state dir, hand it to a boot process (a
//! standby from the warm pool, or a fresh one), wait until that process
//! exits (blocking reads of its output, no polling), and connect to the
//! agent. Leaves nothing behind on error.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::boot::{console_tail, BootOptions, BOOT_OPTIONS_FILE};
use super::{layout, pidfile, NamespaceRuntime};
use crate::error::Context;
use crate::host::{network, wait};
use crate::{Error, NetworkMode, Observed, Result, Runtime, SandboxConfig, Started};

/// Extra time the boot process gets beyond the agent timeout (mounts,
/// cgroups, network).
const BOOT_SLACK: Duration = Duration::from_secs(20);
/// How long `start` waits for a standby that the pool is starting right
/// now (booting fresh would cost at least as much) before booting fresh.
const POOL_WAIT: Duration = Duration::from_secs(2);

pub fn start(rt: &NamespaceRuntime, config: &SandboxConfig) -> Result<Started> {
    layout::validate(config)?;
    crate::core_pattern::check_grants(config)?;
    if config.network == NetworkMode::Nat {
        network::check_forwarding()?;
    }
    if rt.observe(config)? != Observed::Stopped {
        return Err(Error::Start(format!(
            "sandbox {} is already running on this host; stop it before starting it again",
            config.id
        )));
    }
    match boot(rt, config) {
        Ok(started) => Ok(started),
        Err(e) => {
            if let Err(cleanup) = rt.stop(config) {
                tracing::warn!(id = %config.id, error = %cleanup, "cleanup after a failed start");
            }
            Err(e)
        }
    }
}

fn boot(rt: &NamespaceRuntime, config: &SandboxConfig) -> Result<Started> {
    let state = &config.state_dir;
    std::fs::create_dir_all(state).context(|| format!("creating {}", state.display()))?;
    for stale in [
        layout::HOST_AGENT_SOCKET,
        layout::PID_FILE,
        layout::NETWORK_FILE,
    ] {
        let _ = std::fs::remove_file(state.join(stale));
    }
    let json = serde_json::to_vec_pretty(config).expect("SandboxConfig serialises");
    let cfg_path = state.join(layout::CONFIG_FILE);
    std::fs::write(&cfg_path, json).context(|| format!("writing {}", cfg_path.display()))?;
    let opts = BootOptions {
        cgroup_parent: rt.options.cgroup_parent.clone(),
        nat_pool: rt.options.nat_pool.clone(),
        deny_net: rt.options.deny_net.clone(),
        agent_timeout_ms: rt.options.agent_timeout.as_millis() as u64,
        user_namespaces: rt.options.user_namespaces,
    };
    let opts_path = state.join(BOOT_OPTIONS_FILE);
    std::fs::write(
        &opts_path,
        serde_json::to_vec_pretty(&opts).expect("serialises"),
    )
    .context(|| format!("writing {}", opts_path.display()))?;

    let deadline = Instant::now() + rt.options.agent_timeout + BOOT_SLACK;
    let _busy = rt.pool().busy();
    let launched = rt
        .pool()
        .take(POOL_WAIT)
        .and_then(|standby| standby.launch(state, deadline));
    let (status, err_text) = match launched {
        Some(r) => r?,
        None => boot_fresh(rt, state, deadline)?,
    };
    if !status.success() {
        let msg = err_text.trim();
        return Err(Error::Start(if msg.is_empty() {
            format!("the boot process failed ({status}) without a message")
        } else {
            msg.to_string()
        }));
    }

    let pid =
        pidfile::live_pid(&layout::state_file(config, layout::PID_FILE))?.ok_or_else(|| {
            Error::Start(format!(
                "the sandbox's agent (PID 1) exited right after starting; its output:\n{}",
                console_tail(config)
            ))
        })?;
    let sock = layout::state_file(config, layout::HOST_AGENT_SOCKET);
    wait_for_agent(rt, config, pid, &sock, rt.options.agent_timeout)?;
    Ok(Started {
        pid,
        agent_socket: sock,
    })
}

/// Wait until the agent accepts a connection on `sock`: connect attempts
/// every 100 µs for the first 20 ms, then with a backoff to 1 ms (the agent
/// listens about a millisecond after its exec, which is when the boot
/// process reports), failing early when PID 1 dies. (The boot process does
/// not wait with inotify itself: closing an inotify instance waits for an
/// SRCU grace period, 20+ ms, which its exit would add to every start.)
fn wait_for_agent(
    rt: &NamespaceRuntime,
    config: &SandboxConfig,
    pid: i32,
    sock: &std::path::Path,
    timeout: Duration,
) -> Result<()> {
    let t0 = Instant::now();
    let deadline = t0 + timeout;
    let mut backoff = wait::Backoff::new(Duration::from_micros(100), Duration::from_millis(1));
    loop {
        let err = match rt.connect_agent(config) {
            Ok(_) => return Ok(()),
            Err(Error::Io { source, .. }) => source,
            Err(e) => return Err(e),
        };
        let retry = matches!(
            err.kind(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
        );
        if retry && pidfile::start_time(pid).is_none() {
            return Err(Error::Start(format!(
                "the agent exited before listening on {}; its output:\n{}",
                sock.display(),
                console_tail(config)
            )));
        }
        if !retry || Instant::now() >= deadline {
            return Err(Error::Start(format!(
                "the agent does not accept connections on {} within {timeout:?}: {err}; \
                 its output:\n{}",
                sock.display(),
                console_tail(config)
            )));
        }
        if t0.elapsed() < STEADY_POLL {
            // The agent listens within a millisecond or so of its exec: a
            // doubling wait would overshoot that by as much again.
            std::thread::sleep(Duration::from_micros(100));
        } else {
            backoff.sleep_until(deadline);
        }
    }
}

/// How long [`wait_for_agent`] polls every 100 µs before backing off.
const STEADY_POLL: Duration = Duration::from_millis(20);

/// Run a fresh boot process and wait (blocking, bounded by `deadline`)
/// until it exits: its stderr closes when it does. Returns its status and
/// what it wrote to stderr.
fn boot_fresh(
    rt: &NamespaceRuntime,
    state: &std::path::Path,
    deadline: Instant,
) -> Result<(std::process::ExitStatus, String)> {
    let exe = &rt.options.boot_exe;
    let mut child = Command::new(exe)
        .args(&rt.options.boot_args)
        .arg(state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context(|| format!("running the boot process {}", exe.display()))?;
    let mut stderr = child.stderr.take().expect("piped stderr");
    match wait::read_to_end_until(&mut stderr, deadline) {
        Ok(text) => {
            let status = child
                .wait()
                .context(|| "waiting for the boot process".into())?;
            Ok((status, text))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::Start(format!(
                "the boot process did not finish within {:?}; it was killed",
                rt.options.agent_timeout + BOOT_SLACK
            )))
        }
    }
}
