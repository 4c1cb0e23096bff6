//! The DNS resolver of NAT sandboxes. The daemon answers each `--net`
//! sandbox on its gateway address, port 53, over UDP and TCP (the
//! sandbox's `/etc/resolv.conf` names it, and its nftables table redirects
//! every DNS packet there; see `dwell_runtime::host::network`).
//!
//! A query is answered in this order:
//! 1. [`PeerNames`]: names of the sandbox's private-network peers (a hook
//!    the private-network code fills; [`NoPeers`] until then);
//! 2. the sandbox's egress policy (`dwell_runtime::host::egress`): a
//!    denied name gets NXDOMAIN at once; an allowed one is forwarded
//!    upstream and the IPv4 addresses of the answer (at most
//!    [`MAX_PINS_PER_ANSWER`]; the answer keeps only those) are pinned into
//!    the sandbox's `dns` allow set, with a timeout of the TTL clamped to
//!    [`MIN_PIN`]..[`MAX_PIN`], BEFORE the answer is sent, so a connection
//!    right after the lookup passes; other names are forwarded and
//!    answered as they are (their addresses are reachable or not by the
//!    address rules).
//!
//! Rule changes and pins never cross: [`Resolver::update`] swaps the
//! policy (bumping its generation) and then replaces the nftables sets,
//! holding the sandbox's pin lock; an answer takes the same lock to pin
//! and decides again by the current policy if the generation moved while
//! the upstream answered, so a name the update revoked is never pinned
//! after the update returns. An address pinned with more than half of its
//! time left is not pinned again (no nft run for repeated queries), and a
//! sandbox holds at most [`MAX_LEARNED`] pins (the set's size): past that
//! an allowed name gets SERVFAIL until pins expire.
//!
//! Upstreams are the daemon's own name servers (`/etc/resolv.conf`) or
//! `dwell serve --dns-upstream`. Everything is bounded: a token bucket per
//! sandbox (queries per second), a cap on queries in flight and on TCP
//! connections per sandbox, message sizes (UDP datagrams of at most 4 KiB
//! from the sandbox, answers truncated to what the client takes), a
//! timeout on every upstream exchange and on idle TCP connections, at
//! most [`MAX_LEARNED`] pinned addresses per sandbox and
//! [`MAX_NAMES_PER_ADDR`] names remembered for each.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use dwell_runtime::host::egress::{self, EgressRules, NameVerdict, Pin, Policy};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, Mutex as AsyncMutex, Semaphore};
use tokio::task::JoinHandle;

/// Names of a sandbox's private-network peers, asked before the egress
/// policy (interface 3 of issue 13: the private-network code implements
/// it).
pub trait PeerNames: Send + Sync {
    /// The address of `name` (lowercase, no final dot) for sandbox
    /// `sandbox_id`, if it names a peer.
    fn resolve(&self, sandbox_id: &str, name: &str) -> Option<IpAddr>;
}

/// No peers: every name goes on to the egress policy.
pub struct NoPeers;

impl PeerNames for NoPeers {
    fn resolve(&self, _: &str, _: &str) -> Option<IpAddr> {
        None
    }
}

/// The port sandboxes send DNS to.
pub const PORT: u16 = dwell_runtime::host::network::DNS_PORT;
/// Pinned addresses stay allowed at least this long (a short TTL must not
/// cut a connection opened right after the lookup).
pub const MIN_PIN: Duration = Duration::from_secs(60);
/// And at most this long, whatever the TTL says (the answer's TTLs are
/// cut to it too): a query after that pins again. Short, so a pin does
/// not outlive its rule by long if something went wrong.
pub const MAX_PIN: Duration = Duration::from_secs(3600);
/// Pinned addresses per sandbox (the size of its `dns` set); they are
/// remembered to keep them across rule changes that still allow their
/// names.
pub const MAX_LEARNED: usize = egress::DNS_SET_SIZE;
/// IPv4 addresses pinned from one answer; the answer keeps only these.
pub const MAX_PINS_PER_ANSWER: usize = 32;
/// Names remembered per pinned address (several names may share one; an
/// address is kept across a rule change while one of them is allowed).
pub const MAX_NAMES_PER_ADDR: usize = 4;
/// The largest UDP query taken from a sandbox.
const MAX_UDP: usize = 4096;
/// Answers over UDP without EDNS are at most this long (RFC 1035).
const PLAIN_UDP: usize = 512;
/// TTL of peer-name answers.
const PEER_TTL: u32 = 5;

