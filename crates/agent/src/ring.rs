//! A bounded buffer of a process's most recent output, replayed on attach.

use std::collections::VecDeque;

use bytes::Bytes;

/// Bytes kept per process.
pub const RING_CAPACITY: usize = 64 * 1024;

/// Recent output chunks; the oldest are dropped beyond the capacity.
#[derive(Default)]
pub struct Ring {
    chunks: VecDeque<(bool, Bytes)>,
    len: usize,
}

impl Ring {
    /// Appends a chunk (`stderr` tells the channel), dropping old output as needed.
    pub fn push(&mut self, stderr: bool, mut b: Bytes) {
        if b.len() > RING_CAPACITY {
            b = b.slice(b.len() - RING_CAPACITY..);
        }
        self.len += b.len();
        self.chunks.push_back((stderr, b));
        self.shrink_to(RING_CAPACITY);
    }

    /// Keeps only the newest `cap` bytes.
    pub fn shrink_to(&mut self, cap: usize) {
        while self.len > cap {
            let excess = self.len - cap;
            let front = self.chunks.front_mut().expect("len > 0 implies a chunk");
            if front.1.len() <= excess {
                self.len -= front.1.len();
                self.chunks.pop_front();
            } else {
                // Copy the kept part so the old allocation is freed.
                front.1 = Bytes::copy_from_slice(&front.1[excess..]);
                self.len -= excess;
            }
        }
        if cap < RING_CAPACITY {
            self.chunks.shrink_to_fit();
        }
    }

    /// A copy of the buffered chunks, oldest first.
    pub fn snapshot(&self) -> Vec<(bool, Bytes)> {
        self.chunks.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let mut r = Ring::default();
        r.push(false, Bytes::from(vec![1u8; 40 * 1024]));
        r.push(true, Bytes::from(vec![2u8; 40 * 1024]));
        let s = r.snapshot();
        let total: usize = s.iter().map(|c| c.1.len()).sum();
        assert_eq!(total, RING_CAPACITY);
        assert_eq!(s.last().unwrap().1.len(), 40 * 1024);
        r.push(false, Bytes::from(vec![3u8; 200 * 1024]));
        let s = r.snapshot();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].1.len(), RING_CAPACITY);
        r.shrink_to(100);
        let s = r.snapshot();
        assert_eq!((s.len(), s[0].1.len(), s[0].1[99]), (1, 100, 3));
    }
}
