//! The isolation runtimes one daemon offers, by [`Kind`]. Each sandbox
//! names its runtime in its record, and every operation on it goes to that
//! one. What a runtime can do beyond the common operations is asked of its
//! [`Capabilities`], never inferred from its name.

use std::sync::Arc;

use dwell_runtime::{Capabilities, Kind, Runtime};

use crate::error::{Error, Result};

/// The runtime a user's word names (a runtime's name or an alias), as
/// stored in records.
pub fn canonical(name: &str) -> Result<Kind> {
    Kind::parse(name).map_err(|e| Error::invalid("isolation", e.to_string()))
}

/// What the runtime a record names can do, whether or not this host has
/// it (nothing, for a name no runtime has).
pub fn capabilities(name: &str) -> Capabilities {
    Kind::parse(name).map_or_else(|_| Capabilities::default(), Kind::capabilities)
}

/// A runtime the daemon offers: its kind, and the runtime or why this host
/// cannot run it.
pub type Offered = (Kind, std::result::Result<Arc<dyn Runtime>, String>);

/// Every runtime of the daemon, and the one new sandboxes get by default.
#[derive(Clone)]
pub struct Runtimes {
    /// Each kind the daemon was given: the runtime, or why this host
    /// cannot run it.
    all: Vec<Offered>,
    default: Kind,
}

impl Runtimes {
    /// `all` lists the runtimes (or why each is unavailable); `default` is
    /// the runtime of sandboxes created without one, and must be available.
    pub fn new(all: Vec<Offered>, default: Kind) -> Result<Runtimes> {
        let r = Runtimes { all, default };
        r.of(default)?;
        Ok(r)
    }

    /// As [`Runtimes::new`], but when `default` is unavailable the first
    /// available runtime becomes the default (logged). Panics when none of
    /// `all` is available: the daemon checks its primary runtime first.
    pub fn choose(all: Vec<Offered>, default: Kind) -> Runtimes {
        let r = Runtimes { all, default };
        if let Err(e) = r.of(default) {
            let default = r
                .all
                .iter()
                .find(|(_, rt)| rt.is_ok())
                .expect("the daemon offers at least one available runtime")
                .0;
            tracing::warn!(
                "{e}; new sandboxes default to the {} runtime",
                default.name()
            );
            return Runtimes { default, ..r };
        }
        r
    }

    /// The runtime of `kind`.
    pub fn of(&self, kind: Kind) -> Result<Arc<dyn Runtime>> {
        match self.all.iter().find(|(k, _)| *k == kind) {
            Some((_, Ok(r))) => Ok(r.clone()),
            Some((_, Err(why))) => Err(Error::Runtime(kind.unavailable(why.clone()))),
            None => Err(Error::Runtime(
                kind.unavailable("this daemon was started without it".into()),
            )),
        }
    }

    /// The runtime a record names.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Runtime>> {
        self.of(canonical(name)?)
    }

    /// The default runtime.
    pub fn default_kind(&self) -> Kind {
        self.default
    }

    /// The default runtime's name.
    pub fn default_name(&self) -> &'static str {
        self.default.name()
    }

    /// The runtimes this daemon can use, default first.
    pub fn available(&self) -> Vec<Arc<dyn Runtime>> {
        let mut kinds: Vec<Kind> = vec![self.default];
        kinds.extend(
            self.all
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| *k != self.default),
        );
        kinds.into_iter().filter_map(|k| self.of(k).ok()).collect()
    }
}
