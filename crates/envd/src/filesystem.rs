//! The unary RPCs of the `filesystem.Filesystem` Connect service (Stat,
//! MakeDir, Move, ListDir, Remove) on the agent's file requests, and the
//! `EntryInfo` message they answer with. Paths resolve against the
//! requesting user's home (`users::resolve_path`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use dwell_proto::{FileInfo, FileKind};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::connect::{self, Code, ConnectError};
use crate::pbjson::{self, go_mode, permissions, timestamp};
use crate::users::{basic_user, resolve_path, Accounts};
use crate::Envd;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PathRequest {
    path: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListDirRequest {
    path: String,
    #[serde(deserialize_with = "pbjson::uint")]
    depth: u32,
}

/// Deepest `ListDir` (a listing must also fit the agent's size limit).
pub const MAX_DEPTH: u32 = 64;

/// The `FileType` enum name of a kind.
pub fn file_type(k: FileKind) -> &'static str {
    match k {
        FileKind::File => "FILE_TYPE_FILE",
        FileKind::Dir => "FILE_TYPE_DIRECTORY",
        FileKind::Symlink => "FILE_TYPE_SYMLINK",
        FileKind::Other => "FILE_TYPE_UNSPECIFIED",
    }
}

/// The extended attributes that hold a file's E2B metadata: `user.e2b.`
/// and the (lower-case) key.
pub const META_PREFIX: &str = "user.e2b.";

/// The metadata map of a file: its `user.e2b.*` attributes, prefix cut.
pub fn metadata(fi: &FileInfo) -> serde_json::Map<String, Value> {
    fi.xattrs
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix(META_PREFIX)?;
            (!key.is_empty()).then(|| (key.to_string(), json!(v)))
        })
        .collect()
}

/// The `EntryInfo` JSON of a file. `type` is what a symlink points to
/// (`FILE_TYPE_SYMLINK` only when it dangles), `mode` the permission bits
/// alone (a 0755 directory is 493) and `permissions` Go's rendering with
/// the type letter; `metadata` is present when the file has some.
pub fn entry_info(fi: &FileInfo, acc: &Accounts) -> Value {
    let go = go_mode(fi.kind, fi.mode);
    let mut v = json!({
        "name": fi.name,
        "type": file_type(fi.target_kind.unwrap_or(fi.kind)),
        "path": fi.path,
        "size": fi.size.to_string(),
        "mode": fi.mode & 0o777,
        "permissions": permissions(go),
        "owner": acc.user_name(fi.uid),
        "group": acc.group_name(fi.gid),
        "modifiedTime": timestamp(fi.modified_ms),
    });
    if let Some(t) = &fi.symlink_target {
        let abs = if t.starts_with('/') {
            t.clone()
        } else {
            let dir = fi.path.rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{t}")
        };
        v["symlinkTarget"] = json!(abs);
        v["isSymlink"] = json!(true);
    }
    let meta = metadata(fi);
    if !meta.is_empty() {
        v["metadata"] = Value::Object(meta);
    }
    v
}

fn require_path(p: &str) -> Result<(), ConnectError> {
    if p.is_empty() {
        return Err(ConnectError::invalid("path is empty"));
    }
    Ok(())
}

/// `Stat`: one entry (symlinks are not followed).
pub async fn stat(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, PathRequest) = crate::unary_request(&envd.ctl, &h, body).await?;
            require_path(&req.path)?;
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            let path = resolve_path(&req.path, &ctx.user);
            let fi = ctx.agent.stat_with(&path, Some(META_PREFIX)).await?;
            Ok(json!({"entry": entry_info(&fi, &ctx.accounts)}))
        }
        .await,
    )
}

/// `MakeDir`: creates a directory and its parents; `already_exists` when
/// it is there already.
pub async fn make_dir(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, PathRequest) = crate::unary_request(&envd.ctl, &h, body).await?;
            require_path(&req.path)?;
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            let path = resolve_path(&req.path, &ctx.user);
            match ctx.agent.stat(&path).await {
                Ok(fi) if fi.kind == FileKind::Dir => {
                    return Err(ConnectError::new(
                        Code::AlreadyExists,
                        format!("directory {path} already exists"),
                    ))
                }
                Ok(_) => {
                    return Err(ConnectError::invalid(format!(
                        "{path} already exists and is not a directory"
                    )))
                }
                Err(_) => {}
            }
            ctx.agent
                .mkdir_as(&path, true, ctx.user.agent_user())
                .await?;
            let fi = ctx.agent.stat_with(&path, Some(META_PREFIX)).await?;
            Ok(json!({"entry": entry_info(&fi, &ctx.accounts)}))
        }
        .await,
    )
}

