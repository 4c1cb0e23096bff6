//! JSON control messages of the protocol and the request/response types.
//!
//! Every type here is `serde` Serialize + Deserialize so that the daemon can
//! reuse them in its REST JSON unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Handshake message, exchanged once on stream 0 before anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version spoken by the sender.
    pub protocol: u32,
    /// Name and version of the sending software, for diagnostics.
    pub software: String,
    /// Set by the agent when it refuses the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The sender's fresh handshake nonce (32 bytes, hex): always in the
    /// client's first Hello and in the reply of an agent that has a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Proof of the sandbox's agent key over both nonces (hex; see
    /// `auth`): in the agent's reply, and in the client's second Hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<String>,
}

/// A request; it opens a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Health,
    Exec(ExecRequest),
    Attach {
        pid: u32,
    },
    Processes,
    Signal {
        pid: u32,
        signal: i32,
    },
    /// Opens a stream of `Data` frames (then `Eof`) into a process's stdin.
    WriteStdin {
        pid: u32,
    },
    CloseStdin {
        pid: u32,
    },
    Resize {
        pid: u32,
        rows: u16,
        cols: u16,
    },
    ReadFile {
        path: String,
    },
    WriteFile {
        path: String,
        options: WriteOptions,
        /// Do it as this sandbox user (name or `uid[:gid]`), with that
        /// user's permissions; what it creates is that user's. Root when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Replace the file's extended attributes under a prefix (see
        /// [`XattrSet`]) once it is open, before any data is accepted.
        /// An agent older than this field ignores it (the daemon checks
        /// the agent's `Health::features` first: [`FEATURE_XATTRS`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xattrs: Option<XattrSet>,
    },
    ListDir {
        path: String,
        depth: u32,
        /// Report each entry's extended attributes whose names start with
        /// this prefix (in [`FileInfo::xattrs`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xattrs: Option<String>,
    },
    Stat {
        path: String,
        /// As `ListDir`'s: the extended attributes under this prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xattrs: Option<String>,
    },
    Mkdir {
        path: String,
        parents: bool,
        /// Do it as this sandbox user (name or `uid[:gid]`), with that
        /// user's permissions; what it creates is that user's. Root when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Remove {
        path: String,
        recursive: bool,
        /// Do it as this sandbox user (name or `uid[:gid]`), with that
        /// user's permissions; what it creates is that user's. Root when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Rename {
        from: String,
        to: String,
        /// Do it as this sandbox user (name or `uid[:gid]`), with that
        /// user's permissions; what it creates is that user's. Root when
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    /// Changes the owner of a path (not following symlinks).
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    /// Watches a directory (inotify) until the client cancels the stream.
    Watch {
        path: String,
        #[serde(default)]
        recursive: bool,
        /// Ask for flush support: the agent answers `watching` with
        /// `flush: true` and then honours `Control::Flush` on the stream
        /// (an older agent ignores the field and answers plain `watching`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flush: bool,
    },
    /// Stop listening, as on SIGUSR1: close the socket and every
    /// connection (this one too, after the answer). For a checkpoint; a
    /// message costs far less than delivering a signal into a gVisor
    /// sandbox. Agents older than this request refuse it as unknown.
    Unlisten,
    /// Opens a TCP connection from inside the sandbox (its own network
    /// namespace) to `host:port` and pipes bytes both ways: `Data` frames
    /// in each direction, `Eof` from either side half-closes its
    /// direction. The agent answers `connected`, then ends the stream once
    /// both directions are closed (or with an error when the socket fails).
    /// Agents older than this request refuse it as unknown.
    Connect {
        /// An IP address, `localhost`, or a name in the sandbox's
        /// `/etc/hosts`. Default `127.0.0.1`.
        #[serde(default = "default_connect_host")]
        host: String,
        port: u16,
    },
    /// Sets the sandbox's service (see [`crate::service`]): starts it,
    /// replaces a different one (stopping it first), or removes it with
    /// `null`. The same definition again changes nothing (a restarted
    /// daemon resends it). Answers the `ServiceStatus` (or `null`).
    /// Agents older than this request refuse it as unknown.
    ServiceSet {
        service: Option<crate::service::ServiceSpec>,
    },
    /// The service's `ServiceStatus`, or `null` when there is none.
    ServiceStatus,
    /// The service's output: `ready`, then Stdout/Stderr frames of what
    /// it printed (newest `tail` lines, since `since_ms`), then live output
    /// with `follow` until the client cancels; End `null` otherwise.
    ServiceLogs {
        #[serde(default)]
        follow: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_ms: Option<u64>,
    },
    /// Starts, stops or restarts the service; answers its `ServiceStatus`.
    ServiceControl {
        action: crate::service::ServiceAction,
    },
}

