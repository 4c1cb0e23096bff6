//! One client connection: handshake, frame routing to per-stream handler
//! tasks, flow control, and a writer task that owns the outgoing half.
//!
//! A client that sends garbage only loses its own connection; the agent and
//! the other connections carry on. When a connection ends, every stream on it
//! is cancelled (which kills foreground execs, not background ones).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use dwell_proto::auth::{self, Side};
use dwell_proto::frame::{self, FrameReader, Kind, DATA_CHUNK, INITIAL_WINDOW};
use dwell_proto::{
    Control, ErrorKind, Event, Hello, Outcome, RemoteError, Request, PROTOCOL_VERSION,
    UNAUTHENTICATED_PROTOCOL_VERSION,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};

/// Streams open at once on one connection.
pub const MAX_STREAMS: usize = 256;
/// Time a new connection has to send its Hello.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const CLOSED_EARLY: &str = "closed before the handshake";
/// Outgoing frames queued per connection before handlers wait.
const OUT_QUEUE: usize = 64;

/// A message from the client on an open stream.
#[derive(Debug)]
pub enum ClientMsg {
    Data(Bytes),
    Eof,
    Control(Control),
}

/// The connection's outgoing frame queue.
#[derive(Clone)]
pub struct Out(mpsc::Sender<Bytes>);

/// The connection is gone (or the stream was cancelled).
#[derive(Debug)]
pub struct Gone;

impl Out {
    /// Queues a frame. A payload too large for one frame is not sent (the
    /// client would drop the whole connection): that is a bug of the
    /// caller, logged, and the stream is given up as `Gone`.
    pub async fn frame(&self, stream: u32, kind: Kind, payload: &[u8]) -> Result<(), Gone> {
        let f = frame::encode(stream, kind, payload).map_err(|e| {
            crate::error!("stream {stream}: not sending a {kind:?} frame: {e}");
            Gone
        })?;
        self.0.send(f).await.map_err(|_| Gone)
    }

    pub async fn json<T: Serialize>(&self, stream: u32, kind: Kind, v: &T) -> Result<(), Gone> {
        let p = serde_json::to_vec(v).expect("protocol messages serialize");
        self.frame(stream, kind, &p).await
    }
}

/// Permission to grant the client more window once data was consumed.
pub struct Credit {
    out: Out,
    stream: u32,
    outstanding: Arc<AtomicUsize>,
    len: usize,
}

impl Credit {
    /// Grants the window back (call after the bytes were written out).
    pub async fn release(self) {
        self.outstanding.fetch_sub(self.len, Ordering::AcqRel);
        let _ = self
            .out
            .0
            .send(frame::encode_window(self.stream, self.len as u32))
            .await;
    }
}

struct Slot {
    tx: mpsc::UnboundedSender<ClientMsg>,
    window: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
}

type Streams = Arc<Mutex<HashMap<u32, Slot>>>;

/// The handler side of one stream.
pub struct StreamCtx {
    pub id: u32,
    pub out: Out,
    pub inbound: mpsc::UnboundedReceiver<ClientMsg>,
    window: Arc<Semaphore>,
    outstanding: Arc<AtomicUsize>,
    streams: Streams,
}

impl StreamCtx {
    /// Sends an event. One above [`frame::MAX_EVENT_PAYLOAD`] (the client
    /// would take it for a protocol violation and drop the connection) is
    /// not sent: the stream ends with an `invalid_argument` error instead.
    pub async fn event(&self, e: &Event) -> Result<(), Gone> {
        let p = serde_json::to_vec(e).expect("protocol messages serialize");
        if p.len() <= frame::MAX_EVENT_PAYLOAD {
            return self.out.frame(self.id, Kind::Event, &p).await;
        }
        self.streams.lock().unwrap().remove(&self.id);
        let err = RemoteError::new(
            ErrorKind::InvalidArgument,
            format!(
                "an event of {} bytes is above the protocol's {} byte event limit \
                 (a very long name or command line); ask about something smaller",
                p.len(),
                frame::MAX_EVENT_PAYLOAD
            ),
        );
        let _ = self.out.json(self.id, Kind::End, &Outcome::Err(err)).await;
        Err(Gone)
    }

    /// Sends data frames, waiting for window; `Gone` if cancelled or disconnected.
    pub async fn data(&self, kind: Kind, mut b: Bytes) -> Result<(), Gone> {
        while !b.is_empty() {
            let chunk = b.split_to(b.len().min(DATA_CHUNK));
            self.window
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| Gone)?
                .forget();
            self.out.frame(self.id, kind, &chunk).await?;
        }
        Ok(())
    }

    /// A credit for `len` bytes of client data.
    pub fn credit(&self, len: usize) -> Credit {
        Credit {
            out: self.out.clone(),
            stream: self.id,
            outstanding: self.outstanding.clone(),
            len,
        }
    }

    /// Ends the stream with a result.
    pub async fn end<T: Serialize>(self, r: Result<T, RemoteError>) {
        self.streams.lock().unwrap().remove(&self.id);
        let o = match r {
            Ok(v) => Outcome::Ok(serde_json::to_value(v).expect("results serialize")),
            Err(e) => Outcome::Err(e),
        };
        let mut p = serde_json::to_vec(&o).expect("protocol messages serialize");
        if p.len() > frame::MAX_PAYLOAD {
            let e = RemoteError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "the result is {} bytes, more than one frame carries ({} bytes); ask for less",
                    p.len(),
                    frame::MAX_PAYLOAD
                ),
            );
            p = serde_json::to_vec(&Outcome::Err(e)).expect("protocol messages serialize");
        }
        let _ = self.out.frame(self.id, Kind::End, &p).await;
    }
}

