//! Capabilities of the sandbox's PID 1: the default set container runtimes
//! grant minus CAP_NET_RAW (kept only when the sandbox was granted raw
//! sockets), in the bounding, effective, permitted and inheritable sets,
//! with the ambient set cleared.

use caps::{CapSet, Capability, CapsHashSet};

use crate::host::sys;
use crate::Grants;

/// The capabilities every sandbox keeps.
pub const DEFAULT_CAPS: [Capability; 13] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// The capabilities of a sandbox with `grants`.
pub fn kept(grants: &Grants) -> Vec<Capability> {
    let mut keep = DEFAULT_CAPS.to_vec();
    if grants.raw_sockets {
        keep.push(Capability::CAP_NET_RAW);
    }
    keep
}

/// The default set as the bit mask shown in /proc/<pid>/status (CapEff).
pub fn default_mask() -> u64 {
    mask(&Grants::default())
}

/// The set of a sandbox with `grants` as a bit mask.
pub fn mask(grants: &Grants) -> u64 {
    kept(grants)
        .iter()
        .map(|c| c.bitmask())
        .fold(0, |a, b| a | b)
}

/// Reduce the calling process to [`kept`]. Must run while CAP_SETPCAP is
/// still effective: before no_new_privs and seccomp, or (in a user
/// namespace, without no_new_privs) right after seccomp, whose filters
/// allow the calls made here.
pub fn drop_to(grants: &Grants) -> Result<(), String> {
    let keep: CapsHashSet = kept(grants).into_iter().collect();
    // The bounding set by number up to the kernel's last capability, so a
    // capability newer than the `caps` crate is dropped too.
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    let keep_mask = mask(grants);
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
    fn mask_is_the_usual_default_without_net_raw() {
        // Docker's default set is 0xa80425fb; CAP_NET_RAW is bit 13.
        assert_eq!(super::default_mask(), 0xa804_25fb & !(1 << 13));
    }

    #[test]
    fn raw_sockets_grant_adds_net_raw_only() {
        let g = crate::Grants {
            raw_sockets: true,
            ..Default::default()
        };
        assert_eq!(super::mask(&g), 0xa804_25fb);
    }
}