fn default_connect_host() -> String {
    "127.0.0.1".into()
}

/// A non-final message from the agent on a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// An exec started.
    Started { pid: u32 },
    /// An attach found its process; replayed output follows.
    Attached { process: ProcessInfo },
    /// A file opened for reading; its content follows as `Data` frames.
    Opened { size: u64 },
    /// A file (or a process's stdin) is open for writing; the client may now send `Data` frames.
    Ready,
    /// A watch is set up; `fs` events follow. `flush` when the agent
    /// honours `Control::Flush` on this stream (asked for by the request).
    Watching {
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flush: bool,
    },
    /// The answer to `Control::Flush { seq }` on a watch stream: every
    /// change the kernel reported before the flush arrived was sent before
    /// this event.
    Flushed { seq: u64 },
    /// A change under a watched directory; `name` is relative to it.
    Fs { name: String, change: FsChange },
    /// A `connect` reached its peer; `Data` frames may flow both ways.
    /// `peer` is the address connected to (`ip:port`).
    Connected { peer: String },
}

/// What happened to a watched path (the classes of fsnotify/E2B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsChange {
    /// Created, or moved into the watched tree.
    Create,
    /// Content modified.
    Write,
    /// Deleted.
    Remove,
    /// Moved away (out of its old name).
    Rename,
    /// Metadata (permissions, owner, times) changed.
    Chmod,
}

/// The final message on a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok(serde_json::Value),
    Err(RemoteError),
}

/// A client control message on an open exec or attach stream, or (only
/// `Flush`, and only when the agent answered `watching` with `flush: true`)
/// on a watch stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "control", rename_all = "snake_case")]
pub enum Control {
    Resize {
        rows: u16,
        cols: u16,
    },
    Signal {
        signal: i32,
    },
    /// Watch streams: read every event the kernel has queued, send them,
    /// then answer `Event::Flushed { seq }`.
    Flush {
        seq: u64,
    },
}

/// Terminal size of a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TtySize {
    pub rows: u16,
    pub cols: u16,
}

/// What to run and how. Exactly one of `argv` (non-empty) or `shell` must be set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecRequest {
    /// Program and arguments; the program is looked up in `PATH`.
    pub argv: Vec<String>,
    /// A shell command line, run as `/bin/sh -c <shell>`.
    pub shell: Option<String>,
    /// Variables added to (overriding) the agent's own environment.
    pub env: BTreeMap<String, String>,
    /// Working directory; default `/` (or the user's home when `user` is set).
    pub cwd: Option<String>,
    /// User name from the sandbox's /etc/passwd, or numeric `uid[:gid]`.
    pub user: Option<String>,
    /// Kill the process group after this many milliseconds and report `timed_out`.
    pub timeout_ms: Option<u64>,
    /// Give the process a stdin pipe fed by the stream (`false`: /dev/null).
    /// A tty always has input.
    pub stdin: bool,
    /// Run on a PTY of this size (stdout and stderr merged into `Stdout`).
    pub tty: Option<TtySize>,
    /// Keep running when the stream or connection goes away.
    pub background: bool,
    /// Free-form label shown in the process list.
    pub tag: Option<String>,
}