impl Drop for StreamCtx {
    fn drop(&mut self) {
        self.streams.lock().unwrap().remove(&self.id);
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(f) = rx.recv().await {
        let mut r = w.write_all(&f).await;
        if r.is_ok() && rx.is_empty() {
            r = w.flush().await;
        }
        if let Err(e) = r {
            crate::debug!("connection write failed: {e}");
            rx.close();
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// Serves one connection until it ends.
pub async fn serve<R, W>(r: R, w: W, name: String)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve_until(r, w, name, std::future::pending()).await
}

/// Serves one connection until it ends or `stop` completes; then the
/// connection is closed in both directions at once.
pub async fn serve_until<R, W>(
    r: R,
    w: W,
    name: String,
    stop: impl std::future::Future<Output = ()>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    tokio::pin!(stop);
    let mut reader = FrameReader::new(r);
    let (tx, rx) = mpsc::channel(OUT_QUEUE);
    let out = Out(tx);
    let writer = tokio::spawn(write_loop(w, rx));

    if let Err(why) = handshake(&mut reader, &out).await {
        if why == CLOSED_EARLY {
            crate::debug!("connection {name}: {why}");
        } else {
            crate::error!("connection {name}: handshake failed: {why}");
        }
        drop(out);
        let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
        return;
    }
    crate::debug!("connection {name}: ready");
    let streams: Streams = Arc::default();
    loop {
        let next = tokio::select! {
            _ = &mut stop => {
                crate::debug!("connection {name}: closed by the agent");
                writer.abort();
                break;
            }
            n = reader.next() => n,
        };
        let f = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                crate::debug!("connection {name}: closed by the client");
                break;
            }
            Err(e) => {
                crate::error!("connection {name}: dropping it: {e}");
                break;
            }
        };
        if let Err(why) = route(f, &streams, &out).await {
            crate::error!("connection {name}: protocol violation, dropping it: {why}");
            break;
        }
    }
    // Cancel every stream: handlers see their inbound channel close.
    let slots: Vec<Slot> = streams.lock().unwrap().drain().map(|(_, s)| s).collect();
    for s in slots {
        s.window.close();
    }
}

async fn handshake<R: AsyncRead + Unpin>(
    reader: &mut FrameReader<R>,
    out: &Out,
) -> Result<(), String> {
    let hello = next_hello(reader).await?;
    let software = format!("dwell-agent {}", env!("CARGO_PKG_VERSION"));
    let refuse = |msg: String| Hello {
        protocol: PROTOCOL_VERSION,
        software: software.clone(),
        error: Some(msg),
        nonce: None,
        proof: None,
    };
    let key = crate::key::get();
    let accepted = hello.protocol == PROTOCOL_VERSION
        || (hello.protocol == UNAUTHENTICATED_PROTOCOL_VERSION && key.is_none());
    if !accepted {
        let msg = if hello.protocol == UNAUTHENTICATED_PROTOCOL_VERSION {
            format!(
                "client {} speaks protocol {} (unauthenticated); this agent has a key and \
                 requires protocol {} with its proof",
                hello.software, hello.protocol, PROTOCOL_VERSION
            )
        } else {
            format!(
                "client {} speaks protocol {}, this agent speaks {}",
                hello.software, hello.protocol, PROTOCOL_VERSION
            )
        };
        let _ = out.json(0, Kind::Hello, &refuse(msg.clone())).await;
        return Err(msg);
    }
    let Some(key) = key else {
        let reply = Hello {
            protocol: hello.protocol,
            software,
            error: None,
            nonce: None,
            proof: None,
        };
        return out
            .json(0, Kind::Hello, &reply)
            .await
            .map_err(|_| "connection closed during the handshake".to_string());
    };
    let Some(client_nonce) = hello.nonce.as_deref().and_then(auth::decode_hex) else {
        let msg = "the client sent no valid nonce: this agent requires an authenticated \
                   handshake (protocol 2 with the sandbox's key)"
            .to_string();
        let _ = out.json(0, Kind::Hello, &refuse(msg.clone())).await;
        return Err(msg);
    };
    let agent_nonce = auth::random().map_err(|e| format!("no random bytes: {e}"))?;
    let reply = Hello {
        protocol: PROTOCOL_VERSION,
        software,
        error: None,
        nonce: Some(auth::encode_hex(&agent_nonce)),
        proof: Some(auth::encode_hex(&key.proof(
            Side::Agent,
            &client_nonce,
            &agent_nonce,
        ))),
    };
    out.json(0, Kind::Hello, &reply)
        .await
        .map_err(|_| "connection closed during the handshake".to_string())?;
    // The client proves the key back before its first request.
    let proof = next_hello(reader).await?.proof.unwrap_or_default();
    if !key.verify(Side::Client, &client_nonce, &agent_nonce, &proof) {
        return Err("the client did not prove the sandbox's key; connection refused".into());
    }
    Ok(())
}

/// The next frame, which must be a Hello on stream 0, within the handshake
/// timeout.
async fn next_hello<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<Hello, String> {
    let f = match tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next()).await {
        Err(_) => return Err("no Hello within the handshake timeout".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(None)) => return Err(CLOSED_EARLY.into()),
        Ok(Ok(Some(f))) => f,
    };
    if f.stream != 0 || f.kind != Kind::Hello {
        return Err(format!(
            "frame was {:?} on stream {}, expected Hello on stream 0",
            f.kind, f.stream
        ));
    }
    serde_json::from_slice(&f.payload).map_err(|e| format!("undecodable Hello: {e}"))
}

