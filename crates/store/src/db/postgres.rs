//! [`Conn`] on a PostgreSQL server, for a cluster of dwell nodes.
//!
//! The store's methods are synchronous and called from async code, where
//! the `postgres` client cannot block (it runs its own runtime). So each
//! connection lives on a thread of its own and a [`Session`] hands it
//! statements over a channel: the caller blocks as it does on SQLite's
//! lock, the connection's runtime never meets the caller's. A [`Pool`]
//! keeps up to [`Pool::MAX`] such connections, made on demand and made
//! again after the server dropped one; statements are prepared once per
//! connection.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::{dollar_placeholders, Conn, Row, ToValue, Value};
use crate::{Error, Result};

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> std::result::Result<IsNull, BoxError> {
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Int(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Int(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Int(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Int(i), &Type::FLOAT4) => (*i as f32).to_sql(ty, out),
            (Value::Int(i), _) if is_text(ty) => i.to_string().as_str().to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Real(f), &Type::INT8) if f.fract() == 0.0 => (*f as i64).to_sql(ty, out),
            (Value::Real(f), _) if is_text(ty) => f.to_string().as_str().to_sql(ty, out),
            (Value::Text(s), _) if is_text(ty) => s.as_str().to_sql(ty, out),
            (Value::Blob(b), &Type::BYTEA) => b.as_slice().to_sql(ty, out),
            (v, ty) => Err(format!("{v:?} cannot be sent as a {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn is_text(ty: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(ty)
}

impl<'a> FromSql<'a> for Value {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Value::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Value::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Value::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Value::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Value::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Value::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Value::Blob(raw.to_vec()),
            ref t if is_text(t) => Value::Text(String::from_sql(ty, raw)?),
            ref t => {
                return Err(format!(
                "a column of type {t} (cast it to BIGINT, DOUBLE PRECISION or TEXT in the query)"
            )
                .into())
            }
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Value::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// An error with every cause after it (`a: b: c`).
fn chain(e: &postgres::Error) -> String {
    let mut t = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        t.push_str(&format!(": {c}"));
        cause = c.source();
    }
    t
}

/// A postgres error as the store's: integrity violations (SQLSTATE class
/// 23) apart; the message is the server's, or the whole chain of causes
/// (a parameter that could not be sent says why).
fn error(e: postgres::Error) -> Error {
    let text = match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("PostgreSQL: {} ({d})", db.message()),
            None => format!("PostgreSQL: {}", db.message()),
        },
        None => format!("PostgreSQL: {}", chain(&e)),
    };
    match e.code() {
        Some(c) if c.code().starts_with("23") => Error::Constraint(text),
        _ => Error::Sql(text),
    }
}

/// What a session asks of its connection's thread.
enum Job {
    Execute(String, Vec<Value>),
    Query(String, Vec<Value>),
    Batch(String),
}

enum Done {
    Count(u64),
    Rows(Vec<Row>),
    Nothing,
}

/// One connection and its thread.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Result<Done>>,
}

impl Worker {
    fn spawn(config: postgres::Config, tls: Tls, shown: String) -> Result<Worker> {
        let (jobs, job_rx) = mpsc::channel();
        let (done_tx, done) = mpsc::channel();
        std::thread::Builder::new()
            .name("dwell-pg".into())
            .spawn(move || serve(config, tls, shown, job_rx, done_tx))
            .map_err(|e| Error::Sql(format!("cannot start a PostgreSQL connection thread: {e}")))?;
        Ok(Worker { jobs, done })
    }
}

/// Most statements kept prepared per connection.
const PREPARED_MAX: usize = 512;

/// The body of a connection's thread: (re)connects when needed and runs
/// jobs until its session pool is dropped.
fn serve(
    config: postgres::Config,
    tls: Tls,
    shown: String,
    jobs: mpsc::Receiver<Job>,
    done: mpsc::Sender<Result<Done>>,
) {
    let mut client: Option<Client> = None;
    let mut prepared: HashMap<String, Statement> = HashMap::new();
    for job in jobs {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            prepared.clear();
            let connected = match &tls {
                Tls::Plain => config.connect(NoTls),
                Tls::Rustls(m) => config.connect(m.clone()),
            };
            match connected.and_then(|mut c| {
                // No lock (a tenant's quota lock held by a stalled node)
                // is waited for without end.
                c.batch_execute("SET lock_timeout = '30s'")?;
                Ok(c)
            }) {
                Ok(c) => client = Some(c),
                Err(e) => {
                    client = None;
                    let why = chain(&e);
                    let _ = done.send(Err(Error::Sql(format!(
                        "cannot connect to PostgreSQL at {shown}: {why}; check --cluster (and \
                         --cluster-ca) and that the server runs"
                    ))));
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let r = run_job(c, &mut prepared, job);
        if done.send(r).is_err() {
            return;
        }
    }
}

fn run_job(c: &mut Client, prepared: &mut HashMap<String, Statement>, job: Job) -> Result<Done> {
    let (sql, args, query) = match job {
        Job::Batch(sql) => return c.batch_execute(&sql).map(|_| Done::Nothing).map_err(error),
        Job::Execute(sql, args) => (sql, args, false),
        Job::Query(sql, args) => (sql, args, true),
    };
    let stmt = match prepared.get(&sql) {
        Some(s) => s.clone(),
        None => {
            let s = c.prepare(&dollar_placeholders(&sql)).map_err(error)?;
            if prepared.len() >= PREPARED_MAX {
                prepared.clear();
            }
            prepared.insert(sql, s.clone());
            s
        }
    };
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a as &(dyn ToSql + Sync)).collect();
    if !query {
        return c.execute(&stmt, &params).map(Done::Count).map_err(error);
    }
    let rows = c.query(&stmt, &params).map_err(error)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut cols = Vec::with_capacity(r.len());
        for i in 0..r.len() {
            cols.push(r.try_get::<_, Value>(i).map_err(error)?);
        }
        out.push(Row(cols));
    }
    Ok(Done::Rows(out))
}

