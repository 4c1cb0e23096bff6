//! Directory watching in `filesystem.Filesystem`, on the agent's inotify
//! watch: the server stream `WatchDir` (used by the async SDK) and the
//! polled watchers `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`
//! (used by the sync SDK). A polled watcher buffers at most
//! [`MAX_BUFFERED`] events (the oldest are dropped) and is removed when it
//! has not been polled for [`ABANDONED_AFTER`], or when its sandbox no
//! longer runs ([`Watchers::purge`], run every [`PURGE_EVERY`]). A sandbox
//! has at most [`MAX_PER_SANDBOX`] polled watchers and as many `WatchDir`
//! streams; the daemon at most [`MAX_TOTAL`] polled watchers.
//!
//! A poll first asks the agent to flush the watch (read everything the
//! kernel queued, then answer through the same ordered stream) and waits
//! for that answer at most [`FLUSH_WAIT`], so it reports every change made
//! before it; an agent older than flushes is polled as before.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dwell_proto::{AgentClient, FsChange, FsEvent, WatchItem};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::connect::{self, Code, ConnectError};
use crate::filesystem::entry_info;
use crate::users::{basic_user, resolve_path, Accounts};
use crate::{Ctx, Envd};

/// Events a polled watcher keeps between polls.
pub const MAX_BUFFERED: usize = 10_000;
/// A polled watcher nobody asked about for this long is removed.
pub const ABANDONED_AFTER: Duration = Duration::from_secs(600);
/// Polled watchers (and, separately, `WatchDir` streams) per sandbox.
pub const MAX_PER_SANDBOX: usize = 16;
/// Polled watchers of all sandboxes together.
pub const MAX_TOTAL: usize = 1024;
/// How often abandoned watchers and those of stopped sandboxes go.
pub const PURGE_EVERY: Duration = Duration::from_secs(30);
/// How long an ended watcher waits for its last poll.
const ENDED_KEPT: Duration = Duration::from_secs(60);
/// How long a poll waits for the agent to flush the watch (to report every
/// change made before the poll) before it answers with what it has.
pub const FLUSH_WAIT: Duration = Duration::from_millis(200);
/// Polls of one watcher waiting for a flush at once.
const MAX_FLUSH_WAITERS: usize = 64;

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WatchRequest {
    path: String,
    recursive: bool,
    include_entry: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WatcherIdRequest {
    watcher_id: String,
}

fn event_type(c: FsChange) -> &'static str {
    match c {
        FsChange::Create => "EVENT_TYPE_CREATE",
        FsChange::Write => "EVENT_TYPE_WRITE",
        FsChange::Remove => "EVENT_TYPE_REMOVE",
        FsChange::Rename => "EVENT_TYPE_RENAME",
        FsChange::Chmod => "EVENT_TYPE_CHMOD",
    }
}

/// The `FilesystemEvent` JSON of a change (with its entry when asked and
/// the path still exists).
async fn fs_event(e: &FsEvent, root: &str, entry: Option<(&AgentClient, &Accounts)>) -> Value {
    let mut v = json!({"name": e.name, "type": event_type(e.change)});
    if let Some((agent, acc)) = entry {
        if !matches!(e.change, FsChange::Remove | FsChange::Rename) {
            let full = format!("{}/{}", root.trim_end_matches('/'), e.name);
            if let Ok(fi) = agent
                .stat_with(&full, Some(crate::filesystem::META_PREFIX))
                .await
            {
                v["entry"] = entry_info(&fi, acc);
            }
        }
    }
    v
}

/// Starts an agent watch on the request's directory.
async fn start(
    ctx: &Ctx,
    req: &WatchRequest,
) -> Result<(String, dwell_proto::Watcher), ConnectError> {
    let path = resolve_path(&req.path, &ctx.user);
    let fi = ctx.agent.stat(&path).await?;
    if fi.kind != dwell_proto::FileKind::Dir {
        return Err(ConnectError::invalid(format!(
            "path {path} is not a directory"
        )));
    }
    let w = ctx.agent.watch(&path, req.recursive).await?;
    Ok((path, w))
}

