//! Port exposures: which ports of a sandbox the port proxy serves, public
//! or behind a token. Only the SHA-256 of a private exposure's token is
//! kept. Port 0 stands for every port of the sandbox (how E2B sandboxes
//! are reached). Exposures are deleted with their sandbox.

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::{Result, Store};

/// One exposed port of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    pub sandbox_id: String,
    /// The port inside the sandbox; 0 means every port.
    pub port: u16,
    pub public: bool,
    /// SHA-256 (hex) of the access token of a private exposure.
    pub token_hash: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// The `Host` header the sandbox's server gets instead of the one the
    /// client sent (`${PORT}` in it stands for the port); `None` keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_header: Option<String>,
}

const COLUMNS: &str = "sandbox_id, port, public, token_hash, created_at, host_header";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Exposure> {
    Ok(Exposure {
        sandbox_id: r.get(0)?,
        port: r.get(1)?,
        public: r.get(2)?,
        token_hash: r.get(3)?,
        created_at: r.get(4)?,
        host_header: r.get(5)?,
    })
}

impl Store {
    /// Adds or replaces the exposure of `(sandbox_id, port)`.
    pub fn put_exposure(&self, e: &Exposure) -> Result<()> {
        self.conn().execute(
            "INSERT INTO port_exposures \
             (sandbox_id, port, public, token_hash, created_at, host_header) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (sandbox_id, port) DO UPDATE SET public = ?3, token_hash = ?4, \
             created_at = ?5, host_header = ?6",
            params![
                e.sandbox_id,
                e.port,
                e.public,
                e.token_hash,
                e.created_at,
                e.host_header
            ],
        )?;
        Ok(())
    }

    /// The exposure of `port` of a sandbox (exactly that port, not port 0).
    pub fn get_exposure(&self, sandbox_id: &str, port: u16) -> Result<Option<Exposure>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM port_exposures WHERE sandbox_id = ?1 AND port = ?2"
                ),
                params![sandbox_id, port],
                from_row,
            )
            .optional()?)
    }

    /// The exposure that covers `port` of a sandbox: the port's own, else
    /// the sandbox's every-port exposure (port 0). One query.
    pub fn covering_exposure(&self, sandbox_id: &str, port: u16) -> Result<Option<Exposure>> {
        Ok(self
            .conn()
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM port_exposures \
                     WHERE sandbox_id = ?1 AND port IN (?2, 0) ORDER BY port DESC LIMIT 1"
                ),
                params![sandbox_id, port],
                from_row,
            )
            .optional()?)
    }

    /// Every exposure of a sandbox, by port.
    pub fn list_exposures(&self, sandbox_id: &str) -> Result<Vec<Exposure>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM port_exposures WHERE sandbox_id = ?1 ORDER BY port"
        ))?;
        let rows = stmt.query_map([sandbox_id], from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Removes one exposure; whether there was one.
    pub fn delete_exposure(&self, sandbox_id: &str, port: u16) -> Result<bool> {
        Ok(self.conn().execute(
            "DELETE FROM port_exposures WHERE sandbox_id = ?1 AND port = ?2",
            params![sandbox_id, port],
        )? > 0)
    }

    /// Removes every exposure of a (deleted) sandbox.
    pub fn delete_exposures(&self, sandbox_id: &str) -> Result<()> {
        self.conn().execute(
            "DELETE FROM port_exposures WHERE sandbox_id = ?1",
            params![sandbox_id],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(id: &str, port: u16, public: bool) -> Exposure {
        Exposure {
            sandbox_id: id.into(),
            port,
            public,
            token_hash: (!public).then(|| "ab".repeat(32)),
            created_at: 5,
            host_header: None,
        }
    }

    #[test]
    fn exposures_are_kept_per_sandbox_and_port() {
        let s = Store::in_memory().unwrap();
        s.put_exposure(&exp("a", 8080, false)).unwrap();
        s.put_exposure(&exp("a", 3000, true)).unwrap();
        s.put_exposure(&exp("b", 8080, true)).unwrap();
        assert_eq!(
            s.get_exposure("a", 8080).unwrap(),
            Some(exp("a", 8080, false))
        );
        assert_eq!(s.get_exposure("a", 1).unwrap(), None);
        // Re-exposing replaces.
        s.put_exposure(&exp("a", 8080, true)).unwrap();
        assert!(s.get_exposure("a", 8080).unwrap().unwrap().public);
        let ports: Vec<u16> = s
            .list_exposures("a")
            .unwrap()
            .iter()
            .map(|e| e.port)
            .collect();
        assert_eq!(ports, [3000, 8080]);
        assert!(s.delete_exposure("a", 3000).unwrap());
        assert!(!s.delete_exposure("a", 3000).unwrap());
        s.delete_exposures("a").unwrap();
        assert!(s.list_exposures("a").unwrap().is_empty());
        assert_eq!(s.list_exposures("b").unwrap().len(), 1);
    }

    #[test]
    fn the_host_header_is_kept_and_replaced() {
        let s = Store::in_memory().unwrap();
        let masked = Exposure {
            host_header: Some("app.example.com:${PORT}".into()),
            ..exp("a", 0, true)
        };
        s.put_exposure(&masked).unwrap();
        assert_eq!(s.covering_exposure("a", 8080).unwrap(), Some(masked));
        s.put_exposure(&exp("a", 0, false)).unwrap();
        assert_eq!(s.get_exposure("a", 0).unwrap().unwrap().host_header, None);
    }
}
