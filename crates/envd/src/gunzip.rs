//! Streaming gzip decoding of an upload body with bounded memory: the
//! compressed chunks go to a decoder on the blocking pool through a small
//! channel, and the decoder hands back at most [`OUT_CHUNK`] bytes at a
//! time through another. A small body that inflates to gigabytes is
//! therefore written out piece by piece (and stops at the first failing
//! write) instead of being inflated in memory. Concatenated gzip members
//! (`cat a.gz b.gz`) decode as one stream, as `gunzip` does.

use std::io::{self, Read};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Largest piece of decoded output handed back at once.
pub const OUT_CHUNK: usize = 256 << 10;
/// Chunks buffered in each direction.
const DEPTH: usize = 4;

/// A blocking reader over the compressed chunks arriving on a channel.
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Decodes a gzip `body`; the receiver yields the decoded pieces (an
/// error describes a corrupt or truncated stream, or a failed body read)
/// and ends after the last one. Dropping the receiver stops the decoding
/// and the reading of the body.
pub fn decode<S, E>(body: S) -> mpsc::Receiver<io::Result<Bytes>>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let (in_tx, in_rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    let (out_tx, out_rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::spawn(async move {
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let item =
                chunk.map_err(|e| io::Error::other(format!("reading the upload failed: {e}")));
            let stop = item.is_err();
            if in_tx.send(item).await.is_err() || stop {
                return; // the decoder stopped (error, or its reader is gone)
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let mut d = flate2::read::MultiGzDecoder::new(ChannelReader {
            rx: in_rx,
            cur: Bytes::new(),
        });
        loop {
            let mut buf = vec![0u8; OUT_CHUNK];
            let item = match d.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                }
                Err(e) => Err(e),
            };
            let stop = item.is_err();
            if out_tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    out_rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn body(
        b: Vec<u8>,
        step: usize,
    ) -> impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Unpin + 'static {
        let chunks: Vec<_> = b
            .chunks(step)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(chunks)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn multi_member_gzip_decodes_whole() {
        let mut all = gz(b"hello ");
        all.extend(gz(b"world"));
        let mut rx = decode(body(all, 3));
        let mut out = Vec::new();
        while let Some(b) = rx.recv().await {
            out.extend_from_slice(&b.unwrap());
        }
        assert_eq!(out, b"hello world");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bomb_comes_out_in_bounded_pieces() {
        let zeros = vec![0u8; 64 << 20];
        let small = gz(&zeros);
        assert!(small.len() < 1 << 20);
        let mut rx = decode(body(small, 8192));
        let mut total = 0;
        while let Some(b) = rx.recv().await {
            let b = b.unwrap();
            assert!(b.len() <= OUT_CHUNK);
            total += b.len();
        }
        assert_eq!(total, 64 << 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn truncated_and_corrupt_streams_fail() {
        let mut g = gz(b"some text that compresses");
        g.truncate(g.len() - 4);
        let mut rx = decode(body(g, 5));
        let mut failed = false;
        while let Some(b) = rx.recv().await {
            failed |= b.is_err();
        }
        assert!(failed, "a truncated stream is an error");
        let mut rx = decode(body(b"not gzip at all".to_vec(), 4));
        assert!(rx.recv().await.unwrap().is_err());
    }
}
