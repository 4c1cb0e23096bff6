//! Users of a sandbox as envd sees them: who a request runs as, that user's
//! home (relative paths and `~` resolve against it), and uid/gid → names for
//! `EntryInfo.owner` / `group`. Read from the sandbox's own `/etc/passwd`
//! and `/etc/group` through the agent, cached for a few seconds.
//!
//! The user comes from `Authorization: Basic base64("user:")` on RPCs and
//! the `username` query parameter on `/files`. When none is named the
//! request runs as the sandbox's default user, as on E2B: the account
//! [`DEFAULT_USER`] (`user`, which E2B's base template and dwell's
//! `host-user` image have) when the sandbox has it, else `root` with home
//! `/root` (dwell images without that account keep root, their normal user
//! inside an isolated sandbox). A named `user` the sandbox does not have
//! runs as root too (SDKs before envd 0.4 name it on every request); any
//! other name the sandbox does not have is refused as E2B's envd refuses
//! it (401, `invalid username: 'NAME'`), never run as root. A non-root user's writes, directories, removals and
//! moves are done by the agent as that user ([`Account::agent_user`]), with
//! its permissions, and what they create is its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use dwell_proto::{AgentClient, FileKind};

/// The account a request that names no user runs as, when the sandbox
/// has it.
pub const DEFAULT_USER: &str = "user";

/// How long a sandbox's parsed account files are reused.
const TTL: Duration = Duration::from_secs(5);
/// How old a copy may be before a missing user makes it re-read.
const RECHECK: Duration = Duration::from_millis(200);
/// Largest account file read: the files are the sandbox's own, so a
/// sandbox could make them endless (`ln -sf /dev/zero /etc/passwd`).
pub const MAX_ACCOUNT_FILE: usize = 1 << 20;
/// How long reading one account file may take (a FIFO never ends).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

impl Account {
    /// The user the agent acts as for this account's file operations:
    /// `None` for root (the agent itself).
    pub fn agent_user(&self) -> Option<&str> {
        (self.uid != 0).then_some(self.name.as_str())
    }

    pub fn root() -> Account {
        Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        }
    }
}

/// A sandbox's accounts and groups.
#[derive(Debug, Default)]
pub struct Accounts {
    users: Vec<Account>,
    groups: HashMap<u32, String>,
}

impl Accounts {
    /// Parses passwd and group file contents.
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let users = passwd
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                if f.len() < 7 || l.starts_with('#') {
                    return None;
                }
                Some(Account {
                    name: f[0].to_string(),
                    uid: f[2].parse().ok()?,
                    gid: f[3].parse().ok()?,
                    home: f[5].to_string(),
                })
            })
            .collect();
        let groups = group
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 3).then(|| Some((f[2].parse().ok()?, f[0].to_string())))?
            })
            .collect();
        Accounts { users, groups }
    }

    /// Whether an account of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.users.iter().any(|a| a.name == name)
    }

    /// The account a request naming `name` runs as (see the module doc),
    /// or why it may not run.
    pub fn resolve(&self, name: Option<&str>) -> Result<Account, String> {
        match name {
            Some(n) if n != DEFAULT_USER && n != "root" && !self.has(n) => Err(format!(
                "invalid username: '{n}': the sandbox has no such account (its /etc/passwd); \
                 create it (useradd {n}) or name an existing user"
            )),
            _ => Ok(self.select(name)),
        }
    }

    /// The account a request runs as: `name` if it exists, else root; for
    /// no name, [`DEFAULT_USER`] if it exists, else root.
    pub fn select(&self, name: Option<&str>) -> Account {
        let name = name.unwrap_or(DEFAULT_USER);
        self.users
            .iter()
            .find(|a| a.name == name)
            .cloned()
            .unwrap_or_else(Account::root)
    }

    /// Name of a uid (the number when unknown).
    pub fn user_name(&self, uid: u32) -> String {
        self.users
            .iter()
            .find(|a| a.uid == uid)
            .map(|a| a.name.clone())
            .unwrap_or_else(|| uid.to_string())
    }

    /// Name of a gid (the number when unknown).
    pub fn group_name(&self, gid: u32) -> String {
        self.groups
            .get(&gid)
            .cloned()
            .unwrap_or_else(|| gid.to_string())
    }
}

/// Per-sandbox cache of parsed account files.
#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<String, (Instant, Arc<Accounts>)>>,
}

