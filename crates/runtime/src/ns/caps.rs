//! Capabilities of the sandbox's PID 1: the default set container runtimes
//! grant, in the bounding, effective, permitted and inheritable sets, with
//! the ambient set cleared.

use caps::{CapSet, Capability, CapsHashSet};

use super::sys;

/// The capabilities a sandbox keeps.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The default set as the bit mask shown in /proc/<pid>/status (CapEff).
pub fn default_mask() -> u64 {
    DEFAULT_CAPS
        .iter()
        .map(|c| c.bitmask())
        .fold(0, |a, b| a | b)
}

/// Reduce the calling process to [`DEFAULT_CAPS`]. Must run before
/// no_new_privs and seccomp, while CAP_SETPCAP is still effective.
pub fn drop_to_default() -> Result<(), String> {
    let keep: CapsHashSet = DEFAULT_CAPS.into_iter().collect();
    // The bounding set by number up to the kernel's last capability, so a
    // capability newer than the `caps` crate is dropped too.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep_mask = default_mask();
    for n in 0..=last {
        if keep_mask & (1u64 << n) == 0 {
            sys::prctl(libc::PR_CAPBSET_DROP, n.into())
                .map_err(|e| format!("dropping capability {n} from the bounding set: {e}"))?;
        }
    }
    caps::set(None, CapSet::Inheritable, &keep)
        .map_err(|e| format!("setting inheritable capabilities: {e}"))?;
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| format!("setting effective capabilities: {e}"))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| format!("setting permitted capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| format!("clearing ambient capabilities: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn mask_is_the_usual_default() {
        assert_eq!(super::default_mask(), 0xa804_25fb);
    }
}