/// `Move`: renames, creating the destination's parent directories.
pub async fn move_entry(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, MoveRequest) = crate::unary_request(&envd.ctl, &h, body).await?;
            require_path(&req.source)?;
            require_path(&req.destination)?;
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            let from = resolve_path(&req.source, &ctx.user);
            let to = resolve_path(&req.destination, &ctx.user);
            ctx.agent.stat(&from).await?;
            if let Some((parent, _)) = to.rsplit_once('/') {
                if !parent.is_empty() {
                    ctx.agent
                        .mkdir_as(parent, true, ctx.user.agent_user())
                        .await?;
                }
            }
            ctx.agent
                .rename_as(&from, &to, ctx.user.agent_user())
                .await?;
            let fi = ctx.agent.stat_with(&to, Some(META_PREFIX)).await?;
            Ok(json!({"entry": entry_info(&fi, &ctx.accounts)}))
        }
        .await,
    )
}

/// `ListDir`: entries down to `depth` levels (0 counts as 1).
pub async fn list_dir(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, ListDirRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            if req.depth > MAX_DEPTH {
                return Err(ConnectError::invalid(format!(
                    "depth {} is too deep; list at most {MAX_DEPTH} levels at once",
                    req.depth
                )));
            }
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            let path = resolve_path(&req.path, &ctx.user);
            let fi = ctx.agent.stat(&path).await?;
            if fi.kind != FileKind::Dir {
                return Err(ConnectError::invalid(format!(
                    "path {path} is not a directory"
                )));
            }
            let entries = ctx
                .agent
                .list_dir_with(&path, req.depth.max(1), Some(META_PREFIX))
                .await?;
            let list: Vec<Value> = entries
                .iter()
                .map(|e| entry_info(e, &ctx.accounts))
                .collect();
            Ok(json!({ "entries": list }))
        }
        .await,
    )
}

/// `Remove`: a file, symlink or directory with its contents; a path that
/// does not exist is already removed (no error, as E2B's envd answers).
pub async fn remove(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, PathRequest) = crate::unary_request(&envd.ctl, &h, body).await?;
            require_path(&req.path)?;
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            let path = resolve_path(&req.path, &ctx.user);
            match ctx
                .agent
                .remove_as(&path, true, ctx.user.agent_user())
                .await
            {
                Err(dwell_proto::Error::Remote(r))
                    if r.kind == dwell_proto::ErrorKind::NotFound => {}
                r => r?,
            }
            Ok(json!({}))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_info_shape() {
        let acc = Accounts::parse("root:x:0:0::/root:/bin/sh\n", "root:x:0:\n");
        let fi = FileInfo {
            name: "l".into(),
            path: "/tmp/l".into(),
            kind: FileKind::Symlink,
            size: 5,
            mode: 0o777,
            uid: 0,
            gid: 0,
            modified_ms: 0,
            symlink_target: Some("a.txt".into()),
            target_kind: None,
            xattrs: Default::default(),
        };
        let v = entry_info(&fi, &acc);
        assert_eq!(v["type"], "FILE_TYPE_SYMLINK");
        assert_eq!(v["mode"], 0o777);
        assert!(v.get("metadata").is_none());
        assert_eq!(v["size"], "5");
        assert_eq!(v["permissions"], "Lrwxrwxrwx");
        assert_eq!(v["owner"], "root");
        assert_eq!(v["symlinkTarget"], "/tmp/a.txt");
        assert_eq!(v["modifiedTime"], "1970-01-01T00:00:00.000Z");
        let mut to_file = fi.clone();
        to_file.target_kind = Some(FileKind::File);
        assert_eq!(entry_info(&to_file, &acc)["type"], "FILE_TYPE_FILE");
        let dir = FileInfo {
            name: "d".into(),
            path: "/tmp/d".into(),
            kind: FileKind::Dir,
            mode: 0o755,
            symlink_target: None,
            xattrs: [
                ("user.e2b.author".to_string(), "mish".to_string()),
                ("user.other".to_string(), "x".to_string()),
            ]
            .into(),
            ..fi
        };
        let v = entry_info(&dir, &acc);
        assert_eq!(v["mode"], 493);
        assert_eq!(v["permissions"], "drwxr-xr-x");
        assert_eq!(v["metadata"], json!({"author": "mish"}));
    }
}