/// Limits and upstreams.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where allowed names are resolved, tried in order.
    pub upstreams: Vec<SocketAddr>,
    /// One exchange with one upstream.
    pub upstream_timeout: Duration,
    /// Queries per second per sandbox, and the burst above it.
    pub rate: u32,
    pub burst: u32,
    /// Queries being answered at once per sandbox (more are dropped).
    pub max_in_flight: usize,
    /// TCP connections per sandbox, and how long one may sit idle.
    pub max_tcp: usize,
    pub tcp_idle: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            upstreams: Vec::new(),
            upstream_timeout: Duration::from_secs(2),
            rate: 200,
            burst: 400,
            max_in_flight: 64,
            max_tcp: 16,
            tcp_idle: Duration::from_secs(10),
        }
    }
}

/// Parse `IP` or `IP:PORT` (`[v6]:port` for IPv6) of an upstream server.
pub fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    t.parse::<SocketAddr>().map_err(|_| {
        format!(
            "invalid DNS upstream {s:?}: write an address with an optional port, such as \
             192.0.2.53, 192.0.2.53:5353 or [2001:db8::53]:53"
        )
    })
}

/// The `nameserver` lines of a resolv.conf.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) is not usable here.
            w.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A token bucket.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A sandbox's policy and its generation (bumped at every change).
#[derive(Clone)]
struct Rules {
    generation: u64,
    policy: Arc<Policy>,
}

/// One pinned address: the names that brought it and when its element
/// expires (never before the kernel's).
#[derive(Debug, Clone)]
struct Learned {
    names: Vec<String>,
    until: Instant,
}

/// One sandbox the resolver answers.
struct Attached {
    id: String,
    table: String,
    gateway: Ipv4Addr,
    sandbox_ip: Ipv4Addr,
    rules: RwLock<Rules>,
    /// Held while the `dns` set changes (a pin, or an update replacing the
    /// sets): pins and rule changes happen one after the other.
    pin_lock: AsyncMutex<()>,
    /// Answers waiting to pin (at most one per query in flight).
    pending: Mutex<Vec<PinRequest>>,
    /// Pinned addresses (what the `dns` set holds).
    learned: Mutex<HashMap<Ipv4Addr, Learned>>,
    bucket: Mutex<Bucket>,
    in_flight: Arc<Semaphore>,
    tcp: Arc<Semaphore>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        for t in self.tasks.get_mut().unwrap_or_else(|p| p.into_inner()) {
            t.abort();
        }
    }
}

/// Adds pinned addresses to a sandbox's table (nftables; tests record).
pub type Pinner = Arc<dyn Fn(&str, &[Pin]) -> Result<(), String> + Send + Sync>;

/// The resolver of every NAT sandbox of the daemon. Cheap to share.
pub struct Resolver {
    opts: Options,
    pinner: Pinner,
    peers: RwLock<Arc<dyn PeerNames>>,
    sandboxes: Mutex<HashMap<String, Arc<Attached>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Resolver {
    pub fn new(opts: Options) -> Arc<Resolver> {
        Resolver::with_pinner(
            opts,
            Arc::new(|table: &str, pins: &[Pin]| {
                egress::pin(table, pins).map_err(|e| e.to_string())
            }),
        )
    }

    /// A resolver that pins through `pinner` instead of nftables.
    pub fn with_pinner(opts: Options, pinner: Pinner) -> Arc<Resolver> {
        Arc::new(Resolver {
            opts,
            pinner,
            peers: RwLock::new(Arc::new(NoPeers)),
            sandboxes: Mutex::new(HashMap::new()),
        })
    }

    /// The upstream servers in use.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.opts.upstreams
    }

