//! Port exposures (`dwell expose`, `/v1/sandboxes/{id}/ports`) and what
//! the port proxy asks: which sandbox and exposure a host name means, and
//! whether a token, login link or cookie grants access. Naming and the
//! credential formats are in [`crate::ports`].

use dwell_store::Exposure;

use super::Controller;
use crate::error::{Error, Result};
use crate::model::Sandbox;
use crate::ports::{self, Exposed, HostTarget, Login, PortRoute, PortSettings};

fn check_port(port: u16) -> Result<()> {
    if port == 0 {
        return Err(Error::Invalid {
            field: "port".into(),
            message: "port 0 is not a port; give the port the server listens on (1-65535)".into(),
        });
    }
    Ok(())
}

impl Controller {
    /// Tells the controller where the port proxy serves (`dwell serve
    /// --proxy-listen`), so URLs can be printed.
    pub fn configure_ports(&self, settings: PortSettings) {
        *self
            .inner
            .ports
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(settings);
    }

    /// Where the port proxy serves, when it does.
    pub fn port_settings(&self) -> Option<PortSettings> {
        self.inner
            .ports
            .settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Exposes `port` of a sandbox, privately (a new token) or publicly.
    /// Exposing it again the same way changes nothing; switching a public
    /// port to private, or asking for a new token, makes a new token
    /// (which voids the old one, its login links and cookies).
    pub fn expose_port(
        &self,
        tenant: &str,
        id_or_name: &str,
        port: u16,
        public: bool,
        new_token: bool,
    ) -> Result<Exposed> {
        check_port(port)?;
        let sandbox = self.get(tenant, id_or_name)?;
        let old = self.inner.store.get_exposure(&sandbox.id, port)?;
        if let Some(old) = &old {
            let same = old.public == public && (public || !new_token);
            if same {
                return Ok(Exposed {
                    sandbox,
                    exposure: old.clone(),
                    token: None,
                    created: false,
                });
            }
        }
        let (token, token_hash) = if public {
            (None, None)
        } else {
            let (t, h) = ports::new_token()
                .map_err(|e| Error::Internal(format!("cannot make a port token: {e}")))?;
            (Some(t), Some(h))
        };
        let exposure = Exposure {
            sandbox_id: sandbox.id.clone(),
            port,
            public,
            token_hash,
            created_at: self.inner.clock.now_ms(),
            host_header: old.and_then(|o| o.host_header),
        };
        self.inner.store.put_exposure(&exposure)?;
        Ok(Exposed {
            sandbox,
            exposure,
            token,
            created: true,
        })
    }

    /// The exposures of a sandbox, by port.
    pub fn port_exposures(
        &self,
        tenant: &str,
        id_or_name: &str,
    ) -> Result<(Sandbox, Vec<Exposure>)> {
        let sandbox = self.get(tenant, id_or_name)?;
        let list = self.inner.store.list_exposures(&sandbox.id)?;
        Ok((sandbox, list))
    }

    /// The exposure that covers one port of a sandbox: its own, or the
    /// sandbox's every-port exposure (then shown with `port` as its port).
    pub fn port_exposure(
        &self,
        tenant: &str,
        id_or_name: &str,
        port: u16,
    ) -> Result<(Sandbox, Exposure)> {
        check_port(port)?;
        let sandbox = self.get(tenant, id_or_name)?;
        let covering = self
            .inner
            .store
            .covering_exposure(&sandbox.id, port)?
            .map(|e| Exposure { port, ..e });
        match covering {
            Some(e) => Ok((sandbox, e)),
            None => Err(Error::PortNotExposed {
                sandbox: sandbox.name,
                port,
            }),
        }
    }

    /// Stops exposing `port`; the proxy refuses it from then on.
    pub fn unexpose_port(&self, tenant: &str, id_or_name: &str, port: u16) -> Result<Sandbox> {
        check_port(port)?;
        let sandbox = self.get(tenant, id_or_name)?;
        if !self.inner.store.delete_exposure(&sandbox.id, port)? {
            return Err(Error::PortNotExposed {
                sandbox: sandbox.name,
                port,
            });
        }
        Ok(sandbox)
    }

    /// Exposes every port of a sandbox (E2B's model: any port is reachable
    /// as `PORT-ID.DOMAIN`), public or behind the sandbox's traffic access
    /// token ([`Self::traffic_token`]); `host_header`: the `Host` its
    /// servers get instead of the client's ([`ports::check_host_header`]).
    pub fn expose_all_ports(
        &self,
        sandbox_id: &str,
        public: bool,
        host_header: Option<&str>,
    ) -> Result<()> {
        if let Some(h) = host_header {
            ports::check_host_header(h).map_err(|message| Error::Invalid {
                field: "host_header".into(),
                message,
            })?;
        }
        let token_hash = if public {
            None
        } else {
            Some(ports::token_hash(&self.traffic_token(sandbox_id)?))
        };
        self.inner.store.put_exposure(&Exposure {
            sandbox_id: sandbox_id.to_string(),
            port: 0,
            public,
            token_hash,
            created_at: self.inner.clock.now_ms(),
            host_header: host_header.map(str::to_string),
        })?;
        Ok(())
    }

    /// E2B's traffic access token of a sandbox: derived from the daemon
    /// key and the sandbox id, so it can be given again on connect.
    pub fn traffic_token(&self, sandbox_id: &str) -> Result<String> {
        let msg = format!("traffic\0{sandbox_id}");
        Ok(self.sealer()?.port_mac(msg.as_bytes()).to_hex().to_string())
    }

    /// The traffic access token of a sandbox whose every port is exposed
    /// privately (an E2B sandbox created with `allowPublicTraffic: false`).
    pub fn traffic_token_of(&self, sandbox_id: &str) -> Result<Option<String>> {
        match self.inner.store.get_exposure(sandbox_id, 0)? {
            Some(e) if !e.public => Ok(Some(self.traffic_token(sandbox_id)?)),
            _ => Ok(None),
        }
    }

    /// A sandbox's every-port exposure (E2B's), when it has one: whether it
    /// is public and the host header it names.
    pub fn all_ports_exposure(&self, sandbox_id: &str) -> Result<Option<Exposure>> {
        Ok(self.inner.store.get_exposure(sandbox_id, 0)?)
    }

    /// A one-time login token for a private exposure, valid for
    /// [`ports::LOGIN_LIFETIME_MS`]; `None` for a public one.
    pub fn port_login_token(&self, exposure: &Exposure, port: u16) -> Result<Option<String>> {
        let Some(hash) = &exposure.token_hash else {
            return Ok(None);
        };
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce)
            .map_err(|e| Error::Internal(format!("OS random source: {e}")))?;
        let mut login = Login {
            sandbox_id: exposure.sandbox_id.clone(),
            port,
            expires_ms: self.inner.clock.now_ms() + ports::LOGIN_LIFETIME_MS,
            nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
            mac: String::new(),
        };
        let boot = self
            .inner
            .ports
            .boot_key()
            .map_err(|e| Error::Internal(format!("cannot sign a login link: {e}")))?;
        login.mac = self
            .sealer()?
            .port_mac(&login.signed(hash, &boot))
            .to_hex()
            .to_string();
        Ok(Some(login.encode()))
    }

