//! Host uid/gid range slots of sandboxes (user namespaces): a sandbox gets
//! the lowest free slot at its first start and keeps it, across stops and
//! daemon restarts, until it is deleted. The slot table's primary key makes
//! two sandboxes sharing a slot impossible, even for creates in flight.

use rusqlite::{params, OptionalExtension};

use crate::{Error, Result, Store};

impl Store {
    /// The slot of `sandbox_id`, reserving the lowest free one below
    /// `max_slots` if it has none yet.
    pub fn reserve_id_range(&self, sandbox_id: &str, max_slots: u32) -> Result<u32> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let held: Option<u32> = tx
            .query_row(
                "SELECT slot FROM id_ranges WHERE sandbox_id = ?1",
                params![sandbox_id],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(slot) = held {
            return Ok(slot);
        }
        // The first gap in the ordered slots (or one past the last).
        let mut next: u32 = 0;
        {
            let mut stmt = tx.prepare("SELECT slot FROM id_ranges ORDER BY slot")?;
            let slots = stmt.query_map([], |r| r.get::<_, u32>(0))?;
            for slot in slots {
                if slot? != next {
                    break;
                }
                next += 1;
            }
        }
        if next >= max_slots {
            return Err(Error::Exhausted(format!(
                "all {max_slots} uid ranges are taken by sandboxes; delete sandboxes (or run \
                 `dwell serve --user-namespaces off`)"
            )));
        }
        tx.execute(
            "INSERT INTO id_ranges (slot, sandbox_id) VALUES (?1, ?2)",
            params![next, sandbox_id],
        )?;
        tx.commit()?;
        Ok(next)
    }

    /// Free the slot of a deleted sandbox (nothing if it had none).
    pub fn release_id_range(&self, sandbox_id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM id_ranges WHERE sandbox_id = ?1",
            params![sandbox_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::Store;

    #[test]
    fn slots_are_kept_unique_and_reused_only_after_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserve_id_range("a", 10).unwrap(), 0);
        assert_eq!(store.reserve_id_range("b", 10).unwrap(), 1);
        assert_eq!(store.reserve_id_range("a", 10).unwrap(), 0);
        store.release_id_range("a").unwrap();
        assert_eq!(store.reserve_id_range("c", 10).unwrap(), 0);
        drop(store);
        // Durable: a reopened store keeps every slot.
        let store = Store::open(&path).unwrap();
        assert_eq!(store.reserve_id_range("b", 10).unwrap(), 1);
        assert_eq!(store.reserve_id_range("d", 10).unwrap(), 2);
        let err = store.reserve_id_range("e", 3).unwrap_err().to_string();
        assert!(err.contains("user-namespaces off"), "{err}");
    }
}
