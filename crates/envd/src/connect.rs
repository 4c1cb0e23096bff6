//! The Connect RPC protocol over HTTP/1.1 with the JSON codec: error codes
//! and their HTTP statuses, the 5-byte envelope of streaming messages
//! (flags, big-endian length, payload), the end-of-stream frame, and the
//! request/response helpers the services use.
//!
//! Only the JSON codec is served: the E2B SDKs (Python and JS) always send
//! `application/json` / `application/connect+json`. A binary protobuf
//! request gets HTTP 415, as the Connect protocol prescribes for an
//! unsupported codec.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

/// Largest message accepted in one envelope or unary body (16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;
/// Envelope flag of a compressed message (not supported).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag of the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;

/// Content type of unary JSON requests and responses.
pub const UNARY_JSON: &str = "application/json";
/// Content type of streaming JSON requests and responses.
pub const STREAM_JSON: &str = "application/connect+json";

/// A Connect error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Unimplemented,
    Internal,
    Unavailable,
    Unauthenticated,
}

impl Code {
    /// The wire name (`"not_found"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code (Connect protocol table).
    pub fn http_status(self) -> StatusCode {
        let s = match self {
            Code::Canceled => 499,
            Code::Unknown | Code::Internal => 500,
            Code::InvalidArgument | Code::FailedPrecondition => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::Unimplemented => 501,
            Code::Unavailable => 503,
            Code::Unauthenticated => 401,
        };
        StatusCode::from_u16(s).expect("valid status")
    }
}

/// An RPC failure, sent as a Connect error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
    /// The HTTP status of a unary answer when it is not the code's (415
    /// for an unsupported codec).
    pub http: Option<StatusCode>,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
            http: None,
        }
    }

    /// A request in a codec this server does not speak: HTTP 415, as the
    /// Connect protocol prescribes, with code `unimplemented`.
    pub fn unsupported_codec(why: impl Into<String>) -> Self {
        ConnectError {
            http: Some(StatusCode::UNSUPPORTED_MEDIA_TYPE),
            ..Self::new(Code::Unimplemented, why)
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    /// The JSON error object `{"code": .., "message": ..}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }

    /// The end-of-stream frame carrying this error.
    pub fn end_frame(&self) -> Bytes {
        let body = serde_json::json!({ "error": self.to_json() });
        envelope(FLAG_END_STREAM, &serde_json::to_vec(&body).expect("json"))
    }
}

impl From<dwell_proto::Error> for ConnectError {
    fn from(e: dwell_proto::Error) -> Self {
        use dwell_proto::{Error as E, ErrorKind as K};
        match e {
            E::Remote(r) => {
                let code = match r.kind {
                    K::NotFound | K::NoSuchProcess => Code::NotFound,
                    K::AlreadyExists => Code::AlreadyExists,
                    K::PermissionDenied | K::ReadOnly => Code::PermissionDenied,
                    K::InvalidArgument
                    | K::IsADirectory
                    | K::NotADirectory
                    | K::DirectoryNotEmpty => Code::InvalidArgument,
                    K::NoSpace | K::TooManyStreams => Code::ResourceExhausted,
                    K::ConnectionRefused | K::Unreachable => Code::Unavailable,
                    K::Io | K::Other => Code::Internal,
                };
                ConnectError::new(code, r.message)
            }
            E::Invalid(m) => ConnectError::invalid(m),
            E::Timeout { .. } => ConnectError::new(Code::DeadlineExceeded, e.to_string()),
            E::TooLarge { .. } => ConnectError::new(Code::ResourceExhausted, e.to_string()),
            e => ConnectError::new(Code::Unavailable, e.to_string()),
        }
    }
}

impl IntoResponse for ConnectError {
    /// The unary error response: the code's HTTP status and a JSON body.
    fn into_response(self) -> Response {
        let status = self.http.unwrap_or(self.code.http_status());
        let mut r = (status, axum::Json(self.to_json())).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_JSON));
        r
    }
}

/// Frames `payload` in a Connect envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// A data envelope holding `msg` as JSON.
pub fn message_frame<T: Serialize>(msg: &T) -> Bytes {
    envelope(0, &serde_json::to_vec(msg).expect("messages serialize"))
}