impl ExecRequest {
    /// Runs `argv` directly.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ExecRequest {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Runs `cmd` with `/bin/sh -c`.
    pub fn shell(cmd: impl Into<String>) -> Self {
        ExecRequest {
            shell: Some(cmd.into()),
            ..Default::default()
        }
    }

    /// The argv the agent runs for this request, or why the request is invalid.
    pub fn command_line(&self) -> Result<Vec<String>, String> {
        match (&self.shell, self.argv.is_empty()) {
            (Some(s), true) => Ok(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
            (None, false) => Ok(self.argv.clone()),
            (Some(_), false) => Err("set either argv or shell, not both".into()),
            (None, true) => Err("nothing to run: argv is empty and shell is not set".into()),
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Exit code when the process exited normally.
    pub code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// The agent killed it because `timeout_ms` expired.
    pub timed_out: bool,
}

impl ExitStatus {
    /// Exited normally with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A process started through the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub argv: Vec<String>,
    pub tag: Option<String>,
    pub background: bool,
    pub tty: bool,
    pub running: bool,
    /// Set once the process has exited.
    pub exit: Option<ExitStatus>,
    /// Unix time in milliseconds.
    pub started_at_ms: u64,
}

/// Agent health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub protocol: u32,
    /// Agent software version.
    pub version: String,
    pub uptime_ms: u64,
    /// Processes visible in the sandbox (entries in /proc), the agent included.
    pub pid_count: u32,
    /// Processes started through the agent that are still running.
    pub processes_running: u32,
    /// The default working directory of commands (the image's WORKDIR).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_workdir: Option<String>,
    /// The default user of commands (the image's USER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_user: Option<String>,
    /// Why the default user or working directory cannot be used (the
    /// user is not in the sandbox's /etc/passwd, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults_error: Option<String>,
    /// Optional abilities added within the protocol version, by name
    /// ([`FEATURE_XATTRS`]); an older agent reports none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// File type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Other,
}

/// Metadata of one file (not following symlinks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Last path component.
    pub name: String,
    /// Full path as the agent sees it.
    pub path: String,
    pub kind: FileKind,
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Modification time, Unix milliseconds.
    pub modified_ms: i64,
    pub symlink_target: Option<String>,
    /// For a symlink, the kind of what it points to (followed to the end);
    /// `None` for anything else and for a dangling link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_kind: Option<FileKind>,
    /// The extended attributes asked for (`stat`/`list_dir` with an
    /// `xattrs` prefix): full names to values (lossy UTF-8), at most
    /// [`MAX_XATTRS`] of them, values of at most [`MAX_XATTR_VALUE`] bytes
    /// (larger ones are left out).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, String>,
}

/// Most extended attributes one `XattrSet` sets or one `FileInfo` reports.
pub const MAX_XATTRS: usize = 64;
/// Longest extended attribute name, in bytes (the kernel's `XATTR_NAME_MAX`).
pub const MAX_XATTR_NAME: usize = 255;
/// Largest extended attribute value set or reported, in bytes.
pub const MAX_XATTR_VALUE: usize = 4096;
/// The `Health::features` entry of an agent that applies `write_file`'s
/// `xattrs` and reports `stat`/`list_dir` ones; an older agent ignores
/// both fields.
pub const FEATURE_XATTRS: &str = "xattrs";

/// Replaces a file's extended attributes under `prefix` by `set`: those
/// under the prefix that `set` lacks are removed, the others written.
/// Every name in `set` starts with `prefix`, which starts with `user.`
/// (the namespace unprivileged files may carry).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XattrSet {
    pub prefix: String,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

impl XattrSet {
    /// Checks the bounds and names: the reason it is refused, if it is.
    pub fn check(&self) -> Result<(), String> {
        if !self.prefix.starts_with("user.") {
            return Err(format!(
                "extended attribute prefix {:?} is outside the user. namespace",
                self.prefix
            ));
        }
        if self.set.len() > MAX_XATTRS {
            return Err(format!(
                "{} extended attributes given; at most {MAX_XATTRS} may be set on a file",
                self.set.len()
            ));
        }
        for (k, v) in &self.set {
            if !k.starts_with(&self.prefix) || k.len() == self.prefix.len() {
                return Err(format!(
                    "extended attribute {k:?} is not a name under {:?}",
                    self.prefix
                ));
            }
            if k.len() > MAX_XATTR_NAME || k.contains('\0') {
                return Err(format!(
                    "extended attribute name {k:?} is too long (at most {MAX_XATTR_NAME} bytes) or holds a NUL"
                ));
            }
            if v.len() > MAX_XATTR_VALUE {
                return Err(format!(
                    "the value of extended attribute {k:?} is {} bytes; at most {MAX_XATTR_VALUE} are allowed",
                    v.len()
                ));
            }
        }
        Ok(())
    }
}

/// How `write_file` opens its file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WriteOptions {
    /// Append instead of truncating.
    pub append: bool,
    /// Permission bits for a newly created file (default 0o644).
    pub mode: Option<u32>,
    /// Create missing parent directories.
    pub create_parents: bool,
}

