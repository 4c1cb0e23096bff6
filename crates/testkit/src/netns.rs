//! Private network namespaces for NAT tests. IPv4 forwarding is a host
//! setting tests never change, but it is per network namespace: a test
//! re-runs its own binary inside `unshare --net` ([`in_private_netns`]),
//! where the helper may switch forwarding on, and links a second
//! namespace to it that stands for "the internet" ([`Outside`]).
//! Everything lives in those namespaces and goes away with them.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::process::KillOnDrop;
use crate::skip::has_tools;

/// Set in the environment of a helper run by [`in_private_netns`].
pub const HELPER_ENV: &str = "DWELL_TESTKIT_NETNS_HELPER";

/// The outside service's address (in the "internet" namespace).
pub const OUTSIDE: &str = "192.0.2.1";
/// Our namespace's address on the link to the outside.
pub const UPLINK: &str = "192.0.2.2";
/// The outside service's port (one above it is closed: it refuses).
pub const PORT: u16 = 4567;

/// The tools these tests run.
const TOOLS: [&str; 4] = ["unshare", "nsenter", "ip", "nft"];

/// Runs the `#[ignore]`d test `helper` (its path in the test binary, e.g.
/// `syscalls::network_helper`) in a private network namespace and fails
/// unless it ran and passed (a filter that matched nothing would pass
/// too); skips (printing why) if a tool it needs is missing.
pub fn in_private_netns(helper: &str) {
    if !has_tools(&TOOLS) {
        return;
    }
    let out = Command::new("unshare")
        .args(["--net", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", helper, "--ignored"])
        .args(["--test-threads=1", "--nocapture"])
        .env(HELPER_ENV, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success() && text.contains("1 passed"),
        "the checks of {helper} failed or did not run (see its output above)"
    );
}

/// Whether this process is a helper started by [`in_private_netns`]
/// (a helper run any other way must do nothing: it would touch the host).
pub fn is_helper() -> bool {
    std::env::var_os(HELPER_ENV).is_some()
}

/// Runs `args[0] args[1..]`, which must succeed.
pub fn run(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// Switches IPv4 forwarding on and brings `lo` up; only ever in a private
/// namespace.
pub fn enable_forwarding() {
    assert!(is_helper(), "forwarding is switched on only in a helper");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
    run(&["ip", "link", "set", "lo", "up"]);
}

/// The outside: a namespace held by a sleeping process, linked to ours by
/// a veth (`up0` here, [`UPLINK`]; `out0` there, [`OUTSIDE`]), with a
/// listener on [`PORT`] that greets each connection with `hello <peer>`,
/// keeps it open and reports its peer. Gone when dropped.
pub struct Outside {
    _holder: KillOnDrop,
    /// Each connection's peer as the outside sees it.
    pub peers: mpsc::Receiver<SocketAddr>,
}

impl Outside {
    /// The pid of the process holding the outside namespace (for
    /// `nsenter -t PID -n` and `/proc/PID/ns/net`).
    pub fn pid(&self) -> u32 {
        self._holder.0.id()
    }

    pub fn start() -> Outside {
        let holder = KillOnDrop(
            Command::new("unshare")
                .args(["--net", "sleep", "600"])
                .spawn()
                .unwrap(),
        );
        let opid = holder.0.id().to_string();
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        for _ in 0..400 {
            if std::fs::read_link(format!("/proc/{opid}/ns/net")).ok() != Some(ours.clone()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        run(&[
            "ip", "link", "add", "up0", "type", "veth", "peer", "name", "out0", "netns", &opid,
        ]);
        run(&["ip", "addr", "add", &format!("{UPLINK}/24"), "dev", "up0"]);
        run(&["ip", "link", "set", "up0", "up"]);
        let out_addr = format!("{OUTSIDE}/24");
        for args in [
            vec!["ip", "addr", "add", &out_addr, "dev", "out0"],
            vec!["ip", "link", "set", "out0", "up"],
            vec!["ip", "link", "set", "lo", "up"],
        ] {
            let mut full = vec!["nsenter", "-t", &opid, "-n"];
            full.extend(args);
            run(&full);
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let (peer_tx, peers) = mpsc::channel();
        let ns = std::fs::File::open(format!("/proc/{opid}/ns/net")).unwrap();
        std::thread::spawn(move || {
            // SAFETY: moves only this thread into the outside namespace.
            assert_eq!(
                unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            let l = TcpListener::bind((OUTSIDE, PORT)).unwrap();
            ready_tx.send(()).unwrap();
            let mut open: Vec<TcpStream> = Vec::new();
            for (mut s, peer) in l.incoming().flatten().filter_map(|s| {
                let p = s.peer_addr().ok()?;
                Some((s, p))
            }) {
                let _ = writeln!(s, "hello {}", peer.ip());
                open.push(s);
                if peer_tx.send(peer).is_err() {
                    return;
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        Outside {
            _holder: holder,
            peers,
        }
    }
}