/// The successful end-of-stream frame.
pub fn end_ok_frame() -> Bytes {
    envelope(FLAG_END_STREAM, b"{}")
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub payload: Bytes,
}

/// Incremental envelope decoder: feed bytes as they arrive, take whole
/// envelopes out.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    pub fn push(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// The next complete envelope, `Ok(None)` if more bytes are needed.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flags = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("message of {len} bytes exceeds the {MAX_MESSAGE}-byte limit"),
            ));
        }
        if flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "compressed messages are not supported; send with Connect-Content-Encoding: identity",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, payload }))
    }

    /// Bytes received but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// Reads envelopes one by one from a request body (client streaming).
pub struct EnvelopeReader {
    body: axum::body::BodyDataStream,
    dec: Decoder,
}

impl EnvelopeReader {
    pub fn new(body: Body) -> Self {
        EnvelopeReader {
            body: body.into_data_stream(),
            dec: Decoder::default(),
        }
    }

    /// The next data message, `Ok(None)` at the end of the request.
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectError> {
        loop {
            if let Some(env) = self.dec.next_envelope()? {
                if env.flags & FLAG_END_STREAM != 0 {
                    return Ok(None);
                }
                return decode_json(&env.payload).map(Some);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.dec.push(&chunk),
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        Code::Canceled,
                        format!("reading the request body failed: {e}"),
                    ))
                }
                None if self.dec.pending() == 0 => return Ok(None),
                None => {
                    return Err(ConnectError::invalid(
                        "the request body ended inside an envelope",
                    ))
                }
            }
        }
    }
}

/// Decodes a JSON message (unknown fields are ignored).
pub fn decode_json<T: DeserializeOwned>(b: &[u8]) -> Result<T, ConnectError> {
    let b = if b.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        b
    };
    serde_json::from_slice(b)
        .map_err(|e| ConnectError::invalid(format!("undecodable request message: {e}")))
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

/// Checks the content type of a request: `stream` selects
/// `application/connect+json`, else `application/json`.
/// The error says why.
pub fn check_codec(h: &HeaderMap, stream: bool) -> Result<(), String> {
    let ct = content_type(h);
    let want = if stream { STREAM_JSON } else { UNARY_JSON };
    if ct.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    Err(format!(
        "content type {ct:?} is not served: dwell's envd speaks the Connect JSON codec ({want})"
    ))
}

/// The HTTP 415 answer to a request in an unsupported codec.
pub fn unsupported_codec(why: String) -> Response {
    (StatusCode::UNSUPPORTED_MEDIA_TYPE, why).into_response()
}

/// Reads a whole unary request body and decodes it.
pub async fn read_unary<T: DeserializeOwned>(body: Body) -> Result<T, ConnectError> {
    let b = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .map_err(|e| ConnectError::invalid(format!("reading the request body failed: {e}")))?;
    decode_json(&b)
}

/// Reads the single message of a server-streaming request.
pub async fn read_stream_request<T: DeserializeOwned>(body: Body) -> Result<T, ConnectError> {
    let mut r = EnvelopeReader::new(body);
    match r.next().await? {
        Some(m) => Ok(m),
        None => Err(ConnectError::invalid(
            "the streaming request carried no message",
        )),
    }
}

/// A unary success response.
pub fn unary_ok<T: Serialize>(msg: &T) -> Response {
    let mut r = axum::Json(msg).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(UNARY_JSON));
    r
}

/// A unary response from a result.
pub fn unary<T: Serialize>(r: Result<T, ConnectError>) -> Response {
    match r {
        Ok(m) => unary_ok(&m),
        Err(e) => e.into_response(),
    }
}

/// A streaming response whose frames come from `rx`; the producer sends
/// the end-of-stream frame last.
pub fn stream_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let s = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), rx))
    });
    let mut r = Response::new(Body::from_stream(s));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_JSON));
    r
}

/// A streaming response that is only an end-of-stream error (how a server
/// stream fails before its first message).
pub fn stream_error(e: &ConnectError) -> Response {
    let mut r = Response::new(Body::from(e.end_frame()));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(STREAM_JSON));
    r
}

