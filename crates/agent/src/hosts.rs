//! The sandbox's `/etc/hosts` names the sandbox's own hostname. Programs
//! that look their host up (sudo, Java's `getLocalHost`, mail tools) fail
//! or warn when it does not resolve, and an image's file names whatever
//! host it was built on. So the agent, as PID 1 and before it serves
//! anything, makes the hostname the runtime gave the sandbox resolve:
//!
//! * a line the agent wrote at an earlier start (it ends with
//!   [`MARK`]) is dropped: the sandbox may have a new name since;
//! * when no other line maps the hostname, one is added, the Debian way:
//!   `127.0.1.1 HOSTNAME`; the daemon's block of private-network peer
//!   names does not count (it changes while the sandbox runs, and may drop
//!   the sandbox's own name);
//! * every other line (the image's, what a user added) stays as it is,
//!   and a mapping of the hostname a user wrote wins over the agent's;
//! * no file at all: one with the usual localhost lines is made.
//!
//! The file is the sandbox's own and this runs inside it, so a symlink at
//! `/etc/hosts` is the sandbox's business (images link it legitimately): it
//! is read through and replaced by a file (as `/etc/resolv.conf` is).
//! Something that is not a regular file of at most [`MAX_BYTES`] (a FIFO,
//! a device, a directory, or a link to one) is left alone, with a log line,
//! and never opened: a FIFO would hold PID 1 here, before it serves
//! anything, at every start ([`crate::small_file`]). A failure is reported,
//! not fatal: boot goes on.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The file.
const PATH: &str = "/etc/hosts";

/// The comment that ends the line the agent writes.
pub const MARK: &str = "# dwell: this sandbox's hostname";

/// The largest file the agent reads and rewrites.
pub const MAX_BYTES: u64 = 1 << 20;

/// The lines of a file made from nothing, before the hostname's.
const FRESH: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Makes `/etc/hosts` resolve the hostname. Call early in PID 1.
pub fn init() {
    let host = match hostname() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("dwell-agent: reading the hostname: {e}; {PATH} left as it is");
            return;
        }
    };
    if !usable(&host) {
        eprintln!("dwell-agent: the hostname {host:?} cannot go into {PATH}; left as it is");
        return;
    }
    let old = match read() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dwell-agent: reading {PATH}: {e}; left as it is");
            return;
        }
    };
    let new = content(old.as_deref(), &host);
    if old.as_deref() == Some(new.as_str()) {
        return;
    }
    if let Err(e) = write(&new) {
        eprintln!("dwell-agent: writing {PATH}: {e}; the hostname {host} may not resolve");
    }
}

/// The file's content; None when there is none. Only a regular file is
/// opened, and without blocking ([`crate::small_file::read`]).
fn read() -> std::io::Result<Option<String>> {
    match crate::small_file::read(Path::new(PATH), MAX_BYTES)? {
        None => Ok(None),
        Some(b) => String::from_utf8(b)
            .map(Some)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8")),
    }
}

/// The kernel's hostname of this sandbox (its UTS namespace).
fn hostname() -> std::io::Result<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, given as the size.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..n].to_vec())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

/// Whether `host` can be a name in the file: a DNS-like name, nothing
/// that would split or comment out the line.
fn usable(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// The file's content for hostname `host`, from the old content (None:
/// there was no file).
pub fn content(old: Option<&str>, host: &str) -> String {
    let mut out = String::new();
    let mut mapped = false;
    let mut in_block = false;
    for line in old.unwrap_or(FRESH).lines() {
        if line.trim_end().ends_with(MARK) {
            continue;
        }
        if line == dwell_proto::HOSTS_BLOCK_BEGIN {
            in_block = true;
        } else if line == dwell_proto::HOSTS_BLOCK_END {
            in_block = false;
        }
        let names = line.split('#').next().unwrap_or("");
        if !in_block
            && names
                .split_whitespace()
                .skip(1)
                .any(|n| n.eq_ignore_ascii_case(host))
        {
            mapped = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !mapped {
        out.push_str(&format!("127.0.1.1\t{host}\t{MARK}\n"));
    }
    out
}

/// Replaces the file by one with `content`, or (a bind-mounted file,
/// which cannot be replaced) writes into it when it is a regular file.
fn write(content: &str) -> std::io::Result<()> {
    let tmp = "/etc/.hosts.dwell";
    let _ = std::fs::remove_file(tmp);
    // A new file (O_EXCL: nothing left at `tmp` is followed or reused).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(tmp)?;
    let written = f
        .write_all(content.as_bytes())
        .and_then(|()| f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644)));
    drop(f);
    if let Err(e) = written {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    if std::fs::rename(tmp, PATH).is_ok() {
        return Ok(());
    }
    let _ = std::fs::remove_file(tmp);
    // A mount point is not replaced: write into it, when it is a regular
    // file (checked before the open and on the descriptor; opened without
    // blocking).
    let Some(mut f) = crate::small_file::open(Path::new(PATH), true, u64::MAX)? else {
        return Err(std::io::Error::other(format!(
            "{PATH} vanished while being replaced"
        )));
    };
    f.set_len(0)?;
    f.write_all(content.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\tlocalhost ip6-localhost\n";

    #[test]
    fn adds_the_hostname_and_keeps_the_rest() {
        let c = content(Some(DEBIAN), "work");
        assert!(c.starts_with(DEBIAN), "{c}");
        assert!(c.ends_with(&format!("127.0.1.1\twork\t{MARK}\n")), "{c}");
        // The next start changes nothing; a renamed sandbox gets its new
        // name in place of the old.
        assert_eq!(content(Some(&c), "work"), c);
        let renamed = content(Some(&c), "other");
        assert!(!renamed.contains("work"), "{renamed}");
        assert!(renamed.contains("\tother\t"), "{renamed}");
    }

    #[test]
    fn a_mapping_already_there_wins() {
        let mine = "127.0.0.1 localhost\n10.1.2.3 db work.example work # mine\n";
        assert_eq!(content(Some(mine), "WORK"), mine);
        // A name in a comment does not count.
        let commented = "127.0.0.1 localhost # work\n";
        assert!(content(Some(commented), "work").contains(MARK));
        // Nor does a line's address.
        assert!(content(Some("work localhost\n"), "work").contains(MARK));
    }

    #[test]
    fn the_network_block_does_not_count() {
        let old = format!(
            "127.0.0.1 localhost\n{}\n10.0.0.2\twork work.team\n{}\n",
            dwell_proto::HOSTS_BLOCK_BEGIN,
            dwell_proto::HOSTS_BLOCK_END
        );
        let c = content(Some(&old), "work");
        assert!(c.starts_with(&old), "{c}");
        assert!(c.ends_with(&format!("127.0.1.1\twork\t{MARK}\n")), "{c}");
    }

    #[test]
    fn no_file_gets_the_localhost_lines() {
        let c = content(None, "sb");
        assert!(c.starts_with(FRESH), "{c}");
        assert!(c.contains("\tsb\t"), "{c}");
    }

    #[test]
    fn odd_names_are_refused() {
        assert!(usable("my-box.example"));
        for bad in ["", "a b", "a#b", "a\nb", "é"] {
            assert!(!usable(bad), "{bad:?}");
        }
    }
}
