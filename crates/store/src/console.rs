//! The web console's one-time login tokens and sessions. Only the SHA-256
//! of each secret is stored. A login token is spent by the first request
//! that shows it (one conditional update, so two racing requests cannot
//! both spend it); a session ends at its absolute expiry, after `idle_ms`
//! without a request, or when revoked (its row stays, so that a revoked
//! cookie is refused with a message that says so).

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

/// Who a login token or session acts as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginGrant {
    pub tenant: String,
    pub admin: bool,
    /// The API key that made it, or `local` (the daemon's unix socket).
    pub key_id: String,
}

/// Why a login token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginRefusal {
    Unknown,
    Used,
    Expired,
}

/// A console session, as listed: never its secret or hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleSession {
    pub id: String,
    #[serde(flatten)]
    pub grant: LoginGrant,
    /// The token every state-changing request of the session must carry.
    pub csrf: String,
    pub created_at: i64,
    /// Absolute end (Unix ms).
    pub expires_at: i64,
    /// It also ends after this long without a request.
    pub idle_ms: i64,
    pub last_seen_at: i64,
    pub revoked_at: Option<i64>,
    pub user_agent: String,
}

impl ConsoleSession {
    /// When it ends if no request comes first.
    pub fn ends_at(&self) -> i64 {
        self.expires_at.min(self.last_seen_at + self.idle_ms)
    }
}

/// What a session cookie turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLookup {
    Valid(ConsoleSession),
    Revoked,
    Expired,
    Unknown,
}

/// Live sessions one key (of one tenant) may hold; a login past it ends the
/// oldest.
pub const MAX_SESSIONS_PER_KEY: i64 = 50;

/// `last_seen_at` is written at most this often per session.
pub const SEEN_GRAIN_MS: i64 = 30_000;

/// Rows of ended tokens and sessions are kept this long (so a late request
/// hears "expired" or "revoked" rather than "unknown"), then deleted.
pub const KEEP_ENDED_MS: i64 = 7 * 86_400_000;

const SESSION_COLUMNS: &str = "id, tenant, admin, key_id, csrf, created_at, expires_at, idle_ms, \
                               last_seen_at, revoked_at, user_agent";

fn session_from_row(r: &Row) -> Result<ConsoleSession> {
    Ok(ConsoleSession {
        id: r.get(0)?,
        grant: LoginGrant {
            tenant: r.get(1)?,
            admin: r.get(2)?,
            key_id: r.get(3)?,
        },
        csrf: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        idle_ms: r.get(7)?,
        last_seen_at: r.get(8)?,
        revoked_at: r.get(9)?,
        user_agent: r.get(10)?,
    })
}