/// `WatchDir`: a stream of `start`, then `filesystem` events and keepalives.
pub async fn watch_dir(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    // The call's deadline counts from its arrival.
    let deadline = connect::deadline(&h);
    if let Err(why) = connect::check_codec(&h, true) {
        return connect::unsupported_codec(why);
    }
    let ctx = match envd.ctx(&h, basic_user(&h)).await {
        Ok(c) => c,
        Err(r) => return r.into_response(),
    };
    let Some(slot) = envd.watchers.stream_slot(&ctx.target.id) else {
        return connect::stream_error(&too_many(&ctx.target.id));
    };
    let req: WatchRequest = match connect::read_stream_request(body).await {
        Ok(r) => r,
        Err(e) => return connect::stream_error(&e),
    };
    let (root, mut w) = match start(&ctx, &req).await {
        Ok(v) => v,
        Err(e) => return connect::stream_error(&e),
    };
    let keepalive = connect::keepalive_interval(&h);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let ctl = envd.ctl.clone();
    tokio::spawn(async move {
        let _slot = slot;
        if tx
            .send(connect::message_frame(&json!({"start": {}})))
            .await
            .is_err()
        {
            return;
        }
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + keepalive, keepalive);
        loop {
            let frame = tokio::select! {
                ev = w.next() => match ev {
                    Ok(Some(e)) => {
                        ctl.touch(&ctx.target.id);
                        let entry = req.include_entry.then_some((&ctx.agent, &*ctx.accounts));
                        let v = fs_event(&e, &root, entry).await;
                        connect::message_frame(&json!({"filesystem": v}))
                    }
                    Ok(None) => {
                        let _ = tx.send(connect::end_ok_frame()).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(ConnectError::from(e).end_frame()).await;
                        return;
                    }
                },
                _ = tick.tick() => connect::message_frame(&json!({"keepalive": {}})),
                _ = connect::until(deadline) => {
                    let _ = tx.send(connect::deadline_frame()).await;
                    return;
                }
                _ = tx.closed() => return,
            };
            if tx.send(frame).await.is_err() {
                return;
            }
        }
    });
    connect::stream_response(rx)
}

/// One polled watcher.
struct Polled {
    sandbox: String,
    events: Arc<Mutex<PolledEvents>>,
    task: AbortHandle,
    /// Asks the watcher's task for a flush; the sender is told when it is
    /// done. `None` when the agent cannot flush.
    flush: Option<mpsc::Sender<oneshot::Sender<()>>>,
}

#[derive(Default)]
struct PolledEvents {
    queue: VecDeque<Value>,
    /// Set when the agent ended the watch (with the reason on failure).
    ended: Option<Option<ConnectError>>,
    last_poll: Option<Instant>,
}

/// The polled watchers of every sandbox, and the count of `WatchDir`
/// streams per sandbox.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Polled>>,
    next: AtomicU64,
    streams: Arc<Mutex<HashMap<String, usize>>>,
}

/// A `WatchDir` stream's place in its sandbox's count; freed on drop.
pub struct StreamSlot {
    streams: Arc<Mutex<HashMap<String, usize>>>,
    sandbox: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut m = self.streams.lock().unwrap();
        if let Some(n) = m.get_mut(&self.sandbox) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.sandbox);
            }
        }
    }
}

fn too_many(sandbox: &str) -> ConnectError {
    ConnectError::new(
        Code::ResourceExhausted,
        format!("sandbox {sandbox} already has {MAX_PER_SANDBOX} directory watchers; remove one (watcher.stop()) first"),
    )
}

impl Watchers {
    /// Removes the watchers nobody polled for [`ABANDONED_AFTER`], those
    /// whose watch ended a while ago, and those of sandboxes for which
    /// `running` says no.
    pub fn purge(&self, running: impl Fn(&str) -> bool) {
        // Ask about each sandbox once, without holding the map.
        let sandboxes: std::collections::HashSet<String> = self
            .map
            .lock()
            .unwrap()
            .values()
            .map(|p| p.sandbox.clone())
            .collect();
        let gone: std::collections::HashSet<String> =
            sandboxes.into_iter().filter(|s| !running(s)).collect();
        let mut m = self.map.lock().unwrap();
        m.retain(|_, p| {
            let (last, ended) = {
                let e = p.events.lock().unwrap();
                (e.last_poll, e.ended.is_some())
            };
            let idle = last.map_or(Duration::ZERO, |t| t.elapsed());
            let keep = idle < ABANDONED_AFTER
                && !(ended && idle >= ENDED_KEPT)
                && !gone.contains(&p.sandbox);
            if !keep {
                p.task.abort();
            }
            keep
        });
    }