    /// Install the private-network hook.
    pub fn set_peer_names(&self, peers: Arc<dyn PeerNames>) {
        *self.peers.write().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    /// The sandboxes answered now.
    pub fn attached(&self) -> Vec<String> {
        lock(&self.sandboxes).keys().cloned().collect()
    }

    /// Answer sandbox `id` (address `sandbox_ip`) on `gateway`:53 with
    /// `rules`. Attaching again with the same addresses changes nothing:
    /// live rule changes are [`Resolver::update`]'s alone (a periodic
    /// re-attach from a record read before an update must not bring back
    /// the rules it replaced). New addresses re-bind; a sandbox whose
    /// table was made anew (a start) is detached first, so its pins start
    /// empty like its set.
    pub async fn attach(
        self: &Arc<Self>,
        id: &str,
        gateway: Ipv4Addr,
        sandbox_ip: Ipv4Addr,
        rules: &EgressRules,
    ) -> io::Result<()> {
        if let Some(a) = lock(&self.sandboxes).get(id) {
            if a.gateway == gateway && a.sandbox_ip == sandbox_ip {
                return Ok(());
            }
        }
        let policy = Arc::new(
            Policy::compile(rules).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
        );
        self.detach(id);
        // Another sandbox on this gateway is gone (the kernel never gives
        // one address to two live sandboxes): its sockets go first.
        lock(&self.sandboxes).retain(|_, a| a.gateway != gateway);
        let addr = SocketAddr::new(IpAddr::V4(gateway), PORT);
        // Aborted tasks close their sockets at their next poll: retry a
        // bind that finds the address still in use for a moment.
        let mut tries = 0;
        let udp = loop {
            match UdpSocket::bind(addr).await {
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && tries < 10 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                other => break other?,
            }
        };
        let tcp = {
            let s = tokio::net::TcpSocket::new_v4()?;
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(64)?
        };
        let a = Arc::new(Attached {
            id: id.to_string(),
            table: dwell_runtime::host::network::table_name(id),
            gateway,
            sandbox_ip,
            rules: RwLock::new(Rules {
                generation: 0,
                policy,
            }),
            pin_lock: AsyncMutex::new(()),
            pending: Mutex::new(Vec::new()),
            learned: Mutex::new(HashMap::new()),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(self.opts.burst),
                at: Instant::now(),
            }),
            in_flight: Arc::new(Semaphore::new(self.opts.max_in_flight)),
            tcp: Arc::new(Semaphore::new(self.opts.max_tcp)),
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&a);
        let udp_task = tokio::spawn(serve_udp(self.clone(), weak.clone(), Arc::new(udp)));
        let tcp_task = tokio::spawn(serve_tcp(self.clone(), weak, tcp));
        lock(&a.tasks).extend([udp_task, tcp_task]);
        lock(&self.sandboxes).insert(id.to_string(), a);
        tracing::debug!("DNS for sandbox {id} on {addr}");
        Ok(())
    }

    /// Stop answering sandbox `id` (nothing if it is not attached).
    pub fn detach(&self, id: &str) {
        lock(&self.sandboxes).remove(id);
    }

