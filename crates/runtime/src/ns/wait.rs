//! Bounded waits without fixed polling intervals: reading a child's output
//! until it closes (with a deadline, via poll(2)), connecting to a socket
//! that is about to accept, and a short exponential backoff for the few
//! states the kernel offers no notification for.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::sys;

/// Sleeps that start tiny and double up to a cap: answers within about
/// twice the time the awaited state takes, without spinning for long.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { next: first, max }
    }

    /// Sleep for the current interval (never past `deadline`), then double it.
    pub fn sleep_until(&mut self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        std::thread::sleep(self.next.min(left));
        self.next = (self.next * 2).min(self.max);
    }
}

/// Read `src` until end of file. Returns `Err(partial output)` if the
/// deadline passes first.
pub fn read_to_end_until<R: Read + AsRawFd>(
    src: &mut R,
    deadline: Instant,
) -> Result<String, String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(String::from_utf8_lossy(&out).into_owned());
        }
        match sys::poll_readable(&[src.as_raw_fd()], left) {
            Ok(r) if !r[0] => continue,
            Ok(_) => {}
            Err(_) => return Err(String::from_utf8_lossy(&out).into_owned()),
        }
        match src.read(&mut buf) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // A reset connection is an end of file for our purposes.
            Err(_) => return Ok(String::from_utf8_lossy(&out).into_owned()),
        }
    }
}

/// Connect to a unix socket that exists or is about to; retries refused
/// and missing sockets with a backoff starting at 100 µs until `deadline`.
pub fn connect_until(path: &Path, deadline: Instant) -> io::Result<UnixStream> {
    let mut backoff = Backoff::new(Duration::from_micros(100), Duration::from_millis(10));
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                backoff.sleep_until(deadline)
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_until_eof_or_deadline() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"hello").unwrap();
        let t = Instant::now();
        assert_eq!(
            read_to_end_until(&mut a, t + Duration::from_millis(30)),
            Err("hello".to_string())
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
        b.write_all(b" world").unwrap();
        drop(b);
        assert_eq!(
            read_to_end_until(&mut a, Instant::now() + Duration::from_secs(5)),
            Ok(" world".to_string())
        );
    }

    #[test]
    fn connects_once_the_socket_appears() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let p = path.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            std::os::unix::net::UnixListener::bind(&p).unwrap()
        });
        let s = connect_until(&path, Instant::now() + Duration::from_secs(5));
        let _listener = t.join().unwrap();
        s.unwrap();
        let missing = dir.path().join("none.sock");
        assert!(connect_until(&missing, Instant::now() + Duration::from_millis(5)).is_err());
    }
}
