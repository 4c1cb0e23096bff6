//! Which runsc platform (how the sentry intercepts the sandbox's system
//! calls) gVisor sandboxes run on: a daemon-wide choice between speed and
//! idle cost.
//!
//! Measured on a 2-core VM (runsc 20240729, a plain `runsc run`):
//!
//! | platform | idle, `sleep` running | 200,000 one-byte `dd` syscalls | 20,000 `stat`s in python |
//! |---|---|---|---|
//! | systrap (default) | ~27 ms CPU per second | 1.2 s | 0.17 s |
//! | ptrace | ~0.1 ms CPU per second | 22.6 s | 1.2 s |
//!
//! systrap's cost while idle is a goroutine of the sentry that polls every
//! 400 µs; dwell removes it for sandboxes in which only the agent runs by
//! freezing them (see [`super::doze`]), which leaves sandboxes with a
//! process of their own (a server waiting for connections). A node of
//! many such mostly-idle sandboxes may prefer ptrace. kvm needs a host
//! whose KVM runs runsc's guest (bare metal or nested virtualisation).

use std::fmt;
use std::str::FromStr;

/// A runsc `--platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Platform {
    /// Fast system calls; polls while idle (see the module docs).
    #[default]
    Systrap,
    /// Slow system calls; costs nothing while idle.
    Ptrace,
    /// Hardware virtualisation, where the host's KVM allows it.
    Kvm,
}

impl Platform {
    /// runsc's name of the platform.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Systrap => "systrap",
            Platform::Ptrace => "ptrace",
            Platform::Kvm => "kvm",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Platform, String> {
        match s {
            "systrap" => Ok(Platform::Systrap),
            "ptrace" => Ok(Platform::Ptrace),
            "kvm" => Ok(Platform::Kvm),
            other => Err(format!(
                "unknown gVisor platform {other:?}: use systrap (fast system calls, the \
                 default), ptrace (no CPU while idle, slow system calls) or kvm (needs a \
                 host whose KVM runs runsc's guest)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_by_runsc_name_and_others_are_refused_with_the_choices() {
        for p in [Platform::Systrap, Platform::Ptrace, Platform::Kvm] {
            assert_eq!(p.as_str().parse::<Platform>().unwrap(), p);
        }
        let e = "fast".parse::<Platform>().unwrap_err();
        assert!(e.contains("systrap") && e.contains("ptrace"), "{e}");
        assert_eq!(Platform::default(), Platform::Systrap);
    }
}
