//! Accepting SSH connections: the connection bounds (a budget for
//! connections not yet logged in, per source address and in all, so
//! anonymous clients cannot take every slot), public-key authentication
//! against the keys registered per tenant (`SANDBOX` or `SANDBOX+TENANT`),
//! the login record (audit log, activity), handing each channel to its
//! task, and closing connections whose key is removed.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dwell_control::{Controller, SshLogin};
use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Handle, Handler, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, MethodKind, MethodSet};
use tokio::net::TcpListener;

use crate::host_key::HostKey;

/// Channels (sessions and forwards) one connection may have open at once.
pub const MAX_CHANNELS: usize = 32;
/// Authentication attempts per connection.
pub const MAX_AUTH_ATTEMPTS: usize = 6;
/// Environment variables one session may set (`env` requests).
pub const MAX_ENV: usize = 64;
/// Longest environment value accepted.
pub const MAX_ENV_VALUE: usize = 4096;

/// Limits of the gateway.
#[derive(Debug, Clone)]
pub struct Options {
    /// Connections served at once; more are closed right away.
    pub max_connections: usize,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Time a client has to identify itself and log in.
    pub login_grace: Duration,
    /// Connections not yet logged in, in all (OpenSSH's `MaxStartups`);
    /// more are closed right away, so logged-in users keep the rest of
    /// `max_connections`.
    pub max_startups: usize,
    /// Connections not yet logged in from one source address.
    pub max_startups_per_ip: usize,
    /// In a cluster: how sandboxes of other nodes are reached.
    pub remote: Option<crate::Remote>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 256,
            idle_timeout: Duration::from_secs(3600),
            login_grace: Duration::from_secs(20),
            max_startups: 64,
            max_startups_per_ip: 10,
            remote: None,
        }
    }
}

/// The source a connection counts against: its IPv4 address, or the /64
/// of an IPv6 one (a single host commonly holds a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

/// Connections not yet logged in: in all and per source ([`source_of`]).
#[derive(Debug, Default)]
struct Startups {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// One not-yet-logged-in connection's place in the [`Startups`] budget,
/// given back when dropped (at login or when the connection ends).
pub struct StartupSlot {
    budget: Arc<Mutex<Startups>>,
    ip: IpAddr,
}

impl StartupSlot {
    /// A place for a connection from `ip`; `Err` says which bound is full.
    fn take(
        budget: &Arc<Mutex<Startups>>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<StartupSlot, &'static str> {
        let mut b = budget.lock().unwrap_or_else(|p| p.into_inner());
        if b.total >= max_total.max(1) {
            return Err("--ssh-max-startups");
        }
        let n = b.per_ip.entry(ip).or_default();
        if *n >= max_per_ip.max(1) {
            return Err("--ssh-max-startups-per-ip");
        }
        *n += 1;
        b.total += 1;
        Ok(StartupSlot {
            budget: budget.clone(),
            ip,
        })
    }
}

impl Drop for StartupSlot {
    fn drop(&mut self) {
        let mut b = self.budget.lock().unwrap_or_else(|p| p.into_inner());
        b.total = b.total.saturating_sub(1);
        if let Some(n) = b.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                b.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Who a connection logged in as.
#[derive(Debug, Clone)]
pub struct Login {
    pub tenant: String,
    pub sandbox_id: String,
    pub sandbox_name: String,
    pub key_id: String,
    /// In a cluster: how the sandbox is reached when another node runs it.
    pub remote: Option<crate::Remote>,
}

/// Serves SSH on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    ctl: Controller,
    host: HostKey,
    opts: Options,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    let config = Arc::new(russh::server::Config {
        server_id: russh::SshId::Standard(
            concat!("SSH-2.0-dwell_", env!("CARGO_PKG_VERSION")).into(),
        ),
        methods,
        auth_rejection_time: Duration::from_millis(500),
        auth_rejection_time_initial: Some(Duration::ZERO),
        keys: vec![host.key],
        max_auth_attempts: MAX_AUTH_ATTEMPTS,
        // No traffic either way for this long closes the connection. No
        // keepalives of our own: their answers would count as traffic and
        // keep idle connections open for ever (a client that wants to stay
        // sets ServerAliveInterval).
        inactivity_timeout: Some(opts.idle_timeout),
        keepalive_interval: None,
        nodelay: true,
        ..Default::default()
    });
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    let startups = Arc::new(Mutex::new(Startups::default()));
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: wait, do not spin.
                    tracing::warn!("ssh: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let startup = match StartupSlot::take(
            &startups,
            source_of(peer.ip()),
            opts.max_startups,
            opts.max_startups_per_ip,
        ) {
            Ok(s) => s,
            Err(flag) => {
                tracing::warn!(
                    "ssh: refusing {peer}: too many connections not logged in yet ({flag})"
                );
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "ssh: refusing {peer}: {} connections already open (--ssh-max-connections)",
                opts.max_connections
            );
            continue;
        };
        let ctl = ctl.clone();
        let config = config.clone();
        let grace = opts.login_grace;
        let remote = opts.remote.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let deadline = tokio::time::Instant::now() + grace;
            let login = Arc::new(OnceLock::new());
            let handle_cell = Arc::new(OnceLock::new());
            // Subscribed before the login check, so no removal is missed.
            let changes = ctl.ssh_keys_changed();
            let conn = Conn {
                ctl: ctl.clone(),
                remote: remote.clone(),
                peer,
                login: login.clone(),
                startup: Some(startup),
                handle: handle_cell.clone(),
                refusal: None,
                open: Arc::new(AtomicUsize::new(0)),
                chans: HashMap::new(),
            };
            let session = match tokio::time::timeout_at(
                deadline,
                russh::server::run_stream(config, socket, conn),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!("ssh: {peer}: handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!("ssh: {peer}: no handshake within {grace:?}");
                    return;
                }
            };
            let handle = session.handle();
            let _ = handle_cell.set(handle.clone());
            let watchdog = tokio::spawn(watch(ctl, peer, login, handle, deadline, changes));
            if let Err(e) = session.await {
                tracing::debug!("ssh: {peer}: connection ended: {e}");
            }
            watchdog.abort();
        });
    }
}