/// Errno-like class of a remote error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    IsADirectory,
    NotADirectory,
    DirectoryNotEmpty,
    InvalidArgument,
    NoSpace,
    ReadOnly,
    NoSuchProcess,
    TooManyStreams,
    /// A `connect` found nothing listening on the port (ECONNREFUSED).
    ConnectionRefused,
    /// A `connect` could not reach the address (no route, timed out,
    /// unresolvable name).
    Unreachable,
    Io,
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// Classifies an OS errno.
    pub fn from_errno(errno: i32) -> ErrorKind {
        match errno {
            2 => ErrorKind::NotFound,                        // ENOENT
            1 | 13 => ErrorKind::PermissionDenied,           // EPERM, EACCES
            17 => ErrorKind::AlreadyExists,                  // EEXIST
            21 => ErrorKind::IsADirectory,                   // EISDIR
            20 => ErrorKind::NotADirectory,                  // ENOTDIR
            39 => ErrorKind::DirectoryNotEmpty,              // ENOTEMPTY
            22 | 36 | 40 | 18 => ErrorKind::InvalidArgument, // EINVAL, ENAMETOOLONG, ELOOP, EXDEV
            28 | 122 => ErrorKind::NoSpace,                  // ENOSPC, EDQUOT
            30 => ErrorKind::ReadOnly,                       // EROFS
            3 => ErrorKind::NoSuchProcess,                   // ESRCH
            111 => ErrorKind::ConnectionRefused,             // ECONNREFUSED
            101 | 113 | 110 => ErrorKind::Unreachable,       // ENETUNREACH, EHOSTUNREACH, ETIMEDOUT
            _ => ErrorKind::Io,
        }
    }

    /// The snake_case wire name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::IsADirectory => "is_a_directory",
            ErrorKind::NotADirectory => "not_a_directory",
            ErrorKind::DirectoryNotEmpty => "directory_not_empty",
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NoSpace => "no_space",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::NoSuchProcess => "no_such_process",
            ErrorKind::TooManyStreams => "too_many_streams",
            ErrorKind::ConnectionRefused => "connection_refused",
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Io => "io",
            ErrorKind::Other => "other",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error reported by the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RemoteError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RemoteError {
            kind,
            message: message.into(),
        }
    }

    /// From an I/O error, with `context` (e.g. "open /etc/x") in front.
    pub fn from_io(context: &str, e: &std::io::Error) -> Self {
        let kind = e
            .raw_os_error()
            .map(ErrorKind::from_errno)
            .unwrap_or(match e.kind() {
                std::io::ErrorKind::NotFound => ErrorKind::NotFound,
                std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
                std::io::ErrorKind::InvalidInput => ErrorKind::InvalidArgument,
                _ => ErrorKind::Io,
            });
        RemoteError::new(kind, format!("{context}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_flush_fields_are_optional_both_ways() {
        // An old agent's `watching` means no flushes; a new one says so
        // only when asked, and an old client's request asks nothing.
        let w: Event = serde_json::from_str(r#"{"event":"watching"}"#).unwrap();
        assert_eq!(w, Event::Watching { flush: false });
        assert_eq!(
            serde_json::to_string(&Event::Watching { flush: false }).unwrap(),
            r#"{"event":"watching"}"#
        );
        let r: Request =
            serde_json::from_str(r#"{"op":"watch","path":"/d","recursive":true}"#).unwrap();
        assert!(matches!(r, Request::Watch { flush: false, .. }));
        let r = Request::Watch {
            path: "/d".into(),
            recursive: false,
            flush: true,
        };
        assert!(serde_json::to_string(&r)
            .unwrap()
            .contains(r#""flush":true"#));
        assert_eq!(
            serde_json::to_string(&Control::Flush { seq: 3 }).unwrap(),
            r#"{"control":"flush","seq":3}"#
        );
        assert_eq!(
            serde_json::to_string(&Event::Flushed { seq: 3 }).unwrap(),
            r#"{"event":"flushed","seq":3}"#
        );
    }

    #[test]
    fn request_json_shape() {
        let r = Request::Signal { pid: 4, signal: 9 };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"op":"signal","pid":4,"signal":9}"#
        );
        let e: Request = serde_json::from_str(r#"{"op":"exec","shell":"echo hi"}"#).unwrap();
        assert_eq!(e, Request::Exec(ExecRequest::shell("echo hi")));
    }

    #[test]
    fn connect_json_shape() {
        let r: Request = serde_json::from_str(r#"{"op":"connect","port":8080}"#).unwrap();
        assert_eq!(
            r,
            Request::Connect {
                host: "127.0.0.1".into(),
                port: 8080
            }
        );
        let e: RemoteError =
            serde_json::from_str(r#"{"kind":"connection_refused","message":"x"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::ConnectionRefused);
        assert_eq!(ErrorKind::Unreachable.as_str(), "unreachable");
        assert_eq!(ErrorKind::from_errno(111), ErrorKind::ConnectionRefused);
    }

    #[test]
    fn service_json_shape() {
        let r: Request = serde_json::from_str(
            r#"{"op":"service_set","service":{"command":["sleep","9"],"restart":"on_failure"}}"#,
        )
        .unwrap();
        let Request::ServiceSet { service: Some(s) } = r else {
            panic!("not a service_set")
        };
        assert_eq!(s.restart, crate::RestartPolicy::OnFailure);
        assert!(s.validate().is_ok());
        let r: Request = serde_json::from_str(r#"{"op":"service_logs"}"#).unwrap();
        assert_eq!(
            r,
            Request::ServiceLogs {
                follow: false,
                tail: None,
                since_ms: None
            }
        );
        // A health from an agent before the defaults decodes.
        let h: Health = serde_json::from_str(
            r#"{"protocol":2,"version":"x","uptime_ms":1,"pid_count":1,"processes_running":0}"#,
        )
        .unwrap();
        assert_eq!(h.defaults_error, None);
        let bad = crate::ServiceSpec::default();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_error_kind_is_other() {
        let e: RemoteError = serde_json::from_str(r#"{"kind":"brand_new","message":"x"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Other);
    }

    #[test]
    fn command_line_validation() {
        assert!(ExecRequest::default().command_line().is_err());
        assert_eq!(
            ExecRequest::shell("true").command_line().unwrap(),
            ["/bin/sh", "-c", "true"]
        );
    }
}
