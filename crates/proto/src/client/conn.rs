//! One multiplexed connection: a reader task that routes frames to streams,
//! a writer task that serialises outgoing frames, and [`Stream`], the
//! per-request handle with flow-control accounting.
//!
//! Nothing the agent sends can make the daemon queue without bound: data
//! (`Stdout`, `Stderr`, `Data`) is held to the stream's flow-control
//! window (and their number to [`MAX_QUEUED_DATA_FRAMES`]), and events,
//! which have no window, to [`MAX_QUEUED_EVENTS`] and
//! [`MAX_QUEUED_EVENT_BYTES`] not yet taken by the stream's consumer. A
//! stream whose consumer falls that far behind (a watch whose HTTP client
//! stopped reading while the sandbox makes files without end) is ended with
//! an `other` error that says so, and cancelled in the agent; the
//! connection and its other streams go on. An event above
//! [`frame::MAX_EVENT_PAYLOAD`] is refused before it is parsed, as a
//! protocol violation that ends the connection, and so are an empty data
//! frame (it would queue without counting against the window) and a second
//! `Eof` or any data after `Eof` on a stream (nothing reads them). Events and `End` messages
//! wait as the agent's raw JSON and are parsed when the consumer takes
//! them, so the bytes counted are the bytes held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::AbortHandle;

use super::sleep::{OpenStream, SleepGate};
use crate::error::{Error, Result};
use crate::frame::{self, CodecError, Frame, FrameReader, Kind, DATA_CHUNK, INITIAL_WINDOW};
use crate::messages::{Event, Outcome, RemoteError, Request};

/// A message delivered to a stream.
pub(crate) enum Inbound {
    Event(Event),
    Stdout(Bytes),
    Stderr(Bytes),
    Data(Bytes),
    /// The agent closed its sending direction of a `connect` stream.
    Eof,
    End(std::result::Result<serde_json::Value, RemoteError>),
}

/// Events a stream may hold that its consumer has not taken yet.
pub const MAX_QUEUED_EVENTS: usize = 4096;
/// Event payload bytes a stream may hold that its consumer has not taken
/// yet (parsed events take about as much memory as their JSON).
pub const MAX_QUEUED_EVENT_BYTES: usize = 4 * 1024 * 1024;
/// Data frames a stream may hold that its consumer has not taken yet. The
/// window bounds their bytes, not their number, and each costs the queue
/// far more than a byte: a window's worth of one-byte frames would take
/// tens of MiB.
pub const MAX_QUEUED_DATA_FRAMES: usize = 16 * 1024;

/// What travels to a stream. `Event` and `End` stay raw JSON until the
/// consumer takes them, so what a stream holds is the agent's bytes, not
/// their parsed form (a `serde_json::Value` takes many times its JSON).
enum Queued {
    Msg(Inbound),
    Event(Bytes),
    End(Bytes),
}

/// Parses a raw `Event` or `End` payload taken by stream `id`'s consumer.
fn decode(id: u32, q: Queued) -> std::result::Result<Inbound, String> {
    match q {
        Queued::Msg(m) => Ok(m),
        Queued::Event(b) => serde_json::from_slice(&b)
            .map(Inbound::Event)
            .map_err(|e| format!("undecodable event on stream {id}: {e}")),
        Queued::End(b) => match serde_json::from_slice(&b) {
            Ok(Outcome::Ok(v)) => Ok(Inbound::End(Ok(v))),
            Ok(Outcome::Err(e)) => Ok(Inbound::End(Err(e))),
            Err(e) => Err(format!("undecodable end message on stream {id}: {e}")),
        },
    }
}

/// Events and data frames queued for one stream and not yet taken by its
/// consumer.
#[derive(Default)]
struct EventQueue {
    count: AtomicUsize,
    bytes: AtomicUsize,
    /// Data frames (their bytes are held to the flow-control window).
    data_frames: AtomicUsize,
}

struct Slot {
    tx: mpsc::UnboundedSender<Queued>,
    send_window: Arc<Semaphore>,
    recv_outstanding: Arc<AtomicUsize>,
    /// Events sent to `tx` and not yet taken ([`MAX_QUEUED_EVENTS`],
    /// [`MAX_QUEUED_EVENT_BYTES`]).
    queued_events: Arc<EventQueue>,
    /// The agent already sent `Eof`: its sending direction is closed, so
    /// another `Eof` or more data is a protocol violation.
    eof: bool,
    /// Keeps the sandbox's sleep gate awake while the stream is open.
    _open: OpenStream,
}

