//! Running `runsc` with a deadline. A hung runsc must never hang the
//! daemon: every call is killed when its time is up.
//!
//! Commands that start a sandbox (`run --detach`, `restore --detach`) leave
//! processes behind that inherit runsc's stdout and stderr, so their output
//! goes to the sandbox's console log, opened with `O_APPEND` (a restored
//! sandbox keeps writing at its old file offset otherwise), and only the
//! runsc process itself is awaited. Every other command's output is
//! captured through pipes.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::Context;
use crate::host::wait::Backoff;
use crate::{Error, Result};

/// How one runsc installation is invoked.
#[derive(Debug, Clone)]
pub struct Runsc {
    /// The runsc executable.
    pub binary: PathBuf,
    /// Global flags given before the subcommand (`--root`, `--network`, ...).
    pub global: Vec<String>,
    /// Run runsc in a mount namespace of its own with an empty
    /// `/proc/sys/net` (see [`super::network`] for why).
    pub hide_sysctl_net: bool,
}

/// Where a command's stdout and stderr go.
pub enum Output<'a> {
    /// Captured and returned (stdout) or put in the error (stderr).
    Capture,
    /// Appended to this file (commands that leave a sandbox running).
    Console(&'a Path),
}

impl Runsc {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(&self.global).args(args).stdin(Stdio::null());
        // A group of its own, so that a timeout kills whatever it started
        // too (and nothing can keep our pipes open after it).
        cmd.process_group(0);
        if self.hide_sysctl_net {
            // SAFETY: only async-signal-safe syscalls on static strings
            // between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    let check = |r: libc::c_int| {
                        if r < 0 {
                            Err(std::io::Error::last_os_error())
                        } else {
                            Ok(())
                        }
                    };
                    check(libc::unshare(libc::CLONE_NEWNS))?;
                    // Mounts and unmounts of the host (the sandbox's
                    // rootfs) still reach the copy.
                    check(libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_SLAVE | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                    check(libc::mount(
                        c"tmpfs".as_ptr(),
                        c"/proc/sys/net".as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=4k".as_ptr().cast(),
                    ))
                });
            }
        }
        cmd
    }

    /// Run `runsc <global> <args>` and wait at most `timeout`. Returns its
    /// stdout on success; an error with its stderr otherwise.
    pub fn run(&self, args: &[&str], output: Output<'_>, timeout: Duration) -> Result<String> {
        let what = format!("runsc {}", args.join(" "));
        let mut cmd = self.command(args);
        let console = match &output {
            Output::Console(path) => Some(path.to_path_buf()),
            Output::Capture => None,
        };
        match output {
            Output::Capture => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            Output::Console(path) => {
                let log = crate::host::layout::open_log(path)
                    .context(|| format!("opening the console log {}", path.display()))?;
                let log2 = log
                    .try_clone()
                    .context(|| format!("duplicating {}", path.display()))?;
                cmd.stdout(log).stderr(log2);
            }
        }
        let mut child = cmd.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Unsupported {
                    what: "gVisor".into(),
                    why: format!("{} is not installed", self.binary.display()),
                    fix: "install the runsc package (apt-get install -t bookworm-backports runsc)"
                        .into(),
                }
            } else {
                Error::Io {
                    context: format!("running {what}"),
                    source: e,
                }
            }
        })?;
        let stdout = child.stdout.take().map(read_in_thread);
        let stderr = child.stderr.take().map(read_in_thread);
        let status = wait_until(&mut child, Instant::now() + timeout).map_err(|e| match e {
            WaitError::Timeout => Error::Other(format!(
                "{what} did not finish within {timeout:?} and was killed; runsc may be \
                 hung on a stuck sandbox: check `runsc --root <root> list` and the console log"
            )),
            WaitError::Io(source) => Error::Io {
                context: format!("waiting for {what}"),
                source,
            },
        })?;
        let stdout = stdout.map_or_else(String::new, |h| h.join().unwrap_or_default());
        let stderr = stderr.map_or_else(String::new, |h| h.join().unwrap_or_default());
        if !status.success() {
            // Output sent to the console log: its last lines say why.
            let logged = console
                .map(|p| crate::host::layout::tail_lines(&p, 4))
                .unwrap_or_default();
            let msg = first_lines(if !stderr.trim().is_empty() {
                &stderr
            } else if !stdout.trim().is_empty() {
                &stdout
            } else {
                &logged
            });
            return Err(Error::Other(format!("{what} failed ({status}): {msg}")));
        }
        Ok(stdout)
    }
}

/// Read a pipe to its end on a thread of its own.
fn read_in_thread(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// The first few lines of a message (runsc panics print whole stacks).
fn first_lines(s: &str) -> String {
    s.trim().lines().take(4).collect::<Vec<_>>().join(" | ")
}

enum WaitError {
    Timeout,
    Io(std::io::Error),
}

/// Wait for `child` until `deadline`; kill its process group and reap it
/// when it is late.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus, WaitError> {
    let mut backoff = Backoff::new(Duration::from_micros(200), Duration::from_millis(20));
    let mut reaped_at = Instant::now();
    super::reap::reap_runsc_zombies();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                super::reap::reap_runsc_zombies();
                return Ok(status);
            }
            Ok(None) => {}
            Err(e) => return Err(WaitError::Io(e)),
        }
        // runsc may be waiting for a sandbox that is our zombie.
        if reaped_at.elapsed() >= Duration::from_millis(20) {
            super::reap::reap_runsc_zombies();
            reaped_at = Instant::now();
        }
        if Instant::now() >= deadline {
            // The child leads its own group (see `command`).
            let _ = crate::host::sys::kill(-(child.id() as i32), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(WaitError::Timeout);
        }
        backoff.sleep_until(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh() -> Runsc {
        Runsc {
            binary: "/bin/sh".into(),
            global: vec!["-c".into()],
            hide_sysctl_net: false,
        }
    }

    #[test]
    fn captures_output_and_errors() {
        let out = sh()
            .run(&["echo hello"], Output::Capture, Duration::from_secs(5))
            .unwrap();
        assert_eq!(out, "hello\n");
        let err = sh()
            .run(
                &["echo bad >&2; exit 3"],
                Output::Capture,
                Duration::from_secs(5),
            )
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad"), "{err}");
    }

    #[test]
    fn kills_hung_commands() {
        let t = Instant::now();
        let err = sh()
            .run(&["sleep 30"], Output::Capture, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn missing_binary_is_unsupported() {
        let r = Runsc {
            binary: "/nonexistent/runsc".into(),
            global: vec![],
            hide_sysctl_net: false,
        };
        let err = r
            .run(&["list"], Output::Capture, Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    }
}
