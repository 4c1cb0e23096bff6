//! The sftp subsystem (protocol version 3, what OpenSSH's `sftp` and
//! `scp` speak) on the agent's file operations. Paths are the sandbox's;
//! relative ones start at `/root`.
//!
//! Files are streams on the agent side, so handles follow how clients use
//! them: a file opened for reading is read from its start and forward (a
//! read at another offset reopens it and skips ahead); a file opened for
//! writing is written in order from where it starts (0 after a truncate,
//! the end for an append or a file written past its end). A write at any
//! other offset, changing modes or times, and symlinks are refused with
//! `SSH_FX_OP_UNSUPPORTED` and a message that says so.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use dwell_control::Controller;
use dwell_proto::{
    AgentClient, ErrorKind, FileInfo, FileKind, FileReader, FileWriter, WriteOptions,
};
use russh::server::Msg;
use russh::{Channel, ChannelMsg};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::server::Login;
use crate::session::HOME;

/// Largest sftp packet a client may send (a write of 256 KiB and its header).
pub const MAX_PACKET: u32 = 256 * 1024 + 1024;
/// Most bytes one read answers with.
pub const MAX_READ: u32 = 64 * 1024;
/// Handles one sftp session may have open.
pub const MAX_HANDLES: usize = 64;
/// Directory entries per `readdir` answer.
const DIR_BATCH: usize = 128;
/// Symlinks followed by `stat`.
const MAX_LINKS: usize = 8;

