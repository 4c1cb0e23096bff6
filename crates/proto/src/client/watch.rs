//! [`Watcher`]: the changes under a directory the agent watches.

use super::conn::{Inbound, Stream};
use crate::error::{Error, Result};
use crate::frame::Kind;
use crate::messages::{Control, Event, FsChange};

/// One change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEvent {
    /// Path relative to the watched directory.
    pub name: String,
    pub change: FsChange,
}

/// What a watch stream delivers: a change, or the answer to a flush.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchItem {
    Fs(FsEvent),
    /// Every change the kernel reported before the agent got
    /// [`Watcher::flush`]`(seq)` came before this.
    Flushed(u64),
}

/// A directory watch; dropping it cancels the watch in the agent.
pub struct Watcher {
    stream: Stream,
    finished: bool,
    can_flush: bool,
}

impl Watcher {
    pub(crate) fn new(stream: Stream, can_flush: bool) -> Self {
        Watcher {
            stream,
            finished: false,
            can_flush,
        }
    }

    /// Whether the agent answers [`Watcher::flush`] (agents older than
    /// flushes do not).
    pub fn can_flush(&self) -> bool {
        self.can_flush
    }

    /// A handle that asks the agent for a flush while another task reads
    /// the watch; `None` when the agent cannot flush.
    pub fn flusher(&self) -> Option<WatchFlusher> {
        self.can_flush.then(|| WatchFlusher {
            sender: self.stream.sender(),
        })
    }

    /// The next change; `Ok(None)` when the agent ended the watch (the
    /// directory was removed); `Err` on a broken connection or agent error.
    /// Flush answers are skipped (see [`Watcher::next_item`]).
    pub async fn next(&mut self) -> Result<Option<FsEvent>> {
        loop {
            match self.next_item().await? {
                Some(WatchItem::Fs(e)) => return Ok(Some(e)),
                Some(WatchItem::Flushed(_)) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next change or flush answer; `Ok(None)` when the agent ended the
    /// watch; `Err` on a broken connection or agent error.
    pub async fn next_item(&mut self) -> Result<Option<WatchItem>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            match self.stream.recv().await {
                Ok(Inbound::Event(Event::Fs { name, change })) => {
                    return Ok(Some(WatchItem::Fs(FsEvent { name, change })))
                }
                Ok(Inbound::Event(Event::Flushed { seq })) => {
                    return Ok(Some(WatchItem::Flushed(seq)))
                }
                Ok(Inbound::Event(Event::Watching { .. })) => continue,
                Ok(Inbound::End(r)) => {
                    self.finished = true;
                    return r.map(|_| None).map_err(Error::Remote);
                }
                Ok(_) => {
                    self.finished = true;
                    return Err(Error::Protocol(
                        "unexpected message on a watch stream".into(),
                    ));
                }
                Err(e) => {
                    self.finished = true;
                    return Err(e);
                }
            }
        }
    }
}

/// Asks the agent to flush a watch: to send every change the kernel
/// reported so far, then [`WatchItem::Flushed`] with the given number.
#[derive(Clone)]
pub struct WatchFlusher {
    sender: super::conn::StreamSender,
}

impl WatchFlusher {
    /// Sends `Control::Flush { seq }`; the answer arrives through
    /// [`Watcher::next_item`].
    pub fn flush(&self, seq: u64) -> Result<()> {
        let p = serde_json::to_vec(&Control::Flush { seq }).expect("control serializes");
        self.sender.frame(Kind::Control, &p)
    }
}
