//! End to end: egress rules of `--net` sandboxes, both runtimes. An
//! allow-listed domain resolves (through the daemon's resolver, which
//! pins its addresses) and connects; a name or address not allowed fails
//! within a second with a clear error; `dwell update` changes what a live
//! sandbox reaches without restarting it; a listed deny wins over an allow
//! on dwell's API, an allow wins on E2B's; the host stays unreachable.
//!
//! Like `network.rs`, each test re-runs this binary inside `unshare --net`
//! (forwarding is switched on only there) and links a second namespace to
//! it that plays the internet, with documentation-range addresses only:
//! 192.0.2.10, 198.51.100.10 and 203.0.113.10 each serve a greeting on
//! port 8080, and 192.0.2.1:53 is an authoritative DNS server this file
//! starts (allowed.test -> 192.0.2.10, denied.test -> 198.51.100.10,
//! other.test -> 203.0.113.10, www.wild.test -> 192.0.2.10, slow.test ->
//! 198.51.100.20 after a second with a day-long TTL, many.test -> 1000
//! addresses).
//!
//! Attacks from inside a sandbox: querying an allowed name in a loop while
//! an update revokes it must not leave its address reachable (an answer in
//! flight pinned after the update); an answer with 1000 addresses pins at
//! most 32 of them into a bounded set.
//!
//! E2B's own network tests reach public addresses; `e2b_sdk_network_*` runs
//! their behaviours as SDK scenarios against this internet instead
//! (`tests/e2b/network.py`, `tests/e2b/js/network.mjs`).

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use common::netns::{self, in_private_netns, run, Outside, OUTSIDE};
use common::*;
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};

const SERVICE_PORT: u16 = 8080;
const ALLOWED: &str = "192.0.2.10";
const DENIED: &str = "198.51.100.10";
const OTHER: &str = "203.0.113.10";
/// slow.test's address (its answer takes a second).
const SLOW: &str = "198.51.100.20";
/// How long the zone takes to answer slow.test.
const SLOW_ANSWER: Duration = Duration::from_secs(1);
/// Addresses in the answer for many.test.
const MANY: u32 = 1000;

/// Resolve (unless given an address) and connect from inside a sandbox:
/// prints `connected IP GREETING`, `refused IP SECS`, `noname SECS` or
/// `error IP WHAT SECS`.
const PROBE: &str = "import socket,sys,time
t=time.time()
host,port=sys.argv[1],int(sys.argv[2])
try:
  ip=socket.gethostbyname(host)
except OSError as e:
  print('noname %.2f' % (time.time()-t)); sys.exit()
t=time.time()
try:
  s=socket.create_connection((ip,port),timeout=5); s.settimeout(5); print('connected', ip, s.recv(64).decode().strip())
except ConnectionRefusedError: print('refused %s %.2f' % (ip, time.time()-t))
except OSError as e: print('error %s %s %.2f' % (ip, e, time.time()-t))";

#[test]
fn egress_rules_namespace() {
    if can_run() {
        in_private_netns("egress_helper_namespace");
    }
}

#[test]
fn egress_rules_gvisor() {
    if can_run_gvisor() {
        in_private_netns("egress_helper_gvisor");
    }
}

#[test]
#[ignore = "helper of egress_rules_namespace"]
fn egress_helper_namespace() {
    if netns::is_helper() {
        checks("namespace");
    }
}

#[test]
#[ignore = "helper of egress_rules_gvisor"]
fn egress_helper_gvisor() {
    if netns::is_helper() {
        checks("gvisor");
    }
}

/// Runs `f` on a thread that has joined the outside's network namespace.
fn in_outside<F: FnOnce() + Send + 'static>(outside: &Outside, f: F) {
    let ns = std::fs::File::open(format!("/proc/{}/ns/net", outside.pid())).unwrap();
    std::thread::spawn(move || {
        // SAFETY: moves only this thread into the outside namespace.
        assert_eq!(
            unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f();
    });
}

