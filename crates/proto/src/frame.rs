//! The frame codec: `[u32 len][u32 stream][u8 kind][payload]`, all big-endian,
//! where `len` counts the stream id, the kind byte and the payload.
//!
//! Decoding is strict: an unknown kind, a length below the header size or a
//! payload above [`MAX_PAYLOAD`] is a [`CodecError`], after which the peer
//! must drop the connection (the byte stream can no longer be trusted).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Bytes before the payload: length (4), stream id (4), kind (1).
pub const HEADER_LEN: usize = 9;
/// Largest payload either side accepts.
pub const MAX_PAYLOAD: usize = 1024 * 1024;
/// Largest `Event` payload the client accepts from the agent. Legitimate
/// events are a few hundred bytes (an `attached` event trims the process's
/// argv to fit); a larger one is a protocol violation, refused before it is
/// parsed, so that events queued for a slow reader stay small.
pub const MAX_EVENT_PAYLOAD: usize = 64 * 1024;
/// Largest `Hello` payload either side accepts (a real one is under 300 bytes).
pub const MAX_HELLO_PAYLOAD: usize = 4 * 1024;
/// Largest data chunk either side sends in one frame.
pub const DATA_CHUNK: usize = 64 * 1024;
/// Bytes of data a sender may have in flight per stream and direction before
/// the receiver grants more with a `Window` frame.
pub const INITIAL_WINDOW: usize = 256 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Handshake, stream 0, JSON `Hello` (both directions).
    Hello = 1,
    /// Client opens a stream, JSON `Request`.
    Request = 2,
    /// Agent: non-final JSON `Event` on a stream.
    Event = 3,
    /// Agent: final JSON `Outcome`; the stream is closed afterwards.
    End = 4,
    /// Agent: process stdout (or merged tty output), raw bytes.
    Stdout = 5,
    /// Agent: process stderr, raw bytes.
    Stderr = 6,
    /// Raw bytes: file content (both directions) or stdin (client).
    Data = 7,
    /// Client: end of stdin / end of file content. Either side on a
    /// `connect` stream: that direction of the TCP connection is closed.
    Eof = 8,
    /// Client: JSON `Control` (resize, signal) on an open stream.
    Control = 9,
    /// Client: abandon the stream (kills a foreground exec).
    Cancel = 10,
    /// Either side: grant `u32` more bytes of data window on the stream.
    Window = 11,
}

impl Kind {
    /// Maps a wire byte to a kind.
    pub fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Event,
            4 => Kind::End,
            5 => Kind::Stdout,
            6 => Kind::Stderr,
            7 => Kind::Data,
            8 => Kind::Eof,
            9 => Kind::Control,
            10 => Kind::Cancel,
            11 => Kind::Window,
            _ => return None,
        })
    }

    /// The largest payload a frame of this kind may carry: below
    /// [`MAX_PAYLOAD`] for the JSON kinds whose legitimate messages are
    /// small (`Hello`, `Event`), so a receiver refuses an oversized one
    /// before parsing it. `End` keeps the full frame (a `list_dir` answer
    /// is up to about 900 KiB): one per stream, never queued in numbers.
    pub fn max_payload(self) -> usize {
        match self {
            Kind::Hello => MAX_HELLO_PAYLOAD,
            Kind::Event => MAX_EVENT_PAYLOAD,
            _ => MAX_PAYLOAD,
        }
    }

    /// True for the kinds whose payload counts against the flow-control window.
    pub fn is_data(self) -> bool {
        matches!(self, Kind::Stdout | Kind::Stderr | Kind::Data)
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream: u32,
    pub kind: Kind,
    pub payload: Bytes,
}

/// Why a byte stream could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame length {len} exceeds the limit of {max} bytes; the peer is not speaking the dwell agent protocol or is corrupt")]
    Oversized { len: usize, max: usize },
    #[error("frame length {0} is shorter than the 5-byte stream id + kind header; the peer sent garbage")]
    TooShort(usize),
    #[error("unknown frame kind {0:#04x}; the peer sent garbage or speaks a newer protocol")]
    UnknownKind(u8),
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated { have: usize, need: usize },
    #[error("i/o error on the agent connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes one frame; a payload above [`MAX_PAYLOAD`] is an error (the
/// peer would drop the whole connection on it), never sent.
pub fn encode(stream: u32, kind: Kind, payload: &[u8]) -> Result<Bytes, CodecError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(CodecError::Oversized {
            len: payload.len(),
            max: MAX_PAYLOAD,
        });
    }
    Ok(put(stream, kind, payload))
}

/// Encodes a frame whose payload is known to be small.
fn put(stream: u32, kind: Kind, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(HEADER_LEN + payload.len());
    b.put_u32((payload.len() + 5) as u32);
    b.put_u32(stream);
    b.put_u8(kind as u8);
    b.put_slice(payload);
    b.freeze()
}

/// Encodes a `Window` frame granting `n` bytes.
pub fn encode_window(stream: u32, n: u32) -> Bytes {
    put(stream, Kind::Window, &n.to_be_bytes())
}