#[derive(Default)]
struct State {
    streams: HashMap<u32, Slot>,
    dead: Option<Error>,
}

/// Shared connection state.
pub(crate) struct Conn {
    out: mpsc::UnboundedSender<Bytes>,
    state: Mutex<State>,
    next_id: AtomicU32,
    tasks: Mutex<Vec<AbortHandle>>,
    /// Whether the agent may be frozen (see [`super::sleep`]): the
    /// sandbox's gate, or one of the connection's own that never sleeps.
    pub(crate) sleep: Mutex<Arc<SleepGate>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

impl Conn {
    /// Starts the reader and writer tasks over an already handshaken stream.
    pub(crate) fn start<R, W>(reader: FrameReader<R>, writer: W) -> Arc<Conn>
    where
        R: AsyncRead + Send + Unpin + 'static,
        W: AsyncWrite + Send + Unpin + 'static,
    {
        let (out, out_rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            out,
            state: Mutex::new(State::default()),
            next_id: AtomicU32::new(1),
            tasks: Mutex::new(Vec::new()),
            sleep: Mutex::new(Arc::new(SleepGate::default())),
        });
        let r = tokio::spawn(read_loop(reader, Arc::downgrade(&conn)));
        let w = tokio::spawn(write_loop(writer, out_rx, Arc::downgrade(&conn)));
        conn.tasks
            .lock()
            .unwrap()
            .extend([r.abort_handle(), w.abort_handle()]);
        conn
    }

    /// The error every call gets once the connection is dead.
    pub(crate) fn dead_error(&self) -> Error {
        self.state
            .lock()
            .unwrap()
            .dead
            .clone()
            .unwrap_or_else(|| Error::Unreachable("the agent connection was closed".into()))
    }

    /// Marks the connection dead: every pending and future call fails with `err`.
    pub(crate) fn kill(&self, err: Error) {
        let streams = {
            let mut st = self.state.lock().unwrap();
            if st.dead.is_none() {
                st.dead = Some(err);
            }
            std::mem::take(&mut st.streams)
        };
        for (_, slot) in streams {
            slot.send_window.close();
        }
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.state.lock().unwrap().dead.is_some()
    }

    pub(crate) fn send_frame(&self, f: Bytes) -> Result<()> {
        self.out.send(f).map_err(|_| self.dead_error())
    }

    /// The sleep gate calls on this connection pass.
    pub(crate) fn gate(&self) -> Arc<SleepGate> {
        self.sleep.lock().unwrap().clone()
    }

    fn stream_alive(&self, id: u32) -> bool {
        self.state.lock().unwrap().streams.contains_key(&id)
    }

