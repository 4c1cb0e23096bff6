//! E2B templates (the E2B layer's Template SDK builds): a template is a
//! tenant's name for a line of builds; each build records its status
//! (`waiting` for its step list, `building`, `ready`, `error`), the step
//! list it was started with, the image it made, why it failed, and its log
//! lines; tags name one ready build of a template each. Another tenant's
//! template is never returned: every lookup by name or id takes the tenant.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Error, Result, Store};

/// One template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct E2bTemplate {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub cpu_count: Option<i64>,
    pub memory_mb: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One build of a template.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct E2bBuild {
    pub id: String,
    pub template_id: String,
    /// `waiting`, `building`, `ready` or `error`.
    pub status: String,
    /// The tags the build gets once it is ready.
    pub tags: Vec<String>,
    /// The step list it was started with (JSON, as the API took it).
    pub spec: Option<String>,
    /// The image it made (a reference in the image store), once ready.
    pub image: Option<String>,
    /// Why it failed.
    pub reason: Option<String>,
    /// The step that failed (`base`, a step number, `finalize`).
    pub reason_step: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One log line of a build.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct E2bLogLine {
    pub seq: i64,
    pub at: i64,
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    pub step: Option<String>,
    pub message: String,
}

/// A tag of a template and the build it names.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct E2bTag {
    pub tag: String,
    pub build_id: String,
    pub created_at: i64,
}

/// Build statuses.
pub const BUILD_WAITING: &str = "waiting";
pub const BUILD_BUILDING: &str = "building";
pub const BUILD_READY: &str = "ready";
pub const BUILD_ERROR: &str = "error";

const TEMPLATE_COLUMNS: &str = "id, tenant, name, cpu_count, memory_mb, created_at, updated_at";
const BUILD_COLUMNS: &str =
    "id, template_id, status, tags, spec, image, reason, reason_step, created_at, updated_at";

