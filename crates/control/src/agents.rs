//! Old agent binaries. The daemon copies its agent into `<data-dir>/bin`
//! once per version (`dwell-agent-<hash>`) and never overwrites one: a
//! sandbox keeps the version it was started with, and a hibernated gVisor
//! sandbox has that version's code in its saved memory, so restoring it
//! over another binary would run other code. Versions no sandbox's config
//! names any more are deleted at daemon start, once every sandbox has been
//! reconciled; the daemon's own version always stays.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::context::Context;

/// Prefix of the per-version agent files in the bin dir.
const PREFIX: &str = "dwell-agent-";

/// The file name of agent version `bytes`: `dwell-agent-<FNV-1a hex>` (a
/// stable version tag, not a security boundary).
pub fn file_name(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{PREFIX}{h:016x}")
}

/// Whether `name` is a well-formed agent version file name.
pub(crate) fn is_file_name(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Delete the agent versions of `inner`'s bin dir that neither the daemon
/// nor any sandbox uses. Returns what was deleted. When a sandbox's config
/// cannot be read, nothing is deleted: it may name any version.
pub(crate) fn prune(inner: &Context) -> Vec<PathBuf> {
    let Some(bin) = inner.agent_binary.parent() else {
        return Vec::new();
    };
    match referenced(&inner.data_dir.join("sandboxes")) {
        Ok(mut used) => {
            used.insert(inner.agent_binary.clone());
            prune_dir(bin, &used)
        }
        Err(why) => {
            tracing::warn!("kept every old agent binary: {why}");
            Vec::new()
        }
    }
}

/// The agent binaries the configs under `sandboxes` (`<id>/sandbox.json`)
/// name; an error when one exists but cannot be read or parsed.
fn referenced(sandboxes: &Path) -> Result<HashSet<PathBuf>, String> {
    let mut used = HashSet::new();
    let rd = match std::fs::read_dir(sandboxes) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(used),
        Err(e) => return Err(format!("cannot list {}: {e}", sandboxes.display())),
    };
    for e in rd.flatten() {
        let path = e.path().join(crate::reconcile::config::CONFIG_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // A sandbox not started yet has no config.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
        if let Some(p) = v["agent_binary"].as_str() {
            used.insert(PathBuf::from(p));
        }
    }
    Ok(used)
}

/// Delete the `dwell-agent-*` files of `bin` not in `used`, and a temporary
/// file an interrupted install left.
fn prune_dir(bin: &Path, used: &HashSet<PathBuf>) -> Vec<PathBuf> {
    let mut gone = Vec::new();
    let Ok(rd) = std::fs::read_dir(bin) else {
        return gone;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        let stale =
            (name.starts_with(PREFIX) && !used.contains(&path)) || name == ".dwell-agent.tmp";
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            match std::fs::remove_file(&path) {
                Ok(()) => gone.push(path),
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "deleting an old agent binary")
                }
            }
        }
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn unused_versions_go_and_used_ones_stay() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        let (cur, old, held) = (
            bin.join("dwell-agent-0000000000000001"),
            bin.join("dwell-agent-0000000000000002"),
            bin.join("dwell-agent-0000000000000003"),
        );
        for p in [&cur, &old, &held] {
            write(p, "elf");
        }
        write(&bin.join(".dwell-agent.tmp"), "half");
        write(&bin.join("other-tool"), "keep");
        let sandboxes = d.path().join("sandboxes");
        write(
            &sandboxes.join("a/sandbox.json"),
            &serde_json::json!({ "agent_binary": held }).to_string(),
        );
        std::fs::create_dir_all(sandboxes.join("not-started")).unwrap();
        let mut used = referenced(&sandboxes).unwrap();
        used.insert(cur.clone());
        let gone = prune_dir(&bin, &used);
        assert!(cur.exists() && held.exists() && bin.join("other-tool").exists());
        assert!(!old.exists() && !bin.join(".dwell-agent.tmp").exists());
        assert_eq!(gone.len(), 2, "{gone:?}");
    }

    #[test]
    fn file_names_tag_versions() {
        let a = file_name(b"one");
        assert!(is_file_name(&a), "{a}");
        assert_ne!(a, file_name(b"two"));
        assert_eq!(a, file_name(b"one"));
        for bad in [
            "dwell-agent-",
            "dwell-agent-../../x",
            "agent",
            &format!("{a}0"),
        ] {
            assert!(!is_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn an_unreadable_config_keeps_everything() {
        let d = tempfile::tempdir().unwrap();
        write(&d.path().join("a/sandbox.json"), "{not json");
        let err = referenced(d.path()).unwrap_err();
        assert!(err.contains("cannot parse"), "{err}");
        assert!(referenced(&d.path().join("missing")).unwrap().is_empty());
    }
}
