//! Tenant private networks: what they look like to users, the checks on
//! their names and subnets, and how members find each other.
//!
//! A network belongs to one tenant (another tenant's is "not found"); a
//! sandbox joins it at create (`--network`), or later while stopped, and
//! gets an address from the store that it keeps until it leaves (see
//! `dwell_store`'s networks). The runtime carries each network on a host
//! bridge of its own ([`dwell_runtime::host::private_net`]); a network
//! gives no way out of the host (NAT stays the `--net` switch).
//!
//! Names: a member reaches a peer as `NAME` and `NAME.NETWORK`. The
//! daemon's DNS resolver answers those through [`resolve`] (the `PeerNames`
//! hook); until a sandbox uses that resolver, and for images without a
//! resolver config, the same names are kept in a managed block of the
//! sandbox's `/etc/hosts`, written through its agent ([`refresh_hosts`])
//! whenever it starts and whenever a peer joins or leaves.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use dwell_runtime::host::private_net;
use dwell_store::{Member, Network};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Attachment, State};

/// Where default subnets come from: a /24 each.
pub const DEFAULT_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 210, 0, 0), 16);
/// The prefix of a default subnet.
pub const DEFAULT_PREFIX: u8 = 24;
/// The most networks one sandbox may be on.
pub const MAX_PER_SANDBOX: usize = private_net::MAX_PER_SANDBOX;

/// One member of a network as users see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberView {
    pub sandbox_id: String,
    /// The sandbox's name (its peers reach it by it).
    pub sandbox: String,
    pub address: String,
    pub state: State,
}

/// A network as users see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkView {
    pub id: String,
    pub name: String,
    pub subnet: String,
    /// The host bridge that carries it.
    pub bridge: String,
    pub created_at: i64,
    #[serde(default)]
    pub members: Vec<MemberView>,
}

/// Check a network name: it is a DNS label (peers are `NAME.NETWORK`).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            format!(
                "{name:?}: a network name is 1-32 lowercase letters, digits and '-', starting \
                 with a letter and not ending with '-' (peers are reached as SANDBOX.NETWORK)"
            ),
        ))
    }
}

fn in_private_ranges(base: u32, len: u8) -> bool {
    [
        (Ipv4Addr::new(10, 0, 0, 0), 8u8),
        (Ipv4Addr::new(172, 16, 0, 0), 12),
        (Ipv4Addr::new(192, 168, 0, 0), 16),
        (Ipv4Addr::new(100, 64, 0, 0), 10),
    ]
    .iter()
    .any(|(net, plen)| {
        let mask = u32::MAX << (32 - plen);
        len >= *plen && base & mask == u32::from(*net)
    })
}

fn overlaps(a: (u32, u8), b: (u32, u8)) -> bool {
    let len = a.1.min(b.1);
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    a.0 & mask == b.0 & mask
}

/// Whether two `a.b.c.d/len` subnets share addresses (unparsable ones
/// count as overlapping).
pub fn subnets_overlap(a: &str, b: &str) -> bool {
    match (dwell_store::parse_subnet(a), dwell_store::parse_subnet(b)) {
        (Some(a), Some(b)) => overlaps(a, b),
        _ => true,
    }
}

