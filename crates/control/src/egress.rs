//! Egress rules of NAT sandboxes on the daemon's side: which rules a new
//! sandbox gets (its own, else its tenant's defaults, else the daemon's),
//! and keeping the DNS resolver ([`dwell_dns::Resolver`]) answering every
//! running NAT sandbox on its gateway address. The runtime installs a
//! sandbox's rules in its nftables table at start; live changes go through
//! the resolver ([`dwell_dns::Resolver::update`]), which owns the pinned
//! addresses of allowed names.

use std::collections::HashSet;
use std::sync::Arc;

use dwell_runtime::host::egress::EgressRules;
use dwell_runtime::host::layout::NETWORK_FILE;
use dwell_runtime::host::network::NetInfo;
use dwell_runtime::NetworkMode;

use crate::context::Context;
use crate::model::{Record, State};

/// The rules a new NAT sandbox of `tenant` gets when it gives none.
pub(crate) fn defaults_for(inner: &Context, tenant: &str) -> crate::Result<EgressRules> {
    let tenant_rules = inner
        .store
        .get_tenant(tenant)?
        .and_then(|t| t.default_egress)
        .and_then(|v| serde_json::from_value::<EgressRules>(v).ok());
    Ok(tenant_rules.unwrap_or_else(|| inner.default_egress.clone()))
}

/// What the runtime set up for sandbox `id` (its `network.json`).
fn net_info(inner: &Context, id: &str) -> Option<NetInfo> {
    let bytes = std::fs::read(inner.state_dir(id).join(NETWORK_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn serves_dns(rec: &Record) -> bool {
    rec.spec.network == NetworkMode::Nat && matches!(rec.state, State::Running | State::Paused)
}

/// Have the resolver answer sandbox `rec` (a running NAT sandbox) on its
/// gateway address. Failures are logged: the sandbox runs, but its names
/// do not resolve until the next reconcile pass succeeds.
pub(crate) async fn attach(inner: &Arc<Context>, rec: &Record) {
    let Some(dns) = &inner.dns else { return };
    if rec.spec.network != NetworkMode::Nat {
        return;
    }
    let Some(info) = net_info(inner, &rec.id) else {
        tracing::warn!(
            "sandbox {}: no network.json; its DNS is not served yet",
            rec.id
        );
        return;
    };
    if let Err(e) = dns
        .attach(&rec.id, info.gateway_ip, info.sandbox_ip, &rec.spec.egress)
        .await
    {
        tracing::warn!(
            "sandbox {}: serving its DNS on {}:53 failed: {e}",
            rec.id,
            info.gateway_ip
        );
    }
}

/// Answer sandbox `rec` after it started or was restored: its nftables
/// table is new and holds no pins, so the resolver forgets any it knew
/// (an address it believed pinned would otherwise not be pinned again).
pub(crate) async fn attach_started(inner: &Arc<Context>, rec: &Record) {
    detach(inner, &rec.id);
    attach(inner, rec).await;
}

/// After a reconcile pass: answer every running or paused NAT sandbox
/// (also those a restarted daemon adopted), and no other.
pub(crate) async fn sync_all(inner: &Arc<Context>) {
    let Some(dns) = &inner.dns else { return };
    let Ok(recs) = inner.own_sandboxes() else {
        return;
    };
    let live: Vec<&Record> = recs.iter().filter(|r| serves_dns(r)).collect();
    let ids: HashSet<&str> = live.iter().map(|r| r.id.as_str()).collect();
    let attached: HashSet<String> = dns.attached().into_iter().collect();
    for id in &attached {
        if !ids.contains(id.as_str()) {
            dns.detach(id);
        }
    }
    // Only those not served yet (a daemon restart): an attached sandbox's
    // addresses change only at a start or restore, which re-attach it.
    for rec in live.into_iter().filter(|r| !attached.contains(&r.id)) {
        attach(inner, rec).await;
    }
}

/// Stop answering sandbox `id` (it stopped or is gone).
pub(crate) fn detach(inner: &Context, id: &str) {
    if let Some(dns) = &inner.dns {
        dns.detach(id);
    }
}