/// Parses a `Window` frame's payload.
pub fn parse_window(payload: &[u8]) -> Result<u32, CodecError> {
    if payload.len() != 4 {
        return Err(CodecError::TooShort(payload.len()));
    }
    Ok(u32::from_be_bytes([
        payload[0], payload[1], payload[2], payload[3],
    ]))
}

/// Decodes one frame from the front of `buf`, or returns `Ok(None)` if more bytes are needed.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 5 {
        return Err(CodecError::TooShort(len));
    }
    if len - 5 > MAX_PAYLOAD {
        return Err(CodecError::Oversized {
            len: len - 5,
            max: MAX_PAYLOAD,
        });
    }
    if buf.len() >= 9 && Kind::from_u8(buf[8]).is_none() {
        return Err(CodecError::UnknownKind(buf[8]));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    buf.advance(4);
    let stream = buf.get_u32();
    let kind = Kind::from_u8(buf.get_u8()).ok_or(CodecError::UnknownKind(0))?;
    let payload = buf.split_to(len - 5).freeze();
    Ok(Some(Frame {
        stream,
        kind,
        payload,
    }))
}

/// Reads frames from an async byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: BytesMut::with_capacity(8 * 1024),
        }
    }

    /// The next frame, `Ok(None)` on a clean end of stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>, CodecError> {
        loop {
            if let Some(f) = decode(&mut self.buf)? {
                // Do not keep a large buffer around after a big frame.
                if self.buf.is_empty() && self.buf.capacity() > 256 * 1024 {
                    self.buf = BytesMut::with_capacity(8 * 1024);
                }
                return Ok(Some(f));
            }
            if self.buf.capacity() - self.buf.len() < 4096 {
                self.buf.reserve(64 * 1024);
            }
            let n = self.inner.read_buf(&mut self.buf).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                let need = if self.buf.len() >= 4 {
                    4 + u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                        as usize
                } else {
                    4
                };
                return Err(CodecError::Truncated {
                    have: self.buf.len(),
                    need,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_payloads_are_not_encoded() {
        assert!(encode(1, Kind::End, &vec![0u8; MAX_PAYLOAD]).is_ok());
        assert!(matches!(
            encode(1, Kind::End, &vec![0u8; MAX_PAYLOAD + 1]),
            Err(CodecError::Oversized { .. })
        ));
    }

    #[test]
    fn roundtrip() {
        let mut b = BytesMut::new();
        b.extend_from_slice(&encode(7, Kind::Stdout, b"hello").unwrap());
        b.extend_from_slice(&encode(9, Kind::Eof, b"").unwrap());
        let f = decode(&mut b).unwrap().unwrap();
        assert_eq!(
            (f.stream, f.kind, &f.payload[..]),
            (7, Kind::Stdout, &b"hello"[..])
        );
        let f = decode(&mut b).unwrap().unwrap();
        assert_eq!((f.stream, f.kind, f.payload.len()), (9, Kind::Eof, 0));
        assert!(decode(&mut b).unwrap().is_none());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let full = encode(1, Kind::Data, &[1u8; 100]).unwrap();
        let mut b = BytesMut::new();
        for (i, byte) in full.iter().enumerate() {
            assert!(decode(&mut b).unwrap().is_none(), "decoded early at {i}");
            b.put_u8(*byte);
        }
        assert_eq!(decode(&mut b).unwrap().unwrap().payload.len(), 100);
    }

    #[test]
    fn oversized_is_rejected_before_buffering() {
        let mut b = BytesMut::new();
        b.put_u32((MAX_PAYLOAD + 6) as u32);
        assert!(matches!(decode(&mut b), Err(CodecError::Oversized { .. })));
        let mut b = BytesMut::from(&b"\xff\xff\xff\xffgarbage"[..]);
        assert!(matches!(decode(&mut b), Err(CodecError::Oversized { .. })));
    }

    #[test]
    fn garbage_is_rejected() {
        let mut b = BytesMut::from(&b"\x00\x00\x00\x02xx"[..]);
        assert!(matches!(decode(&mut b), Err(CodecError::TooShort(2))));
        let mut b = BytesMut::from(&b"\x00\x00\x00\x05\x00\x00\x00\x01\xee"[..]);
        assert!(matches!(decode(&mut b), Err(CodecError::UnknownKind(0xee))));
        let mut b = BytesMut::from(&b"GET / HTTP/1.1\r\n\r\n"[..]);
        assert!(decode(&mut b).is_err());
    }

    #[test]
    fn window_payload() {
        let f = encode_window(3, 4096);
        let mut b = BytesMut::from(&f[..]);
        let f = decode(&mut b).unwrap().unwrap();
        assert_eq!(parse_window(&f.payload).unwrap(), 4096);
        assert!(parse_window(b"abc").is_err());
    }

    #[tokio::test]
    async fn reader_reports_truncation_and_clean_eof() {
        let mut data = encode(1, Kind::Data, b"abc").unwrap().to_vec();
        let mut r = FrameReader::new(&data[..]);
        assert!(r.next().await.unwrap().is_some());
        assert!(r.next().await.unwrap().is_none());
        data.truncate(data.len() - 1);
        let mut r = FrameReader::new(&data[..]);
        assert!(matches!(
            r.next().await,
            Err(CodecError::Truncated { have: 11, need: 12 })
        ));
    }
}
