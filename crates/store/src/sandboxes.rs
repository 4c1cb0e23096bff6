//! Sandbox records: what the user asked for (desired state, spec) next to
//! what the reconciler last observed (state, reason).

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store};

/// One sandbox as stored. States are strings here; the control plane owns
/// their meaning.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub image: String,
    pub mode: String,
    pub runtime: String,
    /// The full spec (resources, env, labels, network) as JSON.
    pub spec: serde_json::Value,
    pub state: String,
    pub desired_state: String,
    /// Why the last transition happened (or why it failed).
    pub reason: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub state_changed_at: i64,
    pub started_at: Option<i64>,
    pub stopped_at: Option<i64>,
    pub deleted_at: Option<i64>,
    /// Last exec, file operation, connection or keepalive.
    #[serde(default)]
    pub last_activity_at: Option<i64>,
    /// A keepalive holds idle and TTL policies off until this time.
    #[serde(default)]
    pub hold_until: Option<i64>,
}

const COLUMNS: &str =
    "id, name, tenant, image, mode, runtime, spec, state, desired_state, reason, \
     created_at, updated_at, state_changed_at, started_at, stopped_at, deleted_at, \
     last_activity_at, hold_until";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(SandboxRecord, String)> {
    let spec: String = row.get(6)?;
    Ok((
        SandboxRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            tenant: row.get(2)?,
            image: row.get(3)?,
            mode: row.get(4)?,
            runtime: row.get(5)?,
            spec: serde_json::Value::Null,
            state: row.get(7)?,
            desired_state: row.get(8)?,
            reason: row.get(9)?,
            created_at: row.get(10)?,
            updated_at: row.get(11)?,
            state_changed_at: row.get(12)?,
            started_at: row.get(13)?,
            stopped_at: row.get(14)?,
            deleted_at: row.get(15)?,
            last_activity_at: row.get(16)?,
            hold_until: row.get(17)?,
        },
        spec,
    ))
}

fn finish((mut rec, spec): (SandboxRecord, String)) -> Result<SandboxRecord> {
    rec.spec = serde_json::from_str(&spec)
        .map_err(|e| Error::Corrupt(format!("spec of sandbox {}: {e}", rec.id)))?;
    Ok(rec)
}

