//! Coordination between snapshot writers and garbage collection through lease objects.
//!
//! The rule (also in FORMAT.md):
//! - A writer publishes `leases/create-<id>.json` listing every chunk id it will reference,
//!   refreshing it at least once per `ttl`. It adds each batch of chunk ids to the lease and
//!   publishes the lease *before* it checks whether those chunks already exist, and after that
//!   publication it waits until no live `leases/gc-*.json` exists. Only then does it trust an
//!   existence check ("already stored, skip").
//! - A collector publishes `leases/gc-<nonce>.json` first, then reads the create leases, then the
//!   manifests, and deletes only chunks that no manifest and no live create lease names.
//!
//! Both sides write their lease before reading the other's, so at least one sees the other: either
//! the writer sees the collector and waits for it to finish (its checks then happen after every
//! deletion), or the collector sees the writer's chunks and spares them. Reading leases before
//! manifests covers a writer that publishes its manifest and drops its lease in between.
//!
//! A lease not refreshed for `ttl` is dead (its process crashed); a writer or collector that
//! notices it went `ttl` without refreshing gives up instead of trusting its lease. A lease whose
//! [`Owner`] provably exited (same machine, process gone) is dead at once.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::manifest::ChunkId;
use crate::owner::Owner;
use crate::store::{ChunkStore, ObjectInfo};

/// Default lease time-to-live.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(600);

const POLL: Duration = Duration::from_millis(50);

#[derive(Serialize, Deserialize)]
struct CreateLeaseDoc {
    snapshot: String,
    pid: u32,
    /// Absent in leases written before owners were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
    chunks: Vec<ChunkId>,
}

#[derive(Serialize, Deserialize)]
struct GcLeaseDoc {
    pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<Owner>,
}

/// Whether the lease document `bytes` names an owner that provably exited. Unreadable documents
/// prove nothing.
fn owner_gone(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Any {
        owner: Option<Owner>,
    }
    serde_json::from_slice::<Any>(bytes)
        .ok()
        .and_then(|d| d.owner)
        .is_some_and(|o| o.is_gone())
}

fn is_live(o: &ObjectInfo, ttl: Duration) -> bool {
    // A modification time in the future (clock skew) counts as live.
    SystemTime::now()
        .duration_since(o.modified)
        .map(|age| age < ttl)
        .unwrap_or(true)
}

fn random_hex() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source works");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A writer's lease on the chunks of the snapshot it is creating.
pub(crate) struct CreateLease<'a> {
    store: &'a dyn ChunkStore,
    key: String,
    snapshot: String,
    chunks: BTreeSet<ChunkId>,
    last_flush: Instant,
    ttl: Duration,
    released: bool,
}

impl<'a> CreateLease<'a> {
    /// Publishes an empty lease for `snapshot`.
    pub fn acquire(store: &'a dyn ChunkStore, snapshot: &str, ttl: Duration) -> Result<Self> {
        let mut l = CreateLease {
            store,
            key: format!("leases/create-{snapshot}.json"),
            snapshot: snapshot.to_string(),
            chunks: BTreeSet::new(),
            last_flush: Instant::now(),
            ttl,
            released: false,
        };
        l.write()?;
        Ok(l)
    }

    fn write(&mut self) -> Result<()> {
        let doc = CreateLeaseDoc {
            snapshot: self.snapshot.clone(),
            pid: std::process::id(),
            owner: Owner::me(),
            chunks: self.chunks.iter().copied().collect(),
        };
        let started = Instant::now();
        self.store.put(
            &self.key,
            &serde_json::to_vec(&doc).expect("a lease serialises"),
        )?;
        self.last_flush = started;
        Ok(())
    }

    /// Adds chunk ids, republishes the lease, then waits until no collector is running.
    pub fn protect(&mut self, ids: impl IntoIterator<Item = ChunkId>) -> Result<()> {
        self.check_fresh()?;
        self.chunks.extend(ids);
        self.write()?;
        wait_no_gc(self.store, self.ttl)
    }

