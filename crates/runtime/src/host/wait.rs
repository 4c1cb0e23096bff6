//! Bounded waits without fixed polling intervals: reading a child's output
//! until it closes (with a deadline, via poll(2)), and a short exponential
//! backoff for the few states that have no cheap notification.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

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
}