fn template_row(r: &Row) -> Result<E2bTemplate> {
    Ok(E2bTemplate {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        cpu_count: r.get(3)?,
        memory_mb: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

fn build_row(r: &Row) -> Result<E2bBuild> {
    let id: String = r.get(0)?;
    let tags = parse_tags(&id, &r.get::<String>(3)?)?;
    Ok(E2bBuild {
        id,
        template_id: r.get(1)?,
        status: r.get(2)?,
        tags,
        spec: r.get(4)?,
        image: r.get(5)?,
        reason: r.get(6)?,
        reason_step: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
    })
}

fn parse_tags(build_id: &str, tags: &str) -> Result<Vec<String>> {
    serde_json::from_str(tags)
        .map_err(|e| Error::Corrupt(format!("tags of E2B build {build_id}: {e}")))
}

/// What [`Store::e2b_request_build`] needs.
pub struct BuildRequest<'a> {
    pub tenant: &'a str,
    pub name: &'a str,
    /// The id a new template gets (unused when the name exists).
    pub new_template_id: &'a str,
    pub build_id: &'a str,
    pub tags: &'a [String],
    pub cpu_count: Option<i64>,
    pub memory_mb: Option<i64>,
}

impl Store {
    /// Make (or find) `tenant`'s template `name` and add a `waiting` build
    /// to it. The template's CPU and memory are updated when given.
    pub fn e2b_request_build(&self, req: &BuildRequest<'_>) -> Result<(E2bTemplate, E2bBuild)> {
        let now = self.now();
        let mut tx = self.tx()?;
        // The old values are named by table: in PostgreSQL a bare
        // `cpu_count` would be ambiguous next to `excluded.cpu_count`.
        let t = tx.query_one(
            &format!(
                "INSERT INTO e2b_templates (id, tenant, name, cpu_count, memory_mb, created_at, updated_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?6)
                 ON CONFLICT (tenant, name) DO UPDATE SET
                   cpu_count = COALESCE(excluded.cpu_count, e2b_templates.cpu_count),
                   memory_mb = COALESCE(excluded.memory_mb, e2b_templates.memory_mb),
                   updated_at = excluded.updated_at
                 RETURNING {TEMPLATE_COLUMNS}"
            ),
            args![
                req.new_template_id,
                req.tenant,
                req.name,
                req.cpu_count,
                req.memory_mb,
                now
            ],
        )?;
        let t = template_row(&t)?;
        let tags = serde_json::to_string(req.tags).expect("strings serialize");
        let b = tx.query_one(
            &format!(
                "INSERT INTO e2b_builds (id, template_id, status, tags, created_at, updated_at, node)
                 VALUES (?1,?2,?3,?4,?5,?5,?6)
                 RETURNING {BUILD_COLUMNS}"
            ),
            args![req.build_id, t.id, BUILD_WAITING, tags, now, self.node()],
        )?;
        let b = build_row(&b)?;
        tx.commit()?;
        Ok((t, b))
    }

    /// `tenant`'s template whose id or name is `id_or_name` (the id first,
    /// when one template's id is another's name).
    pub fn e2b_template(&self, tenant: &str, id_or_name: &str) -> Result<Option<E2bTemplate>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {TEMPLATE_COLUMNS} FROM e2b_templates
                     WHERE tenant = ?1 AND (id = ?2 OR name = ?2)
                     ORDER BY CASE WHEN id = ?2 THEN 0 ELSE 1 END LIMIT 1"
                ),
                args![tenant, id_or_name],
            )?
            .map(|r| template_row(&r))
            .transpose()
    }

    /// `tenant`'s templates, oldest first.
    pub fn e2b_templates(&self, tenant: &str) -> Result<Vec<E2bTemplate>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {TEMPLATE_COLUMNS} FROM e2b_templates WHERE tenant = ?1 ORDER BY created_at, id"
                ),
                args![tenant],
            )?
            .iter()
            .map(template_row)
            .collect()
    }

    /// Build `build_id` of template `template_id`.
    pub fn e2b_build(&self, template_id: &str, build_id: &str) -> Result<Option<E2bBuild>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE id = ?1 AND template_id = ?2"
                ),
                args![build_id, template_id],
            )?
            .map(|r| build_row(&r))
            .transpose()
    }

    /// Every build of a template, oldest first.
    pub fn e2b_builds(&self, template_id: &str) -> Result<Vec<E2bBuild>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE template_id = ?1 ORDER BY created_at, id"
                ),
                args![template_id],
            )?
            .iter()
            .map(build_row)
            .collect()
    }

    /// Move a `waiting` build to `building` with its step list; false
    /// when it is not waiting (started already).
    pub fn e2b_start_build(&self, build_id: &str, spec: &str) -> Result<bool> {
        let now = self.now();
        let n = self.db()?.execute(
            "UPDATE e2b_builds SET status = ?2, spec = ?3, updated_at = ?4
             WHERE id = ?1 AND status = ?5",
            args![build_id, BUILD_BUILDING, spec, now, BUILD_WAITING],
        )?;
        Ok(n == 1)
    }

    /// Append a log line to a build; returns its sequence number.
    pub fn e2b_log(
        &self,
        build_id: &str,
        level: &str,
        step: Option<&str>,
        message: &str,
    ) -> Result<i64> {
        let now = self.now();
        let mut tx = self.tx()?;
        // The build's row is locked first (an update that changes
        // nothing), so that on PostgreSQL lines written at once by other
        // connections are numbered one after another instead of taking the
        // same number; SQLite has one writer anyway.
        let n = tx.execute(
            "UPDATE e2b_builds SET updated_at = updated_at WHERE id = ?1",
            args![build_id],
        )?;
        if n == 0 {
            return Err(Error::Constraint(format!(
                "no E2B build {build_id} to keep a log line of (was its template deleted?)"
            )));
        }
        let seq = tx
            .query_one(
                "INSERT INTO e2b_build_logs (build_id, seq, at, level, step, message)
                 SELECT ?1, COALESCE(MAX(seq), -1) + 1, ?2, ?3, ?4, ?5
                 FROM e2b_build_logs WHERE build_id = ?1
                 RETURNING seq",
                args![build_id, now, level, step, message],
            )?
            .get(0)?;
        tx.commit()?;
        Ok(seq)
    }

    /// Up to `limit` log lines of a build from the `offset`-th on.
    pub fn e2b_logs(&self, build_id: &str, offset: i64, limit: i64) -> Result<Vec<E2bLogLine>> {
        self.db()?
            .query(
                "SELECT seq, at, level, step, message FROM e2b_build_logs
                 WHERE build_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
                args![build_id, offset, limit],
            )?
            .iter()
            .map(|r| {
                Ok(E2bLogLine {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    level: r.get(2)?,
                    step: r.get(3)?,
                    message: r.get(4)?,
                })
            })
            .collect()
    }

    /// A building build is ready with `image`: its tags now name it.
    pub fn e2b_build_ready(&self, template_id: &str, build_id: &str, image: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.tx()?;
        let tags: String = tx
            .query_opt(
                "SELECT tags FROM e2b_builds WHERE id = ?1 AND template_id = ?2",
                args![build_id, template_id],
            )?
            .ok_or_else(|| {
                Error::Sql(format!(
                    "E2B build {build_id} of template {template_id} is not in the store (was the template deleted while it built?)"
                ))
            })?
            .get(0)?;
        let tags = parse_tags(build_id, &tags)?;
        tx.execute(
            "UPDATE e2b_builds SET status = ?2, image = ?3, updated_at = ?4 WHERE id = ?1",
            args![build_id, BUILD_READY, image, now],
        )?;
        for tag in &tags {
            upsert_tag(&mut *tx, template_id, tag, build_id, now)?;
        }
        tx.execute(
            "UPDATE e2b_templates SET updated_at = ?2 WHERE id = ?1",
            args![template_id, now],
        )?;
        tx.commit()
    }

    /// A build failed (at `step`, when known) for `reason`.
    pub fn e2b_build_failed(&self, build_id: &str, reason: &str, step: Option<&str>) -> Result<()> {
        let now = self.now();
        self.db()?.execute(
            "UPDATE e2b_builds SET status = ?2, reason = ?3, reason_step = ?4, updated_at = ?5
             WHERE id = ?1",
            args![build_id, BUILD_ERROR, reason, step, now],
        )?;
        Ok(())
    }

    /// Builds that were building when the daemon stopped: they are marked
    /// failed (nothing resumes them) and returned.
    pub fn e2b_fail_interrupted_builds(&self, reason: &str) -> Result<Vec<E2bBuild>> {
        let stuck: Vec<E2bBuild> = self
            .db()?
            .query(
                // This node's only: in a cluster, other nodes' builds run on.
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE status = ?1 \
                     AND COALESCE(node, '') = ?2"
                ),
                args![BUILD_BUILDING, self.node().unwrap_or_default()],
            )?
            .iter()
            .map(build_row)
            .collect::<Result<_>>()?;
        for b in &stuck {
            self.e2b_build_failed(&b.id, reason, Some("finalize"))?;
        }
        Ok(stuck)
    }

    /// The ready build the tag names.
    pub fn e2b_tagged_build(&self, template_id: &str, tag: &str) -> Result<Option<E2bBuild>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE template_id = ?1 AND id =
                       (SELECT build_id FROM e2b_template_tags WHERE template_id = ?1 AND tag = ?2)"
                ),
                args![template_id, tag],
            )?
            .map(|r| build_row(&r))
            .transpose()
    }

    /// The newest ready build of a template: the last one made ready, of
    /// those made ready in the same millisecond the last one requested.
    pub fn e2b_latest_ready(&self, template_id: &str) -> Result<Option<E2bBuild>> {
        // Not `rowid` (PostgreSQL has none): `created_at` then `id` break
        // ties of `updated_at`.
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE template_id = ?1 AND status = ?2
                     ORDER BY updated_at DESC, created_at DESC, id DESC LIMIT 1"
                ),
                args![template_id, BUILD_READY],
            )?
            .map(|r| build_row(&r))
            .transpose()
    }

    /// A template's tags, by name.
    pub fn e2b_tags(&self, template_id: &str) -> Result<Vec<E2bTag>> {
        self.db()?
            .query(
                "SELECT tag, build_id, created_at FROM e2b_template_tags
                 WHERE template_id = ?1 ORDER BY tag",
                args![template_id],
            )?
            .iter()
            .map(|r| {
                Ok(E2bTag {
                    tag: r.get(0)?,
                    build_id: r.get(1)?,
                    created_at: r.get(2)?,
                })
            })
            .collect()
    }

    /// Point `tags` of a template at its build `build_id`.
    pub fn e2b_assign_tags(
        &self,
        template_id: &str,
        build_id: &str,
        tags: &[String],
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.tx()?;
        for tag in tags {
            upsert_tag(&mut *tx, template_id, tag, build_id, now)?;
        }
        tx.commit()
    }

    /// Remove `tags` from a template; returns how many it had.
    pub fn e2b_remove_tags(&self, template_id: &str, tags: &[String]) -> Result<usize> {
        let mut tx = self.tx()?;
        let mut n = 0;
        for tag in tags {
            n += tx.execute(
                "DELETE FROM e2b_template_tags WHERE template_id = ?1 AND tag = ?2",
                args![template_id, tag],
            )?;
        }
        tx.commit()?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Delete `tenant`'s template `id` with its builds, logs and tags;
    /// returns its builds (whose images the caller removes), `None` when
    /// the tenant has no such template.
    pub fn e2b_delete_template(&self, tenant: &str, id: &str) -> Result<Option<Vec<E2bBuild>>> {
        let Some(t) = self.e2b_template(tenant, id)? else {
            return Ok(None);
        };
        let builds = self.e2b_builds(&t.id)?;
        self.db()?
            .execute("DELETE FROM e2b_templates WHERE id = ?1", args![t.id])?;
        Ok(Some(builds))
    }

    /// Whether a live sandbox (of any tenant) runs on `image` (by name, or
    /// pinned to a digest: `image@sha256:...`).
    pub fn e2b_image_used_by_sandbox(&self, image: &str) -> Result<bool> {
        // A prefix by `substr`, not `LIKE`: names hold `_`, and LIKE's
        // case differs between the engines.
        let n: i64 = self
            .db()?
            .query_one(
                "SELECT COUNT(*) FROM sandboxes WHERE state != 'deleted'
                 AND (image = ?1 OR substr(image, 1, length(CAST(?1 AS TEXT)) + 1) = CAST(?1 AS TEXT) || '@')",
                args![image],
            )?
            .get(0)?;
        Ok(n > 0)
    }

    /// Whether any template build (of any tenant) made `image`.
    pub fn e2b_image_in_use(&self, image: &str) -> Result<bool> {
        let n: i64 = self
            .db()?
            .query_one(
                "SELECT COUNT(*) FROM e2b_builds WHERE image = ?1",
                args![image],
            )?
            .get(0)?;
        Ok(n > 0)
    }
}

