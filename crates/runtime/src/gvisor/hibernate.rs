//! Hibernate and restore: the whole sandbox (processes, memory, open
//! files) saved to a directory with `runsc checkpoint`, and brought back
//! with `runsc restore --detach`. The filesystem is the volume on the host
//! (runsc runs with `--overlay2=none`), so it stays where it is.
//!
//! gVisor cannot save a unix socket bound on the host (the agent's
//! `/run/dwell/agent.sock`, made a host socket by `--host-uds=create`):
//! checkpoint fails with "Cannot save endpoint with bound host socket" and
//! the sandbox dies. So the agent takes part: on [`UNLISTEN_SIGNAL`] (or
//! the protocol's `unlisten` request, which the daemon sends first because
//! a message is much cheaper than a `runsc kill`; the signal is sent only
//! when the socket is still there) it closes its listener (and its
//! connections) and removes the socket; on
//! [`LISTEN_SIGNAL`], or when [`RESTORED_MARKER`] appears, it binds it
//! again. Hibernate removes the marker, sends the signal (when the socket
//! is still there) and waits until the socket is gone; a hibernation that
//! stops short of the checkpoint makes the agent listen again the same way
//! a restore does; restore creates the marker before `runsc restore`
//! (the restored agent listens within a millisecond), sends the second
//! signal only if the agent does not listen soon, and waits until it
//! accepts connections.

use std::path::Path;
use std::time::{Duration, Instant};

use super::runsc::Output;
use super::{cpu, headroom, rootfs, run_dir, GvisorRuntime, BUNDLE_DIR};
pub use crate::agent_channel::is_socket;
use crate::error::Context;
use crate::host::{layout, wait::Backoff};
use crate::{Error, Observed, Result, Runtime, SandboxConfig, Started};

/// Sent to the agent before a checkpoint: close the listener, remove the
/// socket.
pub const UNLISTEN_SIGNAL: &str = "USR1";
/// Sent to the agent after a restore: listen on the socket again (when
/// it did not already on seeing [`RESTORED_MARKER`]).
pub const LISTEN_SIGNAL: &str = "USR2";

/// Created next to the agent's socket (in `state_dir/run`) before a
/// restore: an agent that does not listen listens again as soon as it
/// appears, which saves the `runsc kill` of [`LISTEN_SIGNAL`].
pub const RESTORED_MARKER: &str = "run/restored";

/// How long a restored agent gets to notice the marker before it is sent
/// [`LISTEN_SIGNAL`] (agents without the marker need the signal).
const MARKER_GRACE: Duration = Duration::from_millis(250);

/// How long a checkpointed sandbox may take to exit by itself when
/// `runsc delete` failed to end it.
const EXIT_AFTER_CHECKPOINT: Duration = Duration::from_secs(10);

/// The file runsc writes the sandbox's state to inside the image dir.
pub const CHECKPOINT_FILE: &str = "checkpoint.img";

/// The image dir a checkpoint writes: complete once [`CHECKPOINT_FILE`]
/// is there.
pub const IMAGE_FORMAT: crate::ImageFormat = crate::ImageFormat {
    complete_file: CHECKPOINT_FILE,
};

/// How checkpoints are written: uncompressed (restore maps the pages
/// file instead of inflating it: MACHINE.md measured 366 -> 305 ms for
/// 200 MB), and without pages that were committed but are all zeros (the
/// state is about the memory actually used).
pub const CHECKPOINT_FLAGS: [&str; 2] = ["--compression=none", "--exclude-committed-zero-pages"];

/// Where `runsc restore --pid-file` writes the sandbox's pid (state dir).
pub(super) const PID_FILE: &str = "runsc.pid";

/// The pid runsc wrote to `path` (0 when unreadable).
pub(super) fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