    /// Apply `rules` to sandbox `id` live: the resolver decides by them
    /// at once, then the nftables sets are replaced in one transaction
    /// (addresses pinned for names the new rules still allow are kept, the
    /// others dropped), under the sandbox's pin lock: when this returns, no
    /// address of a name the new rules deny is in the set, and none will
    /// be pinned for it by an answer already in flight. On failure the old
    /// rules stay. Nothing is applied to a sandbox without a table (not
    /// running): its next start installs the rules.
    pub async fn update(&self, id: &str, rules: &EgressRules) -> Result<(), String> {
        let policy = Arc::new(Policy::compile(rules)?);
        let attached = lock(&self.sandboxes).get(id).cloned();
        let table = dwell_runtime::host::network::table_name(id);
        let Some(a) = attached else {
            return apply_sets(table, policy, Vec::new()).await;
        };
        let _pins = a.pin_lock.lock().await;
        let old = a.set_policy(policy.clone());
        let now = Instant::now();
        let kept: HashMap<Ipv4Addr, Learned> = lock(&a.learned)
            .iter()
            .filter(|(_, l)| l.until > now)
            .filter_map(|(addr, l)| {
                let names: Vec<String> = l
                    .names
                    .iter()
                    .filter(|n| policy.name_verdict(n) == NameVerdict::Pin)
                    .cloned()
                    .collect();
                let until = l.until;
                (!names.is_empty()).then_some((*addr, Learned { names, until }))
            })
            .collect();
        let pins: Vec<Pin> = kept
            .iter()
            .map(|(addr, l)| Pin {
                addr: *addr,
                ttl: l.until - now,
            })
            .collect();
        match apply_sets(table, policy, pins).await {
            Ok(()) => {
                *lock(&a.learned) = kept;
                Ok(())
            }
            Err(e) => {
                a.set_policy(old);
                Err(e)
            }
        }
    }
}

