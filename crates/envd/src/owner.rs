//! Ownership of what envd creates for a non-root user: the agent writes
//! as root, so files and directories made on behalf of another user are
//! handed to that user (uid and primary gid) afterwards, as envd does.
//! Nothing happens for root.

use dwell_proto::{AgentClient, ErrorKind};

use crate::users::Account;

/// The directories above `path` that do not exist yet (the highest first).
pub async fn missing_parents(agent: &AgentClient, user: &Account, path: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if user.uid == 0 {
        return missing;
    }
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        match agent.stat(parent).await {
            Err(e) if e.remote_kind() == Some(ErrorKind::NotFound) => {
                missing.push(parent.to_string())
            }
            _ => break,
        }
        p = parent;
    }
    missing.reverse();
    missing
}

/// Gives `paths` to `user` (no-op for root).
pub async fn give(
    agent: &AgentClient,
    user: &Account,
    paths: impl IntoIterator<Item = &String>,
) -> Result<(), dwell_proto::Error> {
    if user.uid == 0 {
        return Ok(());
    }
    for p in paths {
        agent.chown(p, user.uid, user.gid).await?;
    }
    Ok(())
}