impl Store {
    /// Keeps a one-time login token (by `hash`) valid for `ttl_ms`.
    pub fn insert_console_login(&self, hash: &str, grant: &LoginGrant, ttl_ms: i64) -> Result<()> {
        let now = self.now();
        let mut db = self.db()?;
        db.execute(
            "DELETE FROM console_logins WHERE expires_at < ?1",
            args![now - KEEP_ENDED_MS],
        )?;
        db.execute(
            "INSERT INTO console_logins (hash, tenant, admin, key_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            args![
                hash,
                grant.tenant,
                grant.admin,
                grant.key_id,
                now,
                now + ttl_ms
            ],
        )?;
        Ok(())
    }

    /// Spends the login token `hash`: its grant, or why not. Only one
    /// caller ever gets the grant.
    pub fn take_console_login(
        &self,
        hash: &str,
    ) -> Result<std::result::Result<LoginGrant, LoginRefusal>> {
        let now = self.now();
        let mut db = self.db()?;
        let spent = db.execute(
            "UPDATE console_logins SET used_at = ?2 \
             WHERE hash = ?1 AND used_at IS NULL AND expires_at > ?2",
            args![hash, now],
        )?;
        let Some(row) = db.query_opt(
            "SELECT tenant, admin, key_id, used_at, expires_at FROM console_logins WHERE hash = ?1",
            args![hash],
        )?
        else {
            return Ok(Err(LoginRefusal::Unknown));
        };
        if spent == 1 {
            return Ok(Ok(LoginGrant {
                tenant: row.get(0)?,
                admin: row.get(1)?,
                key_id: row.get(2)?,
            }));
        }
        let used: Option<i64> = row.get(3)?;
        Ok(Err(if used.is_some() {
            LoginRefusal::Used
        } else {
            LoginRefusal::Expired
        }))
    }

    /// Starts a session (`hash` of its cookie secret).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_console_session(
        &self,
        id: &str,
        hash: &str,
        csrf: &str,
        grant: &LoginGrant,
        ttl_ms: i64,
        idle_ms: i64,
        user_agent: &str,
    ) -> Result<ConsoleSession> {
        let now = self.now();
        let mut db = self.db()?;
        db.execute(
            "DELETE FROM console_sessions WHERE expires_at < ?1",
            args![now - KEEP_ENDED_MS],
        )?;
        // A key opens at most MAX_SESSIONS_PER_KEY live sessions: the
        // oldest beyond that are revoked (a loop of logins cannot fill the
        // store).
        db.execute(
            "UPDATE console_sessions SET revoked_at = ?3 WHERE id IN ( \
               SELECT id FROM console_sessions \
               WHERE tenant = ?1 AND key_id = ?2 AND revoked_at IS NULL AND expires_at > ?3 \
               ORDER BY created_at DESC, id DESC LIMIT 1000000 OFFSET ?4)",
            args![grant.tenant, grant.key_id, now, MAX_SESSIONS_PER_KEY - 1],
        )?;
        db.execute(
            "INSERT INTO console_sessions (id, hash, csrf, tenant, admin, key_id, created_at, \
             expires_at, idle_ms, last_seen_at, user_agent) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?7, ?10)",
            args![
                id,
                hash,
                csrf,
                grant.tenant,
                grant.admin,
                grant.key_id,
                now,
                now + ttl_ms,
                idle_ms,
                user_agent
            ],
        )?;
        Ok(ConsoleSession {
            id: id.into(),
            grant: grant.clone(),
            csrf: csrf.into(),
            created_at: now,
            expires_at: now + ttl_ms,
            idle_ms,
            last_seen_at: now,
            revoked_at: None,
            user_agent: user_agent.into(),
        })
    }

    /// The session whose cookie secret hashes to `hash`, if it is live.
    /// (A request it passes marks it seen: [`Store::touch_console_session`].)
    pub fn console_session(&self, hash: &str) -> Result<SessionLookup> {
        self.console_session_where("hash", hash)
    }

    /// Session `id`, as [`Store::console_session`] tells it.
    pub fn console_session_by_id(&self, id: &str) -> Result<SessionLookup> {
        self.console_session_where("id", id)
    }

    fn console_session_where(&self, column: &str, value: &str) -> Result<SessionLookup> {
        let now = self.now();
        let Some(row) = self.db()?.query_opt(
            &format!("SELECT {SESSION_COLUMNS} FROM console_sessions WHERE {column} = ?1"),
            args![value],
        )?
        else {
            return Ok(SessionLookup::Unknown);
        };
        let s = session_from_row(&row)?;
        if s.revoked_at.is_some() {
            return Ok(SessionLookup::Revoked);
        }
        if now >= s.ends_at() {
            return Ok(SessionLookup::Expired);
        }
        Ok(SessionLookup::Valid(s))
    }

    /// Marks `s` seen now (written at most every [`SEEN_GRAIN_MS`]): its
    /// idle time starts again.
    pub fn touch_console_session(&self, s: &mut ConsoleSession) -> Result<()> {
        let now = self.now();
        if now - s.last_seen_at >= SEEN_GRAIN_MS {
            self.db()?.execute(
                "UPDATE console_sessions SET last_seen_at = ?2 WHERE id = ?1 AND last_seen_at < ?2",
                args![s.id, now],
            )?;
            s.last_seen_at = now;
        }
        Ok(())
    }

    /// `tenant`'s sessions that have not ended, newest first.
    pub fn console_sessions(&self, tenant: &str) -> Result<Vec<ConsoleSession>> {
        let now = self.now();
        Ok(self
            .db()?
            .query(
                &format!(
                    "SELECT {SESSION_COLUMNS} FROM console_sessions \
                     WHERE tenant = ?1 AND revoked_at IS NULL AND expires_at > ?2 \
                     ORDER BY created_at DESC, id"
                ),
                args![tenant, now],
            )?
            .iter()
            .map(session_from_row)
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|s| now < s.ends_at())
            .collect())
    }

    /// Revokes `tenant`'s session `id` (every live one with `None`); how
    /// many were revoked.
    pub fn revoke_console_sessions(&self, tenant: &str, id: Option<&str>) -> Result<u64> {
        let now = self.now();
        let mut db = self.db()?;
        match id {
            Some(id) => db.execute(
                "UPDATE console_sessions SET revoked_at = ?3 \
                 WHERE tenant = ?1 AND id = ?2 AND revoked_at IS NULL",
                args![tenant, id, now],
            ),
            None => {
                // Links not yet used would open new sessions: gone too.
                db.execute(
                    "UPDATE console_logins SET expires_at = ?2 \
                     WHERE tenant = ?1 AND used_at IS NULL AND expires_at > ?2",
                    args![tenant, now],
                )?;
                db.execute(
                    "UPDATE console_sessions SET revoked_at = ?2 \
                     WHERE tenant = ?1 AND revoked_at IS NULL",
                    args![tenant, now],
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use super::*;

    fn grant(tenant: &str) -> LoginGrant {
        LoginGrant {
            tenant: tenant.into(),
            admin: false,
            key_id: "key-1".into(),
        }
    }

    #[test]
    fn a_login_token_is_spent_once_and_expires() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let t = Arc::new(AtomicI64::new(1_000_000));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            s.insert_console_login("h1", &grant("acme"), 60_000)
                .unwrap();
            s.insert_console_login("h2", &grant("acme"), 60_000)
                .unwrap();
            assert_eq!(
                s.take_console_login("h1").unwrap(),
                Ok(grant("acme")),
                "{e}"
            );
            assert_eq!(
                s.take_console_login("h1").unwrap(),
                Err(LoginRefusal::Used),
                "{e}"
            );
            assert_eq!(
                s.take_console_login("nope").unwrap(),
                Err(LoginRefusal::Unknown),
                "{e}"
            );
            t.store(1_060_000, Ordering::SeqCst);
            assert_eq!(
                s.take_console_login("h2").unwrap(),
                Err(LoginRefusal::Expired),
                "{e}"
            );
        }
    }

    #[test]
    fn sessions_end_when_revoked_idle_or_expired() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let t = Arc::new(AtomicI64::new(1_000_000));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            let a = s
                .insert_console_session(
                    "cs-a",
                    "ha",
                    "csrf-a",
                    &grant("acme"),
                    3_600_000,
                    600_000,
                    "ua",
                )
                .unwrap();
            s.insert_console_session(
                "cs-b",
                "hb",
                "csrf-b",
                &grant("acme"),
                3_600_000,
                600_000,
                "",
            )
            .unwrap();
            s.insert_console_session(
                "cs-c",
                "hc",
                "csrf-c",
                &grant("other"),
                3_600_000,
                600_000,
                "",
            )
            .unwrap();
            assert_eq!(
                s.console_session("ha").unwrap(),
                SessionLookup::Valid(a.clone()),
                "{e}"
            );
            assert_eq!(
                s.console_session("zz").unwrap(),
                SessionLookup::Unknown,
                "{e}"
            );
            assert_eq!(
                s.console_session_by_id("cs-a").unwrap(),
                SessionLookup::Valid(a.clone()),
                "{e}"
            );
            assert_eq!(s.console_sessions("acme").unwrap().len(), 2, "{e}");
            // Another tenant's session is not revoked by this tenant.
            assert_eq!(
                s.revoke_console_sessions("acme", Some("cs-c")).unwrap(),
                0,
                "{e}"
            );
            assert_eq!(
                s.revoke_console_sessions("acme", Some("cs-b")).unwrap(),
                1,
                "{e}"
            );
            assert_eq!(
                s.console_session("hb").unwrap(),
                SessionLookup::Revoked,
                "{e}"
            );
            // Requests keep a session alive past its idle time, not past
            // its absolute end.
            for step in 1..=8 {
                t.store(1_000_000 + step * 500_000, Ordering::SeqCst);
                let live = s.console_session("ha").unwrap();
                if let SessionLookup::Valid(mut v) = live.clone() {
                    s.touch_console_session(&mut v).unwrap();
                }
                if step < 8 {
                    assert!(matches!(live, SessionLookup::Valid(_)), "{e} step {step}");
                } else {
                    assert_eq!(live, SessionLookup::Expired, "{e}");
                }
            }
            // Idle too long.
            t.store(5_000_000, Ordering::SeqCst);
            assert_eq!(
                s.console_session("hc").unwrap(),
                SessionLookup::Expired,
                "{e}"
            );
            assert!(s.console_sessions("other").unwrap().is_empty(), "{e}");
            assert_eq!(s.revoke_console_sessions("acme", None).unwrap(), 1, "{e}");
        }
    }

    #[test]
    fn a_key_holds_a_bounded_number_of_sessions_and_revoking_all_spends_links() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let t = Arc::new(AtomicI64::new(1_000_000));
            let clock = t.clone();
            let s = s.with_clock(move || clock.load(Ordering::SeqCst));
            for i in 0..MAX_SESSIONS_PER_KEY + 5 {
                t.store(1_000_000 + i, Ordering::SeqCst);
                s.insert_console_session(
                    &format!("cs-{i}"),
                    &format!("h{i}"),
                    "c",
                    &grant("acme"),
                    3_600_000,
                    600_000,
                    "",
                )
                .unwrap();
            }
            assert_eq!(
                s.console_sessions("acme").unwrap().len() as i64,
                MAX_SESSIONS_PER_KEY,
                "{e}"
            );
            // The oldest went first.
            assert_eq!(
                s.console_session("h0").unwrap(),
                SessionLookup::Revoked,
                "{e}"
            );
            assert!(
                matches!(s.console_session("h54").unwrap(), SessionLookup::Valid(_)),
                "{e}"
            );
            s.insert_console_login("link", &grant("acme"), 60_000)
                .unwrap();
            s.revoke_console_sessions("acme", None).unwrap();
            assert_eq!(
                s.take_console_login("link").unwrap(),
                Err(LoginRefusal::Expired),
                "{e}"
            );
        }
    }
}