/// Closes a connection not logged in by `deadline`, and a logged-in one
/// as soon as its key is removed (`changes`); a login that stops holding
/// otherwise (its sandbox deleted) is caught at its next channel open.
async fn watch(
    ctl: Controller,
    peer: SocketAddr,
    login: Arc<OnceLock<Arc<Login>>>,
    handle: Handle,
    deadline: tokio::time::Instant,
    mut changes: tokio::sync::watch::Receiver<u64>,
) {
    let mut in_grace = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline), if in_grace => {
                in_grace = false;
                if login.get().is_none() {
                    disconnect(&handle, "not logged in in time").await;
                    return;
                }
            }
            // The controller (which holds the sender) outlives this task;
            // were it gone, nothing more is to be checked.
            r = changes.changed() => {
                if r.is_err() {
                    return;
                }
                if let Some(l) = login.get() {
                    if !holds(&ctl, peer, l) {
                        disconnect(&handle, REVOKED).await;
                        return;
                    }
                }
            }
        }
    }
}

/// What a client is told when its login stops holding.
const REVOKED: &str = "the SSH key of this login was removed (or its sandbox deleted); \
                       register it again with `dwell ssh-key add`";

async fn disconnect(handle: &Handle, why: &str) {
    let _ = handle
        .disconnect(
            russh::Disconnect::ByApplication,
            why.to_string(),
            String::new(),
        )
        .await;
}

/// Whether `login` still holds (a failed check counts as no).
fn holds(ctl: &Controller, peer: SocketAddr, l: &Login) -> bool {
    match ctl.ssh_login_holds(&l.key_id, &l.tenant, &l.sandbox_id) {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(
                "ssh: closing {peer}: key {} of tenant {} no longer logs in to sandbox {}",
                l.key_id,
                l.tenant,
                l.sandbox_id
            );
            false
        }
        Err(e) => {
            tracing::warn!("ssh: {peer}: cannot re-check the login: {e}");
            false
        }
    }
}

/// Requests seen on one session channel, to answer them in order (the
/// channel's task applies the same rules to the same requests).
#[derive(Default)]
struct ChanReqs {
    env: usize,
    started: bool,
}

/// One connection.
struct Conn {
    ctl: Controller,
    remote: Option<crate::Remote>,
    peer: SocketAddr,
    /// Set once, at login.
    login: Arc<OnceLock<Arc<Login>>>,
    /// The connection's place among those not logged in yet.
    startup: Option<StartupSlot>,
    /// Set once the session runs (to send a reason before closing).
    handle: Arc<OnceLock<Handle>>,
    /// Why this connection was let through authentication without a
    /// login (an ambiguous user name), told again on any channel request.
    refusal: Option<String>,
    /// Open channels of this connection.
    open: Arc<AtomicUsize>,
    chans: HashMap<ChannelId, ChanReqs>,
}