/// Replace the egress sets of `table` (if it exists) with `policy`'s and
/// `pins`.
async fn apply_sets(table: String, policy: Arc<Policy>, pins: Vec<Pin>) -> Result<(), String> {
    tokio::task::spawn_blocking(move || {
        egress::apply_if_present(&table, &policy, &pins).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("applying the egress rules: {e}"))?
}

impl Attached {
    /// Take one token; false when the sandbox asks too fast.
    fn admit(&self, opts: &Options) -> bool {
        let mut b = lock(&self.bucket);
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * f64::from(opts.rate);
        b.tokens = (b.tokens + refill).min(f64::from(opts.burst));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// The rules in force now.
    fn rules(&self) -> Rules {
        self.rules.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Decide by `policy` from now on (a new generation); the old policy.
    fn set_policy(&self, policy: Arc<Policy>) -> Arc<Policy> {
        let mut r = self.rules.write().unwrap_or_else(|p| p.into_inner());
        r.generation += 1;
        std::mem::replace(&mut r.policy, policy)
    }

    /// Pin the addresses `wanted` of allowed name `name`, decided by the
    /// rules of generation `generation`; `Err` is the response code to
    /// answer instead. The request waits in the sandbox's queue; whoever
    /// takes the pin lock next pins every request waiting, in one nft run
    /// ([`Attached::pin_batch`]).
    async fn pin(
        &self,
        r: &Resolver,
        generation: u64,
        name: &str,
        wanted: &[Pin],
    ) -> Result<(), ResponseCode> {
        let (done, result) = oneshot::channel();
        lock(&self.pending).push(PinRequest {
            generation,
            name: name.to_string(),
            wanted: wanted.to_vec(),
            done,
        });
        {
            let _pins = self.pin_lock.lock().await;
            let batch = std::mem::take(&mut *lock(&self.pending));
            if !batch.is_empty() {
                self.pin_batch(r, batch).await;
            }
        }
        // Answered by now (by this task or the one that took the lock
        // before); a dropped request (its task aborted) is a failure.
        result.await.unwrap_or(Err(ResponseCode::ServFail))
    }

    /// Pin the requests of `batch`, holding the pin lock. A request whose
    /// generation is not the current one is judged again by the current
    /// rules (NXDOMAIN if its name is now denied, no pin if it is no
    /// longer pinned). Addresses pinned with more than half of their time
    /// left are not pinned again; a request whose new addresses do not fit
    /// in [`MAX_LEARNED`] pins nothing and gets SERVFAIL.
    async fn pin_batch(&self, r: &Resolver, batch: Vec<PinRequest>) {
        let current = self.rules();
        let at = Instant::now();
        let mut accepted: Vec<PinRequest> = Vec::new();
        let mut fresh: Vec<Pin> = Vec::new();
        {
            let l = lock(&self.learned);
            let live = |addr: &Ipv4Addr| l.get(addr).is_some_and(|x| x.until > at);
            let mut in_use = l.values().filter(|x| x.until > at).count();
            for req in batch {
                if req.generation != current.generation {
                    match current.policy.name_verdict(&req.name) {
                        NameVerdict::Deny => {
                            let _ = req.done.send(Err(ResponseCode::NXDomain));
                            continue;
                        }
                        NameVerdict::Pass => {
                            let _ = req.done.send(Ok(()));
                            continue;
                        }
                        NameVerdict::Pin => {}
                    }
                }
                let mine: Vec<Pin> = req
                    .wanted
                    .iter()
                    .filter(|p| match l.get(&p.addr) {
                        Some(x) => x.until.saturating_duration_since(at) <= p.ttl / 2,
                        None => true,
                    })
                    .copied()
                    .collect();
                let added = mine
                    .iter()
                    .filter(|p| !live(&p.addr) && !fresh.iter().any(|f| f.addr == p.addr))
                    .count();
                if in_use + added > MAX_LEARNED {
                    tracing::warn!(
                        "sandbox {}: {MAX_LEARNED} addresses are pinned; not pinning those of \
                         {} until some expire",
                        self.id,
                        req.name
                    );
                    let _ = req.done.send(Err(ResponseCode::ServFail));
                    continue;
                }
                in_use += added;
                for p in mine {
                    match fresh.iter_mut().find(|f| f.addr == p.addr) {
                        Some(f) => f.ttl = f.ttl.max(p.ttl),
                        None => fresh.push(p),
                    }
                }
                accepted.push(req);
            }
        }
        if !fresh.is_empty() {
            let (table, pinner, p) = (self.table.clone(), r.pinner.clone(), fresh.clone());
            let failed = match tokio::task::spawn_blocking(move || pinner(&table, &p)).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = failed {
                tracing::warn!("sandbox {}: pinning resolved addresses: {e}", self.id);
                for req in accepted {
                    let _ = req.done.send(Err(ResponseCode::ServFail));
                }
                return;
            }
        }
        // Taken after nft ran: never before the kernel's elements expire.
        let at = Instant::now();
        let mut l = lock(&self.learned);
        if l.len() + fresh.len() > MAX_LEARNED {
            l.retain(|_, x| x.until > at);
        }
        for p in &fresh {
            let x = l.entry(p.addr).or_insert_with(|| Learned {
                names: Vec::new(),
                until: at,
            });
            if x.until <= at {
                x.names.clear();
            }
            x.until = at + p.ttl;
        }
        for req in accepted {
            for p in &req.wanted {
                if let Some(x) = l.get_mut(&p.addr) {
                    remember(&mut x.names, &req.name);
                }
            }
            let _ = req.done.send(Ok(()));
        }
    }
}

/// An answer's addresses waiting to be pinned.
struct PinRequest {
    /// The generation of the rules that allowed the name.
    generation: u64,
    name: String,
    wanted: Vec<Pin>,
    done: oneshot::Sender<Result<(), ResponseCode>>,
}

/// Add `name` to the names of a pinned address (the oldest goes when
/// there are [`MAX_NAMES_PER_ADDR`]: the address may then be dropped at a
/// rule change that still allows it, never kept for a revoked name).
fn remember(names: &mut Vec<String>, name: &str) {
    if let Some(i) = names.iter().position(|n| n == name) {
        names.remove(i);
    } else if names.len() >= MAX_NAMES_PER_ADDR {
        names.remove(0);
    }
    names.push(name.to_string());
}

async fn serve_udp(r: Arc<Resolver>, sb: std::sync::Weak<Attached>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; MAX_UDP + 1];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(a) = sb.upgrade() else { return };
        if n > MAX_UDP || peer.ip() != IpAddr::V4(a.sandbox_ip) {
            continue;
        }
        let Ok(permit) = a.in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (r, sock) = (r.clone(), sock.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if let Some(reply) = answer(&r, &a, &query, false).await {
                let _ = sock.send_to(&reply, peer).await;
            }
        });
    }
}