/// Serves sftp on a session channel until the client ends it, then sends
/// exit status 0 (what `scp` checks) and closes the channel.
pub async fn run(ctl: Controller, login: Arc<Login>, channel: Channel<Msg>) {
    let server = Sftp {
        ctl,
        login,
        client: None,
        handles: HashMap::new(),
        next: 0,
    };
    let cfg = russh_sftp::server::Config {
        max_client_packet_len: MAX_PACKET,
    };
    // The server gets one end of a pipe (its task ends with the pipe); the
    // channel is pumped to and from the other end here.
    let (ours, theirs) = tokio::io::duplex(MAX_PACKET as usize);
    russh_sftp::server::run_with_config(theirs, server, cfg).await;
    let (mut r, mut w) = tokio::io::split(ours);
    let (mut rx, tx) = channel.split();
    let up = async {
        while let Some(msg) = rx.wait().await {
            let written = match msg {
                ChannelMsg::Data { data } => w.write_all(&data).await,
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => Ok(()),
            };
            if written.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    let down = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx
                        .data_bytes(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(up, down);
    let _ = tx.exit_status(0).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

enum Open {
    Read {
        path: String,
        reader: Option<FileReader>,
        /// Offset of the next byte `reader` gives (after `buf`).
        pos: u64,
        buf: Bytes,
    },
    Write {
        path: String,
        /// None until the first write for a file opened without truncating.
        writer: Option<FileWriter>,
        pos: u64,
        append: bool,
        /// Set when an existing file opened without truncation is
        /// rewritten from its start: its old size, whose tail past what is
        /// written is lost unless the client truncates the file there (as
        /// scp does).
        lost_tail: Option<u64>,
    },
    Dir {
        entries: Vec<File>,
    },
}

struct Sftp {
    ctl: Controller,
    login: Arc<Login>,
    client: Option<AgentClient>,
    handles: HashMap<String, Open>,
    next: u64,
}

fn reply(code: StatusCode, message: impl Into<String>) -> StatusReply {
    StatusReply::new(code).with_message(message)
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

/// A path of the sandbox: relative ones start at [`HOME`]; `.` and `..`
/// are resolved by name.
pub fn resolve(path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{HOME}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in full.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

fn attrs(f: &FileInfo) -> FileAttributes {
    let kind = match f.kind {
        FileKind::Dir => 0o040000,
        FileKind::File => 0o100000,
        FileKind::Symlink => 0o120000,
        FileKind::Other => 0,
    };
    let mtime = (f.modified_ms.max(0) / 1000).min(u32::MAX as i64) as u32;
    FileAttributes {
        size: Some(f.size),
        uid: Some(f.uid),
        gid: Some(f.gid),
        permissions: Some(kind | (f.mode & 0o7777)),
        atime: Some(mtime),
        mtime: Some(mtime),
        ..FileAttributes::empty()
    }
}

impl Sftp {
    async fn client(&mut self) -> Result<AgentClient, StatusReply> {
        if let Some(c) = self.client.as_ref().filter(|c| c.is_connected()) {
            return Ok(c.clone());
        }
        let c = crate::session::agent(&self.ctl, &self.login)
            .await
            .map_err(|m| reply(StatusCode::Failure, m))?;
        self.client = Some(c.clone());
        Ok(c)
    }

    /// The status for an agent error.
    async fn error(&mut self, what: &str, e: dwell_proto::Error) -> StatusReply {
        let code = match &e {
            dwell_proto::Error::Remote(r) => match r.kind {
                ErrorKind::NotFound => StatusCode::NoSuchFile,
                ErrorKind::PermissionDenied | ErrorKind::ReadOnly => StatusCode::PermissionDenied,
                _ => StatusCode::Failure,
            },
            dwell_proto::Error::Unreachable(_) => {
                self.client = None;
                self.ctl.agent_failed(&self.login.sandbox_id).await;
                StatusCode::Failure
            }
            _ => StatusCode::Failure,
        };
        let message = match &e {
            dwell_proto::Error::Remote(r) => r.message.clone(),
            e => e.to_string(),
        };
        reply(code, format!("{what}: {message}"))
    }

    async fn stat_path(&mut self, path: &str) -> Result<FileInfo, StatusReply> {
        let c = self.client().await?;
        match c.stat(path).await {
            Ok(f) => Ok(f),
            Err(e) => Err(self.error(path, e).await),
        }
    }

    /// Whether `path` exists (an error other than "not found" is returned).
    async fn exists(&mut self, path: &str) -> Result<Option<FileInfo>, StatusReply> {
        match self.stat_path(path).await {
            Ok(f) => Ok(Some(f)),
            Err(r) if r.status_code == StatusCode::NoSuchFile => Ok(None),
            Err(r) => Err(r),
        }
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(reply(
                StatusCode::Failure,
                format!("too many open handles ({MAX_HANDLES}); close some first"),
            ));
        }
        self.next += 1;
        let h = format!("h{}", self.next);
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    fn handle(&mut self, h: &str) -> Result<&mut Open, StatusReply> {
        self.handles
            .get_mut(h)
            .ok_or_else(|| reply(StatusCode::Failure, format!("no open handle {h:?}")))
    }

    async fn writer(
        &mut self,
        path: &str,
        append: bool,
        mode: Option<u32>,
    ) -> Result<FileWriter, StatusReply> {
        let c = self.client().await?;
        let opts = WriteOptions {
            append,
            mode,
            create_parents: false,
        };
        match c.write_file(path, opts).await {
            Ok(w) => Ok(w),
            Err(e) => Err(self.error(path, e).await),
        }
    }

    /// Reads up to `len` bytes at `offset` of an open file.
    async fn read_at(&mut self, h: &str, offset: u64, len: u32) -> Result<Vec<u8>, StatusReply> {
        let len = len.min(MAX_READ) as usize;
        let (path, needs_open) = match self.handle(h)? {
            Open::Read {
                path,
                pos,
                buf,
                reader,
                ..
            } => {
                let at = *pos - buf.len() as u64;
                (path.clone(), reader.is_none() || at != offset)
            }
            Open::Write { path, .. } => {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    format!("{path} is open for writing; open it again to read it"),
                ))
            }
            Open::Dir { .. } => {
                return Err(reply(StatusCode::Failure, "this handle is a directory"))
            }
        };
        if needs_open {
            let c = self.client().await?;
            let mut r = match c.read_file(&path).await {
                Ok(r) => r,
                Err(e) => return Err(self.error(&path, e).await),
            };
            // Streams only go forward: skip to the offset.
            let mut pos = 0u64;
            let mut buf = Bytes::new();
            while pos < offset {
                match r.next_chunk().await {
                    Ok(Some(mut b)) => {
                        let skip = ((offset - pos) as usize).min(b.len());
                        pos += b.len() as u64;
                        buf = b.split_off(skip);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(self.error(&path, e).await),
                }
            }
            if let Open::Read {
                reader,
                pos: p,
                buf: bf,
                ..
            } = self.handle(h)?
            {
                *reader = Some(r);
                *p = pos;
                *bf = buf;
            }
        }
        let mut out = BytesMut::with_capacity(len);
        let mut failed = None;
        if let Open::Read {
            reader, pos, buf, ..
        } = self.handle(h)?
        {
            loop {
                let take = buf.len().min(len - out.len());
                out.extend_from_slice(&buf.split_to(take));
                if out.len() == len {
                    break;
                }
                let Some(r) = reader.as_mut() else { break };
                match r.next_chunk().await {
                    Ok(Some(b)) => {
                        *pos += b.len() as u64;
                        *buf = b;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        *reader = None;
                        failed = Some(e);
                        break;
                    }
                }
            }
        }
        if let Some(e) = failed {
            return Err(self.error(&path, e).await);
        }
        if out.is_empty() && len > 0 {
            return Err(reply(StatusCode::Eof, "end of file"));
        }
        Ok(out.to_vec())
    }

    async fn write_at(&mut self, h: &str, offset: u64, data: Vec<u8>) -> Result<(), StatusReply> {
        let (path, lazy) = match self.handle(h)? {
            Open::Write { path, writer, .. } => (path.clone(), writer.is_none()),
            _ => {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    "this handle is not open for writing",
                ))
            }
        };
        if lazy {
            // Opened without truncating: writes may continue at its end, or
            // rewrite it from the start (scp writes, then truncates).
            let size = self.stat_path(&path).await?.size;
            if offset != size && offset != 0 {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    format!(
                        "{path}: writing at offset {offset} of a {size} byte file is not \
                         supported by the dwell SSH gateway (only from its start or its end)"
                    ),
                ));
            }
            let rewrite = offset == 0 && size != 0;
            let w = self.writer(&path, !rewrite, None).await?;
            if let Open::Write {
                writer,
                pos,
                lost_tail,
                ..
            } = self.handle(h)?
            {
                *writer = Some(w);
                *pos = offset;
                *lost_tail = rewrite.then_some(size);
            }
        }
        let mut failed = None;
        if let Open::Write {
            writer,
            pos,
            append,
            ..
        } = self.handle(h)?
        {
            if !*append && offset != *pos {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    format!(
                        "{path}: write at offset {offset}, but the file was written up to {pos}; \
                         the dwell SSH gateway writes files in order only"
                    ),
                ));
            }
            let n = data.len() as u64;
            if let Some(w) = writer.as_mut() {
                match w.write(Bytes::from(data)).await {
                    Ok(()) => *pos += n,
                    Err(e) => {
                        *writer = None;
                        failed = Some(e);
                    }
                }
            }
        }
        match failed {
            Some(e) => {
                // Nothing more can be written through this handle.
                self.handles.remove(h);
                Err(self.error(&path, e).await)
            }
            None => Ok(()),
        }
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        reply(
            StatusCode::OpUnsupported,
            "not supported by the dwell SSH gateway",
        )
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let path = resolve(&filename);
        let writing = pflags.intersects(OpenFlags::WRITE | OpenFlags::APPEND);
        let open = if writing {
            let existing = self.exists(&path).await?;
            if existing.is_some()
                && pflags.contains(OpenFlags::CREATE)
                && pflags.contains(OpenFlags::EXCLUDE)
            {
                return Err(reply(StatusCode::Failure, format!("{path} already exists")));
            }
            if existing.is_none() && !pflags.contains(OpenFlags::CREATE) {
                return Err(reply(
                    StatusCode::NoSuchFile,
                    format!("{path}: no such file"),
                ));
            }
            if existing.as_ref().is_some_and(|f| f.kind == FileKind::Dir) {
                return Err(reply(StatusCode::Failure, format!("{path} is a directory")));
            }
            let mode = attrs.permissions.map(|p| p & 0o7777);
            if pflags.contains(OpenFlags::APPEND) {
                let size = existing.as_ref().map_or(0, |f| f.size);
                let w = self.writer(&path, true, mode).await?;
                Open::Write {
                    path,
                    writer: Some(w),
                    pos: size,
                    append: true,
                    lost_tail: None,
                }
            } else if pflags.contains(OpenFlags::TRUNCATE) || existing.is_none() {
                let w = self.writer(&path, false, mode).await?;
                Open::Write {
                    path,
                    writer: Some(w),
                    pos: 0,
                    append: false,
                    lost_tail: None,
                }
            } else {
                Open::Write {
                    path,
                    writer: None,
                    pos: 0,
                    append: false,
                    lost_tail: None,
                }
            }
        } else {
            let f = self.stat_path(&path).await?;
            if f.kind == FileKind::Dir {
                return Err(reply(StatusCode::Failure, format!("{path} is a directory")));
            }
            Open::Read {
                path,
                reader: None,
                pos: 0,
                buf: Bytes::new(),
            }
        };
        let handle = self.add(open)?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(Open::Write {
                path,
                writer: Some(w),
                pos,
                lost_tail,
                ..
            }) => match w.finish().await {
                Ok(_) => match lost_tail {
                    Some(old) if old > pos => Err(reply(
                        StatusCode::Failure,
                        format!(
                            "{path} was rewritten from its start: its old content past byte \
                             {pos} (of {old}) is gone, as the dwell SSH gateway cannot write \
                             into the middle of a file"
                        ),
                    )),
                    _ => Ok(ok(id)),
                },
                Err(e) => Err(self.error(&path, e).await),
            },
            Some(_) => Ok(ok(id)),
            None => Err(reply(
                StatusCode::Failure,
                format!("no open handle {handle:?}"),
            )),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let data = self.read_at(&handle, offset, len).await?;
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        self.write_at(&handle, offset, data).await?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let f = self.stat_path(&resolve(&path)).await?;
        Ok(Attrs {
            id,
            attrs: attrs(&f),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let mut path = resolve(&path);
        for _ in 0..=MAX_LINKS {
            let f = self.stat_path(&path).await?;
            match (&f.kind, &f.symlink_target) {
                (FileKind::Symlink, Some(target)) => {
                    let dir = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
                    path = if target.starts_with('/') {
                        resolve(target)
                    } else {
                        resolve(&format!("{dir}/{target}"))
                    };
                }
                _ => {
                    return Ok(Attrs {
                        id,
                        attrs: attrs(&f),
                    })
                }
            }
        }
        Err(reply(
            StatusCode::Failure,
            format!("{path}: more than {MAX_LINKS} symbolic links"),
        ))
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let path = match self.handle(&handle)? {
            Open::Read { path, .. } | Open::Write { path, .. } => path.clone(),
            Open::Dir { .. } => {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    "fstat of a directory handle",
                ))
            }
        };
        self.stat(id, path).await
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.set_attrs(id, resolve(&path), attrs).await
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let mut attrs = attrs;
        let path = match self.handle(&handle)? {
            Open::Read { path, .. } => path.clone(),
            Open::Write {
                path,
                pos,
                lost_tail,
                ..
            } => {
                // Truncating where the writes ended (scp does): what they
                // wrote is the file. Compared with what was sent, as the
                // agent may still be writing it.
                if attrs.size == Some(*pos) {
                    attrs.size = None;
                    *lost_tail = None;
                }
                path.clone()
            }
            Open::Dir { .. } => {
                return Err(reply(
                    StatusCode::OpUnsupported,
                    "setstat of a directory handle",
                ))
            }
        };
        self.set_attrs(id, path, attrs).await
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let path = resolve(&path);
        let c = self.client().await?;
        let list = match c.list_dir(&path, 1).await {
            Ok(l) => l,
            Err(e) => return Err(self.error(&path, e).await),
        };
        let mut entries: Vec<File> = list.iter().map(|f| File::new(&f.name, attrs(f))).collect();
        // Handed out from the end.
        entries.reverse();
        let handle = self.add(Open::Dir { entries })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handle(&handle)? {
            Open::Dir { entries } if entries.is_empty() => {
                Err(reply(StatusCode::Eof, "end of directory"))
            }
            Open::Dir { entries } => {
                let n = entries.len().saturating_sub(DIR_BATCH);
                let mut files = entries.split_off(n);
                files.reverse();
                Ok(Name { id, files })
            }
            _ => Err(reply(StatusCode::Failure, "this handle is not a directory")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let path = resolve(&filename);
        if self.stat_path(&path).await?.kind == FileKind::Dir {
            return Err(reply(
                StatusCode::Failure,
                format!("{path} is a directory; remove it with rmdir"),
            ));
        }
        let c = self.client().await?;
        match c.remove(&path, false).await {
            Ok(()) => Ok(ok(id)),
            Err(e) => Err(self.error(&path, e).await),
        }
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let path = resolve(&path);
        let c = self.client().await?;
        match c.mkdir(&path, false).await {
            Ok(()) => Ok(ok(id)),
            Err(e) => Err(self.error(&path, e).await),
        }
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let path = resolve(&path);
        if self.stat_path(&path).await?.kind != FileKind::Dir {
            return Err(reply(
                StatusCode::Failure,
                format!("{path} is not a directory"),
            ));
        }
        let c = self.client().await?;
        match c.remove(&path, false).await {
            Ok(()) => Ok(ok(id)),
            Err(e) => Err(self.error(&path, e).await),
        }
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(resolve(&path))],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let (from, to) = (resolve(&oldpath), resolve(&newpath));
        // Version 3 renames never replace.
        if self.exists(&to).await?.is_some() {
            return Err(reply(
                StatusCode::Failure,
                format!("{to} already exists; remove it first"),
            ));
        }
        let c = self.client().await?;
        match c.rename(&from, &to).await {
            Ok(()) => Ok(ok(id)),
            Err(e) => Err(self.error(&from, e).await),
        }
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let path = resolve(&path);
        match self.stat_path(&path).await?.symlink_target {
            Some(target) => Ok(Name {
                id,
                files: vec![File::dummy(target)],
            }),
            None => Err(reply(
                StatusCode::Failure,
                format!("{path} is not a symbolic link"),
            )),
        }
    }
}

