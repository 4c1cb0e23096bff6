//! NAT networking of the namespace runtime against the real kernel.
//!
//! IPv4 forwarding is a host setting the tests must not change, so the
//! real test runs in a child process inside a private network namespace
//! (where forwarding can be switched on without touching the host), with a
//! second namespace standing for "the internet". On the host itself only
//! the refusal without forwarding is checked.

mod common;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{skip_unless_root, TestSandbox};
use dwell_runtime::{NetworkMode, Runtime};

const HELPER_ENV: &str = "DWELL_NS_TEST_NAT_HELPER";

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(tool).exists())
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn nat_refused_without_ip_forward_on_the_host() {
    if skip_unless_root() {
        return;
    }
    let fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    if fwd.trim() == "1" {
        eprintln!("skipping: ip_forward is on here; the refusal cannot be observed");
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
    if skip_unless_root() {
        return;
    }
    for tool in ["unshare", "nsenter", "ip", "nft"] {
        if !have(tool) {
            eprintln!("skipping: {tool} is not installed");
            return;
        }
    }
    let st = Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "nat_helper", "--ignored", "--test-threads=1"])
        .env(HELPER_ENV, "1")
        .stdout(Stdio::inherit())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "the NAT checks failed (see the helper's output above)"
    );
}

/// Runs inside a private network namespace (see above).
#[test]
#[ignore = "helper of nat_in_a_private_network_namespace"]
fn nat_helper() {
    if std::env::var(HELPER_ENV).is_err() {
        return;
    }
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    sh(&["ip", "link", "set", "lo", "up"]);

    // "Outside": a namespace held by a sleeping process, linked to ours.
    let outside = KillOnDrop(
        Command::new("unshare")
            .args(["--net", "sleep", "300"])
            .spawn()
            .unwrap(),
    );
    let opid = outside.0.id().to_string();
    let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
    for _ in 0..200 {
        if std::fs::read_link(format!("/proc/{opid}/ns/net")).ok() != Some(ours.clone()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    sh(&[
        "ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns", &opid,
    ]);
    sh(&["ip", "addr", "add", "192.0.2.2/24", "dev", "up0"]);
    sh(&["ip", "link", "set", "up0", "up"]);
    for args in [
        vec!["ip", "addr", "add", "192.0.2.1/24", "dev", "out0"],
        vec!["ip", "link", "set", "out0", "up"],
        vec!["ip", "link", "set", "lo", "up"],
    ] {
        let mut full = vec!["nsenter", "-t", &opid, "-n"];
        full.extend(args);
        sh(&full);
    }

    // A listener in the outside namespace reports the peer it sees.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (peer_tx, peer_rx) = mpsc::channel::<SocketAddr>();
    let ns = std::fs::File::open(format!("/proc/{opid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: moves only this thread into the outside namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        let l = TcpListener::bind("192.0.2.1:4567").unwrap();
        ready_tx.send(()).unwrap();
        if let Ok((_, peer)) = l.accept() {
            let _ = peer_tx.send(peer);
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();

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
    let peer = peer_rx.recv_timeout(Duration::from_secs(5)).unwrap();
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
