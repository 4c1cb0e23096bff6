//! Named volumes: a tenant's volumes that live on their own (`dwell volume
//! create NAME --size 20G`) and are bound into sandboxes at create
//! (`--volume NAME:/path[:ro]`).
//!
//! Each is a volume of the daemon's second [`dwell_storage::VolumeManager`]
//! under `<data dir>/named-volumes`, keyed by its record's id (a loop-mounted
//! ext4 image with a hard size limit, 32 MiB to 64 TiB). The ext4 is mounted
//! once on the host, at `named-volumes/<id>/mnt`, while at least one sandbox
//! that uses it runs, and each such sandbox gets a bind of that mount (the
//! namespace runtime an idmapped one, gVisor an OCI bind mount its gofer
//! serves). So several sandboxes share one filesystem read-write: writes
//! are visible to all at once, with no locking beyond what programs do
//! themselves (flock and fcntl locks work between namespace sandboxes on
//! the one ext4; gVisor sandboxes see each other's data through the gofer).
//!
//! Who uses a volume is in the sandboxes' specs; which running sandboxes
//! hold its mount is counted in memory ([`attach`] at start and restore,
//! [`detach`] at stop, hibernation and delete) and re-derived from the
//! records by every reconcile pass ([`resync`]), which also unmounts a
//! volume no running sandbox holds (after a daemon restart, say). The
//! daemon never reads or writes inside a volume: what sandboxes plant
//! there (symlinks to `/`, say) is never followed on the host.

use std::collections::BTreeSet;

use dwell_runtime::Bind;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Record, VolumeMount};
use crate::transitions::Rules;

/// The directory of named volumes under the data dir.
pub const DIR: &str = "named-volumes";
/// Smallest named volume.
pub const MIN_SIZE: u64 = 32 << 20;
/// Largest named volume.
pub const MAX_SIZE: u64 = dwell_storage::MAX_NAMED_VOLUME_SIZE;
/// Most volumes one sandbox binds.
pub const MAX_MOUNTS: usize = 16;

/// Paths inside a sandbox no volume may cover: kernel filesystems, the
/// agent's directories, and the root itself.
const RESERVED: &[&str] = &["/proc", "/sys", "/dev", "/run/dwell", "/.dwell"];

/// A volume name: 1-63 lowercase letters, digits, '-', '_' or '.',
/// starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if !ok {
        return Err(Error::invalid(
            "volume",
            format!(
                "{name:?}: use 1-63 lowercase letters, digits, '-', '_' or '.', starting with a \
                 letter or digit"
            ),
        ));
    }
    Ok(())
}

/// A named volume's size: 32 MiB to 64 TiB.
pub fn check_size(bytes: u64) -> Result<()> {
    if !(MIN_SIZE..=MAX_SIZE).contains(&bytes) {
        return Err(Error::invalid(
            "size",
            format!(
                "{} is out of range: a volume is 32MiB to 64TiB (e.g. --size 20G)",
                crate::size::format_size(bytes)
            ),
        ));
    }
    Ok(())
}

/// Check a path inside the sandbox for a volume: absolute, normalized, not
/// `/` nor a reserved path or below one.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(
            "volumes",
            format!("mount path {path:?} {why}"),
        ))
    };
    if !path.starts_with('/') {
        return bad("must be absolute (e.g. /data)");
    }
    if path.len() > 1024 || path.contains('\0') {
        return bad("is too long or holds a NUL byte");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if path == "/" || parts.iter().all(|p| p.is_empty()) {
        return bad("is the sandbox's root; mount the volume on a directory such as /data");
    }
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return bad("must be normalized (no '//', '.', '..' or trailing '/')");
    }
    for r in RESERVED {
        if path == *r || path.starts_with(&format!("{r}/")) {
            return bad(&format!(
                "is reserved ({r} belongs to the kernel or to dwell's agent); choose another \
                 directory"
            ));
        }
    }
    Ok(())
}

