//! Host uid/gid range slots of sandboxes (user namespaces): a sandbox gets
//! the lowest free slot at its first start and keeps it, across stops and
//! daemon restarts, until it is deleted. The slot table's primary key makes
//! two sandboxes sharing a slot impossible, even for creates in flight.

use crate::db::Conn;
use crate::{args, Error, Result, Store};

/// Most times a reservation is tried again after another one took the slot
/// it chose (on PostgreSQL, where several connections reserve at once;
/// each retry sees the other's slot).
const RESERVE_TRIES: u32 = 32;

impl Store {
    /// The slot of `sandbox_id`, reserving the lowest free one below
    /// `max_slots` if it has none yet.
    pub fn reserve_id_range(&self, sandbox_id: &str, max_slots: u32) -> Result<u32> {
        let mut last = None;
        for _ in 0..RESERVE_TRIES {
            match self.try_reserve_id_range(sandbox_id, max_slots) {
                // Another reservation committed the same slot (or one for
                // the same sandbox) first: read again.
                Err(Error::Constraint(e)) => last = Some(e),
                r => return r,
            }
        }
        Err(Error::Sql(format!(
            "no uid range could be reserved for sandbox {sandbox_id} in {RESERVE_TRIES} tries, \
             each taken by another reservation at the same time: {}; try again",
            last.unwrap_or_default()
        )))
    }

    fn try_reserve_id_range(&self, sandbox_id: &str, max_slots: u32) -> Result<u32> {
        let mut tx = self.tx()?;
        let held = tx.query_opt(
            "SELECT slot FROM id_ranges WHERE sandbox_id = ?1",
            args![sandbox_id],
        )?;
        if let Some(r) = held {
            return r.get(0);
        }
        // The first gap in the ordered slots (or one past the last).
        let mut next: u32 = 0;
        for r in tx.query("SELECT slot FROM id_ranges ORDER BY slot", args![])? {
            if r.get::<u32>(0)? != next {
                break;
            }
            next += 1;
        }
        if next >= max_slots {
            return Err(Error::Exhausted(format!(
                "all {max_slots} uid ranges are taken by sandboxes; delete sandboxes (or run \
                 `dwell serve --user-namespaces off`)"
            )));
        }
        tx.execute(
            "INSERT INTO id_ranges (slot, sandbox_id) VALUES (?1, ?2)",
            args![next, sandbox_id],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// Free the slot of a deleted sandbox (nothing if it had none).
    pub fn release_id_range(&self, sandbox_id: &str) -> Result<()> {
        self.db()?.execute(
            "DELETE FROM id_ranges WHERE sandbox_id = ?1",
            args![sandbox_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn slots_are_kept_unique_and_reused_only_after_release() {
        for store in crate::testing::stores() {
            let e = store.engine();
            assert_eq!(store.reserve_id_range("a", 10).unwrap(), 0, "{e}");
            assert_eq!(store.reserve_id_range("b", 10).unwrap(), 1, "{e}");
            assert_eq!(store.reserve_id_range("a", 10).unwrap(), 0, "{e}");
            store.release_id_range("a").unwrap();
            store.release_id_range("never-had-one").unwrap();
            assert_eq!(store.reserve_id_range("c", 10).unwrap(), 0, "{e}");
            assert_eq!(store.reserve_id_range("d", 10).unwrap(), 2, "{e}");
            let err = store.reserve_id_range("e", 3).unwrap_err().to_string();
            assert!(err.contains("user-namespaces off"), "{e}: {err}");
            // A held slot is returned even past a smaller limit.
            assert_eq!(store.reserve_id_range("d", 1).unwrap(), 2, "{e}");
        }
    }

    #[test]
    fn slots_are_durable_across_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserve_id_range("a", 10).unwrap(), 0);
        assert_eq!(store.reserve_id_range("b", 10).unwrap(), 1);
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserve_id_range("b", 10).unwrap(), 1);
        assert_eq!(store.reserve_id_range("c", 10).unwrap(), 2);
    }

    #[test]
    fn reservations_at_once_get_distinct_slots() {
        for store in crate::testing::stores() {
            let e = store.engine();
            let ids: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
            // Each sandbox twice, from threads of their own: on PostgreSQL
            // they run on several connections and race for slots.
            let mut got: Vec<(String, u32)> = std::thread::scope(|scope| {
                let handles: Vec<_> = ids
                    .iter()
                    .chain(ids.iter())
                    .map(|id| {
                        let store = &store;
                        scope.spawn(move || (id.clone(), store.reserve_id_range(id, 64).unwrap()))
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            got.sort();
            got.dedup();
            assert_eq!(got.len(), 8, "{e}: one slot per sandbox: {got:?}");
            let mut slots: Vec<u32> = got.iter().map(|(_, s)| *s).collect();
            slots.sort();
            assert_eq!(slots, (0..8).collect::<Vec<_>>(), "{e}: {got:?}");
        }
    }
}