/// Holds one of a connection's channel slots until dropped.
pub struct ChannelSlot(Arc<AtomicUsize>);

impl ChannelSlot {
    fn take(open: &Arc<AtomicUsize>) -> Option<ChannelSlot> {
        open.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < MAX_CHANNELS).then_some(n + 1)
        })
        .ok()
        .map(|_| ChannelSlot(open.clone()))
    }
}

impl Drop for ChannelSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether a session may set this environment variable, `count` being
/// set already: a plain name, a bounded value, at most [`MAX_ENV`].
pub fn env_ok(name: &str, value: &str, count: usize) -> bool {
    let plain = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 128
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    plain && value.len() <= MAX_ENV_VALUE && !value.contains('\0') && count < MAX_ENV
}

impl Conn {
    fn chan(&mut self, id: ChannelId) -> &mut ChanReqs {
        self.chans.entry(id).or_default()
    }

    /// Answers a request that starts a channel's program: only the first,
    /// and only while the login holds.
    fn start(
        &mut self,
        id: ChannelId,
        ok: bool,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let ok = ok && self.login_or_reject(session).is_some();
        let c = self.chan(id);
        if ok && !c.started {
            c.started = true;
            session.channel_success(id)
        } else {
            session.channel_failure(id)
        }
    }

    /// What a new channel needs: the login (re-checked) and a channel slot,
    /// or the reason to refuse the channel.
    fn admit(
        &self,
        session: &mut Session,
    ) -> Result<(Arc<Login>, ChannelSlot), ChannelOpenFailure> {
        let login = self
            .login_or_reject(session)
            .ok_or(ChannelOpenFailure::AdministrativelyProhibited)?;
        let slot = ChannelSlot::take(&self.open).ok_or(ChannelOpenFailure::ResourceShortage)?;
        Ok((login, slot))
    }

    /// The login, re-checked (the key may have been removed since): when
    /// it no longer holds, the connection is closed with the reason.
    fn login_or_reject(&self, session: &mut Session) -> Option<Arc<Login>> {
        let Some(login) = self.login.get().cloned() else {
            if let Some(why) = &self.refusal {
                let _ = session.disconnect(russh::Disconnect::ByApplication, why, "");
            }
            return None;
        };
        if holds(&self.ctl, self.peer, &login) {
            Some(login)
        } else {
            let _ = session.disconnect(russh::Disconnect::ByApplication, REVOKED, "");
            None
        }
    }
}