    /// Opens a stream by sending `req`; it counts as open in `gate` (the
    /// one the call entered) until it ends.
    pub(crate) fn open(self: &Arc<Self>, req: &Request, gate: &Arc<SleepGate>) -> Result<Stream> {
        let payload = serde_json::to_vec(req).expect("requests always serialize");
        if payload.len() > frame::MAX_PAYLOAD {
            return Err(Error::Invalid(format!(
                "request is {} bytes, above the {} byte frame limit",
                payload.len(),
                frame::MAX_PAYLOAD
            )));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let send_window = Arc::new(Semaphore::new(INITIAL_WINDOW));
        let recv_outstanding = Arc::new(AtomicUsize::new(0));
        let queued_events = Arc::new(EventQueue::default());
        let id = {
            let mut st = self.state.lock().unwrap();
            if let Some(e) = &st.dead {
                return Err(e.clone());
            }
            let mut id;
            loop {
                id = self.next_id.fetch_add(1, Ordering::Relaxed);
                if id != 0 && !st.streams.contains_key(&id) {
                    break;
                }
            }
            st.streams.insert(
                id,
                Slot {
                    tx,
                    send_window: send_window.clone(),
                    recv_outstanding: recv_outstanding.clone(),
                    queued_events: queued_events.clone(),
                    eof: false,
                    _open: gate.stream_opened(),
                },
            );
            id
        };
        let f = frame::encode(id, Kind::Request, &payload)
            .map_err(|e| Error::Invalid(format!("the request is too large: {e}")))?;
        self.send_frame(f)?;
        Ok(Stream {
            id,
            conn: self.clone(),
            rx,
            send_window,
            recv_outstanding,
            queued_events,
            done: false,
        })
    }

    /// Routes one incoming frame.
    fn dispatch(&self, f: Frame) -> std::result::Result<(), String> {
        let data_len = f.payload.len();
        if data_len > f.kind.max_payload() {
            return Err(format!(
                "agent sent a {:?} frame of {data_len} bytes on stream {}, above the {} byte \
                 limit for that kind (a compromised or broken agent)",
                f.kind,
                f.stream,
                f.kind.max_payload()
            ));
        }
        let msg = match f.kind {
            Kind::Event => Queued::Event(f.payload),
            Kind::End => Queued::End(f.payload),
            Kind::Stdout => Queued::Msg(Inbound::Stdout(f.payload)),
            Kind::Stderr => Queued::Msg(Inbound::Stderr(f.payload)),
            Kind::Data => Queued::Msg(Inbound::Data(f.payload)),
            Kind::Eof => Queued::Msg(Inbound::Eof),
            Kind::Window => {
                let n = frame::parse_window(&f.payload).map_err(|e| e.to_string())?;
                if let Some(s) = self.state.lock().unwrap().streams.get(&f.stream) {
                    s.send_window.add_permits(n as usize);
                }
                return Ok(());
            }
            k => return Err(format!("agent sent a {k:?} frame, which only clients send")),
        };
        let mut st = self.state.lock().unwrap();
        if f.kind == Kind::Event && self.event_overflows(&mut st, f.stream, data_len) {
            return Ok(());
        }
        if f.kind.is_data() && data_len == 0 {
            // Only data counts against the window; an empty frame would
            // queue at no cost, so a flood of them could fill memory.
            return Err(format!(
                "agent sent an empty {:?} frame on stream {} (a compromised or broken agent: \
                 data frames carry at least one byte)",
                f.kind, f.stream
            ));
        }
        if f.kind == Kind::Eof || f.kind.is_data() {
            if let Some(slot) = st.streams.get_mut(&f.stream) {
                if slot.eof {
                    return Err(format!(
                        "agent sent {} on stream {} after its Eof (a compromised or broken \
                         agent: Eof closes its sending direction for good)",
                        if f.kind == Kind::Eof {
                            "a second Eof".to_string()
                        } else {
                            format!("a {:?} frame", f.kind)
                        },
                        f.stream
                    ));
                }
                slot.eof = f.kind == Kind::Eof;
            }
        }
        let is_end = f.kind == Kind::End;
        if f.kind.is_data() && self.data_overflows(&mut st, f.stream) {
            return Ok(());
        }
        if f.kind.is_data() {
            if let Some(slot) = st.streams.get(&f.stream) {
                let n = slot.recv_outstanding.fetch_add(data_len, Ordering::AcqRel) + data_len;
                if n > INITIAL_WINDOW {
                    return Err(format!(
                        "agent overran the flow-control window on stream {} ({n} bytes outstanding)",
                        f.stream
                    ));
                }
            }
        }
        let slot = if is_end {
            st.streams.remove(&f.stream)
        } else {
            None
        };
        match slot.as_ref().or_else(|| st.streams.get(&f.stream)) {
            // A stream the client already abandoned: drop the message.
            None => {}
            Some(s) => {
                let _ = s.tx.send(msg);
            }
        }
        if let Some(s) = slot {
            s.send_window.close();
        }
        Ok(())
    }
}

impl Conn {
    /// Counts one more queued event of `bytes` on `stream`; when that is
    /// above [`MAX_QUEUED_EVENTS`] or [`MAX_QUEUED_EVENT_BYTES`], ends the
    /// stream for its consumer with an error, cancels it in the agent and
    /// returns true (drop the event).
    fn event_overflows(&self, st: &mut State, stream: u32, bytes: usize) -> bool {
        let Some(slot) = st.streams.get(&stream) else {
            return false;
        };
        let q = &slot.queued_events;
        let count = q.count.fetch_add(1, Ordering::AcqRel) + 1;
        let total = q.bytes.fetch_add(bytes, Ordering::AcqRel) + bytes;
        let behind = if count > MAX_QUEUED_EVENTS {
            format!("{MAX_QUEUED_EVENTS} events")
        } else if total > MAX_QUEUED_EVENT_BYTES {
            format!("{MAX_QUEUED_EVENT_BYTES} bytes of events")
        } else {
            return false;
        };
        self.end_behind(st, stream, &behind, "or watch a smaller tree");
        true
    }