/// Connections to one PostgreSQL database.
pub struct Pool {
    config: postgres::Config,
    tls: Tls,
    /// The URL without its password, for messages.
    shown: String,
    idle: Mutex<Idle>,
    freed: Condvar,
}

struct Idle {
    workers: Vec<Worker>,
    made: usize,
}

impl Pool {
    /// Most connections one daemon opens.
    pub const MAX: usize = 8;
    /// Longest a caller waits for a free connection.
    const WAIT: Duration = Duration::from_secs(30);

    /// A pool for `url` (`postgres://user:password@host:port/db`, or the
    /// `key=value` form). Nothing connects until the first statement.
    pub fn new(url: &str) -> Result<Pool> {
        Pool::with_ca(url, None)
    }

    /// A pool for `url` whose connections use TLS, verifying the server's
    /// certificate (and its name) against the PEM CA certificates `ca`;
    /// without `ca`, connections are plain, and a URL that asks for TLS
    /// (`sslmode=require`) is refused.
    pub fn with_ca(url: &str, ca: Option<&[u8]>) -> Result<Pool> {
        let mut config: postgres::Config = url.parse().map_err(|e| {
            Error::Sql(format!(
                "--cluster: not a PostgreSQL URL ({e}); write postgres://USER:PASSWORD@HOST:PORT/DATABASE"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        // A connection whose packets go unanswered fails in seconds rather
        // than minutes (a node's heartbeat must not hang on it).
        config.tcp_user_timeout(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("dwell");
        }
        let tls = match ca {
            Some(pem) => {
                config.ssl_mode(postgres::config::SslMode::Require);
                Tls::Rustls(rustls_connector(pem)?)
            }
            None if config.get_ssl_mode() == postgres::config::SslMode::Require => {
                return Err(Error::Sql(
                    "--cluster asks for TLS (sslmode=require): give the CA certificate of the \
                     PostgreSQL server with --cluster-ca FILE (PEM)"
                        .into(),
                ))
            }
            None => {
                // Not `prefer`: without a CA to check the server against,
                // TLS would only look safe.
                config.ssl_mode(postgres::config::SslMode::Disable);
                Tls::Plain
            }
        };
        Ok(Pool {
            shown: shown(&config),
            tls,
            config,
            idle: Mutex::new(Idle {
                workers: Vec::new(),
                made: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// A connection for a while (returned when the session is dropped).
    pub fn session(&self) -> Result<Session<'_>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = std::time::Instant::now() + Self::WAIT;
        loop {
            if let Some(w) = idle.workers.pop() {
                return Ok(Session {
                    pool: self,
                    worker: Some(w),
                });
            }
            if idle.made < Self::MAX {
                idle.made += 1;
                drop(idle);
                return match Worker::spawn(
                    self.config.clone(),
                    self.tls.clone(),
                    self.shown.clone(),
                ) {
                    Ok(w) => Ok(Session {
                        pool: self,
                        worker: Some(w),
                    }),
                    Err(e) => {
                        self.idle.lock().unwrap_or_else(|p| p.into_inner()).made -= 1;
                        Err(e)
                    }
                };
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Error::Sql(format!(
                    "all {} connections to PostgreSQL are busy for {}s; the server at {} may be stalled",
                    Self::MAX,
                    Self::WAIT.as_secs(),
                    self.shown
                )));
            }
            idle = self
                .freed
                .wait_timeout(idle, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// How connections are made: plain, or TLS checked against a CA.
#[derive(Clone)]
enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

/// A TLS connector that trusts only the CA certificates in `pem`.
fn rustls_connector(pem: &[u8]) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    use rustls_pki_types::pem::PemObject;
    let bad = |what: String| Error::Sql(format!("--cluster-ca: {what}"));
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(format!("not PEM certificates ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("a certificate rustls refuses ({e})")))?;
    }
    if roots.is_empty() {
        return Err(bad(
            "no certificate in the file (PEM, BEGIN CERTIFICATE)".into()
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Where `config` connects, for messages: user, hosts, ports and
/// database, never the password (whichever way the URL gave it).
fn shown(config: &postgres::Config) -> String {
    use postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(h, p)| match h {
            Host::Tcp(h) => format!("{h}:{p}"),
            Host::Unix(path) => format!("{}:{p}", path.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

/// One pooled connection, held until dropped.
pub struct Session<'a> {
    pool: &'a Pool,
    worker: Option<Worker>,
}

impl Session<'_> {
    fn run(&mut self, job: Job) -> Result<Done> {
        let gone = || Error::Sql("the PostgreSQL connection thread ended".into());
        let w = self.worker.as_ref().ok_or_else(gone)?;
        let answer = match w.jobs.send(job) {
            Ok(()) => w.done.recv().ok(),
            Err(_) => None,
        };
        match answer {
            Some(r) => r,
            None => {
                // The thread is gone: it is not given back to the pool.
                self.worker = None;
                Err(gone())
            }
        }
    }
}

impl Session<'_> {
    /// Closes this connection instead of giving it back (it may hold a
    /// session-level lock that could not be released).
    pub fn discard(mut self) {
        // Dropping the worker ends its thread, which closes the
        // connection; the server releases what the session held.
        self.worker = None;
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        let mut idle = self.pool.idle.lock().unwrap_or_else(|p| p.into_inner());
        match self.worker.take() {
            Some(w) => idle.workers.push(w),
            None => idle.made -= 1,
        }
        self.pool.freed.notify_one();
    }
}

fn args_of(args: &[&dyn ToValue]) -> Vec<Value> {
    args.iter().map(|a| a.to_value()).collect()
}

impl Conn for Session<'_> {
    fn execute(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<u64> {
        match self.run(Job::Execute(sql.to_string(), args_of(args)))? {
            Done::Count(n) => Ok(n),
            _ => Err(Error::Sql("PostgreSQL answered out of turn".into())),
        }
    }

    fn query(&mut self, sql: &str, args: &[&dyn ToValue]) -> Result<Vec<Row>> {
        match self.run(Job::Query(sql.to_string(), args_of(args)))? {
            Done::Rows(r) => Ok(r),
            _ => Err(Error::Sql("PostgreSQL answered out of turn".into())),
        }
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.run(Job::Batch(sql.to_string())).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_server_never_the_password() {
        for url in [
            "postgres://dwell:s3cret@db:5433/dwell",
            "postgres://dwell@db:5433/dwell?password=s3cret",
            "postgres://db:5433/dwell?user=dwell&password=s3cret",
            "host=db port=5433 user=dwell password='s3 cret' dbname=dwell",
        ] {
            let p = Pool::new(url).unwrap();
            assert_eq!(p.shown(), "postgres://dwell@db:5433/dwell", "{url}");
        }
    }

    #[test]
    fn a_bad_url_says_what_to_write() {
        let e = Pool::new("postgres://[::1").err().unwrap().to_string();
        assert!(e.contains("postgres://USER:PASSWORD@HOST"), "{e}");
    }

    /// Against a real server with TLS (the test server's CA): the
    /// connection is encrypted and the server checked; another CA, or a
    /// URL asking for TLS without a CA, is refused.
    #[test]
    fn tls_with_the_servers_ca_only() {
        let Some(pg) = dwell_testkit::postgres::Postgres::shared() else {
            return;
        };
        let Some(ca) = pg.ca_pem.clone() else {
            dwell_testkit::skip("openssl is missing: the test server speaks no TLS");
            return;
        };
        let url = pg.database("tls");
        let store = crate::Store::postgres_with_ca(&url, Some(&ca)).unwrap_or_else(|e| {
            panic!(
                "{e}; server log:\n{}",
                std::fs::read_to_string(pg.dir().join("log")).unwrap_or_default()
            )
        });
        let mut s = store.db().unwrap();
        let row = s
            .query_one(
                "SELECT CAST(ssl AS TEXT) FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap();
        assert_eq!(row.get::<String>(0).unwrap(), "true");
        drop(s);
        // A CA that did not sign the server's certificate.
        let other = std::fs::read(pg.dir().join("server.crt")).unwrap();
        let e = crate::Store::postgres_with_ca(&url, Some(&other))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("PostgreSQL") || e.contains("cannot"), "{e}");
        let e = crate::Store::postgres(&format!("{url}?sslmode=require"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--cluster-ca"), "{e}");
        // Plain as before without a CA.
        crate::Store::postgres(&url).unwrap();
    }
}