/// Routes one frame; an `Err` is a protocol violation that ends the connection.
async fn route(f: frame::Frame, streams: &Streams, out: &Out) -> Result<(), String> {
    if f.stream == 0 {
        return Err(format!(
            "{:?} frame on stream 0 after the handshake",
            f.kind
        ));
    }
    match f.kind {
        Kind::Request => {
            let refusal = {
                let map = streams.lock().unwrap();
                if map.contains_key(&f.stream) {
                    return Err(format!("stream id {} reused while still open", f.stream));
                }
                (map.len() >= MAX_STREAMS).then(|| {
                    RemoteError::new(
                        ErrorKind::TooManyStreams,
                        format!("{MAX_STREAMS} streams are already open on this connection; wait for some to finish"),
                    )
                })
            };
            let req: Result<Request, RemoteError> = match refusal {
                Some(e) => Err(e),
                None => serde_json::from_slice(&f.payload).map_err(|e| {
                    RemoteError::new(
                        ErrorKind::InvalidArgument,
                        format!("undecodable request: {e}"),
                    )
                }),
            };
            match req {
                Err(e) => {
                    let _ = out.json(f.stream, Kind::End, &Outcome::Err(e)).await;
                }
                Ok(req) => {
                    let (tx, rx) = mpsc::unbounded_channel();
                    let window = Arc::new(Semaphore::new(INITIAL_WINDOW));
                    let outstanding = Arc::new(AtomicUsize::new(0));
                    streams.lock().unwrap().insert(
                        f.stream,
                        Slot {
                            tx,
                            window: window.clone(),
                            outstanding: outstanding.clone(),
                        },
                    );
                    let ctx = StreamCtx {
                        id: f.stream,
                        out: out.clone(),
                        inbound: rx,
                        window,
                        outstanding,
                        streams: streams.clone(),
                    };
                    tokio::spawn(crate::handlers::run(ctx, req));
                }
            }
            Ok(())
        }
        Kind::Data | Kind::Eof | Kind::Control | Kind::Cancel | Kind::Window => {
            let map = streams.lock().unwrap();
            // Frames for a stream that just ended are in flight: drop them.
            let Some(slot) = map.get(&f.stream) else {
                return Ok(());
            };
            let msg = match f.kind {
                Kind::Data => {
                    let n = slot
                        .outstanding
                        .fetch_add(f.payload.len(), Ordering::AcqRel)
                        + f.payload.len();
                    if n > INITIAL_WINDOW {
                        return Err(format!(
                            "client overran the flow-control window on stream {} ({n} bytes)",
                            f.stream
                        ));
                    }
                    ClientMsg::Data(f.payload)
                }
                Kind::Eof => ClientMsg::Eof,
                Kind::Control => ClientMsg::Control(
                    serde_json::from_slice(&f.payload)
                        .map_err(|e| format!("undecodable control message: {e}"))?,
                ),
                Kind::Window => {
                    let n = frame::parse_window(&f.payload).map_err(|e| e.to_string())? as usize;
                    if slot.window.available_permits() + n > INITIAL_WINDOW * 64 {
                        return Err(format!("window on stream {} grew absurdly large", f.stream));
                    }
                    slot.window.add_permits(n);
                    return Ok(());
                }
                _ => {
                    // Cancel: wake a handler waiting for window, then close its inbound.
                    slot.window.close();
                    drop(map);
                    streams.lock().unwrap().remove(&f.stream);
                    return Ok(());
                }
            };
            let _ = slot.tx.send(msg);
            Ok(())
        }
        k => Err(format!(
            "{k:?} frames are sent by the agent, not the client"
        )),
    }
}