impl GvisorRuntime {
    /// Save the running sandbox to `image_dir` (created if missing) and
    /// stop it: afterwards nothing of it runs on the host and its rootfs is
    /// unmounted. Close every agent connection first. When the agent's
    /// socket is already gone (the caller sent it `unlisten`), no signal
    /// is sent.
    pub fn hibernate(&self, config: &SandboxConfig, image_dir: &Path) -> Result<()> {
        layout::validate_id(&config.id)?;
        // A dozing sentry cannot write its checkpoint.
        self.wake_sandbox(config, true)?;
        let t0 = Instant::now();
        if let Err(e) = self.before_checkpoint(config, image_dir) {
            // The caller may have made the agent stop listening already: a
            // sandbox that lives on must stay reachable.
            if self.observe(config).ok() == Some(Observed::Running) {
                self.listen_again(config);
            }
            return Err(e);
        }
        // A sandbox started from the warm pool: the image holds two
        // containers (see `super::claim`).
        let pool_root = super::claim::pool_root(&self.options.root, &config.id);
        if let Some(root) = &pool_root {
            self.mark_pooled_image(image_dir, root)?;
        }
        let image = format!("--image-path={}", image_dir.display());
        // The sentry needs memory of its own to save the application's.
        let extra = headroom::for_checkpoint(config.resources.memory_bytes);
        let raised = headroom::raise(&self.cgroups_path(&config.id), extra);
        let [compression, zeros] = CHECKPOINT_FLAGS;
        let t_unlisten = t0.elapsed();
        if let Err(e) = self.call(&["checkpoint", compression, zeros, &image, &config.id]) {
            // Still running (a refused checkpoint): let the agent listen
            // again so the sandbox stays usable.
            if self.observe(config).ok() == Some(Observed::Running) {
                raised.restore();
                self.listen_again(config);
            }
            return Err(e);
        }
        let t_checkpoint = t0.elapsed();
        // The checkpoint ends the sandbox; remove runsc's record (it is
        // known to exist: no `runsc state` first) and the host mounts.
        let deleted = match &pool_root {
            Some(root) => self.stop_pooled(config, root),
            None => self.call(&["delete", "--force", &config.id]).map(drop),
        };
        if let Err(e) = deleted {
            self.teardown_after_checkpoint(config, e)?;
        }
        self.release_host(config);
        tracing::debug!(
            id = %config.id,
            "hibernated: agent unlistened {:?}, runsc checkpoint {:?}, teardown {:?}",
            t_unlisten,
            t_checkpoint - t_unlisten,
            t0.elapsed() - t_checkpoint
        );
        Ok(())
    }

