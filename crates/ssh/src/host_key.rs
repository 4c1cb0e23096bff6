//! The gateway's ed25519 host key: made once, on the first start with
//! `--ssh-listen`, as `ssh_host_ed25519_key` in the data dir (OpenSSH
//! format, 0600, created atomically through [`dwell_control::keyfile`] and
//! never overwritten), with its public half beside it
//! (`ssh_host_ed25519_key.pub`) for clients' `known_hosts`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, HashAlg, PrivateKey};

/// The private key's file name in the data dir.
pub const FILE: &str = "ssh_host_ed25519_key";

/// The host key and where it lives.
pub struct HostKey {
    pub key: PrivateKey,
    pub path: PathBuf,
}

impl HostKey {
    /// `SHA256:...`, as `ssh-keygen -l` and the client's first-connection
    /// prompt print it.
    pub fn fingerprint(&self) -> String {
        self.key.fingerprint(HashAlg::Sha256).to_string()
    }

    /// The public key line (`ssh-ed25519 AAAA...`).
    pub fn public_line(&self) -> Result<String> {
        Ok(self.key.public_key().to_openssh()?)
    }
}

/// Loads the host key from `data_dir`, making it first if there is none.
pub fn load_or_create(data_dir: &Path) -> Result<HostKey> {
    let path = data_dir.join(FILE);
    if !path.exists() {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| anyhow::anyhow!("the OS random source is unavailable: {e}"))?;
        let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
        let text = key.to_openssh(LineEnding::LF)?;
        match dwell_control::keyfile::create(&path, text.as_bytes()) {
            Ok(()) => {}
            // Another daemon on this data dir made it meanwhile: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create the SSH host key {}", path.display()))
            }
        }
    }
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("cannot read the SSH host key {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "the SSH host key {} was readable by others; narrowing it to 0600",
            path.display()
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the SSH host key {}", path.display()))?;
    let key = PrivateKey::from_openssh(&text).with_context(|| {
        format!(
            "the SSH host key {} is not an OpenSSH private key; restore it from a backup \
             (clients pinned its fingerprint), or move it away to make a new one",
            path.display()
        )
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        bail!(
            "the SSH host key {} is a {} key, expected ed25519; move it away to make a new one",
            path.display(),
            key.algorithm()
        );
    }
    let host = HostKey { key, path };
    // The public half, for known_hosts; rewritten when it differs.
    let pub_path = data_dir.join(format!("{FILE}.pub"));
    let line = format!("{}\n", host.public_line()?);
    if std::fs::read_to_string(&pub_path).ok().as_deref() != Some(line.as_str()) {
        let tmp = data_dir.join(format!(".{FILE}.pub.tmp"));
        std::fs::write(&tmp, &line)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, &pub_path)?;
    }
    Ok(host)
}

/// The fingerprint of the host key in `data_dir`, if one was made (for
/// `dwell doctor`).
pub fn fingerprint_in(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join(format!("{FILE}.pub"))).ok()?;
    let key = russh::keys::PublicKey::from_openssh(text.trim()).ok()?;
    Some(key.fingerprint(HashAlg::Sha256).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(fingerprint_in(dir.path()), Some(a.fingerprint()));
        // A damaged key is an error, never replaced.
        std::fs::write(&a.path, "garbage").unwrap();
        assert!(load_or_create(dir.path()).is_err());
        assert_eq!(std::fs::read_to_string(&a.path).unwrap(), "garbage");
    }
}