    /// Fails if the lease may have expired since it was last published.
    pub fn check_fresh(&self) -> Result<()> {
        let elapsed = self.last_flush.elapsed();
        // Keep a margin: the collector's clock decides, ours only approximates it.
        if elapsed + self.ttl / 10 >= self.ttl {
            return Err(Error::LeaseExpired {
                snapshot: self.snapshot.clone(),
                elapsed_secs: elapsed.as_secs(),
                ttl_secs: self.ttl.as_secs(),
            });
        }
        Ok(())
    }

    /// Removes the lease (after the manifest is published).
    pub fn release(mut self) -> Result<()> {
        self.released = true;
        self.store.delete(&self.key)
    }
}

impl Drop for CreateLease<'_> {
    fn drop(&mut self) {
        if !self.released {
            // A failed snapshot: drop the lease so its orphan chunks become collectable.
            let _ = self.store.delete(&self.key);
        }
    }
}

/// The live collector leases. One whose owner provably exited is deleted on the way (nobody
/// else would: its owner is the only writer of that key).
fn live_gc_leases(store: &dyn ChunkStore, ttl: Duration) -> Result<Vec<ObjectInfo>> {
    let mut live = Vec::new();
    for o in store.list("leases/")? {
        if !o.key.starts_with("leases/gc-") || !is_live(&o, ttl) {
            continue;
        }
        match store.get(&o.key)? {
            None => {} // finished meanwhile
            Some(bytes) if owner_gone(&bytes) => {
                let _ = store.delete(&o.key);
            }
            Some(_) => live.push(o),
        }
    }
    Ok(live)
}

