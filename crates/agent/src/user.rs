//! Resolves an exec's `user` (a name from the sandbox's /etc/passwd, or
//! numeric `uid[:gid]`) into ids, supplementary groups and a home directory.

use dwell_proto::{ErrorKind, RemoteError};

/// Credentials to run a process with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub name: Option<String>,
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// Supplementary groups of `name` from /etc/group text, plus `primary`.
fn groups_of(text: &str, name: &str, primary: u32) -> Vec<u32> {
    let mut g = vec![primary];
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            continue;
        }
        if f[3].split(',').any(|m| m == name) {
            if let Ok(gid) = f[2].parse() {
                if !g.contains(&gid) {
                    g.push(gid);
                }
            }
        }
    }
    g
}

/// The gid of group `name` in /etc/group text.
fn gid_of(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name).then(|| f[2].parse().ok())?
    })
}

/// Resolves `spec` against the given passwd and group file contents.
pub fn resolve_with(spec: &str, passwd: &str, group: &str) -> Result<Credentials, RemoteError> {
    let entries = parse_passwd(passwd);
    let numeric = spec
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((spec, None));
    if let Ok(uid) = numeric.0.parse::<u32>() {
        let gid_override = match numeric.1 {
            Some(g) => Some(g.parse::<u32>().map_err(|_| {
                RemoteError::new(
                    ErrorKind::InvalidArgument,
                    format!("user {spec:?}: gid {g:?} is not a number; use uid[:gid]"),
                )
            })?),
            None => None,
        };
        let e = entries.iter().find(|e| e.uid == uid);
        let gid = gid_override.or(e.map(|e| e.gid)).unwrap_or(uid);
        let groups = match e {
            Some(e) if gid_override.is_none() => groups_of(group, &e.name, gid),
            _ => vec![gid],
        };
        return Ok(Credentials {
            uid,
            gid,
            groups,
            name: e.map(|e| e.name.clone()),
            home: e.map(|e| e.home.clone()),
        });
    }
    // `name[:group]`, the group a name or a gid (as an image's USER may say).
    let (name, group_override) = numeric;
    let gid_override = match group_override {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => gid_of(group, g).ok_or_else(|| {
                RemoteError::new(
                    ErrorKind::NotFound,
                    format!("user {spec:?}: group {g:?} does not exist in the sandbox's /etc/group; create it or pass a numeric gid"),
                )
            })?,
        }),
    };
    let spec = name;
    let e = entries.iter().find(|e| e.name == spec).ok_or_else(|| {
        RemoteError::new(
            ErrorKind::NotFound,
            format!("user {spec:?} does not exist in the sandbox's /etc/passwd; create it or pass a numeric uid"),
        )
    })?;
    if let Some(gid) = gid_override {
        return Ok(Credentials {
            uid: e.uid,
            gid,
            groups: vec![gid],
            name: Some(e.name.clone()),
            home: Some(e.home.clone()),
        });
    }
    Ok(Credentials {
        uid: e.uid,
        gid: e.gid,
        groups: groups_of(group, &e.name, e.gid),
        name: Some(e.name.clone()),
        home: Some(e.home.clone()),
    })
}

/// Largest account file read: anything in the sandbox may replace them
/// (`ln -sf /dev/zero /etc/passwd` must not exhaust the agent's memory).
const MAX_ACCOUNT_FILE: u64 = 1 << 20;

/// An account file's text; empty when missing, not a regular file or
/// larger than [`MAX_ACCOUNT_FILE`] (a FIFO there is never opened, so it
/// cannot hold the agent: [`crate::small_file::read`]).
fn read_account_file(path: &str) -> String {
    match crate::small_file::read(std::path::Path::new(path), MAX_ACCOUNT_FILE) {
        Ok(Some(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    }
}

/// Resolves `spec` against this sandbox's /etc/passwd and /etc/group.
pub fn resolve(spec: &str) -> Result<Credentials, RemoteError> {
    let passwd = read_account_file("/etc/passwd");
    let group = read_account_file("/etc/group");
    resolve_with(spec, &passwd, &group)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:bob,alice\n";

    #[test]
    fn by_name() {
        let c = resolve_with("alice", PASSWD, GROUP).unwrap();
        assert_eq!(
            (c.uid, c.gid, c.groups.clone()),
            (1000, 1000, vec![1000, 10])
        );
        assert_eq!(c.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn numeric() {
        let c = resolve_with("1000", PASSWD, GROUP).unwrap();
        assert_eq!(c.name.as_deref(), Some("alice"));
        let c = resolve_with("4242:77", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups, c.home), (4242, 77, vec![77], None));
    }

    #[test]
    fn name_and_group() {
        let c = resolve_with("alice:wheel", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid, c.groups), (1000, 10, vec![10]));
        let c = resolve_with("alice:5", PASSWD, GROUP).unwrap();
        assert_eq!((c.uid, c.gid), (1000, 5));
        assert_eq!(
            resolve_with("alice:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn endless_account_files_are_ignored() {
        assert_eq!(read_account_file("/dev/zero"), "");
        assert_eq!(read_account_file("/nonexistent/passwd"), "");
    }

    #[test]
    fn errors() {
        assert_eq!(
            resolve_with("nobody2", PASSWD, GROUP).unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            resolve_with("1:x", PASSWD, GROUP).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }
}