    /// Whether one more polled watcher fits (per sandbox and in total).
    fn check_room(&self, sandbox: &str) -> Result<(), ConnectError> {
        let m = self.map.lock().unwrap();
        if m.values().filter(|p| p.sandbox == sandbox).count() >= MAX_PER_SANDBOX {
            return Err(too_many(sandbox));
        }
        if m.len() >= MAX_TOTAL {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("the daemon already runs {MAX_TOTAL} directory watchers; retry later"),
            ));
        }
        Ok(())
    }

    /// A place for one more `WatchDir` stream of `sandbox`, if it has room.
    fn stream_slot(&self, sandbox: &str) -> Option<StreamSlot> {
        let mut m = self.streams.lock().unwrap();
        let n = m.entry(sandbox.to_string()).or_insert(0);
        if *n >= MAX_PER_SANDBOX {
            return None;
        }
        *n += 1;
        Some(StreamSlot {
            streams: self.streams.clone(),
            sandbox: sandbox.to_string(),
        })
    }

    /// How many polled watchers there are.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    fn take(&self, sandbox: &str, id: &str) -> Result<Arc<Mutex<PolledEvents>>, ConnectError> {
        self.get(sandbox, id).map(|(e, _)| e)
    }

    /// A watcher's events and its flush requests.
    #[allow(clippy::type_complexity)]
    fn get(
        &self,
        sandbox: &str,
        id: &str,
    ) -> Result<
        (
            Arc<Mutex<PolledEvents>>,
            Option<mpsc::Sender<oneshot::Sender<()>>>,
        ),
        ConnectError,
    > {
        self.map
            .lock()
            .unwrap()
            .get(id)
            .filter(|p| p.sandbox == sandbox)
            .map(|p| (p.events.clone(), p.flush.clone()))
            .ok_or_else(|| ConnectError::new(Code::NotFound, format!("watcher {id:?} not found")))
    }
}

/// `CreateWatcher`: starts a polled watcher.
pub async fn create_watcher(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, WatchRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let ctx = envd.ctx_for(target, basic_user(&h)).await?;
            envd.watchers.check_room(&ctx.target.id)?;
            let (root, mut w) = start(&ctx, &req).await?;
            let events = Arc::new(Mutex::new(PolledEvents {
                last_poll: Some(Instant::now()),
                ..Default::default()
            }));
            let sandbox = ctx.target.id.clone();
            let sink = events.clone();
            let include = req.include_entry;
            let flusher = w.flusher();
            let (flush_tx, mut flush_rx) = mpsc::channel::<oneshot::Sender<()>>(MAX_FLUSH_WAITERS);
            let flush_tx = flusher.is_some().then_some(flush_tx);
            let task = tokio::spawn(async move {
                // Flushes asked of the agent, by number, with who waits.
                let mut seq = 0u64;
                let mut waiting: Vec<(u64, oneshot::Sender<()>)> = Vec::new();
                loop {
                    let r = tokio::select! {
                        r = w.next_item() => r,
                        Some(done) = flush_rx.recv(), if flusher.is_some() => {
                            seq += 1;
                            // On failure `done` is dropped: the poll answers at once.
                            if flusher.as_ref().is_some_and(|f| f.flush(seq).is_ok()) {
                                // Polls that gave up waiting are forgotten.
                                waiting.retain(|(_, d)| !d.is_closed());
                                waiting.push((seq, done));
                            }
                            continue;
                        }
                    };
                    let v = match r {
                        Ok(Some(WatchItem::Flushed(n))) => {
                            for (_, done) in waiting.extract_if(.., |(s, _)| *s <= n) {
                                let _ = done.send(());
                            }
                            continue;
                        }
                        Ok(Some(WatchItem::Fs(e))) => {
                            let entry = include.then_some((&ctx.agent, &*ctx.accounts));
                            fs_event(&e, &root, entry).await
                        }
                        Ok(None) => {
                            sink.lock().unwrap().ended = Some(None);
                            return;
                        }
                        Err(e) => {
                            sink.lock().unwrap().ended = Some(Some(e.into()));
                            return;
                        }
                    };
                    let mut s = sink.lock().unwrap();
                    if s.queue.len() >= MAX_BUFFERED {
                        s.queue.pop_front();
                    }
                    s.queue.push_back(v);
                }
            });
            let id = format!(
                "w{}",
                envd.watchers.next.fetch_add(1, Ordering::Relaxed) + 1
            );
            envd.watchers.map.lock().unwrap().insert(
                id.clone(),
                Polled {
                    sandbox,
                    events,
                    task: task.abort_handle(),
                    flush: flush_tx,
                },
            );
            Ok(json!({ "watcherId": id }))
        }
        .await,
    )
}

