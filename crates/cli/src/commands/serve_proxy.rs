//! The port proxy of `dwell serve` (`--proxy-listen ADDR --domain D`):
//! binds it, tells the controller where it serves (for the URLs the API
//! prints), makes it the E2B domain unless `--e2b-domain` says otherwise,
//! and serves `dwell-proxy` until shutdown.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dwell_control::{Controller, PortSettings};
use tokio::task::JoinSet;

use crate::cli::ServeArgs;
use crate::commands::listener::{bind, Limits, DRAIN};
use crate::commands::serve::shutdown;

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

/// Binds and serves the proxy when `--proxy-listen` is given.
pub async fn spawn(
    a: &mut ServeArgs,
    ctl: &Controller,
    limits: Limits,
    tasks: &mut JoinSet<std::io::Result<()>>,
) -> Result<()> {
    let Some(addr) = a.proxy_listen.clone() else {
        return Ok(());
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
    let settings = PortSettings {
        domain: domain.clone(),
        url_port: (url_port != 80).then_some(url_port),
    };
    ctl.configure_ports(settings.clone());
    if a.e2b_domain.is_none() {
        a.e2b_domain = Some(match settings.url_port {
            Some(p) => format!("{domain}:{p}"),
            None => domain.clone(),
        });
    }
    tracing::info!(
        "port proxy on http://{addr}: exposed ports are {}",
        settings.url("PORT-ID")
    );
    let mut opts = dwell_proxy::Options::new(domain);
    opts.max_connections = limits.max_connections;
    opts.header_timeout = limits.header_timeout;
    opts.per_sandbox = a.proxy_max_per_sandbox;
    opts.max_per_ip = a.proxy_max_per_ip;
    opts.idle_timeout = idle;
    if a.e2b_listen.is_some() || a.e2b_sandbox_listen.is_some() {
        // The SDKs reach envd at 49983-ID.DOMAIN: the E2B data plane.
        opts.envd = Some(dwell_envd::router_with(
            Arc::new(ctl.clone()),
            dwell_envd::Options {
                signed_url_lifetime: humantime::parse_duration(&a.signed_url_lifetime)
                    .unwrap_or(std::time::Duration::from_secs(3600)),
            },
        ));
    }
    tasks.spawn(dwell_proxy::serve(
        tcp,
        ctl.clone(),
        opts,
        shutdown(),
        DRAIN,
    ));
    Ok(())
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
