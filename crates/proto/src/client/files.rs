//! Streamed file transfer: [`FileReader`] and [`FileWriter`].

use std::time::Duration;

use bytes::Bytes;

use super::conn::{Inbound, Stream};
use crate::error::{Error, Result};
use crate::frame::Kind;

/// Chunks of a file being read; dropping it early cancels the read.
pub struct FileReader {
    stream: Stream,
    path: String,
    size: u64,
    finished: bool,
}

impl FileReader {
    pub(crate) fn new(stream: Stream, path: &str, size: u64) -> Self {
        FileReader {
            stream,
            path: path.to_string(),
            size,
            finished: false,
        }
    }

    /// The file size when it was opened (what the sandbox says: a special
    /// file or one still growing may send more, or less).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next chunk, `Ok(None)` at the end of the file.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        if self.finished {
            return Ok(None);
        }
        match self.stream.recv().await {
            Ok(Inbound::Data(b)) => Ok(Some(b)),
            Ok(Inbound::End(Ok(_))) => {
                self.finished = true;
                Ok(None)
            }
            Ok(Inbound::End(Err(e))) => {
                self.finished = true;
                Err(Error::Remote(e))
            }
            Ok(_) => Err(Error::Protocol(
                "unexpected message on a file read stream".into(),
            )),
            Err(e) => {
                self.finished = true;
                Err(e)
            }
        }
    }

    /// Reads the rest of the file into memory, at most `max` bytes: a file
    /// whose size when opened is above `max`, or that sends more than `max`
    /// bytes (one growing while it is read, `/dev/zero`, a FIFO: the size
    /// is only what the sandbox says), is [`Error::TooLarge`] naming the
    /// file and the limit, and the read is cancelled in the agent. Whoever
    /// holds the whole file in memory must bound it this way, since a
    /// sandbox can make any file as large as it likes.
    pub async fn read_to_end(mut self, max: u64) -> Result<Vec<u8>> {
        let too_large = |what: String| Error::TooLarge { what, max };
        if self.size > max {
            return Err(too_large(format!("{} ({} bytes)", self.path, self.size)));
        }
        let mut v = Vec::with_capacity(self.size as usize);
        while let Some(c) = self.next_chunk().await? {
            if (v.len() + c.len()) as u64 > max {
                return Err(too_large(format!(
                    "{} (it sent more than it said when opened)",
                    self.path
                )));
            }
            v.extend_from_slice(&c);
        }
        Ok(v)
    }
}

/// A file being written; call `finish()` to commit. Dropping it early
/// cancels the write (the file keeps what was written so far).
pub struct FileWriter {
    stream: Stream,
    timeout: Duration,
}

impl FileWriter {
    pub(crate) fn new(stream: Stream, timeout: Duration) -> Self {
        FileWriter { stream, timeout }
    }

    fn check_early_end(&mut self) -> Result<()> {
        match self.stream.try_recv() {
            None => Ok(()),
            Some(Ok(Inbound::End(Err(e)))) => Err(Error::Remote(e)),
            Some(Ok(_)) => Err(Error::Protocol(
                "unexpected message on a file write stream".into(),
            )),
            Some(Err(e)) => Err(e),
        }
    }

    /// Sends one chunk (any size; it is split into frames).
    pub async fn write(&mut self, data: Bytes) -> Result<()> {
        self.check_early_end()?;
        self.stream.sender().data(data).await
    }

    /// Ends the file and waits for the agent to close it; returns the bytes written.
    pub async fn finish(mut self) -> Result<u64> {
        self.check_early_end()?;
        self.stream.sender().frame(Kind::Eof, b"")?;
        let r = tokio::time::timeout(self.timeout, self.stream.recv()).await;
        match r {
            Err(_) => Err(Error::Timeout {
                what: "closing the written file".into(),
                ms: self.timeout.as_millis() as u64,
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(Inbound::End(Ok(v)))) => serde_json::from_value(v)
                .map_err(|e| Error::Protocol(format!("undecodable write result: {e}"))),
            Ok(Ok(Inbound::End(Err(e)))) => Err(Error::Remote(e)),
            Ok(Ok(_)) => Err(Error::Protocol(
                "unexpected message on a file write stream".into(),
            )),
        }
    }
}
