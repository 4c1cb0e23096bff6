//! Tenant private networks on the host. Each network is a Linux bridge in
//! the daemon's network namespace with no address of its own (IPv6 is
//! turned off on it, so it has no link-local address either): the host does
//! not route to, from or through it. A member sandbox gets one veth pair
//! per network, `ethN` inside (`eth1` for its first network; `eth0` stays
//! the NAT interface) with its address from the store, the host end
//! enslaved to the bridge. So members of one network reach each other and
//! nothing else: other networks are other bridges, and nothing routes
//! between bridges.
//!
//! Each host end gets a `bridge`-family nftables table of its own
//! (`dwell_<port>`): frames from it to the host itself are dropped (so the
//! host's ARP and addresses are unreachable through the bridge), only IPv4
//! and ARP pass, and only with the member's own addresses as source (its
//! MAC is derived from its IPv4 address, [`mac_of`]; no spoofing of a
//! peer, even with raw sockets granted).
//!
//! What was made is written to `private-nets.json` in the sandbox's state
//! dir before it is made, so that [`teardown`] (stop, a failed start, crash
//! recovery) removes exactly that and is free when there is nothing. The
//! kernel removes a veth pair with the sandbox's namespace; the tables and
//! a pinned namespace's pairs are removed here. Bridges live as long as
//! their network: [`remove_bridge`] when it is deleted.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::layout;
use super::network::Netns;
use crate::{Error, PrivateNet, Result};

/// The state-dir file listing a sandbox's host ports.
pub const PRIVATE_NETS_FILE: &str = "private-nets.json";

/// The most networks one sandbox may be on (interface names stay short).
pub const MAX_PER_SANDBOX: usize = 8;

/// The prefix of every bridge of a private network.
pub const BRIDGE_PREFIX: &str = "dwb";

/// The bridge name of network `network_id` (stable, 11 characters).
pub fn bridge_name(network_id: &str) -> String {
    format!(
        "{BRIDGE_PREFIX}{:08x}",
        layout::fnv1a(network_id) & 0xffff_ffff
    )
}

/// The host end of sandbox `id`'s veth for its `index`th network.
pub fn port_name(id: &str, index: usize) -> String {
    format!("dp{:010x}{index}", layout::fnv1a(id) & 0xff_ffff_ffff)
}

/// The MAC address of the interface that holds `addr`: derived from the
/// address (locally administered), so a peer's ARP cache stays right when
/// an address passes to a new member, and checked on every frame.
pub fn mac_of(addr: Ipv4Addr) -> String {
    let [a, b, c, d] = addr.octets();
    format!("02:d1:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The interface of the `index`th network inside the sandbox.
pub fn inside_name(index: usize) -> String {
    format!("eth{}", index + 1)
}

/// What [`attach`] made for one sandbox (the host ports).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Made {
    ports: Vec<String>,
    /// The bridges the ports were put on: [`teardown`] deletes each that
    /// has no port left, so a bridge lives while its network has running
    /// members (and [`attach`] makes it again for the next one).
    #[serde(default)]
    bridges: Vec<String>,
}

/// Turn IPv6 off on a host interface: no link-local address, so the host
/// has no address of any family on a private network.
fn no_ipv6(ifname: &str) {
    let p = format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6");
    if Path::new(&p).exists() {
        let _ = std::fs::write(p, "1");
    }
}

/// Create the bridge unless it exists (callers hold the network lock).
fn ensure_bridge(bridge: &str) -> Result<()> {
    if !bridge.starts_with(BRIDGE_PREFIX) || bridge.len() > 15 {
        return Err(Error::Other(format!(
            "{bridge:?} is not a private network's bridge name"
        )));
    }
    if !super::network::link_exists(bridge) {
        super::network::run(
            Command::new("ip").args(["link", "add", bridge, "type", "bridge"]),
            "creating the private network's bridge",
        )?;
    }
    no_ipv6(bridge);
    super::network::run(
        Command::new("ip").args(["link", "set", bridge, "up"]),
        "bringing the private network's bridge up",
    )?;
    Ok(())
}

/// The table of one host port: nothing to the host, only IPv4 and ARP with
/// the member's own addresses (MAC and IPv4).
fn port_rules(port: &str, addr: Ipv4Addr) -> String {
    let t = format!("dwell_{port}");
    let mac = mac_of(addr);
    // `add` then `delete` then the definition: one transaction that
    // replaces a table a crash left.
    format!(
        "add table bridge {t}
delete table bridge {t}
table bridge {t} {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{port}\" drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{port}\" ether saddr != {mac} drop
    iifname \"{port}\" ether type ip ip saddr != {addr} drop
    iifname \"{port}\" ether type arp arp saddr ip != {addr} drop
    iifname \"{port}\" ether type != {{ ip, arp }} drop
  }}
}}
"
    )
}

