//! Accepting SSH connections: the connection bounds, public-key
//! authentication against the keys registered per tenant, the login record
//! (audit log, activity), and handing each channel to its task.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dwell_control::Controller;
use russh::keys::HashAlg;
use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session, VerifiedPublicKey};
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
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_connections: 256,
            idle_timeout: Duration::from_secs(3600),
            login_grace: Duration::from_secs(30),
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
        tokio::spawn(async move {
            let _slot = slot;
            let authed = Arc::new(AtomicBool::new(false));
            let conn = Conn {
                ctl,
                peer,
                login: None,
                authed: authed.clone(),
                open: Arc::new(AtomicUsize::new(0)),
                chans: HashMap::new(),
            };
            let session =
                match tokio::time::timeout(grace, russh::server::run_stream(config, socket, conn))
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
            let watchdog = tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if !authed.load(Ordering::SeqCst) {
                    let _ = handle
                        .disconnect(
                            russh::Disconnect::ByApplication,
                            "not logged in in time".into(),
                            String::new(),
                        )
                        .await;
                }
            });
            if let Err(e) = session.await {
                tracing::debug!("ssh: {peer}: connection ended: {e}");
            }
            watchdog.abort();
        });
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
    peer: SocketAddr,
    login: Option<Arc<Login>>,
    authed: Arc<AtomicBool>,
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

    /// Answers a request that starts a channel's program: only the first.
    fn start(
        &mut self,
        id: ChannelId,
        ok: bool,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let c = self.chan(id);
        if ok && !c.started {
            c.started = true;
            session.channel_success(id)
        } else {
            session.channel_failure(id)
        }
    }

    fn login_or_reject(&self) -> Option<Arc<Login>> {
        self.login.clone()
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
            Ok(Some((k, sb))) => {
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
                self.login = Some(Arc::new(Login {
                    tenant: k.tenant,
                    sandbox_id: sb.id,
                    sandbox_name: sb.name,
                    key_id: k.id,
                }));
                self.authed.store(true, Ordering::SeqCst);
                Ok(Auth::Accept)
            }
            Ok(None) => {
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
        let Some(login) = self.login_or_reject() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Some(slot) = ChannelSlot::take(&self.open) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
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
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(login) = self.login_or_reject() else {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let Some(slot) = ChannelSlot::take(&self.open) else {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
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
