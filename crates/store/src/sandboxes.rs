//! Sandbox records: what the user asked for (desired state, spec) next to
//! what the reconciler last observed (state, reason).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::kinds::{Mode, RuntimeName, State};
use crate::{args, Error, Result, Store};

/// What a sandbox was created with, as the control plane defines it. The
/// store keeps it as JSON with a `version` field next to the spec's own
/// fields, and parses it when a row is read.
pub trait Spec: Serialize + DeserializeOwned {
    /// The form this build writes. Rows written before specs carried a
    /// version read as version 1; a row of a newer version is refused
    /// rather than misread.
    const VERSION: u32;
}

/// The field of the stored JSON that holds the spec's version.
const VERSION_FIELD: &str = "version";

/// The stored form of `spec`: its fields plus `version`.
fn encode<S: Spec>(spec: &S) -> Result<String> {
    let mut v = serde_json::to_value(spec)
        .map_err(|e| Error::Corrupt(format!("a spec cannot be encoded: {e}")))?;
    match v.as_object_mut() {
        Some(obj) => {
            obj.insert(VERSION_FIELD.into(), S::VERSION.into());
        }
        None => return Err(Error::Corrupt("a spec must encode as a JSON object".into())),
    }
    Ok(v.to_string())
}

/// The spec of sandbox `id` from its stored form.
fn decode<S: Spec>(id: &str, text: &str) -> Result<S> {
    let corrupt = |what: String| Error::Corrupt(format!("spec of sandbox {id}: {what}"));
    let mut v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    let version = match v.as_object_mut().and_then(|o| o.remove(VERSION_FIELD)) {
        None => 1,
        Some(n) => n
            .as_u64()
            .ok_or_else(|| corrupt(format!("version {n} is not a number")))?,
    };
    if version > u64::from(S::VERSION) {
        return Err(corrupt(format!(
            "version {version} was written by a newer dwell (this one reads up to {}); upgrade dwell",
            S::VERSION
        )));
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// One sandbox as stored, its columns typed; `S` is the spec.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxRecord<S> {
    pub id: String,
    pub name: String,
    pub tenant: String,
    pub image: String,
    pub mode: Mode,
    pub runtime: RuntimeName,
    /// The full spec (resources, env, labels, network).
    pub spec: S,
    pub state: State,
    pub desired_state: State,
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
    /// The node of a cluster that owns it; None on a single node.
    #[serde(default)]
    pub node: Option<String>,
}

const COLUMNS: &str =
    "id, name, tenant, image, mode, runtime, spec, state, desired_state, reason, \
     created_at, updated_at, state_changed_at, started_at, stopped_at, deleted_at, \
     last_activity_at, hold_until, node";

/// A row as the database returns it, before its text columns are parsed.
struct RawRow {
    rec: SandboxRecord<()>,
    mode: String,
    spec: String,
    state: String,
    desired_state: String,
}

fn from_row(row: &Row) -> Result<RawRow> {
    Ok(RawRow {
        rec: SandboxRecord {
            id: row.get(0)?,
            name: row.get(1)?,
            tenant: row.get(2)?,
            image: row.get(3)?,
            mode: Mode::default(),
            runtime: RuntimeName::new(row.get::<String>(5)?),
            spec: (),
            state: State::Creating,
            desired_state: State::Creating,
            reason: row.get(9)?,
            created_at: row.get(10)?,
            updated_at: row.get(11)?,
            state_changed_at: row.get(12)?,
            started_at: row.get(13)?,
            stopped_at: row.get(14)?,
            deleted_at: row.get(15)?,
            last_activity_at: row.get(16)?,
            hold_until: row.get(17)?,
            node: row.get(18)?,
        },
        mode: row.get(4)?,
        spec: row.get(6)?,
        state: row.get(7)?,
        desired_state: row.get(8)?,
    })
}

/// Parse the text columns of a row: the one place they are read.
fn finish<S: Spec>(raw: RawRow) -> Result<SandboxRecord<S>> {
    let RawRow {
        rec,
        mode,
        spec,
        state,
        desired_state,
    } = raw;
    let id = rec.id.clone();
    let corrupt = |what: &str, value: &str| {
        Error::Corrupt(format!(
            "sandbox {id} has {what} {value:?}, unknown to this dwell"
        ))
    };
    let state_of = |s: &str| State::parse(s).ok_or_else(|| corrupt("state", s));
    Ok(SandboxRecord {
        mode: Mode::parse(&mode).ok_or_else(|| corrupt("mode", &mode))?,
        spec: decode(&rec.id, &spec)?,
        state: state_of(&state)?,
        desired_state: state_of(&desired_state)?,
        id: rec.id,
        name: rec.name,
        tenant: rec.tenant,
        image: rec.image,
        runtime: rec.runtime,
        reason: rec.reason,
        created_at: rec.created_at,
        updated_at: rec.updated_at,
        state_changed_at: rec.state_changed_at,
        started_at: rec.started_at,
        stopped_at: rec.stopped_at,
        deleted_at: rec.deleted_at,
        last_activity_at: rec.last_activity_at,
        hold_until: rec.hold_until,
        node: rec.node,
    })
}

/// [`Store::set_state`]'s statement: `?1` id, `?2` state, `?3` reason,
/// `?4` now.
pub(crate) const SET_STATE: &str = "UPDATE sandboxes SET state = ?2, reason = ?3, updated_at = ?4, \
     state_changed_at = CASE WHEN state = ?2 THEN state_changed_at ELSE ?4 END, \
     started_at = CASE WHEN ?2 = 'running' AND state NOT IN ('running','paused') THEN ?4 ELSE started_at END, \
     stopped_at = CASE WHEN ?2 = 'stopped' THEN ?4 ELSE stopped_at END, \
     deleted_at = CASE WHEN ?2 = 'deleted' THEN ?4 ELSE deleted_at END \
     WHERE id = ?1";

impl Store {
    /// Insert a new record. Fails with [`Error::NameTaken`] when a live
    /// sandbox of the same tenant has that name.
    pub fn insert_sandbox<S: Spec>(&self, rec: &SandboxRecord<S>) -> Result<()> {
        let spec = encode(&rec.spec)?;
        let r = self.db()?.execute(
            &format!(
                "INSERT INTO sandboxes ({COLUMNS}) VALUES \
                 (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
            ),
            args![
                rec.id,
                rec.name,
                rec.tenant,
                rec.image,
                rec.mode.as_str(),
                rec.runtime.as_str(),
                spec,
                rec.state.as_str(),
                rec.desired_state.as_str(),
                rec.reason,
                rec.created_at,
                rec.updated_at,
                rec.state_changed_at,
                rec.started_at,
                rec.stopped_at,
                rec.deleted_at,
                rec.last_activity_at,
                rec.hold_until,
                rec.node
            ],
        );
        match r {
            Ok(_) => Ok(()),
            Err(Error::Constraint(_)) => Err(Error::NameTaken(rec.name.clone())),
            Err(e) => Err(e),
        }
    }

    /// A record by id, whatever its state.
    pub fn get_sandbox<S: Spec>(&self, id: &str) -> Result<Option<SandboxRecord<S>>> {
        self.db()?
            .query_opt(
                &format!("SELECT {COLUMNS} FROM sandboxes WHERE id = ?1"),
                args![id],
            )?
            .map(|r| from_row(&r).and_then(finish))
            .transpose()
    }

    /// A live (not deleted) record of `tenant` by id or by name.
    pub fn find_sandbox<S: Spec>(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<Option<SandboxRecord<S>>> {
        // A record whose id matches comes before one whose name does (a
        // sandbox may be named like another's id).
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM sandboxes WHERE tenant = ?1 AND state != 'deleted' \
                     AND (id = ?2 OR name = ?2) \
                     ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END LIMIT 1"
                ),
                args![tenant, id_or_name],
            )?
            .map(|r| from_row(&r).and_then(finish))
            .transpose()
    }

    /// Live records, of one tenant or of all (`None`), oldest first.
    ///
    /// A row this dwell cannot read (a state, mode or spec version written
    /// by a newer one, a damaged spec) is left out with a warning naming it,
    /// so one such row fails only itself (`get_sandbox` of it reports why)
    /// and not the sweep, metering or listing of every other sandbox.
    pub fn list_sandboxes<S: Spec>(&self, tenant: Option<&str>) -> Result<Vec<SandboxRecord<S>>> {
        let rows = self.db()?.query(
            &format!(
                "SELECT {COLUMNS} FROM sandboxes WHERE state != 'deleted' \
                 AND (CAST(?1 AS TEXT) IS NULL OR tenant = ?1) ORDER BY created_at, id"
            ),
            args![tenant],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match from_row(row).and_then(finish) {
                Ok(r) => out.push(r),
                Err(Error::Corrupt(why)) => {
                    tracing::warn!("left out of the sandbox list: {why}")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Set the desired state (what a request or a policy wants).
    pub fn set_desired(&self, id: &str, desired: State) -> Result<()> {
        self.db()?.execute(
            "UPDATE sandboxes SET desired_state = ?2, updated_at = ?3 WHERE id = ?1",
            args![id, desired.as_str(), self.now()],
        )?;
        Ok(())
    }

    /// Record an observed transition with its reason. Timestamps of the
    /// state are kept (`started_at` for running, `stopped_at` for stopped,
    /// `deleted_at` for deleted).
    pub fn set_state(&self, id: &str, state: State, reason: &str) -> Result<()> {
        let now = self.now();
        self.db()?
            .execute(SET_STATE, args![id, state.as_str(), reason, now])?;
        Ok(())
    }

    /// Note activity (an exec, a file operation, a connection); an earlier
    /// time than the one kept leaves it.
    pub fn touch(&self, id: &str, at: i64) -> Result<()> {
        self.db()?.execute(
            &format!("UPDATE sandboxes SET last_activity_at = {LATER_ACTIVITY} WHERE id = ?1"),
            args![id, at],
        )?;
        Ok(())
    }

    /// A keepalive: activity now, and idle/TTL policies held off until
    /// `until`.
    pub fn keepalive(&self, id: &str, at: i64, until: i64) -> Result<()> {
        self.db()?.execute(
            &format!(
                "UPDATE sandboxes SET last_activity_at = {LATER_ACTIVITY}, hold_until = ?3 \
                 WHERE id = ?1"
            ),
            args![id, at, until],
        )?;
        Ok(())
    }

    /// Replace the spec of a record.
    pub fn set_spec<S: Spec>(&self, id: &str, spec: &S) -> Result<()> {
        let spec = encode(spec)?;
        self.db()?.execute(
            "UPDATE sandboxes SET spec = ?2, updated_at = ?3 WHERE id = ?1",
            args![id, spec, self.now()],
        )?;
        Ok(())
    }
}

/// The later of the kept activity time (none counting as 0) and `?2`:
/// SQLite's two-argument `MAX` and PostgreSQL's `GREATEST` in the form
/// both read.
const LATER_ACTIVITY: &str = "CASE WHEN COALESCE(last_activity_at, 0) >= ?2 \
     THEN COALESCE(last_activity_at, 0) ELSE ?2 END";

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec for these tests.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct TestSpec {
        memory: u64,
    }

    impl Spec for TestSpec {
        const VERSION: u32 = 1;
    }

    type Record = SandboxRecord<TestSpec>;

    fn record(id: &str, name: &str) -> Record {
        SandboxRecord {
            id: id.into(),
            name: name.into(),
            tenant: "default".into(),
            image: "host".into(),
            mode: Mode::Persistent,
            runtime: RuntimeName::new("ns"),
            spec: TestSpec { memory: 1 },
            state: State::Creating,
            desired_state: State::Running,
            reason: "created".into(),
            created_at: 1,
            updated_at: 1,
            state_changed_at: 1,
            started_at: None,
            stopped_at: None,
            deleted_at: None,
            last_activity_at: None,
            hold_until: None,
            node: None,
        }
    }

    fn get(s: &Store, id: &str) -> Record {
        s.get_sandbox(id).unwrap().unwrap()
    }

    #[test]
    fn names_are_unique_among_live_sandboxes_only() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_sandbox(&record("a1", "work")).unwrap();
            assert!(
                matches!(
                    s.insert_sandbox(&record("a2", "work")),
                    Err(Error::NameTaken(_))
                ),
                "{e}"
            );
            // Another tenant may use the name.
            let mut other = record("b1", "work");
            other.tenant = "other".into();
            s.insert_sandbox(&other).unwrap();
            s.set_state("a1", State::Deleted, "removed").unwrap();
            s.insert_sandbox(&record("a2", "work")).unwrap();
            let found: Record = s.find_sandbox("default", "work").unwrap().unwrap();
            assert_eq!(found.id, "a2", "{e}");
            assert_eq!(s.list_sandboxes::<TestSpec>(None).unwrap().len(), 2, "{e}");
            let mine = s.list_sandboxes::<TestSpec>(Some("default")).unwrap();
            assert_eq!(
                mine.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
                ["a2"],
                "{e}"
            );
            assert!(s
                .list_sandboxes::<TestSpec>(Some("nobody"))
                .unwrap()
                .is_empty());
            // The deleted record is still there by id, with its time.
            let gone = get(&s, "a1");
            assert_eq!(gone.state, State::Deleted, "{e}");
            assert!(gone.deleted_at.is_some(), "{e}");
        }
    }

    #[test]
    fn a_record_round_trips_every_column() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let mut r = record("a1", "w");
            r.mode = Mode::Ephemeral;
            r.runtime = RuntimeName::new("gvisor");
            r.spec = TestSpec {
                memory: u64::from(u32::MAX) * 4,
            };
            r.created_at = 1_700_000_000_000;
            r.started_at = Some(1_700_000_000_001);
            r.stopped_at = Some(i64::MAX);
            r.last_activity_at = Some(-5);
            r.hold_until = Some(0);
            s.insert_sandbox(&r).unwrap();
            assert_eq!(get(&s, "a1"), r, "{e}");
            assert!(s.get_sandbox::<TestSpec>("nope").unwrap().is_none(), "{e}");
        }
    }

    #[test]
    fn an_id_is_found_before_a_name_that_looks_like_it() {
        for s in crate::testing::stores() {
            let e = s.engine();
            // Inserted first, so it would come first without the order.
            s.insert_sandbox(&record("zz", "a2")).unwrap();
            s.insert_sandbox(&record("a2", "w")).unwrap();
            let r: Record = s.find_sandbox("default", "a2").unwrap().unwrap();
            assert_eq!(r.id, "a2", "{e}");
            let r: Record = s.find_sandbox("default", "zz").unwrap().unwrap();
            assert_eq!(r.id, "zz", "{e}");
            assert!(s
                .find_sandbox::<TestSpec>("default", "x")
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn listing_is_oldest_first_then_by_id() {
        for s in crate::testing::stores() {
            let e = s.engine();
            for (id, at) in [("c", 5), ("b", 1), ("a", 5)] {
                let mut r = record(id, id);
                r.created_at = at;
                s.insert_sandbox(&r).unwrap();
            }
            let ids: Vec<String> = s
                .list_sandboxes::<TestSpec>(None)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids, ["b", "a", "c"], "{e}");
        }
    }

    #[test]
    fn desired_state_and_spec_are_replaced() {
        let t = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(50));
        for s in crate::testing::stores() {
            t.store(50, std::sync::atomic::Ordering::SeqCst);
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            s.set_desired("a1", State::Stopped).unwrap();
            let r = get(&s, "a1");
            assert_eq!((r.desired_state, r.updated_at), (State::Stopped, 50), "{e}");
            t.store(60, std::sync::atomic::Ordering::SeqCst);
            s.set_spec("a1", &TestSpec { memory: 9 }).unwrap();
            let r = get(&s, "a1");
            assert_eq!((r.spec.memory, r.updated_at), (9, 60), "{e}");
            assert_eq!(r.state, State::Creating, "{e}");
        }
    }

    #[test]
    fn activity_only_moves_forward_and_a_keepalive_holds() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            s.touch("a1", 1_700_000_000_000).unwrap();
            assert_eq!(
                get(&s, "a1").last_activity_at,
                Some(1_700_000_000_000),
                "{e}"
            );
            s.touch("a1", 1_600_000_000_000).unwrap();
            assert_eq!(
                get(&s, "a1").last_activity_at,
                Some(1_700_000_000_000),
                "{e}"
            );
            s.keepalive("a1", 1_800_000_000_000, 1_900_000_000_000)
                .unwrap();
            let r = get(&s, "a1");
            assert_eq!(
                (r.last_activity_at, r.hold_until),
                (Some(1_800_000_000_000), Some(1_900_000_000_000)),
                "{e}"
            );
            // An older keepalive still sets the hold, not the activity.
            s.keepalive("a1", 5, 7).unwrap();
            let r = get(&s, "a1");
            assert_eq!(
                (r.last_activity_at, r.hold_until),
                (Some(1_800_000_000_000), Some(7)),
                "{e}"
            );
            // Touching an unknown sandbox changes nothing and is no error.
            s.touch("nope", 1).unwrap();
        }
    }

    #[test]
    fn a_transition_and_its_event_are_written_together() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            s.set_state_with_event("a1", State::Running, "started", "state", "running: started")
                .unwrap();
            let r = get(&s, "a1");
            assert_eq!(
                (r.state, r.reason.as_str()),
                (State::Running, "started"),
                "{e}"
            );
            assert!(r.started_at.is_some(), "{e}");
            let ev = s.events("a1", 0, 10).unwrap();
            assert_eq!(
                ev.iter()
                    .map(|e| (e.kind.as_str(), e.message.as_str()))
                    .collect::<Vec<_>>(),
                [("state", "running: started")],
                "{e}"
            );
        }
    }

    #[test]
    fn state_timestamps_follow_transitions() {
        let t = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(100));
        for s in crate::testing::stores() {
            t.store(100, std::sync::atomic::Ordering::SeqCst);
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(std::sync::atomic::Ordering::SeqCst));
            let at = |ms: i64| t.store(ms, std::sync::atomic::Ordering::SeqCst);
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            s.set_state("a1", State::Running, "started").unwrap();
            let r = get(&s, "a1");
            assert_eq!((r.started_at, r.state_changed_at), (Some(100), 100), "{e}");
            assert_eq!(
                (r.state, r.reason.as_str()),
                (State::Running, "started"),
                "{e}"
            );
            assert_eq!(r.spec, TestSpec { memory: 1 });
            // The same state again keeps when it changed.
            at(150);
            s.set_state("a1", State::Running, "still").unwrap();
            let r = get(&s, "a1");
            assert_eq!((r.state_changed_at, r.updated_at), (100, 150), "{e}");
            // Running after paused is not a new start.
            at(200);
            s.set_state("a1", State::Paused, "paused").unwrap();
            at(300);
            s.set_state("a1", State::Running, "resumed").unwrap();
            let r = get(&s, "a1");
            assert_eq!((r.started_at, r.state_changed_at), (Some(100), 300), "{e}");
            at(400);
            s.set_state("a1", State::Stopped, "stop requested").unwrap();
            assert_eq!(get(&s, "a1").stopped_at, Some(400), "{e}");
            at(500);
            s.set_state("a1", State::Running, "started").unwrap();
            assert_eq!(get(&s, "a1").started_at, Some(500), "{e}");
            assert!(s.find_sandbox::<TestSpec>("other", "a1").unwrap().is_none());
        }
    }

    fn set_raw(s: &Store, column: &str, id: &str, text: &str) {
        s.db()
            .unwrap()
            .execute(
                &format!("UPDATE sandboxes SET {column} = ?2 WHERE id = ?1"),
                args![id, text],
            )
            .unwrap();
    }

    #[test]
    fn a_row_this_dwell_cannot_read_fails_only_itself() {
        for s in crate::testing::stores() {
            let e = s.engine();
            for (id, name) in [("a1", "one"), ("a2", "two"), ("a3", "three")] {
                s.insert_sandbox(&record(id, name)).unwrap();
            }
            set_raw(&s, "spec", "a2", r#"{"version": 99, "memory": 1}"#);
            set_raw(&s, "state", "a3", "frobbed");
            let ids: Vec<String> = s
                .list_sandboxes::<TestSpec>(None)
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            assert_eq!(ids, ["a1"], "{e}");
            let err = s.get_sandbox::<TestSpec>("a2").unwrap_err().to_string();
            assert!(err.contains("newer dwell"), "{e}: {err}");
            let err = s.get_sandbox::<TestSpec>("a3").unwrap_err().to_string();
            assert!(err.contains("frobbed"), "{e}: {err}");
        }
    }

    #[test]
    fn specs_are_stored_with_their_version_and_old_rows_still_load() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            let text: String = s
                .db()
                .unwrap()
                .query_one("SELECT spec FROM sandboxes WHERE id = 'a1'", args![])
                .unwrap()
                .get(0)
                .unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v, serde_json::json!({"memory": 1, "version": 1}), "{e}");
            // A row written before specs had a version.
            set_raw(&s, "spec", "a1", r#"{"memory": 7}"#);
            assert_eq!(get(&s, "a1").spec, TestSpec { memory: 7 }, "{e}");
            // A row of a newer dwell is refused, not misread.
            set_raw(&s, "spec", "a1", r#"{"memory": 7, "version": 2}"#);
            let err = s.get_sandbox::<TestSpec>("a1").unwrap_err().to_string();
            assert!(err.contains("newer dwell"), "{e}: {err}");
        }
    }

    #[test]
    fn unknown_states_are_reported_as_corrupt() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.insert_sandbox(&record("a1", "w")).unwrap();
            set_raw(&s, "state", "a1", "melted");
            let err = s.get_sandbox::<TestSpec>("a1").unwrap_err().to_string();
            assert!(err.contains("state \"melted\""), "{e}: {err}");
            set_raw(&s, "state", "a1", "running");
            set_raw(&s, "mode", "a1", "sideways");
            let err = s.get_sandbox::<TestSpec>("a1").unwrap_err().to_string();
            assert!(err.contains("mode \"sideways\""), "{e}: {err}");
        }
    }
}
