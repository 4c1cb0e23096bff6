//! A node cut off from the database freezes its own sandboxes when its
//! lease ends, before any other node may declare it lost and run them,
//! and thaws them once its lease is its own again. The cut is real: the
//! node reaches PostgreSQL through a TCP relay the test closes.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use dwell_testkit::cluster::Cluster;

/// A TCP relay to `port` on loopback that can be cut (every connection
/// closed, new ones refused) and mended.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: u16) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (c2, k2) = (cut.clone(), conns.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if c2.load(Ordering::SeqCst) {
                    let _ = s.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(up) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                k2.lock().unwrap().push(s.try_clone().unwrap());
                k2.lock().unwrap().push(up.try_clone().unwrap());
                for (mut from, mut to) in
                    [(s.try_clone().unwrap(), up.try_clone().unwrap()), (up, s)]
                {
                    std::thread::spawn(move || {
                        let mut b = [0u8; 16384];
                        while let Ok(n) = from.read(&mut b) {
                            if n == 0 || to.write_all(&b[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Relay { port, cut, conns }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn mend(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    /// Mended before the cluster is torn down (it is dropped first), also
    /// when the test failed while cut: the cut-off node then gets a few
    /// leases to register again and thaw, so that its sandboxes can be
    /// removed through the other node and nothing is left behind.
    fn drop(&mut self) {
        let was_cut = self.cut.load(Ordering::SeqCst);
        self.mend();
        if was_cut {
            std::thread::sleep(std::time::Duration::from_secs(12));
        }
    }
}

/// Whether sandbox `id`'s cgroup is frozen, by the v1 freezer or the v2
/// `cgroup.freeze` (whichever the runtime used): "FROZEN" or "THAWED" ("" when
/// no cgroup of it is found).
fn freezer_state(id: &str) -> String {
    let mut found = false;
    for root in [
        "/sys/fs/cgroup/freezer",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup",
    ] {
        for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
            let dir = e.path().join(id);
            if let Ok(s) = std::fs::read_to_string(dir.join("freezer.state")) {
                found = true;
                if s.trim() == "FROZEN" {
                    return "FROZEN".into();
                }
            }
            if let Ok(s) = std::fs::read_to_string(dir.join("cgroup.events")) {
                found = true;
                if s.lines().any(|l| l == "frozen 1") {
                    return "FROZEN".into();
                }
            }
        }
    }
    if found { "THAWED" } else { "" }.to_string()
}

#[test]
fn a_node_cut_off_from_the_database_freezes_its_sandboxes_then_thaws_them() {
    if !can_run() {
        return;
    }
    let Some(mut c) = Cluster::start(1, |_| {
        vec!["--node-capacity".into(), "vcpus=8,memory=1G".into()]
    }) else {
        return;
    };
    let pg = dwell_testkit::postgres::Postgres::shared().unwrap();
    let relay = Relay::to(pg.port);
    // n2 reaches the database through the relay; it has the room, so the
    // sandbox lands there.
    let url = c
        .url
        .replace(&format!(":{}/", pg.port), &format!(":{}/", relay.port));
    let advertise = format!("127.0.0.1:{}", free_port());
    let mut args = c.node_args("n2", &advertise);
    let i = args.iter().position(|a| a == "--cluster").unwrap();
    args[i + 1] = url;
    args.extend([
        "--node-capacity".to_string(),
        "vcpus=8,memory=8G".to_string(),
    ]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.nodes.push(Daemon::start_with(&refs));
    c.advertise.push(advertise);
    let n1 = c.node(0);
    let id = n1.create("w", &[]);
    assert_eq!(c.owner(0, "w"), "n2");
    assert_eq!(freezer_state(&id), "THAWED");

    relay.cut();
    // Its lease (3 s) ends without a heartbeat: n2 freezes what it runs.
    let t0 = std::time::Instant::now();
    let lost = || {
        c.node_list(0)
            .iter()
            .any(|n| n["name"] == "n2" && n["state"] == "lost")
    };
    while freezer_state(&id) != "FROZEN" {
        // The freeze must come first: once n2 is declared lost its
        // sandboxes may run elsewhere.
        assert!(!lost(), "n2 was declared lost before it froze its sandbox");
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "n2 did not freeze its sandbox ({}); its log about freezing:\n{}",
            freezer_state(&id),
            c.node(1)
                .log()
                .lines()
                .filter(|l| l.contains("froze") || l.contains("freeze"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // n1 declares it lost (the sandbox has no backup: it stays n2's).
    wait_for(20, "n2 declared lost", lost);
    relay.mend();
    // Back: n2 registers again and thaws what is still its own.
    wait_for(30, "n2 up again and its sandbox thawed", || {
        freezer_state(&id) == "THAWED"
            && c.node_list(0)
                .iter()
                .any(|n| n["name"] == "n2" && n["state"] == "up")
    });
    assert_eq!(n1.sh("w", "echo back"), "back\n");
}
