//! Thaw volumes left frozen by a daemon that died mid-capture.
//!
//! A snapshot of a running sandbox freezes its volume's filesystem
//! (`FIFREEZE`) while the data is read. The kernel keeps a filesystem
//! frozen until someone thaws it, even if the process that froze it is
//! SIGKILLed; the sandbox's processes would then hang on their next write,
//! and stopping or unmounting the volume would hang too. At daemon start
//! nothing can legitimately be frozen, so every mounted volume of a live
//! sandbox is thawed (`FITHAW` on a filesystem that is not frozen just
//! fails with `EINVAL`, which is ignored). The processes' cgroup freezer is
//! thawed by the reconciler, which resumes sandboxes that should run.

use std::os::fd::AsRawFd;

use crate::context::Context;

/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Thaw every mounted volume of a live sandbox; returns the ids thawed.
/// Blocking.
pub(crate) fn thaw_all(inner: &Context) -> Vec<String> {
    let Ok(recs) = inner.own_sandboxes() else {
        return Vec::new();
    };
    let mut thawed = Vec::new();
    for rec in recs {
        let Ok(info) = inner.volumes.info(&rec.id) else {
            continue;
        };
        if !info.mounted || info.image.is_none() {
            continue;
        }
        let Ok(f) = std::fs::File::open(&info.path) else {
            continue;
        };
        let mut arg: libc::c_int = 0;
        // SAFETY: FITHAW on a directory fd we own; arg is unused.
        if unsafe { libc::ioctl(f.as_raw_fd(), FITHAW, &mut arg) } == 0 {
            tracing::warn!(
                sandbox = %rec.id,
                "thawed a volume left frozen by a daemon that died during a snapshot"
            );
            let _ = inner.store.add_event(
                &rec.id,
                "sweep",
                "volume thawed: the daemon died while a snapshot had it frozen",
            );
            thawed.push(rec.id);
        }
    }
    thawed
}