    /// The sandbox and exposure a proxied host name means. `None` when the
    /// host is not a port name under `domain` or names no live sandbox.
    pub fn port_route(&self, host: &str, domain: &str) -> Result<Option<PortRoute>> {
        let Some((port, target)) = ports::parse_host(host, domain) else {
            return Ok(None);
        };
        let by_id = matches!(target, HostTarget::Id(_));
        let sandbox = match target {
            HostTarget::Id(id) => match self.live_sandbox(&id)? {
                Some(s) => s,
                None => return Ok(None),
            },
            HostTarget::Name { name, tenant } => match self.get(&tenant, &name) {
                Ok(s) => s,
                Err(Error::NotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let exposure = self.inner.store.covering_exposure(&sandbox.id, port)?;
        Ok(Some(PortRoute {
            sandbox,
            port,
            exposure,
            by_id,
        }))
    }

    /// Redeems a one-time login token for `route`: true once per token,
    /// while it is valid and the exposure keeps its token.
    pub fn redeem_port_login(&self, route: &PortRoute, token: &str) -> bool {
        let (Some(login), Some(exp)) = (Login::parse(token), &route.exposure) else {
            return false;
        };
        let Some(hash) = &exp.token_hash else {
            return false;
        };
        let (Ok(sealer), Ok(boot)) = (self.sealer(), self.inner.ports.boot_key()) else {
            return false;
        };
        let now = self.inner.clock.now_ms();
        let valid = login.sandbox_id == route.sandbox.id
            && login.port == route.port
            && login.expires_ms > now
            && blake3::Hash::from_hex(&login.mac)
                .is_ok_and(|m| m == sealer.port_mac(&login.signed(hash, &boot)));
        valid
            && self.inner.ports.redeem(
                &route.sandbox.id,
                route.port,
                &login.nonce,
                login.expires_ms,
                now,
            )
    }

    /// A cookie value granting `host` access to `route` for
    /// [`ports::COOKIE_LIFETIME_MS`].
    pub fn port_cookie(&self, route: &PortRoute, host: &str) -> Result<String> {
        let hash = route
            .exposure
            .as_ref()
            .and_then(|e| e.token_hash.clone())
            .unwrap_or_default();
        let exp = self.inner.clock.now_ms() + ports::COOKIE_LIFETIME_MS;
        let mac = self.sealer()?.port_mac(&ports::cookie_signed(
            host,
            &route.sandbox.id,
            route.port,
            exp,
            &hash,
        ));
        Ok(format!("{exp}.{}", mac.to_hex()))
    }

    /// Whether a cookie value from [`Self::port_cookie`] still grants
    /// `host` access to `route`.
    pub fn port_cookie_valid(&self, route: &PortRoute, host: &str, value: &str) -> bool {
        let Some(hash) = route.exposure.as_ref().and_then(|e| e.token_hash.as_ref()) else {
            return false;
        };
        let Some((exp, mac)) = value.split_once('.') else {
            return false;
        };
        let Ok(exp) = exp.parse::<i64>() else {
            return false;
        };
        if exp <= self.inner.clock.now_ms() {
            return false;
        }
        let Ok(sealer) = self.sealer() else {
            return false;
        };
        blake3::Hash::from_hex(mac).is_ok_and(|m| {
            m == sealer.port_mac(&ports::cookie_signed(
                host,
                &route.sandbox.id,
                route.port,
                exp,
                hash,
            ))
        })
    }
}
