//! Port exposures: which ports of a sandbox the port proxy serves, public
//! or behind a token. Only the SHA-256 of a private exposure's token is
//! kept. Port 0 stands for every port of the sandbox (how E2B sandboxes
//! are reached). Exposures are deleted with their sandbox.

use serde::{Deserialize, Serialize};

use crate::db::{Conn, Row};
use crate::{args, Result, Store};

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

fn from_row(r: &Row) -> Result<Exposure> {
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
        self.db()?.execute(
            "INSERT INTO port_exposures \
             (sandbox_id, port, public, token_hash, created_at, host_header) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (sandbox_id, port) DO UPDATE SET public = excluded.public, \
             token_hash = excluded.token_hash, created_at = excluded.created_at, \
             host_header = excluded.host_header",
            args![
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
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM port_exposures WHERE sandbox_id = ?1 AND port = ?2"
                ),
                args![sandbox_id, port],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// The exposure that covers `port` of a sandbox: the port's own, else
    /// the sandbox's every-port exposure (port 0). One query.
    pub fn covering_exposure(&self, sandbox_id: &str, port: u16) -> Result<Option<Exposure>> {
        self.db()?
            .query_opt(
                &format!(
                    "SELECT {COLUMNS} FROM port_exposures \
                     WHERE sandbox_id = ?1 AND port IN (?2, 0) ORDER BY port DESC LIMIT 1"
                ),
                args![sandbox_id, port],
            )?
            .map(|r| from_row(&r))
            .transpose()
    }

    /// Every exposure of a sandbox, by port.
    pub fn list_exposures(&self, sandbox_id: &str) -> Result<Vec<Exposure>> {
        self.db()?
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM port_exposures WHERE sandbox_id = ?1 ORDER BY port"
                ),
                args![sandbox_id],
            )?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Removes one exposure; whether there was one.
    pub fn delete_exposure(&self, sandbox_id: &str, port: u16) -> Result<bool> {
        Ok(self.db()?.execute(
            "DELETE FROM port_exposures WHERE sandbox_id = ?1 AND port = ?2",
            args![sandbox_id, port],
        )? > 0)
    }

    /// Removes every exposure of a (deleted) sandbox.
    pub fn delete_exposures(&self, sandbox_id: &str) -> Result<()> {
        self.db()?.execute(
            "DELETE FROM port_exposures WHERE sandbox_id = ?1",
            args![sandbox_id],
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
        for s in crate::testing::stores() {
            let e = s.engine();
            s.put_exposure(&exp("a", 8080, false)).unwrap();
            s.put_exposure(&exp("a", 3000, true)).unwrap();
            s.put_exposure(&exp("b", 8080, true)).unwrap();
            assert_eq!(
                s.get_exposure("a", 8080).unwrap(),
                Some(exp("a", 8080, false)),
                "{e}"
            );
            assert_eq!(s.get_exposure("a", 1).unwrap(), None, "{e}");
            // Re-exposing replaces.
            s.put_exposure(&exp("a", 8080, true)).unwrap();
            assert_eq!(
                s.get_exposure("a", 8080).unwrap(),
                Some(exp("a", 8080, true)),
                "{e}"
            );
            let ports: Vec<u16> = s
                .list_exposures("a")
                .unwrap()
                .iter()
                .map(|x| x.port)
                .collect();
            assert_eq!(ports, [3000, 8080], "{e}");
            assert!(s.delete_exposure("a", 3000).unwrap(), "{e}");
            assert!(!s.delete_exposure("a", 3000).unwrap(), "{e}");
            s.delete_exposures("a").unwrap();
            assert!(s.list_exposures("a").unwrap().is_empty(), "{e}");
            assert_eq!(s.list_exposures("b").unwrap().len(), 1, "{e}");
        }
    }

    #[test]
    fn the_host_header_is_kept_and_replaced() {
        for s in crate::testing::stores() {
            let e = s.engine();
            let masked = Exposure {
                host_header: Some("app.example.com:${PORT}".into()),
                ..exp("a", 0, true)
            };
            s.put_exposure(&masked).unwrap();
            assert_eq!(s.covering_exposure("a", 8080).unwrap(), Some(masked), "{e}");
            s.put_exposure(&exp("a", 0, false)).unwrap();
            assert_eq!(
                s.get_exposure("a", 0).unwrap(),
                Some(exp("a", 0, false)),
                "{e}: the replacement drops the header and sets the token"
            );
        }
    }

    #[test]
    fn a_port_of_its_own_covers_before_every_port() {
        for s in crate::testing::stores() {
            let e = s.engine();
            assert_eq!(s.covering_exposure("a", 8080).unwrap(), None, "{e}");
            s.put_exposure(&exp("a", 0, false)).unwrap();
            assert_eq!(
                s.covering_exposure("a", 8080).unwrap().map(|x| x.port),
                Some(0),
                "{e}"
            );
            s.put_exposure(&exp("a", 8080, true)).unwrap();
            s.put_exposure(&exp("a", 65535, true)).unwrap();
            assert_eq!(
                s.covering_exposure("a", 8080).unwrap(),
                Some(exp("a", 8080, true)),
                "{e}"
            );
            assert_eq!(
                s.covering_exposure("a", 65535).unwrap().map(|x| x.port),
                Some(65535),
                "{e}"
            );
            // Another sandbox's exposures cover nothing here.
            assert_eq!(s.covering_exposure("b", 8080).unwrap(), None, "{e}");
            assert_eq!(
                s.get_exposure("a", 0).unwrap().map(|x| x.port),
                Some(0),
                "{e}"
            );
        }
    }
}