/// Check a create request's volume list: names and paths valid, no path
/// twice, none inside another (a bind inside another volume would be
/// made through a directory other sandboxes can change).
pub fn check_mounts(mounts: &[VolumeMount]) -> Result<Vec<VolumeMount>> {
    if mounts.len() > MAX_MOUNTS {
        return Err(Error::invalid(
            "volumes",
            format!(
                "{} volumes; a sandbox binds at most {MAX_MOUNTS}",
                mounts.len()
            ),
        ));
    }
    for (i, m) in mounts.iter().enumerate() {
        validate_name(&m.name)?;
        check_path(&m.path)?;
        for o in &mounts[..i] {
            let nested = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}/"));
            if nested(&m.path, &o.path) || nested(&o.path, &m.path) {
                return Err(Error::invalid(
                    "volumes",
                    format!(
                        "mount paths {} and {} overlap; give each volume its own directory, \
                         neither inside the other",
                        o.path, m.path
                    ),
                ));
            }
        }
    }
    Ok(mounts.to_vec())
}

/// Parse `NAME:/path[:ro|:rw]` (the CLI's and the API's short form).
pub fn parse_mount(s: &str) -> Result<VolumeMount> {
    let bad = || {
        Error::invalid(
            "volumes",
            format!("{s:?}: use NAME:/path or NAME:/path:ro (e.g. pgdata:/var/lib/data)"),
        )
    };
    let (name, rest) = s.split_once(':').ok_or_else(bad)?;
    let (path, read_only) = match rest.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some(_) => return Err(bad()),
        None => (rest, false),
    };
    let m = VolumeMount {
        name: name.to_string(),
        path: path.to_string(),
        read_only,
    };
    check_mounts(std::slice::from_ref(&m))?;
    Ok(m)
}

/// The live sandboxes of `tenant` that name volume `name`, by name.
pub(crate) fn users(inner: &Context, tenant: &str, name: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = inner
        .store
        .list_sandboxes::<crate::model::SandboxSpec>(Some(tenant))?
        .into_iter()
        .filter(|r| r.spec.volumes.iter().any(|m| m.name == name))
        .map(|r| r.name)
        .collect();
    v.sort();
    Ok(v)
}

/// Mount the named volumes of `rec` on the host (those not mounted yet)
/// and count it as a user of each; returns the binds for its runtime
/// config. On failure nothing it counted or mounted stays.
pub(crate) fn attach(inner: &Context, rec: &Record) -> Result<Vec<Bind>> {
    let mut binds = Vec::new();
    for m in &rec.spec.volumes {
        let vol = match inner.store.find_volume(&rec.tenant, &m.name) {
            Ok(Some(v)) => v,
            Ok(None) => {
                detach(inner, &rec.id);
                return Err(Error::VolumeNotFound(m.name.clone()));
            }
            Err(e) => {
                detach(inner, &rec.id);
                return Err(e.into());
            }
        };
        let mounted = {
            let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
            users
                .entry(vol.id.clone())
                .or_default()
                .insert(rec.id.clone());
            inner.named.mount(&vol.id)
        };
        match mounted {
            Ok(source) => binds.push(Bind {
                source,
                target: m.path.clone(),
                read_only: m.read_only,
            }),
            Err(e) => {
                detach(inner, &rec.id);
                return Err(e.into());
            }
        }
    }
    Ok(binds)
}

/// Sandbox `id` no longer runs: it stops counting as a user, and each
/// volume it was the last user of is unmounted (lazily: the kernel frees
/// the loop device once the sandbox's copies of the mount are gone).
pub(crate) fn detach(inner: &Context, id: &str) {
    let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
    let mut emptied = Vec::new();
    for (vol, set) in users.iter_mut() {
        if set.remove(id) && set.is_empty() {
            emptied.push(vol.clone());
        }
    }
    for vol in emptied {
        users.remove(&vol);
        if let Err(e) = inner.named.unmount(&vol) {
            tracing::warn!(volume = %vol, "unmounting a named volume no sandbox runs with: {e}");
        }
    }
}

