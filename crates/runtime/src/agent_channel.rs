//! Connecting to a sandbox's agent safely: the one way the daemon and the
//! runtimes reach an agent socket.
//!
//! The socket lives under a daemon-owned state dir, but (under gVisor) in a
//! directory the sandbox can write. So the path is resolved beneath the
//! state dir without following any symlink (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, or an
//! `O_NOFOLLOW` walk where openat2 is missing), the result must be a socket,
//! and the connect goes through `/proc/self/fd/N` of exactly that inode.
//! Then the peer's credentials (SO_PEERCRED: the process that called
//! listen) must name a process in the sandbox's own cgroup. The agent key
//! proof in the handshake (dwell-proto) comes on top of this.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use dwell_hostfs::Beneath;

use crate::{Error, Result};

/// Whom the listening end must belong to.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// The sandbox id, for error messages.
    pub id: &'a str,
    /// The sandbox's cgroup relative to the hierarchy roots
    /// (`<cgroup parent>/<id>`): the peer must be in it or below it.
    pub cgroup: &'a str,
}

/// Connects to the socket at `rel` (a relative path such as
/// `run/agent.sock`) beneath `state_dir` and checks the peer. Errors say
/// which check failed; a missing socket is `io::ErrorKind::NotFound` (the
/// agent does not listen yet) via [`Error::Io`].
pub fn connect(state_dir: &Path, rel: &str, expected: &Expected) -> Result<UnixStream> {
    let fd = open_beneath(state_dir, rel).map_err(|e| Error::Io {
        context: format!(
            "opening the agent socket {rel} of sandbox {} beneath {} (symlinks refused)",
            expected.id,
            state_dir.display()
        ),
        source: e,
    })?;
    let sock = connect_fd(&fd).map_err(|e| Error::Io {
        context: format!(
            "connecting to the agent socket {}/{rel} of sandbox {}",
            state_dir.display(),
            expected.id
        ),
        source: e,
    })?;
    check_peer(&sock, expected)?;
    Ok(sock)
}

/// An `O_PATH` descriptor of `rel` beneath `root`, which must be a socket
/// reached without a symlink (resolved by [`dwell_hostfs::Beneath`]).
fn open_beneath(root: &Path, rel: &str) -> io::Result<OwnedFd> {
    let fd = Beneath::open(root)?.open_path(rel)?;
    // SAFETY: fstat into a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{rel} is not a socket (mode {:o}); refusing to connect",
                st.st_mode
            ),
        ));
    }
    Ok(fd)
}

/// Connects to the socket inode `fd` refers to, through its magic link.
fn connect_fd(fd: &OwnedFd) -> io::Result<UnixStream> {
    UnixStream::connect(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// The peer (the process that called listen) must sit in the sandbox's
/// cgroup.
fn check_peer(sock: &UnixStream, expected: &Expected) -> Result<()> {
    let pid = peer_pid(sock).map_err(|e| Error::Io {
        context: format!(
            "reading the peer credentials of sandbox {}'s agent socket",
            expected.id
        ),
        source: e,
    })?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if in_cgroup(&cgroups, expected.cgroup) {
        return Ok(());
    }
    Err(Error::Other(format!(
        "the agent socket of sandbox {} is served by process {pid}, which is not in the \
         sandbox's cgroup {}: refusing it (the socket was replaced or redirected). Restart \
         the sandbox to get its own agent back",
        expected.id, expected.cgroup
    )))
}

fn peer_pid(sock: &UnixStream) -> io::Result<i32> {
    // SAFETY: getsockopt into a zeroed ucred of the right length.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    if cred.pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "the peer's pid is not visible from the daemon's pid namespace",
        ));
    }
    Ok(cred.pid)
}

/// Whether a `/proc/<pid>/cgroup` text puts the process at or below the
/// relative cgroup `rel` in any hierarchy.
fn in_cgroup(proc_cgroup: &str, rel: &str) -> bool {
    let want = format!("/{}", rel.trim_matches('/'));
    proc_cgroup.lines().any(|l| {
        let path = l.splitn(3, ':').nth(2).unwrap_or("");
        path == want || path.starts_with(&format!("{want}/"))
    })
}

/// Whether `path` is a socket, not following a symlink in its last
/// component: the socket may lie in a directory the sandbox writes (the
/// gVisor run dir), and `Path::exists`
/// would follow a symlink planted there to any host path (an existence
/// oracle, and a way to make the daemon believe the agent listens).
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_real_socket_counts_never_what_a_symlink_points_to() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&real).unwrap();
        assert!(is_socket(&real));
        // Planted by the sandbox: a symlink to an existing host path, to a
        // host socket, a regular file, nothing.
        let to_host = dir.path().join("agent.sock");
        std::os::unix::fs::symlink("/etc/passwd", &to_host).unwrap();
        assert!(to_host.exists(), "the oracle Path::exists would give");
        assert!(!is_socket(&to_host));
        let to_socket = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&real, &to_socket).unwrap();
        assert!(!is_socket(&to_socket));
        let file = dir.path().join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(!is_socket(&file));
        assert!(!is_socket(&dir.path().join("missing")));
    }
    use std::os::unix::net::UnixListener;

    #[test]
    fn cgroup_membership() {
        let text = "12:pids:/dwell/abc\n0::/dwell/abc/init\n";
        assert!(in_cgroup(text, "dwell/abc"));
        assert!(!in_cgroup(text, "dwell/ab"));
        assert!(!in_cgroup("0::/dwell/abcd\n", "dwell/abc"));
        assert!(!in_cgroup("0::/\n", "dwell/abc"));
    }

    #[test]
    fn a_symlinked_or_non_socket_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("run")).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let real = elsewhere.path().join("other.sock");
        let _l = UnixListener::bind(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("run/agent.sock")).unwrap();
        assert!(open_beneath(d.path(), "run/agent.sock").is_err());
        // A symlinked directory on the way is refused too.
        std::fs::remove_file(d.path().join("run/agent.sock")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), d.path().join("run/dir")).unwrap();
        assert!(open_beneath(d.path(), "run/dir/other.sock").is_err());
        std::fs::write(d.path().join("run/plain"), b"").unwrap();
        let e = open_beneath(d.path(), "run/plain").unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
    }

    #[test]
    fn a_real_socket_connects_and_its_peer_must_be_in_the_cgroup() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("run")).unwrap();
        let _l = UnixListener::bind(d.path().join("run/agent.sock")).unwrap();
        let fd = open_beneath(d.path(), "run/agent.sock").unwrap();
        let s = connect_fd(&fd).unwrap();
        assert_eq!(peer_pid(&s).unwrap(), std::process::id() as i32);
        // This test process is not in a sandbox cgroup.
        let e = connect(
            d.path(),
            "run/agent.sock",
            &Expected {
                id: "sbx",
                cgroup: "dwell-no-such-parent/sbx",
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("not in the sandbox's cgroup"), "{e}");
    }
}