/// The internet: more addresses outside, routes to them, a greeting on
/// port 8080 of each and the DNS server.
fn internet(outside: &Outside) {
    let pid = outside.pid().to_string();
    for addr in [ALLOWED, DENIED, OTHER, SLOW] {
        run(&[
            "nsenter",
            "-t",
            &pid,
            "-n",
            "ip",
            "addr",
            "add",
            &format!("{addr}/32"),
            "dev",
            "out0",
        ]);
    }
    for net in ["198.51.100.0/24", "203.0.113.0/24"] {
        run(&["ip", "route", "add", net, "via", OUTSIDE]);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = tx.clone();
    in_outside(outside, move || {
        let l = TcpListener::bind(("0.0.0.0", SERVICE_PORT)).unwrap();
        ready.send(()).unwrap();
        for mut s in l.incoming().flatten() {
            let local = s.local_addr().unwrap().ip();
            // One write: the probe reads one segment.
            let _ = s.write_all(format!("hello-from-{local}\n").as_bytes());
        }
    });
    in_outside(outside, move || {
        let sock = UdpSocket::bind((OUTSIDE, 53)).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let query = buf[..n].to_vec();
            let Some(reply) = authoritative(&query) else {
                continue;
            };
            if query.windows(4).any(|w| w == b"slow") {
                let sock = sock.try_clone().unwrap();
                std::thread::spawn(move || {
                    std::thread::sleep(SLOW_ANSWER);
                    let _ = sock.send_to(&reply, peer);
                });
            } else {
                let _ = sock.send_to(&reply, peer);
            }
        }
    });
    for _ in 0..2 {
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}

/// The test zone's answer to one query.
fn authoritative(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries().first()?.clone();
    let name = question.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    let addr = match name {
        "allowed.test" | "www.wild.test" => Some(ALLOWED),
        "denied.test" => Some(DENIED),
        "other.test" => Some(OTHER),
        "slow.test" => Some(SLOW),
        "many.test" => Some("100.64.0.0"),
        _ => None,
    };
    let ttl = if name == "slow.test" { 86_400 } else { 30 };
    let mut m = Message::new();
    m.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_authoritative(true)
        .set_recursion_desired(q.recursion_desired());
    m.add_query(question.clone());
    match addr {
        Some(_) if question.query_type() == RecordType::A && name == "many.test" => {
            for i in 0..MANY {
                let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + i);
                m.add_answer(Record::from_rdata(
                    question.name().clone(),
                    ttl,
                    RData::A(ip.into()),
                ));
            }
        }
        Some(a) if question.query_type() == RecordType::A => {
            let ip: Ipv4Addr = a.parse().unwrap();
            m.add_answer(Record::from_rdata(
                question.name().clone(),
                ttl,
                RData::A(ip.into()),
            ));
        }
        Some(_) => {}
        None => {
            m.set_response_code(ResponseCode::NXDomain);
        }
    }
    m.to_vec().ok()
}

fn probe(d: &Daemon, tenant: Option<&str>, sb: &str, host: &str, port: u16) -> String {
    let port = port.to_string();
    let mut args = Vec::new();
    if let Some(t) = tenant {
        args.extend(["--as-tenant", t]);
    }
    args.extend(["exec", sb, "--", "python3", "-c", PROBE, host, &port]);
    d.ok(&args).trim().to_string()
}

/// `probe` fails fast: `kind` (`noname` or `refused`) both times it is run,
/// the faster of the two within a second (one probe on a loaded machine may
/// be descheduled for longer; a policy that lets the probe hang until a
/// timeout makes both slow).
fn fails_fast(probe: impl Fn() -> String, kind: &str, what: &str) {
    let secs: Vec<f64> = (0..2)
        .map(|_| {
            let out = probe();
            assert!(
                out.starts_with(kind),
                "{what}: expected {kind}, got {out:?}"
            );
            out.rsplit(' ').next().unwrap().parse().unwrap()
        })
        .collect();
    println!("{what}: {kind} in {} s and {} s", secs[0], secs[1]);
    let best = secs[0].min(secs[1]);
    assert!(best < 1.0, "{what}: took {secs:?} s");
}

fn connects(out: &str, ip: &str, what: &str) {
    assert_eq!(
        out,
        format!("connected {ip} hello-from-{ip}"),
        "{what} must connect"
    );
}

