//! `pause`: freeze every process of the sandbox (cgroup freezer for the
//! namespace runtime, `runsc pause` for gVisor). Memory stays in RAM;
//! nothing runs until `resume`.

use std::sync::Arc;

use crate::model::Record;

use super::config::config_of;
use super::journal::{record, step_event};
use crate::context::{blocking, Context};
use crate::error::Result;
use crate::model::State;

pub(crate) async fn run(inner: &Arc<Context>, rec: &Record, why: &str) -> Result<()> {
    step_event(inner, &rec.id, "freezing processes")?;
    let runtime = inner.runtimes.get(rec.runtime.as_str())?;
    let inner2 = inner.clone();
    let id = rec.id.clone();
    blocking(move || -> Result<()> {
        let cfg = config_of(&inner2, &id)?;
        Ok(runtime.pause(&cfg)?)
    })
    .await??;
    record(inner, &rec.id, State::Paused, why)
}