impl Cache {
    /// The accounts of sandbox `id`, read through `agent` when not cached.
    /// Missing files give an empty set (everything runs as root).
    /// A user named but not found is looked up afresh (it may just have
    /// been created), at most every [`RECHECK`] (a miss sooner waits for
    /// it), so that a client naming unknown users in a loop cannot make
    /// every request re-read the sandbox's account files.
    pub async fn get(&self, id: &str, agent: &AgentClient, wanted: Option<&str>) -> Arc<Accounts> {
        let cached = self.map.lock().unwrap().get(id).cloned();
        if let Some((at, a)) = cached {
            let miss = wanted.is_some_and(|n| !a.has(n));
            if at.elapsed() < TTL && !miss {
                return a;
            }
            // A missing name is looked up afresh, but the files are read
            // at most every RECHECK: a request that misses sooner waits.
            if miss {
                tokio::time::sleep(RECHECK.saturating_sub(at.elapsed())).await;
            }
        }
        let (p, g) = tokio::join!(
            read_account_file(agent, "/etc/passwd"),
            read_account_file(agent, "/etc/group")
        );
        let a = Arc::new(Accounts::parse(
            &String::from_utf8_lossy(&p),
            &String::from_utf8_lossy(&g),
        ));
        let mut m = self.map.lock().unwrap();
        m.retain(|_, (at, _)| at.elapsed() < TTL);
        m.insert(id.to_string(), (Instant::now(), a.clone()));
        a
    }
}

/// The bytes of a sandbox's account file, or nothing (everything then runs
/// as root) when it is missing, not a regular file, larger than
/// [`MAX_ACCOUNT_FILE`] or slower than [`READ_TIMEOUT`] to read.
async fn read_account_file(agent: &AgentClient, path: &str) -> Vec<u8> {
    match tokio::time::timeout(READ_TIMEOUT, read_capped(agent, path, MAX_ACCOUNT_FILE)).await {
        Ok(Ok(v)) => v,
        Ok(Err(why)) => {
            tracing::warn!("ignoring the sandbox's {path}: {why}");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!(
                "ignoring the sandbox's {path}: reading it took over {}s",
                READ_TIMEOUT.as_secs()
            );
            Vec::new()
        }
    }
}

/// Reads a regular file of at most `max` bytes; stops (and cancels the
/// agent's read) as soon as more arrives.
pub(crate) async fn read_capped(
    agent: &AgentClient,
    path: &str,
    max: usize,
) -> Result<Vec<u8>, String> {
    let fi = agent.stat(path).await.map_err(|e| e.to_string())?;
    if fi.kind != FileKind::File {
        return Err("it is not a regular file".into());
    }
    if fi.size > max as u64 {
        return Err(format!("it is larger than {max} bytes"));
    }
    let r = agent.read_file(path).await.map_err(|e| e.to_string())?;
    r.read_to_end(max as u64).await.map_err(|e| e.to_string())
}

/// The user named by `Authorization: Basic base64("user:")`, if any.
pub fn basic_user(h: &HeaderMap) -> Option<String> {
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, cred) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = crate::pbjson::decode_b64(cred.trim()).ok()?;
    let s = String::from_utf8(raw).ok()?;
    let user = s.split(':').next().unwrap_or("");
    (!user.is_empty()).then(|| user.to_string())
}

/// Resolves a path the way envd does: `~` and `~/x` against the user's
/// home, relative paths against the home, absolute paths as they are.
pub fn resolve_path(path: &str, user: &Account) -> String {
    let home = user.home.trim_end_matches('/');
    let home = if home.is_empty() { "/" } else { home };
    let joined = if path == "~" || path.is_empty() {
        return home.to_string();
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{home}/{rest}")
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{home}/{path}")
    };
    normalize(&joined)
}

/// Removes `.` and `..` components and duplicate slashes.
fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nuser:x:1000:\n";

    #[test]
    fn select_falls_back_to_root() {
        let a = Accounts::parse(PASSWD, GROUP);
        assert_eq!(a.select(Some("user")).home, "/home/user");
        assert_eq!(a.select(Some("nobody-here")), Account::root());
        assert_eq!(
            a.select(None).name,
            "user",
            "the default user when it exists"
        );
        assert_eq!(a.select(Some("root")), Account::root());
        let no_user = Accounts::parse("root:x:0:0:root:/root:/bin/bash\n", "root:x:0:\n");
        assert_eq!(no_user.select(None), Account::root());
        assert_eq!(a.resolve(Some("user")).unwrap().uid, 1000);
        assert_eq!(a.resolve(None).unwrap().name, "user");
        let e = a.resolve(Some("root123")).unwrap_err();
        assert!(e.starts_with("invalid username: 'root123'"), "{e}");
        assert_eq!(no_user.resolve(Some("user")).unwrap(), Account::root());
        assert_eq!(no_user.resolve(Some("root")).unwrap(), Account::root());
        assert_eq!(a.user_name(1000), "user");
        assert_eq!(a.group_name(0), "root");
        assert_eq!(a.group_name(77), "77");
    }

    #[test]
    fn basic_auth_user() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Basic dXNlcjo=".parse().unwrap());
        assert_eq!(basic_user(&h).as_deref(), Some("user"));
        h.insert(header::AUTHORIZATION, "Bearer x".parse().unwrap());
        assert_eq!(basic_user(&h), None);
    }

    #[test]
    fn paths_resolve_against_home() {
        let u = Account::root();
        assert_eq!(resolve_path("a.txt", &u), "/root/a.txt");
        assert_eq!(resolve_path("~/x/../y", &u), "/root/y");
        assert_eq!(resolve_path("~", &u), "/root");
        assert_eq!(resolve_path("/tmp//a/./b", &u), "/tmp/a/b");
    }
}