fn upsert_tag(
    c: &mut dyn Conn,
    template_id: &str,
    tag: &str,
    build_id: &str,
    now: i64,
) -> Result<()> {
    c.execute(
        "INSERT INTO e2b_template_tags (template_id, tag, build_id, created_at)
         VALUES (?1,?2,?3,?4)
         ON CONFLICT (template_id, tag) DO UPDATE SET
           build_id = excluded.build_id, created_at = excluded.created_at",
        args![template_id, tag, build_id, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn request<'a>(
        tenant: &'a str,
        name: &'a str,
        tid: &'a str,
        bid: &'a str,
        tags: &'a [String],
    ) -> BuildRequest<'a> {
        BuildRequest {
            tenant,
            name,
            new_template_id: tid,
            build_id: bid,
            tags,
            cpu_count: None,
            memory_mb: None,
        }
    }

    /// Each engine's store on a clock the test moves.
    fn clocked_stores() -> Vec<(Store, Arc<AtomicI64>)> {
        crate::testing::stores()
            .into_iter()
            .map(|s| {
                let clock = Arc::new(AtomicI64::new(1_000));
                let c = clock.clone();
                (s.with_clock(move || c.load(Ordering::SeqCst)), clock)
            })
            .collect()
    }

    /// A sandbox row on `image` in `state`, as the sandboxes module writes
    /// it.
    fn sandbox(s: &Store, id: &str, image: &str, state: &str) {
        s.db()
            .unwrap()
            .execute(
                "INSERT INTO sandboxes (id, name, tenant, image, mode, runtime, spec, state,
                 desired_state, created_at, updated_at, state_changed_at)
                 VALUES (?1,?1,'a',?2,'persistent','ns','{}',?3,?3,0,0,0)",
                args![id, image, state],
            )
            .unwrap();
    }

    #[test]
    fn templates_builds_tags_and_logs() {
        for s in crate::testing::stores() {
            templates_builds_tags_and_logs_on(&s);
        }
    }

    fn templates_builds_tags_and_logs_on(s: &Store) {
        let e = s.engine();
        let tags = vec!["default".to_string()];
        let (t, b) = s
            .e2b_request_build(&request("a", "py", "t1", "b1", &tags))
            .unwrap();
        assert_eq!(
            (t.id.as_str(), b.status.as_str()),
            ("t1", BUILD_WAITING),
            "{e}"
        );
        assert_eq!(b.tags, tags, "{e}");
        // The same name reuses the template; another tenant gets its own.
        let (t2, _) = s
            .e2b_request_build(&request("a", "py", "tX", "b2", &tags))
            .unwrap();
        assert_eq!(t2.id, "t1", "{e}");
        let (t3, _) = s
            .e2b_request_build(&request("b", "py", "t3", "b3", &tags))
            .unwrap();
        assert_eq!(t3.id, "t3", "{e}");
        assert!(
            s.e2b_template("b", "t1").unwrap().is_none(),
            "{e}: tenants are apart"
        );
        assert_eq!(s.e2b_template("a", "py").unwrap().unwrap().id, "t1", "{e}");

        assert!(s.e2b_start_build("b1", "{}").unwrap(), "{e}");
        assert!(!s.e2b_start_build("b1", "{}").unwrap(), "{e}: starts once");
        assert_eq!(s.e2b_log("b1", "info", Some("1"), "one").unwrap(), 0, "{e}");
        assert_eq!(s.e2b_log("b1", "info", None, "two").unwrap(), 1, "{e}");
        let logs = s.e2b_logs("b1", 1, 100).unwrap();
        assert_eq!(logs.len(), 1, "{e}");
        assert_eq!(
            (logs[0].message.as_str(), logs[0].step.as_deref()),
            ("two", None),
            "{e}"
        );

        assert!(
            s.e2b_tagged_build("t1", "default").unwrap().is_none(),
            "{e}"
        );
        s.e2b_build_ready("t1", "b1", "img:1").unwrap();
        let tagged = s.e2b_tagged_build("t1", "default").unwrap().unwrap();
        assert_eq!(
            (tagged.id.as_str(), tagged.image.as_deref()),
            ("b1", Some("img:1")),
            "{e}"
        );
        assert!(
            s.e2b_tagged_build("t3", "default").unwrap().is_none(),
            "{e}: a tag is the template's own"
        );
        assert_eq!(s.e2b_latest_ready("t1").unwrap().unwrap().id, "b1", "{e}");
        assert!(s.e2b_image_in_use("img:1").unwrap(), "{e}");
        assert!(!s.e2b_image_in_use("img:2").unwrap(), "{e}");
        assert!(!s.e2b_image_used_by_sandbox("img:1").unwrap(), "{e}");
        sandbox(s, "s1", "img:1@sha256:00", "running");
        assert!(
            s.e2b_image_used_by_sandbox("img:1").unwrap(),
            "{e}: pinned by digest"
        );
        assert!(!s.e2b_image_used_by_sandbox("img").unwrap(), "{e}");

        s.e2b_assign_tags("t1", "b1", &["prod".into()]).unwrap();
        assert_eq!(s.e2b_tags("t1").unwrap().len(), 2, "{e}");
        assert_eq!(
            s.e2b_remove_tags("t1", &["prod".into(), "nope".into()])
                .unwrap(),
            1,
            "{e}"
        );

        assert!(s.e2b_start_build("b2", "{}").unwrap(), "{e}");
        let stuck = s.e2b_fail_interrupted_builds("restarted").unwrap();
        assert_eq!(stuck.len(), 1, "{e}");
        let b2 = s.e2b_build("t1", "b2").unwrap().unwrap();
        assert_eq!(b2.status, BUILD_ERROR, "{e}");
        assert_eq!(
            (b2.reason.as_deref(), b2.reason_step.as_deref()),
            (Some("restarted"), Some("finalize")),
            "{e}"
        );
        assert!(
            s.e2b_fail_interrupted_builds("again").unwrap().is_empty(),
            "{e}"
        );

        assert!(s.e2b_delete_template("b", "t1").unwrap().is_none(), "{e}");
        let builds = s.e2b_delete_template("a", "py").unwrap().unwrap();
        assert_eq!(builds.len(), 2, "{e}");
        assert!(
            s.e2b_logs("b1", 0, 100).unwrap().is_empty(),
            "{e}: logs go with it"
        );
        assert!(s.e2b_tags("t1").unwrap().is_empty(), "{e}: tags too");
        assert!(s.e2b_build("t1", "b1").unwrap().is_none(), "{e}");
        assert!(s.e2b_template("a", "t1").unwrap().is_none(), "{e}");
        assert!(s.e2b_template("b", "t3").unwrap().is_some(), "{e}");
    }

    #[test]
    fn a_new_request_keeps_sizes_it_does_not_give() {
        for (s, clock) in clocked_stores() {
            let e = s.engine();
            let mut req = request("a", "py", "t1", "b1", &[]);
            req.cpu_count = Some(2);
            req.memory_mb = Some(512);
            let (t, _) = s.e2b_request_build(&req).unwrap();
            assert_eq!(
                (t.cpu_count, t.memory_mb, t.created_at, t.updated_at),
                (Some(2), Some(512), 1_000, 1_000),
                "{e}"
            );
            clock.store(2_000, Ordering::SeqCst);
            let mut req = request("a", "py", "tX", "b2", &[]);
            req.memory_mb = Some(1024);
            let (t, b) = s.e2b_request_build(&req).unwrap();
            assert_eq!(
                (t.id.as_str(), t.cpu_count, t.memory_mb),
                ("t1", Some(2), Some(1024)),
                "{e}: the CPU kept, the memory replaced"
            );
            assert_eq!((t.created_at, t.updated_at), (1_000, 2_000), "{e}");
            assert_eq!((b.template_id.as_str(), b.created_at), ("t1", 2_000), "{e}");
            assert_eq!(s.e2b_template("a", "t1").unwrap(), Some(t), "{e}");
        }
    }

    #[test]
    fn a_taken_build_id_adds_nothing() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.e2b_request_build(&request("a", "py", "t1", "b1", &[]))
                .unwrap();
            let err = s
                .e2b_request_build(&request("a", "js", "t2", "b1", &[]))
                .unwrap_err();
            assert!(matches!(err, Error::Constraint(_)), "{e}: {err}");
            // The transaction took the new template back with it.
            assert!(s.e2b_template("a", "js").unwrap().is_none(), "{e}");
            assert_eq!(s.e2b_templates("a").unwrap().len(), 1, "{e}");
        }
    }

    #[test]
    fn ids_win_over_names_and_templates_list_oldest_first() {
        for (s, clock) in clocked_stores() {
            let e = s.engine();
            // Template "t2" is named "t1": asked for "t1", the id wins.
            clock.store(3_000, Ordering::SeqCst);
            s.e2b_request_build(&request("a", "t1", "t2", "b1", &[]))
                .unwrap();
            clock.store(2_000, Ordering::SeqCst);
            s.e2b_request_build(&request("a", "other", "t1", "b2", &[]))
                .unwrap();
            assert_eq!(s.e2b_template("a", "t1").unwrap().unwrap().id, "t1", "{e}");
            assert_eq!(
                s.e2b_template("a", "other").unwrap().unwrap().id,
                "t1",
                "{e}"
            );
            s.e2b_delete_template("a", "t1").unwrap().unwrap();
            assert_eq!(
                s.e2b_template("a", "t1").unwrap().unwrap().id,
                "t2",
                "{e}: then by name"
            );
            clock.store(2_000, Ordering::SeqCst);
            s.e2b_request_build(&request("a", "x", "t0", "b3", &[]))
                .unwrap();
            let ids: Vec<_> = s
                .e2b_templates("a")
                .unwrap()
                .into_iter()
                .map(|t| t.id)
                .collect();
            assert_eq!(ids, ["t0", "t2"], "{e}");
            assert!(s.e2b_templates("b").unwrap().is_empty(), "{e}");
        }
    }

    #[test]
    fn latest_ready_is_the_last_made_ready() {
        for (s, clock) in clocked_stores() {
            let e = s.engine();
            let tags = vec!["default".to_string()];
            for (i, b) in ["b1", "b2", "b3"].iter().enumerate() {
                clock.store(1_000 + i as i64, Ordering::SeqCst);
                s.e2b_request_build(&request("a", "py", "t1", b, &tags))
                    .unwrap();
            }
            assert!(s.e2b_latest_ready("t1").unwrap().is_none(), "{e}");
            clock.store(5_000, Ordering::SeqCst);
            s.e2b_build_ready("t1", "b2", "img:2").unwrap();
            clock.store(6_000, Ordering::SeqCst);
            s.e2b_build_ready("t1", "b1", "img:1").unwrap();
            let latest = s.e2b_latest_ready("t1").unwrap().unwrap();
            assert_eq!(latest.id, "b1", "{e}: by when it got ready");
            assert_eq!(
                s.e2b_tagged_build("t1", "default").unwrap().unwrap().id,
                "b1",
                "{e}: the tag moved"
            );
            let tag = &s.e2b_tags("t1").unwrap()[0];
            assert_eq!(
                (tag.build_id.as_str(), tag.created_at),
                ("b1", 6_000),
                "{e}"
            );
            // Ready in the same millisecond: the one requested last.
            s.e2b_build_ready("t1", "b3", "img:3").unwrap();
            assert_eq!(s.e2b_latest_ready("t1").unwrap().unwrap().id, "b3", "{e}");
            // A failed build is never the latest ready one.
            clock.store(7_000, Ordering::SeqCst);
            s.e2b_build_failed("b1", "no", None).unwrap();
            s.e2b_build_failed("b3", "no", Some("2")).unwrap();
            assert_eq!(s.e2b_latest_ready("t1").unwrap().unwrap().id, "b2", "{e}");
            assert_eq!(
                s.e2b_template("a", "t1").unwrap().unwrap().updated_at,
                6_000,
                "{e}: readiness touches the template"
            );
            let ids: Vec<_> = s
                .e2b_builds("t1")
                .unwrap()
                .into_iter()
                .map(|b| b.id)
                .collect();
            assert_eq!(ids, ["b1", "b2", "b3"], "{e}: oldest first");
        }
    }

    #[test]
    fn readiness_of_an_unknown_build_is_refused_and_changes_nothing() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let tags = vec!["default".to_string()];
            s.e2b_request_build(&request("a", "py", "t1", "b1", &tags))
                .unwrap();
            s.e2b_request_build(&request("a", "js", "t2", "b2", &tags))
                .unwrap();
            let err = s.e2b_build_ready("t1", "b2", "img").unwrap_err();
            assert!(err.to_string().contains("b2"), "{e}: {err}");
            assert!(
                s.e2b_build("t2", "b2").unwrap().unwrap().image.is_none(),
                "{e}"
            );
            assert!(s.e2b_tags("t1").unwrap().is_empty(), "{e}");
            // Tags may only name builds that exist.
            let err = s.e2b_assign_tags("t1", "nope", &["x".into()]).unwrap_err();
            assert!(matches!(err, Error::Constraint(_)), "{e}: {err}");
        }
    }

    #[test]
    fn log_lines_are_numbered_per_build() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.e2b_request_build(&request("a", "py", "t1", "b1", &[]))
                .unwrap();
            s.e2b_request_build(&request("a", "py", "t1", "b2", &[]))
                .unwrap();
            for i in 0..5 {
                assert_eq!(
                    s.e2b_log("b1", "info", None, &format!("l{i}")).unwrap(),
                    i,
                    "{e}"
                );
            }
            assert_eq!(
                s.e2b_log("b2", "warn", Some("base"), "x").unwrap(),
                0,
                "{e}"
            );
            let lines = s.e2b_logs("b1", 1, 2).unwrap();
            let got: Vec<_> = lines.iter().map(|l| (l.seq, l.message.as_str())).collect();
            assert_eq!(got, [(1, "l1"), (2, "l2")], "{e}: offset and limit");
            let b2 = s.e2b_logs("b2", 0, 10).unwrap();
            assert_eq!(
                (b2.len(), b2[0].level.as_str(), b2[0].step.as_deref()),
                (1, "warn", Some("base")),
                "{e}"
            );
            assert!(s.e2b_logs("b1", 5, 10).unwrap().is_empty(), "{e}");
            let err = s.e2b_log("gone", "info", None, "x").unwrap_err();
            assert!(matches!(err, Error::Constraint(_)), "{e}: {err}");
        }
    }

    #[test]
    fn log_lines_written_at_once_get_numbers_of_their_own() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.e2b_request_build(&request("a", "py", "t1", "b1", &[]))
                .unwrap();
            let mut seqs: Vec<i64> = std::thread::scope(|sc| {
                let hs: Vec<_> = (0..4)
                    .map(|t| {
                        let s = &s;
                        sc.spawn(move || {
                            (0..10)
                                .map(|i| {
                                    s.e2b_log("b1", "info", None, &format!("{t}/{i}")).unwrap()
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            seqs.sort();
            assert_eq!(seqs, (0..40).collect::<Vec<i64>>(), "{e}");
        }
    }

    #[test]
    fn deleted_sandboxes_and_lookalike_images_do_not_hold_an_image() {
        for s in crate::testing::stores() {
            let e = s.engine();
            sandbox(&s, "s1", "my_img:1", "deleted");
            sandbox(&s, "s2", "my_img:10", "running");
            sandbox(&s, "s3", "MY_IMG:1@sha256:00", "running");
            assert!(!s.e2b_image_used_by_sandbox("my_img:1").unwrap(), "{e}");
            assert!(!s.e2b_image_used_by_sandbox("my%img:1").unwrap(), "{e}");
            assert!(s.e2b_image_used_by_sandbox("my_img:10").unwrap(), "{e}");
            assert!(s.e2b_image_used_by_sandbox("MY_IMG:1").unwrap(), "{e}");
        }
    }

    #[test]
    fn removing_tags_counts_those_it_had() {
        for s in crate::testing::stores() {
            let e = s.engine();
            s.e2b_request_build(&request("a", "py", "t1", "b1", &[]))
                .unwrap();
            s.e2b_assign_tags("t1", "b1", &["a".into(), "b".into(), "c".into()])
                .unwrap();
            let names: Vec<_> = s
                .e2b_tags("t1")
                .unwrap()
                .into_iter()
                .map(|t| t.tag)
                .collect();
            assert_eq!(names, ["a", "b", "c"], "{e}");
            assert_eq!(s.e2b_remove_tags("t1", &[]).unwrap(), 0, "{e}");
            assert_eq!(
                s.e2b_remove_tags("t1", &["c".into(), "a".into(), "z".into()])
                    .unwrap(),
                2,
                "{e}"
            );
            assert_eq!(s.e2b_tags("t1").unwrap()[0].tag, "b", "{e}");
        }
    }

    /// Two nodes on one database: a restarted node fails only the builds
    /// it was running, not another node's.
    #[test]
    fn a_node_fails_only_its_own_interrupted_builds() {
        let Some(pg) = dwell_testkit::postgres::Postgres::shared() else {
            return;
        };
        let url = pg.database("e2bnodes");
        let (n1, n2) = (
            Store::postgres(&url).unwrap(),
            Store::postgres(&url).unwrap(),
        );
        n1.set_node("n1");
        n2.set_node("n2");
        let tags = ["default".to_string()];
        n1.e2b_request_build(&request("a", "py", "t1", "b1", &tags))
            .unwrap();
        assert!(n1.e2b_start_build("b1", "{}").unwrap());
        assert!(n2
            .e2b_fail_interrupted_builds("restarted")
            .unwrap()
            .is_empty());
        assert_eq!(
            n1.e2b_fail_interrupted_builds("restarted").unwrap().len(),
            1
        );
    }
}
