//! The port proxy of `dwell serve` (`--proxy-listen ADDR --domain D`,
//! HTTPS with `--proxy-tls-cert`/`--proxy-tls-key`): binds it, tells the
//! controller where it serves (for the URLs the API prints), makes it the
//! E2B domain unless `--e2b-domain` says otherwise, and serves
//! `dwell-proxy` until shutdown, with the E2B routers of the daemon
//! (envd for `49983-ID.D` and `sandbox.D`, the control plane for `api.D`)
//! served in-process. With TLS, SIGHUP reloads the certificate.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dwell_control::{Controller, PortSettings};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::commands::listener::{bind, Limits, DRAIN};
use crate::commands::serve::shutdown;
use crate::commands::serve_e2b::E2bRouters;

/// Checks `--domain`: host name labels only.
fn check_domain(d: &str) -> Result<String> {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 200
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if !ok {
        bail!(
            "--domain {d:?} is not a domain name; give one like localhost or preview.example.com"
        );
    }
    Ok(d)
}

/// The proxy's TLS: its configuration and the certificate it presents.
pub struct ProxyTls {
    config: Arc<rustls::ServerConfig>,
    cert: Arc<dwell_proxy::tls::Certificate>,
    domain: String,
}

/// The TLS configuration `--proxy-tls-cert`/`--proxy-tls-key` ask for,
/// checked (files, key, names) before the daemon starts anything.
pub fn tls_config(a: &ServeArgs) -> Result<Option<ProxyTls>> {
    let (cert, key) = match (&a.proxy_tls_cert, &a.proxy_tls_key) {
        (None, None) => return Ok(None),
        (Some(c), Some(k)) => (c, k),
        (Some(_), None) => bail!(
            "--proxy-tls-cert needs --proxy-tls-key: give the PEM private key of the certificate too"
        ),
        (None, Some(_)) => bail!(
            "--proxy-tls-key needs --proxy-tls-cert: give the PEM certificate chain too"
        ),
    };
    if a.proxy_listen.is_none() {
        bail!("--proxy-tls-cert and --proxy-tls-key are for the port proxy: give --proxy-listen ADDR too");
    }
    let domain = check_domain(&a.domain)?;
    let cert = dwell_proxy::tls::Certificate::load(cert, key).map_err(anyhow::Error::msg)?;
    let config = dwell_proxy::tls::server_config(&cert).map_err(anyhow::Error::msg)?;
    let tls = ProxyTls {
        config,
        cert,
        domain,
    };
    tls.check_names();
    Ok(Some(tls))
}

impl ProxyTls {
    /// Warns when the certificate does not cover the names clients ask for.
    fn check_names(&self) {
        let d = &self.domain;
        let names = [
            format!("8080-sandboxid.{d}"),
            format!("api.{d}"),
            format!("sandbox.{d}"),
        ];
        let missing = dwell_proxy::tls::uncovered(&self.cert.chain(), &names);
        if !missing.is_empty() {
            tracing::warn!(
                "the certificate in --proxy-tls-cert {} is not valid for {} (clients will refuse \
                 the connection); it should cover *.{d}",
                self.cert.cert_path().display(),
                missing.join(", ")
            );
        }
    }

    /// Reloads the certificate on every SIGHUP until shutdown.
    async fn reload_on_hangup(self) -> std::io::Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup())?;
        let stop = shutdown();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                _ = hup.recv() => {}
            }
            match self.cert.reload() {
                Ok(()) => {
                    tracing::info!(
                        "SIGHUP: reloaded the port proxy's certificate from {}",
                        self.cert.cert_path().display()
                    );
                    self.check_names();
                }
                Err(e) => tracing::error!(
                    "SIGHUP: cannot reload the port proxy's certificate, the one loaded before \
                     stays in use: {e}"
                ),
            }
        }
    }
}

/// The bound proxy, waiting for the E2B routers.
pub struct Prepared {
    tcp: TcpListener,
    opts: dwell_proxy::Options,
    /// Reloaded on SIGHUP, with TLS.
    tls: Option<ProxyTls>,
    /// `SCHEME://api.DOMAIN[:PORT]`, for the log.
    api_url: String,
    /// `--proxy-e2b-api`: serve the E2B control plane as `api.DOMAIN`.
    e2b_api: bool,
}