    /// Everything before the checkpoint: a running sandbox (thawed if
    /// paused), an empty image dir, and an agent that no longer listens.
    fn before_checkpoint(&self, config: &SandboxConfig, image_dir: &Path) -> Result<()> {
        match self.observe(config)? {
            Observed::Running => {}
            Observed::Paused => self.resume(config)?,
            Observed::Stopped => {
                return Err(Error::Other(format!(
                    "sandbox {} is not running under gVisor: nothing to hibernate",
                    config.id
                )))
            }
        }
        // runsc refuses to overwrite an older image's files (the state and,
        // uncompressed, the pages files): start from an empty dir.
        match std::fs::remove_dir_all(image_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).context(|| format!("clearing the image dir {}", image_dir.display()))
            }
            _ => {}
        }
        std::fs::create_dir_all(image_dir)
            .context(|| format!("creating the image dir {}", image_dir.display()))?;
        let sock = run_dir::agent_socket(config);
        // Left from the last restore, it would make the agent listen again
        // right away.
        let _ = std::fs::remove_file(layout::state_file(config, RESTORED_MARKER));
        // No socket: the caller asked the agent over its protocol already
        // (a message costs far less than a `runsc kill`).
        if is_socket(&sock) {
            self.call(&["kill", &config.id, UNLISTEN_SIGNAL])?;
        }
        self.wait(self.options.agent_timeout, || !is_socket(&sock))
            .map_err(|_| {
                Error::Other(format!(
                    "the agent of {} did not remove {} within {:?} after SIG{UNLISTEN_SIGNAL}; \
                 it must close its listener before a checkpoint (does this agent support \
                 hibernation?)",
                    config.id,
                    sock.display(),
                    self.options.agent_timeout
                ))
            })
    }

    /// Make the agent of a sandbox that lives on after an aborted
    /// hibernation listen again: the restore marker (a non-listening agent
    /// polls for it), then the signal if that does not do it soon. Best
    /// effort: the sandbox's own state is not at stake.
    fn listen_again(&self, config: &SandboxConfig) {
        let sock = run_dir::agent_socket(config);
        if is_socket(&sock) {
            return;
        }
        let marker = layout::state_file(config, RESTORED_MARKER);
        // Never follow what the sandbox may have put there: create anew.
        let _ = write_marker(config, &marker);
        if let Err(e) = self.signal_unless_listening(config, &sock) {
            tracing::warn!(id = %config.id, error = %e, "asking the agent to listen again");
        }
        let _ = std::fs::remove_file(&marker);
    }

    /// Once the restore marker is in place: give the agent
    /// [`MARKER_GRACE`] to listen on `sock`, then send [`LISTEN_SIGNAL`]
    /// (agents that predate the marker need it).
    fn signal_unless_listening(&self, config: &SandboxConfig, sock: &Path) -> Result<()> {
        if self.wait(MARKER_GRACE, || is_socket(sock)).is_err() {
            self.call(&["kill", &config.id, LISTEN_SIGNAL])?;
        }
        Ok(())
    }

    /// `runsc delete` failed after a complete checkpoint: the image holds
    /// the sandbox's memory now and must not be lost to a teardown error.
    /// Retry through `stop`; if the sandbox is gone either way (it exits
    /// by itself after the checkpoint, within moments), hibernation
    /// succeeded (a runsc record left behind is cleared when it is
    /// restored), and so it does when runsc cannot even say: the image is
    /// complete. Only a sandbox that still runs is an error, and then its
    /// memory lives on in it (its agent is made to listen again).
    fn teardown_after_checkpoint(&self, config: &SandboxConfig, delete: Error) -> Result<()> {
        tracing::warn!(id = %config.id, error = %delete, "runsc delete after the checkpoint failed; retrying");
        let stopped = self.stop(config);
        let mut observed = self.observe(config);
        let deadline = Instant::now() + EXIT_AFTER_CHECKPOINT;
        while matches!(observed, Ok(Observed::Running | Observed::Paused))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            observed = self.observe(config);
        }
        match observed {
            Ok(Observed::Stopped) => {
                if let Err(e) = stopped {
                    tracing::warn!(
                        id = %config.id, error = %e,
                        "the checkpoint is complete and kept; what runsc keeps of the \
                         sandbox is cleared when it is resumed"
                    );
                }
                Ok(())
            }
            Ok(_) => {
                self.listen_again(config);
                Err(Error::Other(format!(
                    "sandbox {} still runs after its checkpoint: runsc delete failed \
                     ({delete}); it was not hibernated",
                    config.id
                )))
            }
            Err(e) => {
                tracing::warn!(
                    id = %config.id, error = %e,
                    "cannot tell whether the sandbox ended after its checkpoint; the \
                     checkpoint is complete and kept"
                );
                Ok(())
            }
        }
    }

    /// Start the sandbox again from the image `hibernate` wrote, with the
    /// same volume, and return once its agent accepts connections. On
    /// error nothing of it is left running (the image is kept).
    pub fn restore(&self, config: &SandboxConfig, image_dir: &Path) -> Result<Started> {
        layout::validate(config)?;
        if !image_dir.join(CHECKPOINT_FILE).is_file() {
            return Err(Error::Other(format!(
                "{} holds no checkpoint ({CHECKPOINT_FILE} is missing): hibernate the \
                 sandbox first",
                image_dir.display()
            )));
        }
        // One `runsc state` (each runsc call costs tens of ms): refuse a
        // live sandbox, clear a dead record and what the host still holds.
        match self.state(&config.id)? {
            Some(s) if s.status == "running" || s.status == "paused" => {
                return Err(Error::Start(format!(
                    "sandbox {} is already running on this host; stop it before restoring it",
                    config.id
                )))
            }
            Some(_) => self.stop(config)?,
            None => {
                rootfs::unmount(&*self.host, config);
                let _ = std::fs::remove_file(run_dir::agent_socket(config));
            }
        }
        match self.restore_inner(config, image_dir) {
            Ok(s) => Ok(s),
            Err(e) => {
                self.discard_restored_pool_root(config);
                if let Err(cleanup) = self.stop(config) {
                    tracing::warn!(id = %config.id, error = %cleanup, "cleanup after a failed restore");
                }
                Err(e)
            }
        }
    }

    fn restore_inner(&self, config: &SandboxConfig, image_dir: &Path) -> Result<Started> {
        // A fresh run dir (a copy restored under a new id has none yet).
        let t0 = Instant::now();
        run_dir::mount(&*self.host, config)?;
        let root = rootfs::mount(&*self.host, config)?;
        // A pooled sandbox's image: its placeholder first, then the
        // sandbox's container into it (see `super::claim`).
        match self.restore_pool_root(config, image_dir)? {
            Some(sandbox) => super::claim::write_spec(
                config,
                &super::claim::container_spec(config, &root, &sandbox),
            )?,
            None => self.write_bundle(config, &root)?,
        }
        let t_mount = t0.elapsed();
        let bundle = layout::state_file(config, BUNDLE_DIR).display().to_string();
        let image = format!("--image-path={}", image_dir.display());
        let console = layout::console_path(config);
        // runsc writes the sandbox's pid here: no `runsc state` needed.
        let pid_file = layout::state_file(config, PID_FILE);
        let _ = std::fs::remove_file(&pid_file);
        let pid_arg = format!("--pid-file={}", pid_file.display());
        let sock = run_dir::agent_socket(config);
        let _ = std::fs::remove_file(&sock);
        // The directory is the sandbox's to write: never follow what it
        // may have left there (a symlink to a host file), create anew.
        let marker = layout::state_file(config, RESTORED_MARKER);
        let _ = std::fs::remove_file(&marker);
        write_marker(config, &marker).context(|| format!("creating {}", marker.display()))?;
        self.runsc_for(config).run(
            &[
                "restore", "--detach", &image, &pid_arg, "--bundle", &bundle, &config.id,
            ],
            Output::Console(&console),
            self.options.runsc_timeout,
        )?;
        cpu::apply(config, &self.cgroups_path(&config.id))?;
        let t_restore = t0.elapsed();
        self.signal_unless_listening(config, &sock)?;
        let t_signal = t0.elapsed();
        self.wait_for_agent(config, &sock)?;
        let _ = std::fs::remove_file(&marker);
        tracing::debug!(
            id = %config.id,
            "restored: rootfs and bundle {:?}, runsc restore {:?}, agent listening {:?}, \
             accepting {:?}",
            t_mount,
            t_restore - t_mount,
            t_signal - t_restore,
            t0.elapsed() - t_signal
        );
        let pid = read_pid(&pid_file);
        Ok(Started {
            pid,
            agent_socket: sock,
        })
    }

    /// Wait until `done` holds, with a short backoff, for at most `timeout`.
    fn wait(&self, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), ()> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Backoff::new(Duration::from_micros(100), Duration::from_millis(5));
        while !done() {
            if Instant::now() >= deadline {
                return Err(());
            }
            backoff.sleep_until(deadline);
        }
        Ok(())
    }
}

/// Create the restore marker anew (never following what the sandbox may
/// have put there), mode 0600, holding the sandbox's agent key: a restored
/// agent takes its key from it, so a warm copy (a new sandbox restored from
/// another's memory) proves its own key, not the original's.
fn write_marker(config: &SandboxConfig, marker: &Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(marker)?;
    if let Some(key) = &config.agent_key {
        f.write_all(key.as_bytes())?;
    }
    Ok(())
}
