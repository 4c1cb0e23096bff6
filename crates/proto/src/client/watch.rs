//! [`Watcher`]: the changes under a directory the agent watches.

use super::conn::{Inbound, Stream};
use crate::error::{Error, Result};
use crate::messages::{Event, FsChange};

/// One change under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsEvent {
    /// Path relative to the watched directory.
    pub name: String,
    pub change: FsChange,
}

/// A directory watch; dropping it cancels the watch in the agent.
pub struct Watcher {
    stream: Stream,
    finished: bool,
}

impl Watcher {
    pub(crate) fn new(stream: Stream) -> Self {
        Watcher {
            stream,
            finished: false,
        }
    }

    /// The next change; `Ok(None)` when the agent ended the watch (the
    /// directory was removed); `Err` on a broken connection or agent error.
    pub async fn next(&mut self) -> Result<Option<FsEvent>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            match self.stream.recv().await {
                Ok(Inbound::Event(Event::Fs { name, change })) => {
                    return Ok(Some(FsEvent { name, change }))
                }
                Ok(Inbound::Event(Event::Watching)) => continue,
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
