//! NAT networking of the namespace runtime against the real kernel.
//!
//! IPv4 forwarding is a host setting the tests must not change, so the
//! real test runs in a child process inside a private network namespace
//! (where forwarding can be switched on without touching the host), with a
//! second namespace standing for "the internet". On the host itself only
//! the refusal without forwarding is checked.

mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::TestSandbox;
use dwell_runtime::{NetworkMode, Runtime};
use dwell_testkit::netns::{self, in_private_netns, Outside};
use dwell_testkit::{has_root, skip};

#[test]
fn nat_refused_without_ip_forward_on_the_host() {
    if !has_root(common::NEEDS) {
        return;
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    if fwd.trim() == "1" {
        skip("ip_forward is on here; the refusal cannot be observed");
        return;
    }
    let mut sb = TestSandbox::new("natoff");
    sb.config.network = NetworkMode::Nat;
    let err = sb.rt.start(&sb.config).unwrap_err().to_string();
    assert!(err.contains("ip_forward"), "{err}");
    assert!(!sb.rt.list_host().unwrap().contains(&sb.config.id));
    assert!(!sb.config.state_dir.join("pid").exists());
}

#[test]
fn nat_in_a_private_network_namespace() {
    if !has_root(common::NEEDS) {
        return;
    }
    in_private_netns("nat_helper");
}

/// Runs inside a private network namespace (see above).
#[test]
#[ignore = "helper of nat_in_a_private_network_namespace"]
fn nat_helper() {
    if !netns::is_helper() {
        return;
    }
    netns::enable_forwarding();
    let outside = Outside::start();

    let mut a = TestSandbox::new("nata");
    a.config.network = NetworkMode::Nat;
    a.start();
    let mut b = TestSandbox::new("natb");
    b.config.network = NetworkMode::Nat;
    b.start();
    let ia = a.rt.network(&a.config).expect("network.json of a");
    let ib = b.rt.network(&b.config).expect("network.json of b");
    assert_ne!(ia.sandbox_ip, ib.sandbox_ip);
    assert_eq!(
        a.ok("cat /sys/class/net/eth0/operstate"),
        "up",
        "eth0 inside the sandbox"
    );

    // Outbound traffic leaves masqueraded behind the host's address.
    let out = a.ok("/.dwell/agent --connect 192.0.2.1:4567");
    assert!(
        out.starts_with(&format!("connected {}", ia.sandbox_ip)),
        "{out}"
    );
    let peer = outside.peers.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(peer.ip(), Ipv4Addr::new(192, 0, 2, 2), "not masqueraded");
    // Control: an open path without a listener answers "refused" ...
    assert_eq!(a.ok("/.dwell/agent --connect 192.0.2.1:4568"), "refused");
    // ... while the host itself and other sandboxes are silently dropped.
    for target in [
        format!("{}:4568", ia.gateway_ip),
        "192.0.2.2:4568".to_string(),
        format!("{}:4568", ib.sandbox_ip),
        format!("{}:4568", ib.gateway_ip),
    ] {
        assert_eq!(
            a.ok(&format!("/.dwell/agent --connect {target}")),
            "timeout",
            "{target} must be unreachable from a sandbox"
        );
    }

    // Stop removes the interface and the table.
    a.rt.stop(&a.config).unwrap();
    assert!(!Path::new("/sys/class/net").join(&ia.host_if).exists());
    let listed = Command::new("nft")
        .args(["list", "table", "ip", &ia.table])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(!listed.success(), "table {} left behind", ia.table);
    drop(outside);
}