impl Store {
    /// Insert a new record. Fails with [`Error::NameTaken`] when a live
    /// sandbox of the same tenant has that name.
    pub fn insert_sandbox(&self, rec: &SandboxRecord) -> Result<()> {
        let conn = self.conn();
        let r = conn.execute(
            &format!(
                "INSERT INTO sandboxes ({COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"
            ),
            params![
                rec.id,
                rec.name,
                rec.tenant,
                rec.image,
                rec.mode,
                rec.runtime,
                rec.spec.to_string(),
                rec.state,
                rec.desired_state,
                rec.reason,
                rec.created_at,
                rec.updated_at,
                rec.state_changed_at,
                rec.started_at,
                rec.stopped_at,
                rec.deleted_at,
                rec.last_activity_at,
                rec.hold_until
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(Error::NameTaken(rec.name.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A record by id, whatever its state.
    pub fn get_sandbox(&self, id: &str) -> Result<Option<SandboxRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                [id],
                from_row,
            )
            .optional()?;
        row.map(finish).transpose()
    }

    /// A live (not deleted) record of `tenant` by id or by name.
    pub fn find_sandbox(&self, tenant: &str, id_or_name: &str) -> Result<Option<SandboxRecord>> {
        let conn = self.conn();
        let row = conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE tenant = ?1 AND state != 'deleted' \
                     AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant, id_or_name],
                from_row,
            )
            .optional()?;
        row.map(finish).transpose()
    }

    /// Live records, of one tenant or of all (`None`), oldest first.
    pub fn list_sandboxes(&self, tenant: Option<&str>) -> Result<Vec<SandboxRecord>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM sandboxes WHERE state != 'deleted' \
             AND (?1 IS NULL OR tenant = ?1) ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], from_row)?;
        rows.map(|r| finish(r?)).collect()
    }

    /// Set the desired state (what a request or a policy wants).
    pub fn set_desired(&self, id: &str, desired: &str) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE sandboxes SET desired_state = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, desired, self.now()],
        )?;
        Ok(())
    }

    /// Record an observed transition with its reason. Timestamps of the
    /// state are kept (`started_at` for running, `stopped_at` for stopped,
    /// `deleted_at` for deleted).
    pub fn set_state(&self, id: &str, state: &str, reason: &str) -> Result<()> {
        let now = self.now();
        let conn = self.conn();
        conn.execute(
            "UPDATE sandboxes SET state = ?2, reason = ?3, updated_at = ?4, \
             state_changed_at = CASE WHEN state = ?2 THEN state_changed_at ELSE ?4 END, \
             started_at = CASE WHEN ?2 = 'running' AND state NOT IN ('running','paused') THEN ?4 ELSE started_at END, \
             stopped_at = CASE WHEN ?2 = 'stopped' THEN ?4 ELSE stopped_at END, \
             deleted_at = CASE WHEN ?2 = 'deleted' THEN ?4 ELSE deleted_at END \
             WHERE id = ?1",
            params![id, state, reason, now],
        )?;
        Ok(())
    }

    /// Note activity (an exec, a file operation, a connection).
    pub fn touch(&self, id: &str, at: i64) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE sandboxes SET last_activity_at = MAX(COALESCE(last_activity_at, 0), ?2) WHERE id = ?1",
            params![id, at],
        )?;
        Ok(())
    }

    /// A keepalive: activity now, and idle/TTL policies held off until
    /// `until`.
    pub fn keepalive(&self, id: &str, at: i64, until: i64) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE sandboxes SET last_activity_at = MAX(COALESCE(last_activity_at, 0), ?2), hold_until = ?3 WHERE id = ?1",
            params![id, at, until],
        )?;
        Ok(())
    }

    /// Replace the spec of a record.
    pub fn set_spec(&self, id: &str, spec: &serde_json::Value) -> Result<()> {
        let conn = self.conn();
        conn.execute(
            "UPDATE sandboxes SET spec = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, spec.to_string(), self.now()],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str, name: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: name.into(),
            tenant: "default".into(),
            image: "host".into(),
            mode: "persistent".into(),
            runtime: "ns".into(),
            spec: serde_json::json!({"memory": 1}),
            state: "creating".into(),
            desired_state: "running".into(),
            reason: "created".into(),
            created_at: 1,
            updated_at: 1,
            state_changed_at: 1,
            started_at: None,
            stopped_at: None,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
        }
    }

    #[test]
    fn names_are_unique_among_live_sandboxes_only() {
        let s = Store::in_memory().unwrap();
        s.insert_sandbox(&record("a1", "work")).unwrap();
        assert!(matches!(
            s.insert_sandbox(&record("a2", "work")),
            Err(Error::NameTaken(_))
        ));
        s.set_state("a1", "deleted", "removed").unwrap();
        s.insert_sandbox(&record("a2", "work")).unwrap();
        assert_eq!(s.find_sandbox("default", "work").unwrap().unwrap().id, "a2");
        assert_eq!(s.list_sandboxes(None).unwrap().len(), 1);
    }

    #[test]
    fn state_timestamps_follow_transitions() {
        let s = Store::in_memory().unwrap();
        s.insert_sandbox(&record("a1", "w")).unwrap();
        s.set_state("a1", "running", "started").unwrap();
        let r = s.get_sandbox("a1").unwrap().unwrap();
        assert!(r.started_at.is_some());
        assert_eq!(r.reason, "started");
        assert_eq!(r.spec, serde_json::json!({"memory": 1}));
        s.set_state("a1", "stopped", "stop requested").unwrap();
        assert!(s.get_sandbox("a1").unwrap().unwrap().stopped_at.is_some());
        assert!(s.find_sandbox("other", "a1").unwrap().is_none());
    }
}