async fn serve_tcp(r: Arc<Resolver>, sb: std::sync::Weak<Attached>, l: TcpListener) {
    loop {
        let Ok((conn, peer)) = l.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(a) = sb.upgrade() else { return };
        if peer.ip() != IpAddr::V4(a.sandbox_ip) {
            continue;
        }
        let Ok(permit) = a.tcp.clone().try_acquire_owned() else {
            continue;
        };
        let r = r.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = serve_conn(&r, &a, conn).await;
        });
    }
}

/// Queries on one TCP connection, one after the other, until it closes,
/// sits idle or has asked 100.
async fn serve_conn(r: &Resolver, a: &Attached, mut conn: TcpStream) -> io::Result<()> {
    for _ in 0..100 {
        let idle = r.opts.tcp_idle;
        let Ok(len) = tokio::time::timeout(idle, conn.read_u16()).await else {
            return Ok(());
        };
        let mut q = vec![0u8; usize::from(len?)];
        tokio::time::timeout(idle, conn.read_exact(&mut q))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let Some(reply) = answer(r, a, &q, true).await else {
            return Ok(());
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&(reply.len() as u16).to_be_bytes());
        out.extend_from_slice(&reply);
        conn.write_all(&out).await?;
    }
    Ok(())
}

/// An error reply to `q` (its question kept).
fn reply_to(q: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(q.id(), q.op_code(), code);
    m.add_queries(q.queries().iter().cloned());
    m.set_recursion_desired(q.recursion_desired());
    m.set_recursion_available(true);
    m
}

fn encode(m: &Message) -> Option<Vec<u8>> {
    m.to_vec().ok()
}

/// The answer to one query from sandbox `a`, or None to stay silent.
async fn answer(r: &Resolver, a: &Attached, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
    let q = match Message::from_vec(query) {
        Ok(q) => q,
        Err(_) if query.len() >= 2 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return encode(&Message::error_msg(
                id,
                OpCode::Query,
                ResponseCode::FormErr,
            ));
        }
        Err(_) => return None,
    };
    if q.message_type() != MessageType::Query {
        return None;
    }
    if !a.admit(&r.opts) {
        return encode(&reply_to(&q, ResponseCode::Refused));
    }
    if q.op_code() != OpCode::Query {
        return encode(&reply_to(&q, ResponseCode::NotImp));
    }
    let [question] = q.queries() else {
        return encode(&reply_to(&q, ResponseCode::FormErr));
    };
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.').to_string();
    let peers = r.peers.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(ip) = peers.resolve(&a.id, &name) {
        return encode(&peer_answer(&q, question.query_type(), ip));
    }
    let rules = a.rules();
    let verdict = rules.policy.name_verdict(&name);
    if verdict == NameVerdict::Deny {
        return encode(&reply_to(&q, ResponseCode::NXDomain));
    }
    let Some(mut resp) = forward(r, &q, tcp).await else {
        return encode(&reply_to(&q, ResponseCode::ServFail));
    };
    let outcome = match verdict {
        NameVerdict::Pin => {
            let pins = limit_pins(&mut resp);
            a.pin(r, rules.generation, &name, &pins).await
        }
        // The rules may have changed while the upstream answered.
        _ => match a.rules() {
            now if now.generation != rules.generation
                && now.policy.name_verdict(&name) == NameVerdict::Deny =>
            {
                Err(ResponseCode::NXDomain)
            }
            _ => Ok(()),
        },
    };
    if let Err(code) = outcome {
        return encode(&reply_to(&q, code));
    }
    resp.set_id(q.id());
    let bytes = encode(&resp)?;
    let limit = if tcp {
        usize::from(u16::MAX)
    } else {
        q.extensions()
            .as_ref()
            .map(|e| usize::from(e.max_payload()).max(PLAIN_UDP))
            .unwrap_or(PLAIN_UDP)
    };
    if bytes.len() > limit {
        return encode(&resp.truncate());
    }
    Some(bytes)
}