/// Re-derive which running sandboxes hold each named volume from the
/// records (`recs`: every live sandbox), and unmount the volumes none
/// holds. A sandbox in a transition (desired state not reached) keeps
/// what it holds: its start or stop settles it.
pub(crate) fn resync(inner: &Context, recs: &[Record]) {
    let vols = match inner.store.list_volumes(None) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("named volumes: cannot list them: {e}");
            return;
        }
    };
    let mut users = inner.named_users.lock().unwrap_or_else(|p| p.into_inner());
    for v in &vols {
        let holders: BTreeSet<String> = recs
            .iter()
            .filter(|r| r.tenant == v.tenant && r.spec.volumes.iter().any(|m| m.name == v.name))
            .filter(|r| r.state.holds_compute())
            .map(|r| r.id.clone())
            .collect();
        let set = users.entry(v.id.clone()).or_default();
        set.retain(|id| {
            holders.contains(id)
                || recs
                    .iter()
                    .any(|r| &r.id == id && r.desired_state != r.state)
        });
        set.extend(holders);
        if set.is_empty() {
            users.remove(&v.id);
            if inner.named.info(&v.id).is_ok_and(|i| i.mounted) {
                match inner.named.unmount(&v.id) {
                    Ok(()) => tracing::info!(
                        volume = %v.name, tenant = %v.tenant,
                        "unmounted a named volume no running sandbox uses"
                    ),
                    Err(e) => tracing::warn!(volume = %v.name, "unmount: {e}"),
                }
            }
        }
    }
    // Entries of volumes that are gone.
    users.retain(|id, _| vols.iter().any(|v| &v.id == id));
}

/// Remove named volumes whose record is gone (a create or remove cut short
/// by a crash). Run once at daemon start, before requests are served.
pub(crate) fn remove_unrecorded(inner: &Context) {
    let Ok(vols) = inner.store.list_volumes(None) else {
        return;
    };
    for id in inner.named.list().unwrap_or_default() {
        if !vols.iter().any(|v| v.id == id) {
            match inner.named.delete(&id) {
                Ok(()) => tracing::info!(volume = %id, "removed a named volume no record explains"),
                Err(e) => tracing::warn!(volume = %id, "removing an unrecorded named volume: {e}"),
            }
        }
    }
}

/// Charge every named volume's storage since its last mark (its size, as
/// a sandbox's volume is charged), as a usage row of the volume's id.
pub(crate) fn meter(inner: &Context) {
    let Ok(vols) = inner.store.list_volumes(None) else {
        return;
    };
    let now = inner.clock.now_ms();
    for v in vols {
        let last = match inner.store.volume_metered_at(&v.id) {
            Ok(Some(t)) => t,
            Ok(None) => v.created_at,
            Err(_) => continue,
        };
        let secs = (now - last).max(0) as f64 / 1000.0;
        let gib_s = v.size_bytes as f64 / (1u64 << 30) as f64 * secs;
        if let Err(e) = inner.store.add_volume_usage(&v.id, &v.tenant, now, gib_s) {
            tracing::warn!(volume = %v.id, "metering: {e}");
        }
    }
}

/// The storage a tenant's named volumes hold (their size limits).
pub(crate) fn held_bytes(inner: &Context, tenant: &str) -> Result<u64> {
    Ok(inner
        .store
        .list_volumes(Some(tenant))?
        .iter()
        .map(|v| v.size_bytes)
        .sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_syntax_and_paths() {
        let m = parse_mount("pgdata:/var/lib/data:ro").unwrap();
        assert_eq!(
            (m.name.as_str(), m.path.as_str(), m.read_only),
            ("pgdata", "/var/lib/data", true)
        );
        assert!(!parse_mount("a:/data").unwrap().read_only);
        for bad in [
            "a",
            "a:data",
            "a:/",
            "a:/proc",
            "a:/proc/x",
            "a:/dev",
            "a:/sys/fs",
            "a:/run/dwell",
            "a:/.dwell",
            "a:/x/../y",
            "a:/x//y",
            "a:/x/",
            "a:/x:rx",
            "A:/x",
            ":/x",
        ] {
            assert!(parse_mount(bad).is_err(), "{bad}");
        }
        // /proc-like names that are not /proc are fine.
        parse_mount("a:/process").unwrap();
        let two =
            |a: &str, b: &str| check_mounts(&[parse_mount(a).unwrap(), parse_mount(b).unwrap()]);
        assert!(two("a:/data", "b:/data").is_err());
        assert!(two("a:/data", "b:/data/x").is_err());
        assert!(two("a:/data/x", "b:/data").is_err());
        two("a:/data", "b:/data2").unwrap();
        two("a:/data", "a:/again").unwrap();
    }

    #[test]
    fn size_range() {
        assert!(check_size((32 << 20) - 1).is_err());
        check_size(32 << 20).unwrap();
        check_size(64 << 40).unwrap();
        let e = check_size((64 << 40) + 1).unwrap_err().to_string();
        assert!(e.contains("32MiB to 64TiB"), "{e}");
    }
}
