//! `port`, `expose` and `unexpose`: ports of a sandbox served by the
//! daemon's port proxy (`dwell serve --proxy-listen`).

use anyhow::Result;
use dwell_contract::{PortExpose, PortExposure};

use crate::cli::{ExposeArgs, PortArgs, UnexposeArgs};
use crate::client::{enc, ApiFailure, Client};
use crate::output;

const NO_PROXY: &str =
    "(the daemon runs no port proxy: start it with `dwell serve --proxy-listen 127.0.0.1:8081`)";

fn show(e: &PortExposure) {
    let what = if e.port == 0 {
        "every port".to_string()
    } else {
        format!("port {}", e.port)
    };
    let access = if e.public { "public" } else { "private" };
    println!(
        "{what}: {}  ({access})",
        e.url.as_deref().unwrap_or(NO_PROXY)
    );
    if let Some(t) = &e.token {
        println!("  token (shown once; send it as the X-Dwell-Token header): {t}");
    }
    if let Some(l) = &e.login_url {
        println!("  one-time browser link (15 minutes): {l}");
    }
}

fn path(sandbox: &str) -> String {
    format!("/v1/sandboxes/{}/ports", enc(sandbox))
}

/// `dwell port SANDBOX [PORT]`.
pub async fn port(c: &Client, a: PortArgs) -> Result<i32> {
    let Some(port) = a.port else {
        let list: Vec<PortExposure> = c.get(&path(&a.sandbox)).await?;
        if a.json {
            output::json(&list)?;
        } else if list.is_empty() {
            eprintln!(
                "no port of {} is exposed; `dwell port {} PORT` exposes one",
                a.sandbox, a.sandbox
            );
        } else {
            for e in &list {
                show(e);
            }
        }
        if !a.json {
            suggest(c, &a.sandbox, &list).await;
        }
        return Ok(0);
    };
    let got: Result<PortExposure> = c.get(&format!("{}/{port}", path(&a.sandbox))).await;
    let e = match got {
        Ok(e) => e,
        Err(err)
            if err
                .downcast_ref::<ApiFailure>()
                .is_some_and(|f| f.facts.contains_key("port")) =>
        {
            // Not exposed yet: privately.
            let body = PortExpose {
                port,
                public: false,
                new_token: false,
            };
            let e: PortExposure = c.post(&path(&a.sandbox), &body).await?;
            if !a.json {
                eprintln!("exposed port {port} of {} (private)", a.sandbox);
            }
            e
        }
        Err(err) => return Err(err),
    };
    if a.json {
        output::json(&e)?;
    } else {
        show(&e);
    }
    Ok(0)
}

/// Names the ports the sandbox's image declares (EXPOSE) that are not
/// exposed yet; nothing is exposed without being asked.
async fn suggest(c: &Client, sandbox: &str, list: &[PortExposure]) {
    let Ok(sb) = c
        .get::<dwell_contract::Sandbox>(&format!("/v1/sandboxes/{}", enc(sandbox)))
        .await
    else {
        return;
    };
    let declared = sb.image_config.map(|i| i.exposed_ports).unwrap_or_default();
    for p in declared {
        let number = p.split('/').next().unwrap_or("");
        let Ok(n) = number.parse::<u16>() else {
            continue;
        };
        if p.ends_with("/udp") || list.iter().any(|e| e.port == n || e.port == 0) {
            continue;
        }
        eprintln!("the image declares port {p}: `dwell port {sandbox} {n}` exposes it (privately)");
    }
}

/// `dwell expose SANDBOX PORT [--public] [--new-token]`.
pub async fn expose(c: &Client, a: ExposeArgs) -> Result<i32> {
    let body = PortExpose {
        port: a.port,
        public: a.public,
        new_token: a.new_token,
    };
    let e: PortExposure = c.post(&path(&a.sandbox), &body).await?;
    if a.json {
        output::json(&e)?;
    } else {
        show(&e);
    }
    Ok(0)
}

/// `dwell unexpose SANDBOX PORT`.
pub async fn unexpose(c: &Client, a: UnexposeArgs) -> Result<i32> {
    c.json::<serde_json::Value>(
        hyper::Method::DELETE,
        &format!("{}/{}", path(&a.sandbox), a.port),
        None::<&()>,
    )
    .await?;
    eprintln!("port {} of {} is no longer exposed", a.port, a.sandbox);
    Ok(0)
}