impl Sftp {
    /// Owners can change; modes and sizes only to what they are already
    /// (scp sets the mode it created the file with), times not at all.
    async fn set_attrs(
        &mut self,
        id: u32,
        path: String,
        a: FileAttributes,
    ) -> Result<Status, StatusReply> {
        let mut a = a;
        if a.permissions.is_some() || a.size.is_some() {
            let f = self.stat_path(&path).await?;
            if a.permissions.map(|p| p & 0o7777) == Some(f.mode & 0o7777) {
                a.permissions = None;
            }
            if a.size == Some(f.size) {
                a.size = None;
            }
        }
        if a.permissions.is_some() || a.atime.is_some() || a.mtime.is_some() || a.size.is_some() {
            return Err(reply(
                StatusCode::OpUnsupported,
                format!(
                    "{path}: changing permissions, times or the size is not supported by the \
                     dwell SSH gateway (copy without -p, or use `dwell exec` to chmod/touch)"
                ),
            ));
        }
        if let (Some(uid), Some(gid)) = (a.uid, a.gid) {
            let c = self.client().await?;
            if let Err(e) = c.chown(&path, uid, gid).await {
                return Err(self.error(&path, e).await);
            }
        }
        Ok(ok(id))
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;

    #[test]
    fn paths_resolve_from_home_by_name() {
        assert_eq!(resolve(""), "/root");
        assert_eq!(resolve("."), "/root");
        assert_eq!(resolve("a/b"), "/root/a/b");
        assert_eq!(resolve(".."), "/");
        assert_eq!(resolve("/../../etc/./passwd"), "/etc/passwd");
        assert_eq!(resolve("/tmp/x/../y/"), "/tmp/y");
    }
}