/// Check a subnet a user asked for: `a.b.c.d/len`, /16 to /29, the host
/// bits zero, inside the private ranges.
pub fn validate_subnet(subnet: &str) -> Result<String> {
    let bad = |why: &str| {
        Error::invalid(
            "subnet",
            format!("{subnet:?}: {why}; give e.g. 10.211.5.0/24 (or leave --subnet out for one from {}/{})", DEFAULT_POOL.0, DEFAULT_POOL.1),
        )
    };
    let (addr, len) = subnet
        .split_once('/')
        .ok_or_else(|| bad("expected an IPv4 network as a.b.c.d/len"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| bad("the address is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| bad("the prefix length is not a number"))?;
    if !(16..=29).contains(&len) {
        return Err(bad("the prefix length must be 16 to 29"));
    }
    let mask = u32::MAX << (32 - len);
    if u32::from(addr) & !mask != 0 {
        return Err(bad(&format!(
            "host bits are set (the network is {}/{len})",
            Ipv4Addr::from(u32::from(addr) & mask)
        )));
    }
    if !in_private_ranges(u32::from(addr), len) {
        return Err(bad(
            "it is not inside 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10",
        ));
    }
    if overlaps(
        (u32::from(addr), len),
        (u32::from(Ipv4Addr::new(10, 200, 0, 0)), 16),
    ) {
        return Err(bad("it overlaps the NAT pool 10.200.0.0/16"));
    }
    Ok(format!("{addr}/{len}"))
}

/// The first /24 of [`DEFAULT_POOL`] that no network uses.
pub fn pick_subnet(taken: &[Network]) -> Result<String> {
    let taken: Vec<(u32, u8)> = taken
        .iter()
        .filter_map(|n| dwell_store::parse_subnet(&n.subnet))
        .collect();
    let base = u32::from(DEFAULT_POOL.0);
    let count = 1u32 << (DEFAULT_PREFIX - DEFAULT_POOL.1);
    (0..count)
        .map(|i| (base + (i << (32 - DEFAULT_PREFIX)), DEFAULT_PREFIX))
        .find(|c| !taken.iter().any(|t| overlaps(*c, *t)))
        .map(|(a, l)| format!("{}/{l}", Ipv4Addr::from(a)))
        .ok_or_else(|| {
            Error::Conflict(format!(
                "every /24 of {}/{} is used by a network; give one with --subnet",
                DEFAULT_POOL.0, DEFAULT_POOL.1
            ))
        })
}

/// The networks a sandbox is on, for its view.
pub(crate) fn attachments(inner: &Context, sandbox_id: &str) -> Result<Vec<Attachment>> {
    Ok(inner
        .store
        .networks_of(sandbox_id)?
        .into_iter()
        .enumerate()
        .map(|(i, (n, m))| Attachment {
            network: n.name,
            address: m.address,
            subnet: n.subnet,
            interface: private_net::inside_name(i),
        })
        .collect())
}

/// A network with its members.
pub(crate) fn view(inner: &Context, n: &Network) -> Result<NetworkView> {
    let members = inner
        .store
        .network_members(&n.id)?
        .into_iter()
        .filter_map(|m: Member| {
            let rec = inner
                .store
                .get_sandbox::<crate::model::SandboxSpec>(&m.sandbox_id)
                .ok()??;
            Some(MemberView {
                sandbox_id: m.sandbox_id,
                sandbox: rec.name,
                address: m.address,
                state: rec.state,
            })
        })
        .collect();
    Ok(NetworkView {
        id: n.id.clone(),
        name: n.name.clone(),
        subnet: n.subnet.clone(),
        bridge: n.bridge.clone(),
        created_at: n.created_at,
        members,
    })
}

/// The names sandbox `sandbox_id` knows its peers by: `(address, names)`
/// for every member of every network it is on (itself included).
pub(crate) fn peer_table(inner: &Context, sandbox_id: &str) -> Vec<(Ipv4Addr, Vec<String>)> {
    let mut rows = Vec::new();
    let Ok(nets) = inner.store.networks_of(sandbox_id) else {
        return rows;
    };
    for (n, _) in nets {
        let v = match view(inner, &n) {
            Ok(v) => v,
            Err(_) => continue,
        };
        for m in v.members {
            if let Ok(a) = m.address.parse() {
                rows.push((
                    a,
                    vec![m.sandbox.clone(), format!("{}.{}", m.sandbox, n.name)],
                ));
            }
        }
    }
    rows
}

/// The address of `name` (`PEER` or `PEER.NETWORK`, any case, with or
/// without a trailing dot) for sandbox `sandbox_id`: a member of one of
/// its networks. None for anything else (another network's, another
/// tenant's sandbox, an unknown name). See [`NetworkPeers`].
pub(crate) fn resolve(inner: &Context, sandbox_id: &str, name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    peer_table(inner, sandbox_id)
        .into_iter()
        .find(|(_, names)| names.contains(&name))
        .map(|(a, _)| IpAddr::V4(a))
}

/// Peer names for the daemon's DNS resolver: its [`dwell_dns::PeerNames`]
/// hook (`resolver.set_peer_names(Arc::new(controller.peer_names()))`),
/// from [`Controller::peer_names`](crate::Controller::peer_names). Cheap
/// to clone; each lookup reads the store.
#[derive(Clone)]
pub struct NetworkPeers(pub(crate) Arc<Context>);

impl dwell_dns::PeerNames for NetworkPeers {
    /// The address of `name` (`PEER` or `PEER.NETWORK`) as sandbox
    /// `sandbox_id` may reach it, or None.
    fn resolve(&self, sandbox_id: &str, name: &str) -> Option<IpAddr> {
        resolve(&self.0, sandbox_id, name)
    }
}

const BEGIN: &str = dwell_proto::HOSTS_BLOCK_BEGIN;
const END: &str = dwell_proto::HOSTS_BLOCK_END;

/// `hosts` with its managed block replaced by `rows` (removed when there
/// are none).
pub fn with_block(hosts: &str, rows: &[(Ipv4Addr, Vec<String>)]) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in hosts.lines() {
        if line == BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if line == END {
                inside = false;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("127.0.0.1\tlocalhost\n");
    }
    if !rows.is_empty() {
        out.push_str(BEGIN);
        out.push('\n');
        for (a, names) in rows {
            out.push_str(&format!("{a}\t{}\n", names.join(" ")));
        }
        out.push_str(END);
        out.push('\n');
    }
    out
}

/// The largest `/etc/hosts` whose lines dwell keeps around its managed
/// block; the sandbox owns the file and may make it any size, so a larger
/// one (or one that is not a regular file) is replaced by the block alone
/// rather than read into the daemon's memory.
pub const MAX_HOSTS_FILE: u64 = 1 << 20;

/// The sandbox's `/etc/hosts` as it is, if dwell can keep its lines: a
/// regular file of at most [`MAX_HOSTS_FILE`] bytes. `Ok(None)` when it does
/// not exist; `Err(why)` when it must be replaced (`Some(kind)`: it is not
/// a regular file, so it is removed before the new one is written).
async fn current_hosts(
    client: &dwell_proto::AgentClient,
) -> std::result::Result<Option<String>, (String, bool)> {
    use dwell_proto::{ErrorKind, FileKind};
    let fi = match client.stat("/etc/hosts").await {
        Ok(fi) => fi,
        Err(e) if e.remote_kind() == Some(ErrorKind::NotFound) => return Ok(None),
        Err(e) => return Err((format!("cannot stat it: {e}"), false)),
    };
    if fi.kind != FileKind::File {
        return Err((format!("it is a {:?}, not a regular file", fi.kind), true));
    }
    if fi.size > MAX_HOSTS_FILE {
        return Err((
            format!(
                "it is {} bytes, above the {MAX_HOSTS_FILE} byte limit",
                fi.size
            ),
            false,
        ));
    }
    let read = async {
        client
            .read_file("/etc/hosts")
            .await?
            .read_to_end(MAX_HOSTS_FILE)
            .await
    };
    match read.await {
        Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
        Err(e) => Err((format!("cannot read it: {e}"), false)),
    }
}

/// Rewrite the managed block of `/etc/hosts` in sandbox `sandbox_id`
/// through its agent. Best effort: a sandbox that is not running gets it
/// at its next start. A file dwell cannot keep (see [`current_hosts`]) is
/// replaced by the managed block alone, so the peer names still work.
/// Bounded in time: a member's agent that stalls (the sandbox is root's
/// to break) must not hold up the start or the create that refreshes it.
pub(crate) async fn refresh_hosts(inner: &Context, sandbox_id: &str) {
    if tokio::time::timeout(REFRESH_TIMEOUT, write_hosts(inner, sandbox_id))
        .await
        .is_err()
    {
        tracing::warn!(
            sandbox = sandbox_id,
            "peer names not written: its agent did not finish within {} s",
            REFRESH_TIMEOUT.as_secs()
        );
    }
}

/// How long [`refresh_hosts`] may take for one sandbox.
const REFRESH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// [`refresh_hosts`] without its time bound.
async fn write_hosts(inner: &Context, sandbox_id: &str) {
    let rows = peer_table(inner, sandbox_id);
    let client = match crate::connections::client(inner, sandbox_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(sandbox = sandbox_id, "peer names not written: {e}");
            return;
        }
    };
    let (current, replace) = match current_hosts(&client).await {
        Ok(c) => (c.unwrap_or_default(), false),
        Err((why, remove)) => {
            tracing::warn!(
                sandbox = sandbox_id,
                "/etc/hosts in the sandbox is replaced by dwell's peer names alone: {why}"
            );
            if remove {
                if let Err(e) = client.remove("/etc/hosts", false).await {
                    tracing::warn!(sandbox = sandbox_id, "removing /etc/hosts: {e}");
                }
            }
            (String::new(), true)
        }
    };
    let next = with_block(&current, &rows);
    if next == current && !replace {
        return;
    }
    let opts = dwell_proto::WriteOptions {
        append: false,
        mode: Some(0o644),
        create_parents: true,
    };
    let data = bytes::Bytes::from(next.into_bytes());
    let write = |path: &'static str| {
        let (client, data, opts) = (client.clone(), data.clone(), opts.clone());
        async move {
            let mut w = client.write_file(path, opts).await?;
            w.write(data).await?;
            w.finish().await
        }
    };
    // Beside it, then renamed over it: readers never see a truncated file
    // (no moment when localhost or a peer does not resolve). In place
    // when the rename cannot be done (e.g. /etc/hosts is a mount point).
    const NEXT: &str = "/etc/.hosts.dwell-next";
    let renamed = match write(NEXT).await {
        Ok(_) => client.rename(NEXT, "/etc/hosts").await,
        Err(e) => Err(e),
    };
    let written = match renamed {
        Ok(()) => Ok(0),
        Err(_) => {
            let _ = client.remove(NEXT, false).await;
            write("/etc/hosts").await
        }
    };
    if let Err(e) = written {
        tracing::warn!(
            sandbox = sandbox_id,
            "writing peer names to /etc/hosts: {e}"
        );
    }
}

/// [`refresh_hosts`] for every running member of the networks of
/// `network_ids` (a member joined or left).
pub(crate) async fn refresh_members(inner: &Arc<Context>, network_ids: &[String]) {
    let mut ids: Vec<String> = Vec::new();
    for nid in network_ids {
        for m in inner.store.network_members(nid).unwrap_or_default() {
            if !ids.contains(&m.sandbox_id) {
                ids.push(m.sandbox_id);
            }
        }
    }
    for id in ids {
        let running = inner
            .store
            .get_sandbox::<crate::model::SandboxSpec>(&id)
            .ok()
            .flatten()
            .is_some_and(|r| r.state == State::Running);
        if running {
            refresh_hosts(inner, &id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_dns_labels() {
        for ok in ["team", "a", "team-2", "x1"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "Team", "1team", "team-", "a.b", "a_b", &"x".repeat(33)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subnets_are_private_aligned_and_off_the_nat_pool() {
        assert_eq!(validate_subnet("10.211.5.0/24").unwrap(), "10.211.5.0/24");
        assert_eq!(validate_subnet("192.168.7.0/28").unwrap(), "192.168.7.0/28");
        for bad in [
            "10.211.5.1/24",
            "8.8.8.0/24",
            "10.200.3.0/24",
            "10.0.0.0/8",
            "10.1.0.0/30",
            "x",
            "10.1.0.0",
        ] {
            let e = validate_subnet(bad).unwrap_err().to_string();
            assert!(e.contains("subnet"), "{bad}: {e}");
        }
    }

    #[test]
    fn overlapping_subnets_are_told_apart() {
        assert!(subnets_overlap("10.1.0.0/16", "10.1.5.0/24"));
        assert!(!subnets_overlap("10.1.0.0/24", "10.1.1.0/24"));
        assert!(subnets_overlap("x", "10.1.1.0/24"));
    }

    #[test]
    fn default_subnets_skip_taken_ones() {
        let n = |s: &str| Network {
            id: s.into(),
            tenant: "t".into(),
            name: s.into(),
            subnet: s.into(),
            bridge: "b".into(),
            created_at: 0,
        };
        assert_eq!(pick_subnet(&[]).unwrap(), "10.210.0.0/24");
        assert_eq!(
            pick_subnet(&[n("10.210.0.0/24"), n("10.210.1.128/25")]).unwrap(),
            "10.210.2.0/24"
        );
    }

    #[test]
    fn the_hosts_block_is_replaced_and_the_rest_kept() {
        let rows = vec![(
            Ipv4Addr::new(10, 210, 0, 2),
            vec!["db".to_string(), "db.team".to_string()],
        )];
        let first = with_block("127.0.0.1\tlocalhost\n::1 ip6-localhost\n", &rows);
        assert!(first.starts_with("127.0.0.1\tlocalhost\n::1 ip6-localhost\n"));
        assert!(first.contains("10.210.0.2\tdb db.team\n"), "{first}");
        let again = with_block(&first, &rows);
        assert_eq!(first, again, "idempotent");
        let gone = with_block(&first, &[]);
        assert_eq!(gone, "127.0.0.1\tlocalhost\n::1 ip6-localhost\n");
        assert!(with_block("", &[]).contains("localhost"));
    }
}
