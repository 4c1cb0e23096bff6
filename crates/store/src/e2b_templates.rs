//! E2B templates (the E2B layer's Template SDK builds): a template is a
//! tenant's name for a line of builds; each build records its status
//! (`waiting` for its step list, `building`, `ready`, `error`), the step
//! list it was started with, the image it made, why it failed, and its log
//! lines; tags name one ready build of a template each. Another tenant's
//! template is never returned: every lookup by name or id takes the tenant.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Error, Result, Store};

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

fn template_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<E2bTemplate> {
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

fn build_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(E2bBuild, String)> {
    Ok((
        E2bBuild {
            id: r.get(0)?,
            template_id: r.get(1)?,
            status: r.get(2)?,
            tags: Vec::new(),
            spec: r.get(4)?,
            image: r.get(5)?,
            reason: r.get(6)?,
            reason_step: r.get(7)?,
            created_at: r.get(8)?,
            updated_at: r.get(9)?,
        },
        r.get(3)?,
    ))
}

fn parse_build((mut b, tags): (E2bBuild, String)) -> Result<E2bBuild> {
    b.tags = serde_json::from_str(&tags)
        .map_err(|e| Error::Corrupt(format!("tags of E2B build {}: {e}", b.id)))?;
    Ok(b)
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
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO e2b_templates (id, tenant, name, cpu_count, memory_mb, created_at, updated_at)
             VALUES (?1,?2,?3,?4,?5,?6,?6)
             ON CONFLICT (tenant, name) DO UPDATE SET
               cpu_count = COALESCE(excluded.cpu_count, cpu_count),
               memory_mb = COALESCE(excluded.memory_mb, memory_mb),
               updated_at = excluded.updated_at",
            params![
                req.new_template_id,
                req.tenant,
                req.name,
                req.cpu_count,
                req.memory_mb,
                now
            ],
        )?;
        let t = tx.query_row(
            &format!(
                "SELECT {TEMPLATE_COLUMNS} FROM e2b_templates WHERE tenant = ?1 AND name = ?2"
            ),
            params![req.tenant, req.name],
            template_row,
        )?;
        let tags = serde_json::to_string(req.tags).expect("strings serialize");
        tx.execute(
            "INSERT INTO e2b_builds (id, template_id, status, tags, created_at, updated_at)
             VALUES (?1,?2,?3,?4,?5,?5)",
            params![req.build_id, t.id, BUILD_WAITING, tags, now],
        )?;
        tx.commit()?;
        drop(conn);
        let b = self
            .e2b_build(&t.id, req.build_id)?
            .ok_or_else(|| Error::Corrupt(format!("E2B build {} vanished", req.build_id)))?;
        Ok((t, b))
    }

    /// `tenant`'s template whose id or name is `id_or_name`.
    pub fn e2b_template(&self, tenant: &str, id_or_name: &str) -> Result<Option<E2bTemplate>> {
        let conn = self.conn();
        Ok(conn
            .query_row(
                &format!(
                    "SELECT {TEMPLATE_COLUMNS} FROM e2b_templates
                     WHERE tenant = ?1 AND (id = ?2 OR name = ?2) ORDER BY id = ?2 DESC LIMIT 1"
                ),
                params![tenant, id_or_name],
                template_row,
            )
            .optional()?)
    }

    /// `tenant`'s templates, oldest first.
    pub fn e2b_templates(&self, tenant: &str) -> Result<Vec<E2bTemplate>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {TEMPLATE_COLUMNS} FROM e2b_templates WHERE tenant = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([tenant], template_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Build `build_id` of template `template_id`.
    pub fn e2b_build(&self, template_id: &str, build_id: &str) -> Result<Option<E2bBuild>> {
        let conn = self.conn();
        conn.query_row(
            &format!("SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE id = ?1 AND template_id = ?2"),
            params![build_id, template_id],
            build_row,
        )
        .optional()?
        .map(parse_build)
        .transpose()
    }

    /// Every build of a template, oldest first.
    pub fn e2b_builds(&self, template_id: &str) -> Result<Vec<E2bBuild>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE template_id = ?1 ORDER BY created_at, id"
        ))?;
        let rows = stmt.query_map([template_id], build_row)?;
        rows.map(|r| parse_build(r?)).collect()
    }

    /// Move a `waiting` build to `building` with its step list; false
    /// when it is not waiting (started already).
    pub fn e2b_start_build(&self, build_id: &str, spec: &str) -> Result<bool> {
        let now = self.now();
        let n = self.conn().execute(
            "UPDATE e2b_builds SET status = ?2, spec = ?3, updated_at = ?4
             WHERE id = ?1 AND status = ?5",
            params![build_id, BUILD_BUILDING, spec, now, BUILD_WAITING],
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
        let conn = self.conn();
        let seq: i64 = conn.query_row(
            "SELECT COALESCE(MAX(seq), -1) + 1 FROM e2b_build_logs WHERE build_id = ?1",
            [build_id],
            |r| r.get(0),
        )?;
        conn.execute(
            "INSERT INTO e2b_build_logs (build_id, seq, at, level, step, message)
             VALUES (?1,?2,?3,?4,?5,?6)",
            params![build_id, seq, now, level, step, message],
        )?;
        Ok(seq)
    }

    /// Up to `limit` log lines of a build from the `offset`-th on.
    pub fn e2b_logs(&self, build_id: &str, offset: i64, limit: i64) -> Result<Vec<E2bLogLine>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT seq, at, level, step, message FROM e2b_build_logs
             WHERE build_id = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![build_id, offset, limit], |r| {
            Ok(E2bLogLine {
                seq: r.get(0)?,
                at: r.get(1)?,
                level: r.get(2)?,
                step: r.get(3)?,
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A building build is ready with `image`: its tags now name it.
    pub fn e2b_build_ready(&self, template_id: &str, build_id: &str, image: &str) -> Result<()> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let tags: String = tx.query_row(
            "SELECT tags FROM e2b_builds WHERE id = ?1 AND template_id = ?2",
            params![build_id, template_id],
            |r| r.get(0),
        )?;
        let tags: Vec<String> = serde_json::from_str(&tags)
            .map_err(|e| Error::Corrupt(format!("tags of E2B build {build_id}: {e}")))?;
        tx.execute(
            "UPDATE e2b_builds SET status = ?2, image = ?3, updated_at = ?4 WHERE id = ?1",
            params![build_id, BUILD_READY, image, now],
        )?;
        for tag in &tags {
            upsert_tag(&tx, template_id, tag, build_id, now)?;
        }
        tx.execute(
            "UPDATE e2b_templates SET updated_at = ?2 WHERE id = ?1",
            params![template_id, now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// A build failed (at `step`, when known) for `reason`.
    pub fn e2b_build_failed(&self, build_id: &str, reason: &str, step: Option<&str>) -> Result<()> {
        let now = self.now();
        self.conn().execute(
            "UPDATE e2b_builds SET status = ?2, reason = ?3, reason_step = ?4, updated_at = ?5
             WHERE id = ?1",
            params![build_id, BUILD_ERROR, reason, step, now],
        )?;
        Ok(())
    }

    /// Builds that were building when the daemon stopped: they are marked
    /// failed (nothing resumes them) and returned.
    pub fn e2b_fail_interrupted_builds(&self, reason: &str) -> Result<Vec<E2bBuild>> {
        let stuck: Vec<E2bBuild> = {
            let conn = self.conn();
            let mut stmt = conn.prepare(&format!(
                "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE status = ?1"
            ))?;
            let rows = stmt.query_map([BUILD_BUILDING], build_row)?;
            rows.map(|r| parse_build(r?)).collect::<Result<_>>()?
        };
        for b in &stuck {
            self.e2b_build_failed(&b.id, reason, Some("finalize"))?;
        }
        Ok(stuck)
    }

    /// The ready build the tag names.
    pub fn e2b_tagged_build(&self, template_id: &str, tag: &str) -> Result<Option<E2bBuild>> {
        let id: Option<String> = self
            .conn()
            .query_row(
                "SELECT build_id FROM e2b_template_tags WHERE template_id = ?1 AND tag = ?2",
                params![template_id, tag],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.e2b_build(template_id, &id),
            None => Ok(None),
        }
    }

    /// The newest ready build of a template.
    pub fn e2b_latest_ready(&self, template_id: &str) -> Result<Option<E2bBuild>> {
        let conn = self.conn();
        conn.query_row(
            &format!(
                "SELECT {BUILD_COLUMNS} FROM e2b_builds WHERE template_id = ?1 AND status = ?2
                 ORDER BY updated_at DESC, rowid DESC LIMIT 1"
            ),
            params![template_id, BUILD_READY],
            build_row,
        )
        .optional()?
        .map(parse_build)
        .transpose()
    }

    /// A template's tags, by name.
    pub fn e2b_tags(&self, template_id: &str) -> Result<Vec<E2bTag>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT tag, build_id, created_at FROM e2b_template_tags
             WHERE template_id = ?1 ORDER BY tag",
        )?;
        let rows = stmt.query_map([template_id], |r| {
            Ok(E2bTag {
                tag: r.get(0)?,
                build_id: r.get(1)?,
                created_at: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Point `tags` of a template at its build `build_id`.
    pub fn e2b_assign_tags(
        &self,
        template_id: &str,
        build_id: &str,
        tags: &[String],
    ) -> Result<()> {
        let now = self.now();
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for tag in tags {
            upsert_tag(&tx, template_id, tag, build_id, now)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Remove `tags` from a template; returns how many it had.
    pub fn e2b_remove_tags(&self, template_id: &str, tags: &[String]) -> Result<usize> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut n = 0;
        for tag in tags {
            n += tx.execute(
                "DELETE FROM e2b_template_tags WHERE template_id = ?1 AND tag = ?2",
                params![template_id, tag],
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Delete `tenant`'s template `id` with its builds, logs and tags;
    /// returns its builds (whose images the caller removes), `None` when
    /// the tenant has no such template.
    pub fn e2b_delete_template(&self, tenant: &str, id: &str) -> Result<Option<Vec<E2bBuild>>> {
        let Some(t) = self.e2b_template(tenant, id)? else {
            return Ok(None);
        };
        let builds = self.e2b_builds(&t.id)?;
        self.conn()
            .execute("DELETE FROM e2b_templates WHERE id = ?1", [&t.id])?;
        Ok(Some(builds))
    }

    /// Whether a live sandbox (of any tenant) runs on `image` (by name, or
    /// pinned to a digest: `image@sha256:...`).
    pub fn e2b_image_used_by_sandbox(&self, image: &str) -> Result<bool> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM sandboxes WHERE state != 'deleted'
             AND (image = ?1 OR substr(image, 1, length(?1) + 1) = ?1 || '@')",
            [image],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Whether any template build (of any tenant) made `image`.
    pub fn e2b_image_in_use(&self, image: &str) -> Result<bool> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM e2b_builds WHERE image = ?1",
            [image],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }
}

fn upsert_tag(
    tx: &rusqlite::Transaction<'_>,
    template_id: &str,
    tag: &str,
    build_id: &str,
    now: i64,
) -> Result<()> {
    tx.execute(
        "INSERT INTO e2b_template_tags (template_id, tag, build_id, created_at)
         VALUES (?1,?2,?3,?4)
         ON CONFLICT (template_id, tag) DO UPDATE SET
           build_id = excluded.build_id, created_at = excluded.created_at",
        params![template_id, tag, build_id, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn templates_builds_tags_and_logs() {
        let s = Store::in_memory().unwrap();
        let tags = vec!["default".to_string()];
        let (t, b) = s
            .e2b_request_build(&request("a", "py", "t1", "b1", &tags))
            .unwrap();
        assert_eq!((t.id.as_str(), b.status.as_str()), ("t1", BUILD_WAITING));
        // The same name reuses the template; another tenant gets its own.
        let (t2, _) = s
            .e2b_request_build(&request("a", "py", "tX", "b2", &tags))
            .unwrap();
        assert_eq!(t2.id, "t1");
        let (t3, _) = s
            .e2b_request_build(&request("b", "py", "t3", "b3", &tags))
            .unwrap();
        assert_eq!(t3.id, "t3");
        assert!(
            s.e2b_template("b", "t1").unwrap().is_none(),
            "tenants are apart"
        );
        assert_eq!(s.e2b_template("a", "py").unwrap().unwrap().id, "t1");

        assert!(s.e2b_start_build("b1", "{}").unwrap());
        assert!(!s.e2b_start_build("b1", "{}").unwrap(), "starts once");
        assert_eq!(s.e2b_log("b1", "info", Some("1"), "one").unwrap(), 0);
        assert_eq!(s.e2b_log("b1", "info", None, "two").unwrap(), 1);
        let logs = s.e2b_logs("b1", 1, 100).unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].message, "two");

        assert!(s.e2b_tagged_build("t1", "default").unwrap().is_none());
        s.e2b_build_ready("t1", "b1", "img:1").unwrap();
        let tagged = s.e2b_tagged_build("t1", "default").unwrap().unwrap();
        assert_eq!(
            (tagged.id.as_str(), tagged.image.as_deref()),
            ("b1", Some("img:1"))
        );
        assert_eq!(s.e2b_latest_ready("t1").unwrap().unwrap().id, "b1");
        assert!(s.e2b_image_in_use("img:1").unwrap());
        assert!(!s.e2b_image_used_by_sandbox("img:1").unwrap());
        s.conn()
            .execute(
                "INSERT INTO sandboxes (id, name, tenant, image, mode, runtime, spec, state,
                 desired_state, created_at, updated_at, state_changed_at)
                 VALUES ('s1','s1','a','img:1@sha256:00','persistent','ns','{}','running','running',0,0,0)",
                [],
            )
            .unwrap();
        assert!(
            s.e2b_image_used_by_sandbox("img:1").unwrap(),
            "pinned by digest"
        );
        assert!(!s.e2b_image_used_by_sandbox("img").unwrap());

        s.e2b_assign_tags("t1", "b1", &["prod".into()]).unwrap();
        assert_eq!(s.e2b_tags("t1").unwrap().len(), 2);
        assert_eq!(
            s.e2b_remove_tags("t1", &["prod".into(), "nope".into()])
                .unwrap(),
            1
        );

        assert!(s.e2b_start_build("b2", "{}").unwrap());
        let stuck = s.e2b_fail_interrupted_builds("restarted").unwrap();
        assert_eq!(stuck.len(), 1);
        let b2 = s.e2b_build("t1", "b2").unwrap().unwrap();
        assert_eq!(b2.status, BUILD_ERROR);

        assert!(s.e2b_delete_template("b", "t1").unwrap().is_none());
        let builds = s.e2b_delete_template("a", "py").unwrap().unwrap();
        assert_eq!(builds.len(), 2);
        assert!(
            s.e2b_logs("b1", 0, 100).unwrap().is_empty(),
            "logs go with it"
        );
        assert!(s.e2b_template("a", "t1").unwrap().is_none());
    }
}