/// The deadline of a call (`Connect-Timeout-Ms`, Connect's header: a
/// positive integer of at most 10 digits), from when it was read; `None`
/// when absent, zero or malformed (no deadline, as the protocol says for a
/// header the server cannot read).
pub fn deadline(h: &HeaderMap) -> Option<tokio::time::Instant> {
    let v = h.get("connect-timeout-ms")?.to_str().ok()?.trim();
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = v.parse().ok()?;
    (ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(ms))
}

/// The end frame of a stream whose deadline passed.
pub fn deadline_frame() -> Bytes {
    ConnectError::new(
        Code::DeadlineExceeded,
        "the call's deadline (Connect-Timeout-Ms) passed; the process or watch goes on, \
         re-attach or poll again to see more",
    )
    .end_frame()
}

/// Sleeps until `deadline`, or forever without one (for `select!`).
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// The keepalive interval the client asked for (`Keepalive-Ping-Interval`,
/// seconds), clamped to 1..=3600 s (a huge value would overflow the
/// timer's deadline); 50 s when absent.
pub fn keepalive_interval(h: &HeaderMap) -> Duration {
    let secs = h
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(50);
    Duration::from_secs(secs.clamp(1, 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_read_as_connect_writes_them() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("connect-timeout-ms", HeaderValue::from_str(v).unwrap());
            deadline(&h)
        };
        let t0 = tokio::time::Instant::now();
        let d = with("2000").expect("a deadline");
        assert!(d >= t0 + Duration::from_millis(2000) && d < t0 + Duration::from_secs(3));
        for bad in ["0", "", "-5", "1e3", "12345678901", " x"] {
            assert!(with(bad).is_none(), "{bad:?}");
        }
        assert!(deadline(&HeaderMap::new()).is_none());
        assert!(String::from_utf8_lossy(&deadline_frame()).contains("deadline_exceeded"));
    }

    #[test]
    fn envelope_roundtrip_in_pieces() {
        let a = message_frame(&serde_json::json!({"a": 1}));
        let b = end_ok_frame();
        assert_eq!(&a[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(&b[..], b"\x02\x00\x00\x00\x02{}");
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for byte in all {
            d.push(&[byte]);
            while let Some(e) = d.next_envelope().unwrap() {
                got.push(e);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!(&got[0].payload[..], br#"{"a":1}"#);
        assert_eq!(got[1].flags, FLAG_END_STREAM);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn oversized_and_compressed_envelopes_are_refused() {
        let mut d = Decoder::default();
        d.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_envelope().unwrap_err().code, Code::ResourceExhausted);
        let mut d = Decoder::default();
        d.push(&envelope(FLAG_COMPRESSED, b"x"));
        assert_eq!(d.next_envelope().unwrap_err().code, Code::Unimplemented);
    }

    #[test]
    fn error_end_frame_shape() {
        let e = ConnectError::new(Code::NotFound, "no such process");
        let f = e.end_frame();
        assert_eq!(f[0], FLAG_END_STREAM);
        let v: serde_json::Value = serde_json::from_slice(&f[5..]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "not_found", "message": "no such process"}})
        );
        assert_eq!(e.code.http_status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn agent_errors_map_to_connect_codes() {
        let e = dwell_proto::Error::Remote(dwell_proto::RemoteError::new(
            dwell_proto::ErrorKind::AlreadyExists,
            "mkdir /x: exists",
        ));
        assert_eq!(ConnectError::from(e).code, Code::AlreadyExists);
        let e = dwell_proto::Error::Unreachable("gone".into());
        assert_eq!(ConnectError::from(e).code, Code::Unavailable);
    }

    #[test]
    fn keepalive_interval_is_clamped() {
        let mut h = HeaderMap::new();
        assert_eq!(keepalive_interval(&h), Duration::from_secs(50));
        h.insert(
            "keepalive-ping-interval",
            "18446744073709551615".parse().unwrap(),
        );
        assert_eq!(keepalive_interval(&h), Duration::from_secs(3600));
        h.insert("keepalive-ping-interval", "0".parse().unwrap());
        assert_eq!(keepalive_interval(&h), Duration::from_secs(1));
    }

    #[test]
    fn empty_body_decodes_as_empty_message() {
        let v: serde_json::Value = decode_json(b"").unwrap();
        assert_eq!(v, serde_json::json!({}));
    }
}