/// Binds the proxy when `--proxy-listen` is given and configures the
/// port URLs and the E2B domain; [`Prepared::spawn`] serves it.
/// `tls`: from [`tls_config`].
pub async fn prepare(
    a: &mut ServeArgs,
    ctl: &Controller,
    limits: Limits,
    tls: Option<ProxyTls>,
) -> Result<Option<Prepared>> {
    if a.proxy_e2b_api && a.e2b_listen.is_none() {
        bail!(
            "--proxy-e2b-api serves the E2B control plane on the proxy: give --e2b-listen ADDR too"
        );
    }
    let Some(addr) = a.proxy_listen.clone() else {
        if a.proxy_e2b_api {
            bail!("--proxy-e2b-api is for the port proxy: give --proxy-listen ADDR too");
        }
        return Ok(None);
    };
    let domain = check_domain(&a.domain)?;
    let idle = humantime::parse_duration(&a.proxy_idle_timeout).with_context(|| {
        format!(
            "--proxy-idle-timeout {:?} is not a duration; write it like 10m",
            a.proxy_idle_timeout
        )
    })?;
    if idle.is_zero() {
        bail!("--proxy-idle-timeout 0s would close every tunnel at once; give a duration like 10m");
    }
    if a.proxy_max_per_sandbox == 0 {
        bail!(
            "--proxy-max-per-sandbox 0 would refuse every request; give at least 1 (default 128)"
        );
    }
    if a.proxy_max_per_ip == 0 {
        bail!("--proxy-max-per-ip 0 would refuse every client; give at least 1 (default 64)");
    }
    let tcp = bind(&addr, "--proxy-listen").await?;
    let port = tcp
        .local_addr()
        .context("--proxy-listen: no local address")?
        .port();
    let url_port = a.proxy_url_port.unwrap_or(port);
    let default_port = if tls.is_some() { 443 } else { 80 };
    let settings = PortSettings {
        domain: domain.clone(),
        url_port: (url_port != default_port).then_some(url_port),
        tls: tls.is_some(),
    };
    ctl.configure_ports(settings.clone());
    if a.e2b_domain.is_none() {
        a.e2b_domain = Some(match settings.url_port {
            Some(p) => format!("{domain}:{p}"),
            None => domain.clone(),
        });
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "port proxy on {scheme}://{addr}: exposed ports are {}",
        settings.url("PORT-ID")
    );
    let mut opts = dwell_proxy::Options::new(domain);
    opts.max_connections = limits.max_connections;
    opts.header_timeout = limits.header_timeout;
    opts.per_sandbox = a.proxy_max_per_sandbox;
    opts.max_per_ip = a.proxy_max_per_ip;
    opts.idle_timeout = idle;
    opts.tls = tls.as_ref().map(|t| t.config.clone());
    let api_url = settings.url("api").trim_end_matches('/').to_string();
    Ok(Some(Prepared {
        tcp,
        opts,
        tls,
        api_url,
        e2b_api: a.proxy_e2b_api,
    }))
}

impl Prepared {
    /// Serves the proxy on `tasks` until shutdown, with the E2B routers:
    /// envd for `49983-ID.D` and `sandbox.D`, the control plane for
    /// `api.D` when `--proxy-e2b-api` asks for it.
    /// In a cluster (`forward`), requests for other nodes' sandboxes go to
    /// them, and what the node listener serves for theirs is returned.
    pub fn spawn(
        self,
        ctl: &Controller,
        routers: &E2bRouters,
        forward: Option<dwell_api::forward::ForwardFn>,
        tasks: &mut JoinSet<std::io::Result<()>>,
    ) -> Option<dwell_proxy::NodeSide> {
        let Prepared {
            tcp,
            mut opts,
            tls,
            api_url,
            e2b_api,
        } = self;
        if let Some(tls) = tls {
            tasks.spawn(tls.reload_on_hangup());
        }
        if let Some(api) = routers.api.as_ref().filter(|_| e2b_api) {
            tracing::info!("the E2B API is also served at {api_url} (E2B_API_URL)");
            opts.api = Some(api.clone());
        }
        opts.envd = routers.envd.clone();
        let clustered = forward.is_some();
        opts.forward = forward;
        let proxy = dwell_proxy::Proxy::new(ctl.clone(), opts);
        let node_side = clustered.then(|| proxy.node_side());
        tasks.spawn(proxy.serve(tcp, shutdown(), DRAIN));
        node_side
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_checked() {
        assert_eq!(check_domain("LocalHost.").unwrap(), "localhost");
        assert_eq!(check_domain("p.example.com").unwrap(), "p.example.com");
        for bad in ["", "a..b", "-a.com", "a_b.com", "a b", "x:80"] {
            assert!(check_domain(bad).is_err(), "{bad}");
        }
    }
}