/// Waits while a live collector lease exists, at most `ttl`.
pub(crate) fn wait_no_gc(store: &dyn ChunkStore, ttl: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let live = live_gc_leases(store, ttl)?;
        let Some(first) = live.first() else {
            return Ok(());
        };
        if start.elapsed() >= ttl {
            return Err(Error::GcBusy {
                store: store.describe(),
                lease: first.key.clone(),
                waited_secs: start.elapsed().as_secs(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// A collector's lease.
pub(crate) struct GcLease<'a> {
    store: &'a dyn ChunkStore,
    key: String,
    last_flush: Instant,
    ttl: Duration,
}

impl<'a> GcLease<'a> {
    /// Publishes a collector lease.
    pub fn acquire(store: &'a dyn ChunkStore, ttl: Duration) -> Result<Self> {
        let mut l = GcLease {
            store,
            key: format!("leases/gc-{}.json", random_hex()),
            last_flush: Instant::now(),
            ttl,
        };
        l.refresh()?;
        Ok(l)
    }

    /// Republishes the lease; call before each batch of deletions.
    pub fn refresh(&mut self) -> Result<()> {
        let started = Instant::now();
        if started.duration_since(self.last_flush) + self.ttl / 10 >= self.ttl {
            return Err(Error::LeaseExpired {
                snapshot: "(garbage collection)".into(),
                elapsed_secs: started.duration_since(self.last_flush).as_secs(),
                ttl_secs: self.ttl.as_secs(),
            });
        }
        let doc = GcLeaseDoc {
            pid: std::process::id(),
            owner: Owner::me(),
        };
        self.store.put(
            &self.key,
            &serde_json::to_vec(&doc).expect("a lease serialises"),
        )?;
        self.last_flush = started;
        Ok(())
    }
}

impl Drop for GcLease<'_> {
    fn drop(&mut self) {
        let _ = self.store.delete(&self.key);
    }
}

/// Whether the lease `key`, found dead earlier, is dead still: deleting it on an old verdict would
/// drop a lease republished meanwhile under the same key (a writer retrying a snapshot id).
pub(crate) fn still_dead(store: &dyn ChunkStore, key: &str, ttl: Duration) -> Result<bool> {
    let Some(o) = store.head(key)? else {
        return Ok(false); // gone already
    };
    if !is_live(&o, ttl) {
        return Ok(true);
    }
    Ok(store.get(key)?.is_some_and(|b| owner_gone(&b)))
}

/// The chunk ids protected by live create leases, and the keys of dead leases: create leases,
/// and other collectors' leases whose time ran out or whose owner exited (a collector's own lease
/// must be published before this is called, and is live).
pub(crate) fn create_leases(
    store: &dyn ChunkStore,
    ttl: Duration,
) -> Result<(BTreeSet<ChunkId>, Vec<String>)> {
    let mut protected = BTreeSet::new();
    let mut dead = Vec::new();
    for o in store.list("leases/")? {
        if o.key.starts_with("leases/gc-") {
            let gone = !is_live(&o, ttl) || store.get(&o.key)?.is_some_and(|b| owner_gone(&b));
            if gone {
                dead.push(o.key);
            }
            continue;
        }
        if !o.key.starts_with("leases/create-") {
            continue;
        }
        if !is_live(&o, ttl) {
            dead.push(o.key);
            continue;
        }
        let Some(bytes) = store.get(&o.key)? else {
            continue; // released meanwhile: its manifest is published, read after this
        };
        if owner_gone(&bytes) {
            dead.push(o.key);
            continue;
        }
        let doc: CreateLeaseDoc = serde_json::from_slice(&bytes).map_err(|e| Error::Store {
            store: store.describe(),
            action: "parse lease",
            key: o.key.clone(),
            reason: format!("{e}; garbage collection refuses to guess what it protects"),
        })?;
        protected.extend(doc.chunks);
    }
    Ok((protected, dead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::local::LocalStore;

    fn gc_lease_of(pid: u32) -> Vec<u8> {
        let doc = GcLeaseDoc {
            pid,
            owner: Some(Owner::of(pid).expect("the process is alive")),
        };
        serde_json::to_vec(&doc).unwrap()
    }

    /// A collector killed while holding its lease blocks writers only while it lives.
    #[test]
    fn a_dead_collectors_lease_stops_blocking_at_once() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        let mut holder = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        store
            .put("leases/gc-held.json", &gc_lease_of(holder.id()))
            .unwrap();
        let live = live_gc_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert_eq!(live.len(), 1, "a live holder's lease blocks writers");
        let (_, dead) = create_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert!(dead.is_empty(), "a live holder's lease is not collected");
        holder.kill().unwrap();
        holder.wait().unwrap();
        let (_, dead) = create_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert_eq!(dead, ["leases/gc-held.json"]);
        let t0 = Instant::now();
        wait_no_gc(&store, DEFAULT_LEASE_TTL).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(store.get("leases/gc-held.json").unwrap().is_none());
    }

    /// A dead lease republished under its key meanwhile (a writer retrying a snapshot id) is not
    /// deleted on the old verdict.
    #[test]
    fn a_lease_republished_after_the_verdict_is_kept() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let mut owner = Owner::of(gone.id());
        gone.wait().unwrap();
        if owner.is_none() {
            // `true` exited before it could be looked up: any dead pid will do.
            let mut me = Owner::me().unwrap();
            me.pid = gone.id();
            owner = Some(me);
        }
        let doc = |owner: Option<Owner>| {
            serde_json::to_vec(&CreateLeaseDoc {
                snapshot: "s".into(),
                pid: 1,
                owner,
                chunks: Vec::new(),
            })
            .unwrap()
        };
        let key = "leases/create-s.json";
        store.put(key, &doc(owner)).unwrap();
        let (_, dead) = create_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert_eq!(dead, [key]);
        assert!(still_dead(&store, key, DEFAULT_LEASE_TTL).unwrap());
        store.put(key, &doc(Owner::me())).unwrap();
        assert!(!still_dead(&store, key, DEFAULT_LEASE_TTL).unwrap());
    }

    /// Leases without an owner (older writers) and owners on other machines wait out the TTL.
    #[test]
    fn leases_without_a_provable_owner_live_out_their_time() {
        let d = tempfile::tempdir().unwrap();
        let store = LocalStore::open(d.path()).unwrap();
        store.put("leases/gc-old.json", b"{\"pid\":1}").unwrap();
        let mut other = Owner::me().unwrap();
        other.boot_id = "another-machine".into();
        other.pid = u32::MAX;
        let doc = GcLeaseDoc {
            pid: other.pid,
            owner: Some(other),
        };
        store
            .put("leases/gc-remote.json", &serde_json::to_vec(&doc).unwrap())
            .unwrap();
        let (_, dead) = create_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert!(dead.is_empty(), "{dead:?}");
        let live = live_gc_leases(&store, DEFAULT_LEASE_TTL).unwrap();
        assert_eq!(live.len(), 2, "both block writers");
        assert_eq!(store.list("leases/").unwrap().len(), 2);
    }
}