impl Handler for Conn {
    type Error = anyhow::Error;

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let fingerprint = key.public_key.fingerprint(HashAlg::Sha256).to_string();
        match self.ctl.ssh_login(&fingerprint, user) {
            Ok(SshLogin::Granted(k, sb)) => {
                tracing::info!(
                    "ssh: {} logged in to sandbox {} ({}) of tenant {} with key {} ({})",
                    self.peer,
                    sb.name,
                    sb.id,
                    k.tenant,
                    k.name,
                    k.id
                );
                if let Err(e) = self.ctl.audit_request(
                    &k.tenant,
                    &format!("ssh:{}", k.id),
                    "SSH",
                    &format!("/v1/sandboxes/{}/ssh", sb.id),
                    200,
                ) {
                    // No login without its record.
                    tracing::warn!("ssh: cannot record a login in the audit log: {e}");
                    return Ok(Auth::reject());
                }
                self.ctl.touch(&sb.id);
                let login = Arc::new(Login {
                    tenant: k.tenant,
                    sandbox_id: sb.id.clone(),
                    sandbox_name: sb.name.clone(),
                    key_id: k.id,
                    remote: self.remote.clone(),
                });
                // Set before the re-check below: a key removed between the
                // check above and now was seen by the watcher while there
                // was no login to check. Should the re-check fail, the
                // login stays set and this connection logs in no more.
                if self.login.set(login.clone()).is_err() {
                    return Ok(Auth::reject());
                }
                if !holds(&self.ctl, self.peer, &login) {
                    return Ok(Auth::reject());
                }
                self.startup = None;
                Ok(Auth::Accept)
            }
            Ok(SshLogin::Ambiguous { tenants }) => {
                tracing::warn!(
                    "ssh: {} refused as {user:?} with key {fingerprint}: the key is registered \
                     by several tenants ({}), so a bare sandbox name is ambiguous",
                    self.peer,
                    tenants.join(", ")
                );
                // The client must see why, and OpenSSH stops reading once
                // its last key is refused, so a message after the failure
                // would be lost (russh sends no banner after the start).
                // So the key is accepted with NO login (every channel is
                // refused, the connection still counts as not logged in)
                // and the connection closed at once with the reason, which
                // OpenSSH prints ("Received disconnect ...").
                let why = format!(
                    "this key is registered by {} tenants, so {user:?} does not say whose \
                     sandbox to log in to; name the tenant: ssh {user}+TENANT@HOST (or log in \
                     by sandbox id)",
                    tenants.len()
                );
                self.refusal = Some(why.clone());
                match self.handle.get() {
                    Some(h) => {
                        let h = h.clone();
                        tokio::spawn(async move { disconnect(&h, &why).await });
                        Ok(Auth::Accept)
                    }
                    None => Ok(Auth::reject()),
                }
            }
            Ok(SshLogin::Refused) => {
                tracing::info!(
                    "ssh: {} refused as {user:?} with key {fingerprint}: no tenant with this key \
                     has such a sandbox",
                    self.peer
                );
                Ok(Auth::reject())
            }
            Err(e) => {
                tracing::warn!("ssh: {}: login check failed: {e}", self.peer);
                Ok(Auth::reject())
            }
        }
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (login, slot) = match self.admit(session) {
            Ok(admitted) => admitted,
            Err(why) => {
                reply.reject(why).await;
                return Ok(());
            }
        };
        reply.accept().await;
        self.chans.insert(channel.id(), ChanReqs::default());
        let ctl = self.ctl.clone();
        let handle = session.handle();
        tokio::spawn(crate::session::run(ctl, login, channel, handle, slot));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (login, slot) = match self.admit(session) {
            Ok(admitted) => admitted,
            Err(why) => {
                reply.reject(why).await;
                return Ok(());
            }
        };
        crate::forward::open(
            self.ctl.clone(),
            login,
            channel,
            host_to_connect.to_string(),
            port_to_connect,
            reply,
            slot,
        );
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.chans.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.chan(channel).started {
            session.channel_failure(channel)?;
        } else {
            session.channel_success(channel)?;
        }
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let c = self.chan(channel);
        if !c.started && env_ok(name, value, c.env) {
            c.env += 1;
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(self.start(channel, true, session)?)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(self.start(channel, true, session)?)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        Ok(self.start(channel, name == "sftp", session)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_rules() {
        assert!(env_ok("LANG", "C.UTF-8", 0));
        assert!(env_ok("_X1", "", 0));
        assert!(!env_ok("1X", "v", 0));
        assert!(!env_ok("A=B", "v", 0));
        assert!(!env_ok("", "v", 0));
        assert!(!env_ok("A", &"v".repeat(MAX_ENV_VALUE + 1), 0));
        assert!(!env_ok("A", "v", MAX_ENV));
    }

    #[test]
    fn startups_are_bounded_per_source_and_in_all_and_given_back() {
        let budget = Arc::new(Mutex::new(Startups::default()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let take = |ip| StartupSlot::take(&budget, source_of(ip), 3, 2);
        let a1 = take(a).unwrap();
        let _a2 = take(a).unwrap();
        assert_eq!(take(a).err(), Some("--ssh-max-startups-per-ip"));
        let _b1 = take(b).unwrap();
        assert_eq!(take(b).err(), Some("--ssh-max-startups"));
        drop(a1);
        assert!(take(b).is_ok());
        // One IPv6 /64 is one source; a mapped IPv4 address is that address.
        let v6 = |s: &str| source_of(s.parse().unwrap());
        assert_eq!(v6("2001:db8::1"), v6("2001:db8::ffff:1"));
        assert_ne!(v6("2001:db8::1"), v6("2001:db8:0:1::1"));
        assert_eq!(v6("::ffff:192.0.2.1"), a);
    }

    #[test]
    fn channel_slots_are_bounded_and_given_back() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots: Vec<_> = (0..MAX_CHANNELS)
            .map(|_| ChannelSlot::take(&open).unwrap())
            .collect();
        assert!(ChannelSlot::take(&open).is_none());
        drop(slots);
        assert_eq!(open.load(Ordering::SeqCst), 0);
        assert!(ChannelSlot::take(&open).is_some());
    }
}