    /// Counts one more queued data frame on `stream`; above
    /// [`MAX_QUEUED_DATA_FRAMES`] ends the stream as
    /// [`Conn::event_overflows`] does and returns true (drop the frame).
    fn data_overflows(&self, st: &mut State, stream: u32) -> bool {
        let Some(slot) = st.streams.get(&stream) else {
            return false;
        };
        let n = slot
            .queued_events
            .data_frames
            .fetch_add(1, Ordering::AcqRel)
            + 1;
        if n <= MAX_QUEUED_DATA_FRAMES {
            return false;
        }
        let behind = format!("{MAX_QUEUED_DATA_FRAMES} data frames");
        self.end_behind(
            st,
            stream,
            &behind,
            "or have the sandbox write larger pieces",
        );
        true
    }

    /// Ends `stream` for its consumer with the error that it fell `behind`
    /// and cancels it in the agent; the connection goes on.
    fn end_behind(&self, st: &mut State, stream: u32, behind: &str, advice: &str) {
        let Some(slot) = st.streams.remove(&stream) else {
            return;
        };
        let end = Inbound::End(Err(RemoteError::new(
            crate::messages::ErrorKind::Other,
            format!(
                "the stream was closed: its reader fell {behind} behind the sandbox \
                 (read the stream faster, {advice}); open it again to go on"
            ),
        )));
        let _ = slot.tx.send(Queued::Msg(end));
        slot.send_window.close();
        let _ = self.send_frame(frame::encode(stream, Kind::Cancel, b"").expect("an empty frame"));
    }
}

async fn read_loop<R: AsyncRead + Unpin>(mut reader: FrameReader<R>, conn: Weak<Conn>) {
    loop {
        let r = reader.next().await;
        let Some(c) = conn.upgrade() else { return };
        match r {
            Ok(Some(f)) => {
                if f.stream == 0 {
                    c.kill(Error::Protocol(format!(
                        "unexpected {:?} frame on stream 0 after the handshake",
                        f.kind
                    )));
                    return;
                }
                if let Err(e) = c.dispatch(f) {
                    c.kill(Error::Protocol(e));
                    return;
                }
            }
            Ok(None) => {
                c.kill(Error::Unreachable(
                    "the agent closed the connection (agent exited or sandbox stopped)".into(),
                ));
                return;
            }
            Err(CodecError::Io(e)) => {
                c.kill(Error::Unreachable(format!(
                    "reading from the agent failed: {e}"
                )));
                return;
            }
            Err(CodecError::Truncated { have, need }) => {
                c.kill(Error::Unreachable(format!(
                    "the agent closed the connection in the middle of a frame ({have} of {need} bytes)"
                )));
                return;
            }
            Err(e) => {
                c.kill(Error::Protocol(e.to_string()));
                return;
            }
        }
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut w: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    conn: Weak<Conn>,
) {
    while let Some(f) = rx.recv().await {
        let mut res = w.write_all(&f).await;
        if res.is_ok() && rx.is_empty() {
            res = w.flush().await;
        }
        if let Err(e) = res {
            if let Some(c) = conn.upgrade() {
                c.kill(Error::Unreachable(format!(
                    "writing to the agent failed: {e}"
                )));
            }
            return;
        }
    }
    let _ = w.shutdown().await;
}

/// One open request stream.
pub(crate) struct Stream {
    pub(crate) id: u32,
    pub(crate) conn: Arc<Conn>,
    rx: mpsc::UnboundedReceiver<Queued>,
    send_window: Arc<Semaphore>,
    recv_outstanding: Arc<AtomicUsize>,
    queued_events: Arc<EventQueue>,
    done: bool,
}

impl Stream {
    /// The next message; data is credited back to the agent as it is taken.
    pub(crate) async fn recv(&mut self) -> Result<Inbound> {
        match self.rx.recv().await {
            Some(q) => self.take(q),
            None => {
                self.done = true;
                Err(self.conn.dead_error())
            }
        }
    }

    /// `recv` for poll-based consumers (an `AsyncRead`).
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Inbound>> {
        match self.rx.poll_recv(cx) {
            std::task::Poll::Pending => std::task::Poll::Pending,
            std::task::Poll::Ready(Some(q)) => std::task::Poll::Ready(self.take(q)),
            std::task::Poll::Ready(None) => {
                self.done = true;
                std::task::Poll::Ready(Err(self.conn.dead_error()))
            }
        }
    }

    /// Like `recv` but without waiting; `None` when nothing is queued.
    pub(crate) fn try_recv(&mut self) -> Option<Result<Inbound>> {
        match self.rx.try_recv() {
            Ok(q) => Some(self.take(q)),
            Err(mpsc::error::TryRecvError::Empty) => None,
            Err(mpsc::error::TryRecvError::Disconnected) => {
                self.done = true;
                Some(Err(self.conn.dead_error()))
            }
        }
    }

    /// Accounts for a message the consumer takes and parses it; an
    /// undecodable one ends the connection (a protocol violation).
    fn take(&mut self, q: Queued) -> Result<Inbound> {
        self.account(&q);
        decode(self.id, q).map_err(|e| {
            self.done = true;
            let err = Error::Protocol(e);
            self.conn.kill(err.clone());
            err
        })
    }

    fn account(&mut self, q: &Queued) {
        let n = match q {
            Queued::Msg(Inbound::Stdout(b) | Inbound::Stderr(b) | Inbound::Data(b)) => {
                self.queued_events
                    .data_frames
                    .fetch_sub(1, Ordering::AcqRel);
                b.len()
            }
            Queued::Msg(Inbound::End(_)) | Queued::End(_) => {
                self.done = true;
                0
            }
            Queued::Event(b) => {
                self.queued_events.count.fetch_sub(1, Ordering::AcqRel);
                self.queued_events
                    .bytes
                    .fetch_sub(b.len(), Ordering::AcqRel);
                0
            }
            Queued::Msg(Inbound::Event(_) | Inbound::Eof) => 0,
        };
        if n > 0 && !self.done {
            self.recv_outstanding.fetch_sub(n, Ordering::AcqRel);
            let _ = self
                .conn
                .send_frame(frame::encode_window(self.id, n as u32));
        }
    }

    pub(crate) fn sender(&self) -> StreamSender {
        StreamSender {
            id: self.id,
            conn: self.conn.clone(),
            window: self.send_window.clone(),
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !self.done {
            let removed = self.conn.state.lock().unwrap().streams.remove(&self.id);
            if let Some(s) = removed {
                s.send_window.close();
                let _ = self
                    .conn
                    .send_frame(frame::encode(self.id, Kind::Cancel, b"").expect("an empty frame"));
            }
        }
    }
}

/// Sends frames on a stream, respecting its flow-control window.
#[derive(Clone)]
pub(crate) struct StreamSender {
    id: u32,
    conn: Arc<Conn>,
    window: Arc<Semaphore>,
}

impl StreamSender {
    pub(crate) fn check_open(&self) -> Result<()> {
        if self.conn.stream_alive(self.id) {
            return Ok(());
        }
        if self.conn.state.lock().unwrap().dead.is_some() {
            return Err(self.conn.dead_error());
        }
        Err(Error::Invalid("the stream has already ended".into()))
    }

    /// Sends `data` as `Data` frames, waiting for window as needed.
    pub(crate) async fn data(&self, mut data: Bytes) -> Result<()> {
        self.check_open()?;
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(DATA_CHUNK));
            match self.window.acquire_many(chunk.len() as u32).await {
                Ok(p) => p.forget(),
                Err(_) => {
                    self.check_open()?;
                    return Err(self.conn.dead_error());
                }
            }
            self.conn
                .send_frame(frame::encode(self.id, Kind::Data, &chunk).expect("a data chunk"))?;
        }
        Ok(())
    }

    /// The stream's send window (permits are bytes the agent accepts).
    pub(crate) fn window(&self) -> &Arc<Semaphore> {
        &self.window
    }

    /// Sends one chunk of at most [`DATA_CHUNK`] bytes whose window the
    /// caller already took from [`StreamSender::window`] (and forgot).
    pub(crate) fn data_with_window(&self, chunk: &[u8]) -> Result<()> {
        self.check_open()?;
        let f = frame::encode(self.id, Kind::Data, chunk)
            .map_err(|e| Error::Invalid(format!("the chunk is too large: {e}")))?;
        self.conn.send_frame(f)
    }

    pub(crate) fn frame(&self, kind: Kind, payload: &[u8]) -> Result<()> {
        self.check_open()?;
        let f = frame::encode(self.id, kind, payload)
            .map_err(|e| Error::Invalid(format!("the message is too large: {e}")))?;
        self.conn.send_frame(f)
    }
}