/// PID 1's start time in the sandbox (field 22 of /proc/1/stat): the same
/// after an update means the sandbox was not restarted.
fn pid1_start(d: &Daemon, sb: &str) -> String {
    let stat = d.ok(&["exec", sb, "--", "cat", "/proc/1/stat"]);
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(19).unwrap().to_string()
}

fn checks(isolation: &str) {
    netns::enable_forwarding();
    let outside = Outside::start();
    internet(&outside);
    // A service on every address of the daemon's host.
    let host_service = TcpListener::bind("0.0.0.0:0").unwrap();
    let host_port = host_service.local_addr().unwrap().port();

    // Sandboxes made through the E2B API get the daemon's default
    // isolation: this run's (the helper runs alone in its process).
    std::env::set_var("DWELL_TEST_ISOLATION", isolation);
    // The daemon's default rules: for sandboxes that give none.
    let (d, e2b) = Daemon::start_e2b(&["--dns-upstream", OUTSIDE, "--deny-out", OTHER]);

    // Bad entries are refused with what is wrong, and nothing is made.
    for (flag, bad, says) in [
        ("--allow-out", "10.0.0.0/33", "not a valid address or CIDR"),
        ("--deny-out", "exa mple.com", "not a valid domain name"),
    ] {
        let out = d.run(&[
            "create",
            "--name",
            "bad",
            "--net",
            "--isolation",
            isolation,
            flag,
            bad,
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
    assert!(!d.run(&["inspect", "bad"]).status.success());

    // Only allowed.test: the name resolves and connects ...
    let id = d.create(
        "e1",
        &[
            "--net",
            "--isolation",
            isolation,
            "--allow-out",
            "allowed.test",
            "--deny-out",
            "0.0.0.0/0",
        ],
    );
    let gw = d.network(&id)["gateway_ip"].as_str().unwrap().to_string();
    let resolv = d.ok(&["exec", "e1", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        resolv.lines().any(|l| l == format!("nameserver {gw}")),
        "{resolv}"
    );
    let spec = &d.inspect("e1")["spec"]["egress"];
    assert_eq!(spec["allow"], serde_json::json!(["allowed.test"]));
    assert_eq!(spec["precedence"], "deny_wins");
    connects(
        &probe(&d, None, "e1", "allowed.test", SERVICE_PORT),
        ALLOWED,
        "allowed.test",
    );
    // ... everything else fails at once: a name not listed, an address not
    // listed, an address of a listed name's subnet that was not handed out.
    fails_fast(
        || probe(&d, None, "e1", "denied.test", SERVICE_PORT),
        "noname",
        "denied.test",
    );
    fails_fast(
        || probe(&d, None, "e1", OTHER, SERVICE_PORT),
        "refused",
        "an address not allowed",
    );
    fails_fast(
        || probe(&d, None, "e1", OUTSIDE, 4567),
        "refused",
        "a neighbour of an allowed address",
    );
    // DNS sent to another server reaches the daemon's resolver anyway.
    let direct = d.ok(&[
        "exec",
        "e1",
        "--",
        "python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(3)\n\
         q=bytes([0x12,0x34,1,0,0,1,0,0,0,0,0,0,6])+b'denied'+bytes([4])+b'test'+bytes([0,0,1,0,1])\n\
         s.sendto(q,('203.0.113.10',53)); r=s.recv(512); print('rcode', r[3]&15)",
    ]);
    assert_eq!(
        direct.trim(),
        "rcode 3",
        "NXDOMAIN from the redirected query"
    );
    // The host stays unreachable (dropped) but for its resolver.
    let out = probe(&d, None, "e1", &gw, host_port);
    assert!(
        out.starts_with("error"),
        "the host must be unreachable: {out}"
    );

    // A live update: other addresses, no restart.
    let start = pid1_start(&d, "e1");
    let started_at = d.inspect("e1")["started_at"].clone();
    d.ok(&[
        "update",
        "e1",
        "--allow-out",
        "203.0.113.0/24,*.wild.test",
        "--deny-out",
        "0.0.0.0/0",
    ]);
    connects(
        &probe(&d, None, "e1", OTHER, SERVICE_PORT),
        OTHER,
        "the newly allowed block",
    );
    fails_fast(
        || probe(&d, None, "e1", "allowed.test", SERVICE_PORT),
        "noname",
        "the name no longer allowed",
    );
    fails_fast(
        || probe(&d, None, "e1", ALLOWED, SERVICE_PORT),
        "refused",
        "the address pinned for a name no longer allowed",
    );
    connects(
        &probe(&d, None, "e1", "www.wild.test", SERVICE_PORT),
        ALLOWED,
        "a name below *.wild.test",
    );
    assert_eq!(pid1_start(&d, "e1"), start, "PID 1 was not restarted");
    assert_eq!(d.inspect("e1")["started_at"], started_at);
    let audit = d.ok(&["audit", "--json"]);
    assert!(audit.contains("PATCH"), "the update is audited: {audit}");

    // Deny wins on dwell's API ...
    d.ok(&[
        "update",
        "e1",
        "--allow-out",
        "198.51.100.0/24",
        "--deny-out",
        &format!("{DENIED},203.0.113.0/24"),
    ]);
    fails_fast(
        || probe(&d, None, "e1", DENIED, SERVICE_PORT),
        "refused",
        "a denied address inside an allowed block",
    );
    fails_fast(
        || probe(&d, None, "e1", OTHER, SERVICE_PORT),
        "refused",
        "a denied block",
    );
    // ... and '' clears a list: with no deny-all, anything not denied goes.
    d.ok(&["update", "e1", "--allow-out", "", "--deny-out", OTHER]);
    connects(
        &probe(&d, None, "e1", DENIED, SERVICE_PORT),
        DENIED,
        "an address no rule denies",
    );
    connects(
        &probe(&d, None, "e1", "allowed.test", SERVICE_PORT),
        ALLOWED,
        "a name no rule denies",
    );

    // Without rules of its own a sandbox gets the daemon's ...
    d.create("d1", &["--net", "--isolation", isolation]);
    assert_eq!(
        d.inspect("d1")["spec"]["egress"]["deny"],
        serde_json::json!([OTHER])
    );
    fails_fast(
        || probe(&d, None, "d1", OTHER, SERVICE_PORT),
        "refused",
        "denied by the daemon's default",
    );
    connects(
        &probe(&d, None, "d1", DENIED, SERVICE_PORT),
        DENIED,
        "not denied by the daemon's default",
    );
    d.ok(&["rm", "-f", "d1"]);
    // ... or its tenant's, checked when they are set.
    let out = d.run(&["tenant", "create", "t2", "--default-deny-out", "300.0.0.1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a valid address"),
        "{}",
        stderr(&out)
    );
    d.ok(&["tenant", "create", "t2"]);
    d.ok(&[
        "tenant",
        "update",
        "t2",
        "--default-allow-out",
        "allowed.test",
        "--default-deny-out",
        "0.0.0.0/0",
    ]);
    d.ok(&[
        "--as-tenant",
        "t2",
        "create",
        "--name",
        "t2sb",
        // Small, as testkit's create makes them: a loaded CI disk may not
        // have the default 4 GiB free.
        "--memory",
        "256M",
        "--disk",
        "512M",
        "--net",
        "--isolation",
        isolation,
    ]);
    let e = &d.ok(&["--as-tenant", "t2", "inspect", "t2sb"]);
    assert!(e.contains("allow-out:   allowed.test"), "{e}");
    assert!(e.contains("deny-out:    0.0.0.0/0 (deny wins)"), "{e}");
    fails_fast(
        || probe(&d, Some("t2"), "t2sb", DENIED, SERVICE_PORT),
        "refused",
        "denied by the tenant's default",
    );
    d.ok(&["--as-tenant", "t2", "rm", "-f", "t2sb"]);

    // Allow wins on E2B's API (as E2B documents).
    let key = d.tenant_key("e2b");
    let body = format!(
        r#"{{"templateID":"base","network":{{"allowOut":["{DENIED}","allowed.test"],"denyOut":["198.51.100.0/24","0.0.0.0/0"]}}}}"#
    );
    let created = e2b_create(&e2b.api, &key, &body);
    let sb = created["sandboxID"].as_str().unwrap().to_string();
    let t = Some("e2b");
    connects(
        &probe(&d, t, &sb, DENIED, SERVICE_PORT),
        DENIED,
        "an allowed address inside a denied block (E2B)",
    );
    connects(
        &probe(&d, t, &sb, "allowed.test", SERVICE_PORT),
        ALLOWED,
        "an allowed name (E2B)",
    );
    fails_fast(
        || probe(&d, t, &sb, OTHER, SERVICE_PORT),
        "refused",
        "an address not allowed (E2B)",
    );
    // E2B's network update replaces the rules of the running sandbox.
    let (status, text) = http_json(
        &e2b.api,
        "PUT",
        &format!("/sandboxes/{sb}/network"),
        &key,
        &format!(r#"{{"allowOut":["{OTHER}"],"denyOut":["0.0.0.0/0"]}}"#),
    );
    assert_eq!(status, 204, "{text}");
    connects(
        &probe(&d, t, &sb, OTHER, SERVICE_PORT),
        OTHER,
        "allowed by the E2B update",
    );
    fails_fast(
        || probe(&d, t, &sb, DENIED, SERVICE_PORT),
        "refused",
        "no longer allowed (E2B)",
    );
    let (status, text) = http_json(
        &e2b.api,
        "PUT",
        &format!("/sandboxes/{sb}/network"),
        &key,
        r#"{"denyOut":["bad.example"]}"#,
    );
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("denyOut takes IP addresses"), "{text}");

    d.ok(&["--as-tenant", "e2b", "rm", "-f", &sb]);
    d.ok(&["rm", "-f", "e1"]);

    revoking_while_the_sandbox_asks(&d, isolation);
    a_huge_answer_pins_a_few(&d, isolation);
    drop(d);
    drop(host_service);
}

/// Create a sandbox through the E2B API (of the daemon's default
/// isolation, this run's).
fn e2b_create(api: &str, key: &str, body: &str) -> serde_json::Value {
    let (status, text) = http_json(api, "POST", "/v2/sandboxes", key, body);
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// One request with API key `key` and a JSON body; (status, body).
fn http_json(addr: &str, method: &str, path: &str, key: &str, body: &str) -> (u16, String) {
    let headers = [("X-API-KEY", key), ("Content-Type", "application/json")];
    let r = http::request(addr, method, path, &headers, body.as_bytes());
    (r.status, r.text())
}

/// Looks up `slow.test` from 8 threads in a loop until /tmp/stop exists
/// (or `argv[1]` seconds pass); writes /tmp/resolved after the first lookup
/// that resolved; prints how many lookups resolved.
const LOOKUP_LOOP: &str = "import os,socket,sys,threading,time
end=time.time()+float(sys.argv[1]); ok=[0]
def loop():
  while time.time()<end and not os.path.exists('/tmp/stop'):
    try:
      socket.gethostbyname('slow.test'); ok[0]+=1
      if ok[0]==1: open('/tmp/resolved','w').close()
    except OSError: time.sleep(0.05)
ts=[threading.Thread(target=loop) for _ in range(8)]
[t.start() for t in ts]; [t.join() for t in ts]
print(ok[0])";

/// The attack of a sandbox whose allowed name is being revoked: it keeps
/// asking for it (answers in flight at the upstream while the update runs)
/// so one of them would pin after the update, for the day-long TTL. After
/// the update returns and the loop ends, the address is refused.
fn revoking_while_the_sandbox_asks(d: &Daemon, isolation: &str) {
    d.create(
        "r1",
        &[
            "--net",
            "--isolation",
            isolation,
            "--allow-out",
            "slow.test",
            "--deny-out",
            "0.0.0.0/0",
        ],
    );
    connects(
        &probe(d, None, "r1", "slow.test", SERVICE_PORT),
        SLOW,
        "slow.test before the update",
    );
    std::thread::scope(|s| {
        let asking = s.spawn(|| d.ok(&["exec", "r1", "--", "python3", "-c", LOOKUP_LOOP, "120"]));
        // Once the loop resolves the name (so lookups are in flight at the
        // upstream, each answered after SLOW_ANSWER), revoke it.
        wait_for(60, "the loop to resolve slow.test", || {
            d.run(&["exec", "r1", "--", "test", "-e", "/tmp/resolved"])
                .status
                .success()
        });
        std::thread::sleep(SLOW_ANSWER / 2);
        d.ok(&["update", "r1", "--allow-out", "", "--deny-out", "0.0.0.0/0"]);
        // The loop goes on asking after the update, then stops.
        std::thread::sleep(SLOW_ANSWER * 2);
        d.ok(&["exec", "r1", "--", "touch", "/tmp/stop"]);
        let resolved: u32 = asking.join().unwrap().trim().parse().unwrap();
        assert!(
            resolved > 0,
            "the loop resolved slow.test before the update"
        );
    });
    // Every answer that was in flight is done by now.
    std::thread::sleep(SLOW_ANSWER * 2);
    fails_fast(
        || probe(d, None, "r1", SLOW, SERVICE_PORT),
        "refused",
        "the address of a name revoked while the sandbox asked for it",
    );
    fails_fast(
        || probe(d, None, "r1", "slow.test", SERVICE_PORT),
        "noname",
        "the revoked name",
    );
    d.ok(&["rm", "-f", "r1"]);
}

/// An allowed name whose answer holds 1000 addresses: the sandbox gets
/// and reaches at most 32 of them, and its pin set has a bounded size.
fn a_huge_answer_pins_a_few(d: &Daemon, isolation: &str) {
    let id = d.create(
        "m1",
        &[
            "--net",
            "--isolation",
            isolation,
            "--allow-out",
            "many.test",
            "--deny-out",
            "0.0.0.0/0",
        ],
    );
    let got = d.ok(&[
        "exec",
        "m1",
        "--",
        "python3",
        "-c",
        "import socket; print(len(socket.gethostbyname_ex('many.test')[2]))",
    ]);
    let got: usize = got.trim().parse().unwrap();
    assert!(
        (1..=32).contains(&got),
        "the answer carries {got} addresses"
    );
    let table = dwell_runtime::host::network::table_name(&id);
    let set = String::from_utf8(
        std::process::Command::new("nft")
            .args(["list", "set", "inet", &table, "egress_dns"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let pinned = set.matches("100.64.").count();
    assert!(
        (1..=32).contains(&pinned),
        "{pinned} addresses pinned: {set}"
    );
    assert!(set.contains("size 4096"), "the set is bounded: {set}");
    d.ok(&["rm", "-f", "m1"]);
}

/// E2B's network tests, which reach public addresses, as SDK scenarios
/// against this file's internet: `tests/e2b/network.py` (the PyPI SDK) on
/// both runtimes and `tests/e2b/js/network.mjs` (the npm SDK) on the
/// namespace runtime, with the port proxy on loopback over plain HTTP.
#[test]
fn e2b_sdk_network_namespace() {
    if can_run() && python_sdk_present() {
        in_private_netns("e2b_sdk_network_helper_namespace");
    }
}

#[test]
fn e2b_sdk_network_gvisor() {
    if can_run_gvisor() && python_sdk_present() {
        in_private_netns("e2b_sdk_network_helper_gvisor");
    }
}

#[test]
#[ignore = "helper of e2b_sdk_network_namespace"]
fn e2b_sdk_network_helper_namespace() {
    if netns::is_helper() {
        sdk_checks("namespace", true);
    }
}

#[test]
#[ignore = "helper of e2b_sdk_network_gvisor"]
fn e2b_sdk_network_helper_gvisor() {
    if netns::is_helper() {
        sdk_checks("gvisor", false);
    }
}

/// Whether python3 has the `e2b` package (skips with why when not).
fn python_sdk_present() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import e2b"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip("python3 or its package `e2b` is missing; install them with scripts/install-deps.sh");
    }
    ok
}

/// The SDK scenarios against a daemon in this namespace: E2B API, envd
/// and port proxy listeners on loopback, DNS through the outside.
fn sdk_checks(isolation: &str, node: bool) {
    netns::enable_forwarding();
    let outside = Outside::start();
    internet(&outside);
    std::env::set_var("DWELL_TEST_ISOLATION", isolation);
    let proxy = format!("127.0.0.1:{}", free_port());
    let (d, e2b) = Daemon::start_e2b(&[
        "--dns-upstream",
        OUTSIDE,
        "--proxy-listen",
        &proxy,
        "--domain",
        "dwell.test",
    ]);
    wait_listening(&proxy, 20);
    let key = d.tenant_key("e2b");
    let key = format!("e2b_{}", key.strip_prefix("dwk_").expect("a dwell key"));
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/e2b");
    let env = [
        ("E2B_API_URL", format!("http://{}", e2b.api)),
        ("E2B_SANDBOX_URL", format!("http://{}", e2b.envd)),
        ("E2B_API_KEY", key),
        ("NET_ALLOWED", ALLOWED.to_string()),
        ("NET_DENIED", DENIED.to_string()),
        ("NET_OTHER", OTHER.to_string()),
        ("NET_SERVICE_PORT", SERVICE_PORT.to_string()),
        ("NET_PROXY", proxy.clone()),
    ];
    sdk_scenario(&d, "python3", &dir.join("network.py"), &env);
    let mut d = d;
    mask_survives_a_restart(&mut d, &e2b.api, &proxy);
    if node {
        let js = dir.join("js");
        if !js.join("node_modules/e2b/package.json").exists()
            || std::process::Command::new("node")
                .arg("--version")
                .output()
                .is_err()
        {
            skip("node or the npm package `e2b` (tests/e2b/js) is missing; run scripts/install-deps.sh");
        } else {
            sdk_scenario(&d, "node", &js.join("network.mjs"), &env);
        }
    }
    drop(d);
}

/// Runs one scenario script; panics with its output (and the daemon log's
/// tail) unless it exits 0 within 5 minutes.
fn sdk_scenario(d: &Daemon, program: &str, script: &std::path::Path, env: &[(&str, String)]) {
    let name = common::script::script_name(script);
    let mut cmd = std::process::Command::new(program);
    cmd.arg(script)
        .current_dir(script.parent().unwrap())
        .env_remove("E2B_DOMAIN")
        .env_remove("E2B_DEBUG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    common::script::run_scenario(
        cmd,
        &format!("{program} {name}"),
        &format!("{program}-{name}.out"),
        d,
        Duration::from_secs(300),
    );
}

/// Answers every GET on port 8080 with the Host header it got.
const ECHO_HOST: &str = "import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        b=('host='+self.headers.get('Host','')).encode()
        self.send_response(200); self.send_header('Content-Length',str(len(b))); self.end_headers()
        self.wfile.write(b)
    def log_message(self,*a): pass
http.server.HTTPServer(('',8080),H).serve_forever()";

/// A sandbox's `maskRequestHost` is kept across a daemon crash: the
/// restarted daemon shows it and its port proxy still masks the Host.
fn mask_survives_a_restart(d: &mut Daemon, api: &str, proxy: &str) {
    let key = d.tenant_key("e2b-mask");
    let body =
        r#"{"templateID":"base","network":{"maskRequestHost":"${PORT}-masked.example.com"}}"#;
    let created = e2b_create(api, &key, body);
    let sb = created["sandboxID"].as_str().unwrap().to_string();
    d.kill9();
    d.restart();
    wait_listening(api, 30);
    wait_listening(proxy, 30);
    let (status, text) = http_json(api, "GET", &format!("/sandboxes/{sb}"), &key, "");
    assert_eq!(status, 200, "{text}");
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        info["network"]["maskRequestHost"], "${PORT}-masked.example.com",
        "{info}"
    );
    let t = ["--as-tenant", "e2b-mask"];
    let mut args = t.to_vec();
    args.extend(["exec", "-d", &sb, "--", "python3", "-c", ECHO_HOST]);
    d.ok(&args);
    let host = format!("8080-{sb}.dwell.test");
    let t0 = std::time::Instant::now();
    let r = loop {
        let r = http::request(proxy, "GET", "/", &[("Host", host.as_str())], b"");
        if r.status == 200 || t0.elapsed() > Duration::from_secs(20) {
            break r;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "host=8080-masked.example.com");
    let mut args = t.to_vec();
    args.extend(["rm", "-f", &sb]);
    d.ok(&args);
}
