//! Streaming gzip encoding of a download (`Accept-Encoding: gzip`): each
//! chunk read from the agent is compressed as it passes, so a file of any
//! size is sent without being held in memory.

use std::io::{self, Write};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;

/// A gzip stream being written out piece by piece.
pub struct Encoder(GzEncoder<Vec<u8>>);

impl Encoder {
    pub fn new() -> Self {
        Encoder(GzEncoder::new(Vec::new(), Compression::fast()))
    }

    /// Compresses `b`; answers what is ready to send (possibly nothing).
    pub fn push(&mut self, b: &[u8]) -> io::Result<Bytes> {
        self.0.write_all(b)?;
        Ok(Bytes::from(std::mem::take(self.0.get_mut())))
    }

    /// The end of the stream (the last compressed bytes and the trailer).
    pub fn finish(self) -> io::Result<Bytes> {
        self.0.finish().map(Bytes::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn pieces_make_one_gzip_stream() {
        let mut e = Encoder::new();
        let mut out = Vec::new();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for c in data.chunks(65536) {
            out.extend_from_slice(&e.push(c).unwrap());
        }
        out.extend_from_slice(&e.finish().unwrap());
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
    }
}
