//! Versioned schema migrations.
//!
//! Each entry of [`MIGRATIONS`] moves the schema from version `i` to `i + 1`
//! and runs in its own transaction together with the bump of `user_version`,
//! so a crash mid-migration leaves the previous version intact. Migrations
//! are append-only: never edit one that has shipped.
//!
//! The same list builds a PostgreSQL schema ([`apply_postgres`]): written
//! in SQLite's types, each migration is read with PostgreSQL's widths
//! ([`postgres_ddl`]: `INTEGER` is `BIGINT`, `REAL` is `DOUBLE PRECISION`,
//! an `AUTOINCREMENT` key an identity column); the version is a row of
//! `dwell_schema`, and nodes that start together migrate one at a time
//! under an advisory lock.

use rusqlite::Connection;

use crate::db::Conn;
use crate::{Error, Result};

/// The schema, one step per entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: sandboxes, their events, API keys.
    "CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        tenant TEXT NOT NULL,
        image TEXT NOT NULL,
        mode TEXT NOT NULL,
        runtime TEXT NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        desired_state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        state_changed_at INTEGER NOT NULL,
        started_at INTEGER,
        stopped_at INTEGER,
        deleted_at INTEGER
    );
    CREATE UNIQUE INDEX sandboxes_live_name ON sandboxes(tenant, name) WHERE state != 'deleted';
    CREATE INDEX sandboxes_state ON sandboxes(state);
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        sandbox_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    );
    CREATE INDEX events_sandbox ON events(sandbox_id, seq);
    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL
    );",
    // 2: activity and keepalive, the inputs of lifecycle policies.
    "ALTER TABLE sandboxes ADD COLUMN last_activity_at INTEGER;
    ALTER TABLE sandboxes ADD COLUMN hold_until INTEGER;",
    // 3: tenants and their quotas (NULL = unlimited); metered usage in
    // hourly buckets per sandbox.
    "CREATE TABLE tenants (
        name TEXT PRIMARY KEY,
        max_sandboxes INTEGER,
        max_vcpus REAL,
        max_memory INTEGER,
        max_storage INTEGER,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE usage (
        sandbox_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        hour INTEGER NOT NULL,
        vcpu_seconds REAL NOT NULL DEFAULT 0,
        memory_gib_seconds REAL NOT NULL DEFAULT 0,
        cpu_used_seconds REAL NOT NULL DEFAULT 0,
        memory_used_gib_seconds REAL NOT NULL DEFAULT 0,
        storage_gib_seconds REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (sandbox_id, hour)
    );
    CREATE INDEX usage_tenant ON usage(tenant, hour);
    ALTER TABLE sandboxes ADD COLUMN metered_at INTEGER;",
    // 4: the audit log: who did what to which resource, when.
    "CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER NOT NULL
    );
    CREATE INDEX audit_at ON audit(at);",
    // 5: a tenant's default lifecycle policies (JSON), for sandboxes that
    // set none.
    "ALTER TABLE tenants ADD COLUMN default_policies TEXT;",
    // 6: API keys can be revoked (kept, so that a revoked key is told
    // apart from an unknown one) and say when they were last used.
    "ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;
    ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;",
    // 7: the host uid/gid range slot of each sandbox (user namespaces),
    // held from its first start until it is deleted.
    "CREATE TABLE id_ranges (
        slot INTEGER PRIMARY KEY,
        sandbox_id TEXT NOT NULL UNIQUE
    );",
    // 8: ports of sandboxes exposed through the port proxy: public or
    // private (then the SHA-256 of its token; the token is shown once).
    // Port 0 stands for every port (E2B sandboxes). Rows go with the
    // sandbox when it is deleted.
    "CREATE TABLE port_exposures (
        sandbox_id TEXT NOT NULL,
        port INTEGER NOT NULL,
        public INTEGER NOT NULL,
        token_hash TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (sandbox_id, port)
    );",
    // 9: SSH public keys registered per tenant (the SSH gateway's logins);
    // one key at most once per tenant.
    "CREATE TABLE ssh_keys (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        public_key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER
    );
    CREATE UNIQUE INDEX ssh_keys_tenant_fingerprint ON ssh_keys(tenant, fingerprint);
    CREATE UNIQUE INDEX ssh_keys_tenant_name ON ssh_keys(tenant, name);
    CREATE INDEX ssh_keys_fingerprint ON ssh_keys(fingerprint);",
    // 10: tenant private networks and their members. A member's address
    // is allocated once, when it joins, and kept until it leaves (stop,
    // start, pause, hibernate and restore keep it), so peers' names stay
    // valid. A sandbox leaves every network when it is deleted.
    "CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        subnet TEXT NOT NULL,
        bridge TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX networks_name ON networks(tenant, name);
    CREATE TABLE network_members (
        network_id TEXT NOT NULL REFERENCES networks(id),
        sandbox_id TEXT NOT NULL,
        address TEXT NOT NULL,
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (network_id, sandbox_id),
        UNIQUE (network_id, address)
    );
    CREATE INDEX network_members_sandbox ON network_members(sandbox_id);",
    // 11: a tenant's default egress rules (JSON) for its NAT sandboxes
    // that set none.
    "ALTER TABLE tenants ADD COLUMN default_egress TEXT;",
    // 12: registry credentials per tenant and registry host (`dwell
    // registry login`); the password is sealed with the daemon key like
    // secret environment variables.
    "CREATE TABLE registry_credentials (
        tenant TEXT NOT NULL,
        registry TEXT NOT NULL,
        username TEXT NOT NULL,
        sealed TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (tenant, registry)
    );",
    // 13: named volumes of a tenant (name unique per tenant); which
    // sandboxes use one is in their specs (`volumes`). `metered_at` is
    // the volume's metering mark, as sandboxes have one.
    "CREATE TABLE volumes (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        metered_at INTEGER
    );
    CREATE UNIQUE INDEX volumes_name ON volumes(tenant, name);",
    // 14: E2B templates (per tenant, by name), their builds (status, the
    // step list, the image they made, start and ready commands), each
    // build's log lines, and tags naming a template's builds.
    "CREATE TABLE e2b_templates (
        id TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        name TEXT NOT NULL,
        cpu_count INTEGER,
        memory_mb INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        UNIQUE (tenant, name)
    );
    CREATE TABLE e2b_builds (
        id TEXT PRIMARY KEY,
        template_id TEXT NOT NULL REFERENCES e2b_templates(id) ON DELETE CASCADE,
        status TEXT NOT NULL,
        tags TEXT NOT NULL,
        spec TEXT,
        image TEXT,
        reason TEXT,
        reason_step TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX e2b_builds_template ON e2b_builds(template_id, created_at);
    CREATE TABLE e2b_build_logs (
        build_id TEXT NOT NULL REFERENCES e2b_builds(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at INTEGER NOT NULL,
        level TEXT NOT NULL,
        step TEXT,
        message TEXT NOT NULL,
        PRIMARY KEY (build_id, seq)
    );
    CREATE TABLE e2b_template_tags (
        template_id TEXT NOT NULL REFERENCES e2b_templates(id) ON DELETE CASCADE,
        tag TEXT NOT NULL,
        build_id TEXT NOT NULL REFERENCES e2b_builds(id) ON DELETE CASCADE,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (template_id, tag)
    );",
    // 15: the Host header a sandbox's server gets through the port proxy
    // instead of the client's (E2B's `network.maskRequestHost`); NULL keeps
    // the client's.
    "ALTER TABLE port_exposures ADD COLUMN host_header TEXT;",
    // 16: the nodes of a cluster (one PostgreSQL database shared by
    // several daemons): where each is reached, what it has and holds, and
    // its lease (renewed by heartbeats; `epoch` grows at each start and
    // fences a node that lost its lease). A sandbox's `node` is its owner;
    // NULL on a single node.
    "CREATE TABLE nodes (
        name TEXT PRIMARY KEY,
        advertise TEXT NOT NULL,
        labels TEXT NOT NULL DEFAULT '{}',
        vcpus REAL NOT NULL,
        memory INTEGER NOT NULL,
        disk INTEGER NOT NULL,
        allocated_vcpus REAL NOT NULL DEFAULT 0,
        allocated_memory INTEGER NOT NULL DEFAULT 0,
        allocated_disk INTEGER NOT NULL DEFAULT 0,
        sandboxes INTEGER NOT NULL DEFAULT 0,
        state TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        version TEXT NOT NULL DEFAULT '',
        started_at INTEGER NOT NULL,
        heartbeat_at INTEGER NOT NULL,
        lease_until INTEGER NOT NULL
    );
    ALTER TABLE sandboxes ADD COLUMN node TEXT;
    CREATE INDEX sandboxes_node ON sandboxes(node);",
    // 17: what a sandbox's new owner node must take over (JSON: the
    // archive it restores from, set in the same statement that changes
    // the owner, cleared once the new owner has it).
    "ALTER TABLE sandboxes ADD COLUMN handoff TEXT;",
    // 18: the node an E2B template build runs on (NULL on a single node):
    // a restarted node fails only its own interrupted builds.
    "ALTER TABLE e2b_builds ADD COLUMN node TEXT;",
    // 19: which daemon (its data dir's instance id) holds a node's name:
    // another daemon may not take the name while its lease is live.
    "ALTER TABLE nodes ADD COLUMN instance TEXT NOT NULL DEFAULT '';",
    // 20: the web console's one-time login tokens and sessions, by the
    // SHA-256 of their secrets (see console.rs).
    "CREATE TABLE console_logins (
        hash TEXT PRIMARY KEY,
        tenant TEXT NOT NULL,
        admin INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    );
    CREATE TABLE console_sessions (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        csrf TEXT NOT NULL,
        tenant TEXT NOT NULL,
        admin INTEGER NOT NULL,
        key_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        idle_ms INTEGER NOT NULL,
        last_seen_at INTEGER NOT NULL,
        revoked_at INTEGER,
        user_agent TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX console_sessions_tenant ON console_sessions(tenant, key_id);
    CREATE INDEX console_sessions_expiry ON console_sessions(expires_at);
    CREATE INDEX console_logins_expiry ON console_logins(expires_at);",
];

