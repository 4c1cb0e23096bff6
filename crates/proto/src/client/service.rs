//! [`ServiceLogs`]: the output of the sandbox's service, as the agent
//! streams it.

use bytes::Bytes;

use super::conn::{Inbound, Stream};
use crate::error::{Error, Result};
use crate::messages::Event;

/// One chunk of the service's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChunk {
    Stdout(Bytes),
    Stderr(Bytes),
}

/// A stream of the service's output; dropping it cancels a follow.
pub struct ServiceLogs {
    stream: Stream,
    finished: bool,
}

impl ServiceLogs {
    pub(crate) fn new(stream: Stream) -> Self {
        ServiceLogs {
            stream,
            finished: false,
        }
    }

    /// The next chunk; `Ok(None)` at the end (of the recorded output
    /// without follow).
    pub async fn next(&mut self) -> Result<Option<LogChunk>> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let r = self.stream.recv().await;
            match r {
                Ok(Inbound::Stdout(b)) => return Ok(Some(LogChunk::Stdout(b))),
                Ok(Inbound::Stderr(b)) => return Ok(Some(LogChunk::Stderr(b))),
                Ok(Inbound::Event(Event::Ready)) => continue,
                Ok(Inbound::End(r)) => {
                    self.finished = true;
                    return r.map(|_| None).map_err(Error::Remote);
                }
                Ok(_) => {
                    self.finished = true;
                    return Err(Error::Protocol(
                        "unexpected message on a service_logs stream".into(),
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
