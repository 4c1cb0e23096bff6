//! The sandbox's agent key: taken from the environment at start (and removed
//! from it, so no process the agent starts inherits it), replaced when a
//! restored checkpoint is handed a new one (see `server`). Without a key
//! the agent serves unauthenticated connections only.

use std::sync::Mutex;

use dwell_proto::auth::KEY_ENV;
use dwell_proto::AgentKey;

static KEY: Mutex<Option<AgentKey>> = Mutex::new(None);

/// Reads and removes [`KEY_ENV`]. Call first thing in `main`, while the
/// agent has a single thread.
pub fn init_from_env() -> Result<(), String> {
    let Some(v) = std::env::var_os(KEY_ENV) else {
        return Ok(());
    };
    std::env::remove_var(KEY_ENV);
    let v = v
        .into_string()
        .map_err(|_| format!("{KEY_ENV} is not valid UTF-8"))?;
    let key = AgentKey::from_hex(v.trim()).map_err(|e| format!("{KEY_ENV}: {e}"))?;
    set(key);
    Ok(())
}

pub fn set(key: AgentKey) {
    *KEY.lock().unwrap_or_else(|p| p.into_inner()) = Some(key);
}

pub fn get() -> Option<AgentKey> {
    KEY.lock().unwrap_or_else(|p| p.into_inner()).clone()
}
