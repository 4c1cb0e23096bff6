//! A cluster of dwell daemons on this machine: one fresh PostgreSQL
//! database (on the test process's server, [`crate::postgres`]), one moto
//! bucket for the object store, one cluster secret and snapshot key, and
//! nodes `n1..nN`, each a [`Daemon`] with its own data dir and socket and
//! its node listener on a free loopback port, with a short lease; the
//! nodes reach the database over TLS (the test server's CA) where openssl
//! made it one. Dropped,
//! the nodes go in order (the first removes every sandbox, forwarding to
//! their owners), then moto. Tests skip with the reason printed when
//! PostgreSQL or moto is missing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::daemon::Daemon;
use crate::moto::Moto;
use crate::postgres::Postgres;
use crate::process::free_port;

/// The lease of test nodes (the shortest `serve` takes).
pub const LEASE: &str = "3s";

/// A running cluster.
pub struct Cluster {
    /// `nodes[i]` is node `n{i+1}`.
    pub nodes: Vec<Daemon>,
    /// The PostgreSQL URL the nodes share.
    pub url: String,
    /// The node listener address of each node.
    pub advertise: Vec<String>,
    secret: PathBuf,
    snapshot_key: PathBuf,
    /// The database server's CA (PEM file): nodes reach it over TLS.
    ca: Option<PathBuf>,
    prefix: String,
    moto: Moto,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// `n` nodes, node `i` with `extra(i)` flags as well (0-based).
    pub fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Option<Cluster> {
        let pg = Postgres::shared()?;
        let moto = Moto::start_for_daemons()?;
        let url = pg.database("cluster");
        let dir = tempfile::Builder::new()
            .prefix("dwell-cluster-")
            .tempdir_in("/tmp")
            .unwrap();
        let key = |name: &str| {
            let p = dir.path().join(name);
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&p)
                .unwrap();
            let mut b = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut r| std::io::Read::read_exact(&mut r, &mut b))
                .unwrap();
            f.write_all(&b).unwrap();
            p
        };
        let secret = key("cluster.key");
        let snapshot_key = key("snapshot.key");
        let prefix = url.rsplit('/').next().unwrap().to_string();
        let ca = pg.ca_pem.as_ref().map(|pem| {
            let p = dir.path().join("pg-ca.pem");
            std::fs::write(&p, pem).unwrap();
            p
        });
        let mut c = Cluster {
            nodes: Vec::new(),
            url,
            advertise: Vec::new(),
            secret,
            snapshot_key,
            ca,
            prefix,
            moto,
            _dir: dir,
        };
        for i in 0..n {
            c.add(extra(i));
        }
        Some(c)
    }

    /// The flags of node `name` listening on `advertise`.
    pub fn node_args(&self, name: &str, advertise: &str) -> Vec<String> {
        let mut args: Vec<String> = [
            "--cluster",
            &self.url,
            "--node-name",
            name,
            "--advertise",
            advertise,
            "--cluster-secret-file",
            &self.secret.to_string_lossy(),
            "--lease",
            LEASE,
            "--object-store",
            &format!("s3://dwell/{}", self.prefix),
            "--s3-endpoint",
            &self.moto.endpoint(),
            "--snapshot-key",
            &self.snapshot_key.to_string_lossy(),
            "--resync-secs",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // Over TLS, checked against the test server's CA, when it has one.
        if let Some(ca) = &self.ca {
            args.push("--cluster-ca".into());
            args.push(ca.to_string_lossy().into_owned());
        }
        args
    }

    /// Starts one more node, `n{len+1}`, with `extra` flags.
    pub fn add(&mut self, extra: Vec<String>) -> &Daemon {
        let name = format!("n{}", self.nodes.len() + 1);
        let advertise = format!("127.0.0.1:{}", free_port());
        let mut args = self.node_args(&name, &advertise);
        args.extend(extra);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.nodes.push(Daemon::start_with(&refs));
        self.advertise.push(advertise);
        self.nodes.last().unwrap()
    }

    /// The S3 endpoint (moto) the nodes keep their object store at.
    pub fn s3_endpoint(&self) -> String {
        self.moto.endpoint()
    }

    /// Node `i` (0-based: `node(0)` is `n1`).
    pub fn node(&self, i: usize) -> &Daemon {
        &self.nodes[i]
    }

    /// The nodes as `dwell node ls --json` of node `i` shows them.
    pub fn node_list(&self, i: usize) -> Vec<serde_json::Value> {
        let out = self.nodes[i].ok(&["node", "ls", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The owner node of sandbox `sb`, as node `i` sees it.
    pub fn owner(&self, i: usize, sb: &str) -> String {
        self.nodes[i].inspect(sb)["node"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}