/// Put sandbox `id` (whose network namespace is `netns`) on `nets`: a
/// bridge per network (made if missing), a veth pair each, addresses and
/// the port tables. On error the caller runs [`teardown`].
pub fn attach(id: &str, netns: Netns<'_>, nets: &[PrivateNet], state_dir: &Path) -> Result<()> {
    if nets.is_empty() {
        return Ok(());
    }
    if nets.len() > MAX_PER_SANDBOX {
        return Err(Error::Other(format!(
            "a sandbox can be on at most {MAX_PER_SANDBOX} private networks, not {}",
            nets.len()
        )));
    }
    let made = Made {
        ports: (0..nets.len()).map(|i| port_name(id, i)).collect(),
        bridges: nets.iter().map(|n| n.bridge.clone()).collect(),
    };
    // Written first: a crash halfway still leaves the list for teardown.
    let file = state_dir.join(PRIVATE_NETS_FILE);
    std::fs::write(
        &file,
        serde_json::to_vec(&made).expect("the port list serialises"),
    )
    .map_err(|e| Error::Io {
        context: format!("writing {}", file.display()),
        source: e,
    })?;
    let _lock = super::network::Lock::take()?;
    for (i, net) in nets.iter().enumerate() {
        ensure_bridge(&net.bridge)?;
        let port = &made.ports[i];
        if super::network::link_exists(port) {
            let _ = super::network::run(
                Command::new("ip").args(["link", "del", port]),
                "removing a stale port",
            );
        }
        let inside = inside_name(i);
        super::network::run(
            Command::new("ip").args([
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                &inside,
                "address",
                &mac_of(net.address),
                "netns",
                &netns.ip_target(),
            ]),
            "creating a private network's veth pair",
        )?;
        no_ipv6(port);
        super::nft::run_script(
            &port_rules(port, net.address),
            "installing a private network port's table",
        )?;
        super::network::run(
            Command::new("ip").args(["link", "set", port, "master", &net.bridge, "up"]),
            "connecting the veth to the private network's bridge",
        )?;
        let addr = format!("{}/{}", net.address, net.prefix_len);
        let nsenter = |args: &[&str], what: &str| -> Result<String> {
            super::network::run(
                Command::new("nsenter")
                    .args(netns.nsenter_args())
                    .arg("ip")
                    .args(args),
                what,
            )
        };
        nsenter(
            &["addr", "add", &addr, "dev", &inside],
            "addressing the private network's interface in the sandbox",
        )?;
        nsenter(
            &["link", "set", &inside, "up"],
            "bringing the private network's interface up",
        )?;
    }
    Ok(())
}

/// Remove what [`attach`] made for the sandbox whose state dir is
/// `state_dir`: its host ports (when its namespace did not take them
/// along) and their tables. Nothing to do (and no process run) when it
/// was on no network. Best effort.
pub fn teardown(state_dir: &Path) {
    let file = state_dir.join(PRIVATE_NETS_FILE);
    let Ok(bytes) = std::fs::read(&file) else {
        return;
    };
    let made: Made = serde_json::from_slice(&bytes).unwrap_or_default();
    // Under the lock attach takes, so a bridge found empty below is not
    // one another member is being put on.
    let _lock = super::network::Lock::take()
        .map_err(|e| tracing::warn!("private network teardown without the lock: {e}"))
        .ok();
    let mut script = String::new();
    for port in &made.ports {
        // Only names this module makes (the file is the daemon's own).
        if !port.starts_with("dp") || port.len() > 15 {
            continue;
        }
        if super::network::link_exists(port) {
            let _ = super::network::run(
                Command::new("ip").args(["link", "del", port]),
                "deleting a private network port",
            );
        }
        let t = format!("dwell_{port}");
        script.push_str(&format!("add table bridge {t}\ndelete table bridge {t}\n"));
    }
    if !script.is_empty() {
        if let Err(e) = super::nft::run_script(&script, "removing private network port tables") {
            tracing::warn!("{e}");
        }
    }
    for bridge in &made.bridges {
        if bridge.starts_with(BRIDGE_PREFIX)
            && super::network::link_exists(bridge)
            && !has_ports(bridge)
        {
            remove_bridge(bridge);
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Whether any interface is enslaved to `bridge` (true when that cannot be
/// told: a bridge is never deleted under a member).
fn has_ports(bridge: &str) -> bool {
    match super::network::run(
        Command::new("ip").args(["-o", "link", "show", "master", bridge]),
        "listing a bridge's ports",
    ) {
        Ok(out) => !out.trim().is_empty(),
        Err(_) => true,
    }
}

/// Delete a network's bridge (its network was removed, or its last
/// running member left). Best effort; nothing when it does not exist.
pub fn remove_bridge(bridge: &str) {
    if bridge.starts_with(BRIDGE_PREFIX) && super::network::link_exists(bridge) {
        if let Err(e) = super::network::run(
            Command::new("ip").args(["link", "del", bridge]),
            "deleting a private network's bridge",
        ) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_interface_limit_and_are_stable() {
        let b = bridge_name("n0123456789abcdef");
        assert!(b.starts_with("dwb") && b.len() == 11, "{b}");
        assert_eq!(b, bridge_name("n0123456789abcdef"));
        let p = port_name("sandboxid", MAX_PER_SANDBOX - 1);
        assert!(p.len() <= 15 && p.starts_with("dp"), "{p}");
        assert_ne!(port_name("a", 0), port_name("b", 0));
        assert_eq!(inside_name(0), "eth1");
    }

    #[test]
    fn port_rules_drop_host_traffic_foreign_sources_and_other_protocols() {
        let r = port_rules("dp0", Ipv4Addr::new(10, 1, 0, 2));
        assert!(r.contains("table bridge dwell_dp0 {"), "{r}");
        assert!(r.contains("iifname \"dp0\" drop"), "{r}");
        assert!(r.contains("ip saddr != 10.1.0.2 drop"), "{r}");
        assert!(r.contains("ether saddr != 02:d1:0a:01:00:02 drop"), "{r}");
        assert!(r.contains("arp saddr ip != 10.1.0.2 drop"), "{r}");
        assert!(r.contains("ether type != { ip, arp } drop"), "{r}");
    }

    #[test]
    fn teardown_without_a_file_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        teardown(dir.path());
        assert!(!dir.path().join(PRIVATE_NETS_FILE).exists());
    }
}