/// Bring the schema to the newest version.
pub fn apply(conn: &mut Connection) -> Result<()> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(Error::TooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// The advisory lock that serializes migrations of one PostgreSQL
/// database ("dwell" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_7765_6c6c;

/// Bring a PostgreSQL schema to the newest version.
pub fn apply_postgres(c: &mut dyn Conn) -> Result<()> {
    c.batch(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
    let r = migrate_postgres(c);
    let unlocked = c.batch(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
    r.and(unlocked)
}

fn migrate_postgres(c: &mut dyn Conn) -> Result<()> {
    c.batch("CREATE TABLE IF NOT EXISTS dwell_schema (version BIGINT NOT NULL)")?;
    let row = c.query_opt("SELECT version FROM dwell_schema", &[])?;
    let current: i64 = match row {
        Some(r) => r.get(0)?,
        None => {
            c.execute("INSERT INTO dwell_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let supported = MIGRATIONS.len() as i64;
    if current > supported {
        return Err(Error::TooNew {
            found: current,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let step = format!(
            "BEGIN; {}; UPDATE dwell_schema SET version = {}; COMMIT",
            postgres_ddl(sql),
            i + 1
        );
        if let Err(e) = c.batch(&step) {
            let _ = c.batch("ROLLBACK");
            return Err(e);
        }
    }
    Ok(())
}

/// A migration written for SQLite as PostgreSQL reads it: SQLite's 64-bit
/// `INTEGER` is `BIGINT`, `REAL` is `DOUBLE PRECISION`, `BLOB` is `BYTEA`,
/// an `INTEGER PRIMARY KEY AUTOINCREMENT` an identity column.
pub fn postgres_ddl(sql: &str) -> String {
    let sql = sql.replace(
        "INTEGER PRIMARY KEY AUTOINCREMENT",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    );
    let mut out = String::with_capacity(sql.len() + 32);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "INTEGER" => "BIGINT",
            "REAL" => "DOUBLE PRECISION",
            "BLOB" => "BYTEA",
            w => w,
        });
        word.clear();
    };
    for ch in sql.chars() {
        if ch.is_ascii_alphanumeric() || ch == '_' {
            word.push(ch);
        } else {
            flush(&mut word, &mut out);
            out.push(ch);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_reads_sqlite_types_at_their_width() {
        assert_eq!(
            postgres_ddl("seq INTEGER PRIMARY KEY AUTOINCREMENT, at INTEGER, v REAL, b BLOB, integer_x TEXT"),
            "seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, at BIGINT, v DOUBLE PRECISION, b BYTEA, integer_x TEXT"
        );
    }

    #[test]
    fn applies_once_and_is_idempotent() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        apply(&mut conn).unwrap();
        let v: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_newer_schema() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 999).unwrap();
        assert!(matches!(apply(&mut conn), Err(Error::TooNew { .. })));
    }
}
