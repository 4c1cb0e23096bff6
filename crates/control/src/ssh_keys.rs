//! SSH public keys as users register them (`dwell ssh-key add`): the
//! OpenSSH one-line form is checked (a known algorithm, a key blob that
//! names the same algorithm) and fingerprinted the way `ssh-keygen -l`
//! does (`SHA256:` and the unpadded base64 of the blob's SHA-256), which is
//! how the SSH gateway finds the key a client proves. Also the gateway's
//! user names, `SANDBOX` or `SANDBOX+TENANT` (see [`LoginName`]), and what
//! its login check decides ([`SshLogin`]).

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The longest public key line accepted (an RSA 16384-bit key is ~2.8 KiB).
pub const MAX_KEY_TEXT: usize = 16 * 1024;

/// Key algorithms the gateway can verify.
pub const ALGORITHMS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// A parsed public key line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyLine {
    pub algorithm: String,
    /// `ALGORITHM BASE64` (the comment dropped).
    pub key: String,
    pub comment: Option<String>,
    pub fingerprint: String,
}

fn invalid(message: String) -> Error {
    Error::Invalid {
        field: "public_key".into(),
        message,
    }
}

/// The `SHA256:...` fingerprint of a key blob.
pub fn fingerprint(blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(blob))
    )
}

/// Parses one OpenSSH public key line (`ssh-ed25519 AAAA... comment`).
pub fn parse(text: &str) -> Result<PublicKeyLine> {
    if text.len() > MAX_KEY_TEXT {
        return Err(invalid(format!(
            "the public key is {} bytes, above the {MAX_KEY_TEXT} byte limit; pass the .pub \
             file (one line), not a private key or a list of keys",
            text.len()
        )));
    }
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let line = match lines.as_slice() {
        [l] => *l,
        [] => {
            return Err(invalid(
                "no public key found; pass a .pub file such as ~/.ssh/id_ed25519.pub".into(),
            ))
        }
        _ => {
            return Err(invalid(format!(
                "{} keys found; register one key at a time",
                lines.len()
            )))
        }
    };
    if line.contains("PRIVATE KEY") {
        return Err(invalid(
            "this is a private key; register its public half (the .pub file) and keep the \
             private key to yourself"
                .into(),
        ));
    }
    let mut parts = line.splitn(3, char::is_whitespace);
    let algorithm = parts.next().unwrap_or_default();
    let data = parts.next().unwrap_or_default().trim();
    let comment = parts
        .next()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(String::from);
    if !ALGORITHMS.contains(&algorithm) {
        return Err(invalid(format!(
            "unsupported key type {algorithm:?} (or the line has options in front of it); \
             supported: {}. Make one with `ssh-keygen -t ed25519`",
            ALGORITHMS.join(", ")
        )));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| invalid(format!("the key's base64 data does not decode: {e}")))?;
    // The blob starts with the algorithm name as an SSH string.
    let named = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if named != Some(algorithm.as_bytes()) || blob.len() < 4 + algorithm.len() + 8 {
        return Err(invalid(format!(
            "the key data is not a {algorithm} key (truncated or mislabelled); copy the whole \
             line of the .pub file"
        )));
    }
    Ok(PublicKeyLine {
        algorithm: algorithm.into(),
        key: format!("{algorithm} {data}"),
        comment,
        fingerprint: fingerprint(&blob),
    })
}

/// Checks a key's name: 1 to 64 of `[A-Za-z0-9._@-]`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "name".into(),
            message: format!(
                "bad SSH key name {name:?}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
            ),
        })
    }
}

/// The name a key gets when none is given: its comment when that is a
/// valid name, else the start of its fingerprint.
pub fn default_name(k: &PublicKeyLine) -> String {
    match &k.comment {
        Some(c) if check_name(c).is_ok() => c.clone(),
        _ => {
            let fp: String = k
                .fingerprint
                .trim_start_matches("SHA256:")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .take(12)
                .collect();
            format!("key-{fp}")
        }
    }
}

/// What [`crate::Controller::ssh_login`] decided.
#[derive(Debug)]
pub enum SshLogin {
    /// The key is registered by the sandbox's tenant.
    Granted(dwell_store::SshKey, Box<crate::model::Sandbox>),
    /// No tenant that registered the key has such a sandbox (or the user
    /// name names none).
    Refused,
    /// A bare sandbox name while these tenants (two or more) registered
    /// the key: the client must name the tenant (`SANDBOX+TENANT`).
    Ambiguous { tenants: Vec<String> },
}

/// Separates the sandbox from the tenant in a qualified SSH user name
/// (`web+acme`). Sandbox and tenant names are `[a-z0-9_.-]` and ids are
/// `[a-z0-9]` (see [`crate::model::validate_name`]), so it occurs in
/// neither.
pub const TENANT_SEPARATOR: char = '+';

/// An SSH user name as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginName<'a> {
    /// `SANDBOX`: a sandbox name or id, of whichever tenant holds the key.
    Bare(&'a str),
    /// `SANDBOX+TENANT`: a sandbox name or id of that tenant only.
    Qualified { sandbox: &'a str, tenant: &'a str },
}

impl<'a> LoginName<'a> {
    /// Reads `user`; `None` when it cannot name a sandbox (empty parts,
    /// more than one separator).
    pub fn parse(user: &'a str) -> Option<LoginName<'a>> {
        match user.split_once(TENANT_SEPARATOR) {
            None if !user.is_empty() => Some(LoginName::Bare(user)),
            None => None,
            Some((sandbox, tenant)) => {
                (!sandbox.is_empty() && !tenant.is_empty() && !tenant.contains(TENANT_SEPARATOR))
                    .then_some(LoginName::Qualified { sandbox, tenant })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_names() {
        assert_eq!(LoginName::parse("web"), Some(LoginName::Bare("web")));
        assert_eq!(
            LoginName::parse("web+acme"),
            Some(LoginName::Qualified {
                sandbox: "web",
                tenant: "acme"
            })
        );
        for bad in ["", "+acme", "web+", "web+a+b", "+"] {
            assert_eq!(LoginName::parse(bad), None, "{bad:?}");
        }
        // The separator cannot be part of a sandbox or tenant name.
        assert!(crate::model::validate_name("web+acme").is_err());
    }

    // An ed25519 public key and the fingerprint `ssh-keygen -lf` prints for it.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDk35dvhMBdwo5RmqKhR0fKNuaGx/efjAvJH1Ng0Qnex alice@laptop";

    #[test]
    fn parses_and_fingerprints() {
        let k = parse(&format!("{KEY}\n")).unwrap();
        assert_eq!(k.algorithm, "ssh-ed25519");
        assert_eq!(k.comment.as_deref(), Some("alice@laptop"));
        assert_eq!(
            k.fingerprint,
            "SHA256:NRInl5MH9plIpfEd7kktQ+y6tfhG8+OhJ0GBm5GFDm0"
        );
        assert_eq!(default_name(&k), "alice@laptop");
    }

    #[test]
    fn refuses_what_is_not_one_public_key() {
        for bad in [
            "",
            "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----",
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519 !!!",
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(parse(&format!("{KEY}\n{KEY}")).is_err());
        assert!(check_name("a b").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("laptop-2").is_ok());
    }
}