/// `GetWatcherEvents`: the events since the last poll.
pub async fn get_watcher_events(
    State(envd): State<Arc<Envd>>,
    h: HeaderMap,
    body: Body,
) -> Response {
    connect::unary(
        async {
            let (target, req): (_, WatcherIdRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let t = target;
            let (events, flush) = envd.watchers.get(&t.id, &req.watcher_id)?;
            if let Some(flush) = flush {
                // Bounded: a busy or stuck agent costs a poll FLUSH_WAIT.
                let (done, wait) = oneshot::channel();
                if flush.try_send(done).is_ok() {
                    let _ = tokio::time::timeout(FLUSH_WAIT, wait).await;
                }
            }
            let mut s = events.lock().unwrap();
            s.last_poll = Some(Instant::now());
            let list: Vec<Value> = s.queue.drain(..).collect();
            if list.is_empty() {
                if let Some(Some(e)) = &s.ended {
                    return Err(e.clone());
                }
            }
            Ok(json!({ "events": list }))
        }
        .await,
    )
}

/// `RemoveWatcher`: stops a polled watcher.
pub async fn remove_watcher(State(envd): State<Arc<Envd>>, h: HeaderMap, body: Body) -> Response {
    connect::unary(
        async {
            let (target, req): (_, WatcherIdRequest) =
                crate::unary_request(&envd.ctl, &h, body).await?;
            let t = target;
            envd.watchers.take(&t.id, &req.watcher_id)?;
            if let Some(p) = envd.watchers.map.lock().unwrap().remove(&req.watcher_id) {
                p.task.abort();
            }
            Ok(json!({}))
        }
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(w: &Watchers, id: &str, sandbox: &str) {
        let task = tokio::spawn(std::future::pending::<()>());
        w.map.lock().unwrap().insert(
            id.into(),
            Polled {
                sandbox: sandbox.into(),
                events: Arc::new(Mutex::new(PolledEvents {
                    last_poll: Some(Instant::now()),
                    ..Default::default()
                })),
                task: task.abort_handle(),
                flush: None,
            },
        );
    }

    #[tokio::test]
    async fn caps_and_purge() {
        let w = Watchers::default();
        for i in 0..MAX_PER_SANDBOX {
            w.check_room("a").unwrap();
            add(&w, &format!("a{i}"), "a");
        }
        assert_eq!(w.check_room("a").unwrap_err().code, Code::ResourceExhausted);
        w.check_room("b").unwrap();
        add(&w, "b0", "b");
        // The watchers of a sandbox that no longer runs go.
        w.purge(|s| s == "b");
        assert_eq!(w.len(), 1);
        w.check_room("a").unwrap();

        let slots: Vec<_> = (0..MAX_PER_SANDBOX)
            .map(|_| w.stream_slot("a").unwrap())
            .collect();
        assert!(w.stream_slot("a").is_none());
        drop(slots);
        assert!(w.stream_slot("a").is_some());
    }
}
