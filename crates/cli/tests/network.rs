//! End to end: `--net` (NAT) sandboxes of both runtimes reach the outside
//! world, masqueraded, but neither the daemon's host nor each other; a
//! gVisor NAT sandbox keeps its address and its network across
//! hibernate/resume (with a connection open while it hibernates), a warm
//! copy of a hibernated one gets an address of its own, pause/resume and a
//! daemon `kill -9` do not disturb the network, and
//! nothing of the network is left once the sandboxes are gone.
//!
//! NAT needs `net.ipv4.ip_forward=1`, a host setting tests never change.
//! Forwarding is per network namespace, though: each test re-runs this
//! binary inside `unshare --net` (a private network namespace, where it
//! switches forwarding on), starts the daemon there, and links a second
//! namespace to it that stands for "the internet", with a TCP service.
//! Everything (veths, nftables tables, the sandboxes' namespaces) lives in
//! those namespaces and goes away with them.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::Command;
use std::time::Duration;

use common::netns::{self, in_private_netns, Outside, OUTSIDE, PORT, UPLINK};
use common::*;

/// Connect from inside a sandbox: prints `connected <local ip>`,
/// `refused` or `timeout`.
const PROBE: &str = "import socket,sys
try:
  s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); print('connected', s.getsockname()[0])
except ConnectionRefusedError: print('refused')
except OSError as e: print('timeout', e)";

#[test]
fn net_sandboxes_reach_neither_the_host_nor_each_other() {
    if can_run() {
        in_private_netns("nat_helper_namespace");
    }
}

#[test]
fn gvisor_net_sandboxes_reach_the_outside_only_and_survive_hibernation() {
    if can_run_gvisor() {
        in_private_netns("nat_helper_gvisor");
    }
}

#[test]
fn gvisor_nat_is_refused_without_ip_forward_and_leaves_nothing() {
    if !can_run_gvisor() {
        return;
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if fwd.trim() == "1" {
        skip("ip_forward is on here; the refusal cannot be observed");
        return;
    }
    let d = Daemon::start();
    let out = d.run(&[
        "create",
        "--name",
        "g",
        "--net",
        "--isolation",
        "gvisor",
        "--memory",
        "256M",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ip_forward"), "{}", stderr(&out));
    assert!(sandbox_network_leftovers().is_empty());
}

#[test]
#[ignore = "helper of net_sandboxes_reach_neither_the_host_nor_each_other"]
fn nat_helper_namespace() {
    if netns::is_helper() {
        nat_checks("namespace");
    }
}

#[test]
#[ignore = "helper of gvisor_net_sandboxes_reach_the_outside_only_and_survive_hibernation"]
fn nat_helper_gvisor() {
    if netns::is_helper() {
        nat_checks("gvisor");
    }
}

/// The sandbox's and its gateway's addresses, from its network.json.
fn addrs(d: &Daemon, id: &str) -> (String, String) {
    let v = d.network(id);
    (
        v["sandbox_ip"].as_str().unwrap().to_string(),
        v["gateway_ip"].as_str().unwrap().to_string(),
    )
}

fn probe(d: &Daemon, sb: &str, ip: &str, port: u16) -> String {
    d.ok(&[
        "exec",
        sb,
        "--",
        "python3",
        "-c",
        PROBE,
        ip,
        &port.to_string(),
    ])
    .trim()
    .to_string()
}

/// The veths and nftables tables of sandboxes in this namespace.
fn sandbox_network_leftovers() -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("dw"))
        .collect();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    left.extend(
        String::from_utf8_lossy(&tables.stdout)
            .lines()
            .filter(|l| l.contains("dwell_"))
            .map(String::from),
    );
    left
}

fn nat_checks(isolation: &str) {
    // Only in this process's private namespace (see the module docs).
    netns::enable_forwarding();
    let outside = Outside::start();
    // A service on every address of the daemon's host.
    let host_service = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();

    let d = Daemon::start();
    let n1 = d.create("n1", &["--net", "--isolation", isolation]);
    let n2 = d.create("n2", &["--net", "--isolation", isolation]);
    let (ip1, gw1) = addrs(&d, &n1);
    let (ip2, gw2) = addrs(&d, &n2);
    assert_ne!(ip1, ip2);

    // Out through NAT: the outside sees the host's address.
    assert_eq!(
        probe(&d, "n1", OUTSIDE, PORT),
        format!("connected {ip1}"),
        "n1 reaches the outside from its own address"
    );
    let peer = outside.peers.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        peer.ip(),
        UPLINK.parse::<Ipv4Addr>().unwrap(),
        "masqueraded"
    );
    // A closed port outside answers (the path is open) ...
    assert_eq!(probe(&d, "n1", OUTSIDE, PORT + 1), "refused");
    // ... while the host itself and the other sandbox are dropped.
    for (ip, port) in [
        (gw1.as_str(), host_port),
        (UPLINK, host_port),
        (ip2.as_str(), 22),
        (gw2.as_str(), host_port),
    ] {
        let out = probe(&d, "n1", ip, port);
        assert!(
            out.starts_with("timeout"),
            "{ip}:{port} must be unreachable from a sandbox: {out}"
        );
    }

    // Paused and resumed, it is still connected.
    d.ok(&["pause", "n2"]);
    d.ok(&["resume", "n2"]);
    assert_eq!(probe(&d, "n2", OUTSIDE, PORT), format!("connected {ip2}"));

    // The network does not depend on the daemon: a restarted daemon's
    // sandbox is still connected.
    let mut d = d;
    d.restart();
    assert_eq!(probe(&d, "n2", OUTSIDE, PORT), format!("connected {ip2}"));

    if isolation == "gvisor" {
        // A connection open while it hibernates is reset, not in the way.
        d.ok(&[
            "exec",
            "-d",
            "n1",
            "--",
            "python3",
            "-c",
            "import socket,time\ns=socket.create_connection(('192.0.2.1', 4567)); time.sleep(600)",
        ]);
        outside.peers.recv_timeout(Duration::from_secs(5)).unwrap();
        d.ok(&["hibernate", "n1"]);
        // Nothing of n1's network is left while it sleeps.
        let veth = veth_of(&d, &n1);
        let left = sandbox_network_leftovers();
        assert!(
            !left.iter().any(|l| l.contains(&veth)),
            "a hibernated sandbox keeps no veth or table: {left:?}"
        );
        assert!(!d.data.join("sandboxes").join(&n1).join("netns").exists());
        // A warm copy restores with an address of its own.
        d.ok(&["create", "--name", "c1", "--from", "n1"]);
        let c1 = d.inspect("c1")["id"].as_str().unwrap().to_string();
        let (ipc, _) = addrs(&d, &c1);
        assert_eq!(probe(&d, "c1", OUTSIDE, PORT), format!("connected {ipc}"));
        d.ok(&["rm", "-f", "c1"]);
        d.ok(&["resume", "n1"]);
        assert_eq!(addrs(&d, &n1).0, ip1, "the same address after resume");
        assert_eq!(probe(&d, "n1", OUTSIDE, PORT), format!("connected {ip1}"));
        let out = probe(&d, "n1", gw1.as_str(), host_port);
        assert!(
            out.starts_with("timeout"),
            "host reached after resume: {out}"
        );
    }

    d.ok(&["rm", "-f", "n1"]);
    d.ok(&["rm", "-f", "n2"]);
    let left = sandbox_network_leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(d);
    drop(host_service);
}

/// The host-side veth of a sandbox, as network.json names it.
fn veth_of(d: &Daemon, id: &str) -> String {
    d.network(id)["host_if"].as_str().unwrap().to_string()
}