/// An authoritative answer for a peer's address.
fn peer_answer(q: &Message, qtype: RecordType, ip: IpAddr) -> Message {
    let mut m = reply_to(q, ResponseCode::NoError);
    m.set_authoritative(true);
    let name = q.queries()[0].name().clone();
    let rdata = match (qtype, ip) {
        (RecordType::A, IpAddr::V4(v4)) => Some(RData::A(v4.into())),
        (RecordType::AAAA, IpAddr::V6(v6)) => Some(RData::AAAA(v6.into())),
        _ => None,
    };
    if let Some(rdata) = rdata {
        m.add_answer(Record::from_rdata(name, PEER_TTL, rdata));
    }
    m
}

/// The IPv4 addresses of an allowed name's answer to pin, each for its
/// TTL clamped to [`MIN_PIN`]..[`MAX_PIN`]. The answer keeps only the
/// first [`MAX_PINS_PER_ANSWER`] distinct addresses (the sandbox never
/// learns of others it could not reach), and no TTL above [`MAX_PIN`] (a
/// client caching it re-asks before its pin is gone).
fn limit_pins(resp: &mut Message) -> Vec<Pin> {
    let cap = u32::try_from(MAX_PIN.as_secs()).unwrap_or(u32::MAX);
    let mut pins: Vec<Pin> = Vec::new();
    let mut kept = Vec::new();
    for mut rec in resp.take_answers() {
        rec.set_ttl(rec.ttl().min(cap));
        if let RData::A(a) = rec.data() {
            let ttl = Duration::from_secs(u64::from(rec.ttl())).clamp(MIN_PIN, MAX_PIN);
            let full = pins.len() >= MAX_PINS_PER_ANSWER;
            match pins.iter_mut().find(|p| p.addr == a.0) {
                Some(p) => p.ttl = p.ttl.max(ttl),
                None if !full => pins.push(Pin { addr: a.0, ttl }),
                None => continue,
            }
        }
        kept.push(rec);
    }
    resp.insert_answers(kept);
    pins
}

/// Ask the upstreams in turn; the first answer that matches the question
/// wins. Over UDP first; a truncated answer is fetched again over TCP when
/// the sandbox asked over TCP (a UDP client gets it truncated and retries
/// over TCP itself).
async fn forward(r: &Resolver, q: &Message, tcp: bool) -> Option<Message> {
    let mut out = q.clone();
    let id = random_id();
    out.set_id(id);
    let bytes = out.to_vec().ok()?;
    for up in &r.opts.upstreams {
        let t = r.opts.upstream_timeout;
        let got = tokio::time::timeout(t, exchange_udp(*up, &bytes, q, id))
            .await
            .ok()
            .flatten();
        let got = match got {
            Some(m) if m.truncated() && tcp => {
                tokio::time::timeout(t, exchange_tcp(*up, &bytes, q, id))
                    .await
                    .ok()
                    .flatten()
            }
            other => other,
        };
        if got.is_some() {
            return got;
        }
    }
    None
}

fn matches(resp: &Message, q: &Message, id: u16) -> bool {
    resp.id() == id && resp.message_type() == MessageType::Response && resp.queries() == q.queries()
}

async fn exchange_udp(up: SocketAddr, bytes: &[u8], q: &Message, id: u16) -> Option<Message> {
    let any: SocketAddr = match up {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(any).await.ok()?;
    sock.connect(up).await.ok()?;
    sock.send(bytes).await.ok()?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = sock.recv(&mut buf).await.ok()?;
        if let Ok(m) = Message::from_vec(&buf[..n]) {
            if matches(&m, q, id) {
                return Some(m);
            }
        }
    }
}

async fn exchange_tcp(up: SocketAddr, bytes: &[u8], q: &Message, id: u16) -> Option<Message> {
    let mut c = TcpStream::connect(up).await.ok()?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
    c.write_all(&out).await.ok()?;
    let len = c.read_u16().await.ok()?;
    let mut buf = vec![0u8; usize::from(len)];
    c.read_exact(&mut buf).await.ok()?;
    Message::from_vec(&buf).ok().filter(|m| matches(m, q, id))
}

/// A query id an off-path sender cannot guess.
fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() as u16;
    }
    u16::from_be_bytes(b)
}

#[cfg(test)]
mod tests;
