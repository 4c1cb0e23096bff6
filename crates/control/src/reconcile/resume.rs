//! `resume`: thaw the processes frozen by `pause`.

use std::sync::Arc;

use crate::model::Record;

use super::config::config_of;
use super::journal::{record, step_event};
use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::State;

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record) -> Result<()> {
    step_event(inner, &rec.id, "thawing processes")?;
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    blocking(move || -> Result<()> {
        let cfg = config_of(&inner2, &id)?;
        Ok(runtime.resume(&cfg)?)
    })
    .await??;
    record(inner, &rec.id, State::Running, "resumed on request")
}
