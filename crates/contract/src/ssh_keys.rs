//! `/v1/ssh-keys`: the SSH public keys of the caller's tenant, with which
//! its users log in to its sandboxes through the SSH gateway
//! (`dwell serve --ssh-listen`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/ssh-keys`: register a public key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyBody {
    /// One OpenSSH public key line, as in `~/.ssh/id_ed25519.pub`
    /// (`ssh-ed25519`, `ecdsa-sha2-nistp256/384/521` or `ssh-rsa`).
    pub public_key: String,
    /// A name unique in the tenant (1-64 of `[A-Za-z0-9._@-]`); default:
    /// the key's comment, else the start of its fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A registered SSH key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct SshKey {
    pub id: String,
    pub tenant: String,
    pub name: String,
    /// `ALGORITHM BASE64` (the comment is dropped).
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// Unix ms of the last login with it (to within a minute).
    pub last_used_at: Option<i64>,
}
