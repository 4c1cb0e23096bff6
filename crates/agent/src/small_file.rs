//! Reading a small file the sandbox controls (`/etc/hosts`, `/etc/passwd`)
//! without ever blocking. Anything in the sandbox may put a FIFO, a device
//! or a link to one at such a path: opening a FIFO for reading waits for a
//! writer, reading `/dev/zero` never ends, opening a terminal would make it
//! the agent's controlling one, and opening some devices has effects of its
//! own. So the path is checked first (`stat`: only a regular file is ever
//! opened), opened with `O_NONBLOCK | O_NOCTTY | O_CLOEXEC` (in case it was
//! swapped meanwhile), checked again on the descriptor (`fstat`), and read
//! up to a size cap.
//!
//! Symlinks are followed: these are the sandbox's own files, read inside
//! it, and images link them legitimately (`/etc/hosts` to a file under
//! `/run` or a store); what a link leads to is checked like the path.

use std::fs::Metadata;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The content of `path` (links followed) when it is a regular file of at
/// most `max` bytes; `None` when nothing is there (or a link leads
/// nowhere). Anything else is an error saying what was found, and was
/// never opened (or, when swapped after the check, never read).
pub fn read(path: &Path, max: u64) -> io::Result<Option<Vec<u8>>> {
    let Some(f) = open(path, false, max)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Err(io::Error::other(format!(
            "grew past {max} bytes while read"
        )));
    }
    Ok(Some(buf))
}

/// `path` opened for reading, or for writing when `write` (links
/// followed), when it is a regular file of at most `max` bytes: checked
/// before the open, opened without blocking or taking a terminal, checked
/// again on the descriptor. `None` when nothing is there.
pub fn open(path: &Path, write: bool, max: u64) -> io::Result<Option<std::fs::File>> {
    match std::fs::metadata(path) {
        Ok(m) => check(&m, max)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let f = match std::fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    check(&f.metadata()?, max)?;
    Ok(Some(f))
}

/// Ok for a regular file of at most `max` bytes; otherwise an error naming
/// what the file is.
pub fn check(m: &Metadata, max: u64) -> io::Result<()> {
    let t = m.file_type();
    let kind = if t.is_file() {
        if m.len() <= max {
            return Ok(());
        }
        return Err(io::Error::other(format!(
            "it has {} bytes, more than the {max} read",
            m.len()
        )));
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    };
    Err(io::Error::other(format!(
        "it is {kind}, not a regular file; left alone"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").unwrap();
        assert_eq!(
            read(&file, 100).unwrap().as_deref(),
            Some(&b"127.0.0.1 localhost\n"[..])
        );
        // Through a link, too.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(read(&link, 100).unwrap().is_some());
        // Too big.
        let e = read(&file, 5).unwrap_err().to_string();
        assert!(e.contains("more than the 5"), "{e}");
        // Missing, or a link to nothing.
        assert!(read(&dir.path().join("none"), 100).unwrap().is_none());
        std::os::unix::fs::symlink(dir.path().join("none"), dir.path().join("dangling")).unwrap();
        assert!(read(&dir.path().join("dangling"), 100).unwrap().is_none());
        // A FIFO nobody writes to: refused at once, not waited on.
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read(&fifo, 100).unwrap_err().to_string();
        assert!(e.contains("a FIFO"), "{e}");
        std::os::unix::fs::symlink(&fifo, dir.path().join("to-fifo")).unwrap();
        assert!(read(&dir.path().join("to-fifo"), 100).is_err());
        // Devices and directories.
        let e = read(Path::new("/dev/zero"), 100).unwrap_err().to_string();
        assert!(e.contains("character device"), "{e}");
        let e = read(dir.path(), 100).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }
}
