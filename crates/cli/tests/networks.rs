//! End to end: tenant private networks on both runtimes. Two sandboxes on
//! `team` reach each other by name (`db` and `db.team`); a sandbox of
//! another network, and one of another tenant's network with the very
//! same subnet, reach neither (and fail fast); the host has no address a
//! member can reach through the bridge; a member without `--net` has no
//! way out; stop/start (and gVisor's hibernate/resume) keeps the address; a stopped sandbox joins a
//! network with `update --network-add`; a `--net` member has both; `network rm` is refused while
//! members remain; and nothing (ports, tables, bridges) is left once the
//! sandboxes and networks are gone. A member whose root makes its
//! `/etc/hosts` gigabytes large, or a symlink to `/dev/zero`, does not
//! make the daemon read it (its peak RSS stays put) and still gets its
//! peers' names.
//!
//! Bridges and veths are made in the daemon's network namespace, so each
//! test re-runs this binary inside `unshare --net` (see
//! `testkit::netns`) and starts the daemon there: nothing touches the
//! host's namespace and everything goes away with the helper's.

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

use common::netns::{self, in_private_netns};
use common::*;

/// Connect from inside a sandbox to HOST:PORT (a name or an address):
/// prints `connected <local ip>`, `refused`, `unreachable` (no route),
/// `noname` (the name does not resolve) or `timeout`, then the seconds it
/// took.
const PROBE: &str = "import socket,sys,time,errno
t=time.time()
try:
  s=socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2); r='connected '+s.getsockname()[0]
except socket.gaierror: r='noname'
except ConnectionRefusedError: r='refused'
except OSError as e: r='unreachable' if e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH) else 'timeout'
print(r, round(time.time()-t, 1))";

/// Send a few UDP datagrams to HOST:PORT (errors ignored).
const SEND_UDP: &str = "import socket,sys,time
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(10):
  try: s.sendto(b'hello', (sys.argv[1], int(sys.argv[2])))
  except OSError: pass
  time.sleep(0.1)";

/// Fetch `http://NAME:PORT/` with urllib: prints the status.
const FETCH: &str = "import urllib.request,sys
print(urllib.request.urlopen('http://%s:%s/' % (sys.argv[1], sys.argv[2]), timeout=5).status)";

#[test]
fn private_networks_connect_members_by_name_and_nothing_else() {
    if can_run() {
        in_private_netns("networks_helper_namespace");
    }
}

#[test]
fn gvisor_private_networks_connect_members_by_name_and_nothing_else() {
    if can_run_gvisor() {
        in_private_netns("networks_helper_gvisor");
    }
}

#[test]
#[ignore = "helper of private_networks_connect_members_by_name_and_nothing_else"]
fn networks_helper_namespace() {
    if netns::is_helper() {
        checks("namespace");
    }
}

#[test]
#[ignore = "helper of gvisor_private_networks_connect_members_by_name_and_nothing_else"]
fn networks_helper_gvisor() {
    if netns::is_helper() {
        checks("gvisor");
    }
}

/// `probe` from `sb` to `host:port`: the verdict without the time, and
/// the seconds it took.
fn probe(d: &Daemon, sb: &str, host: &str, port: u16) -> (String, f64) {
    let out = d.ok(&[
        "exec",
        sb,
        "--",
        "python3",
        "-c",
        PROBE,
        host,
        &port.to_string(),
    ]);
    let out = out.trim();
    let (verdict, secs) = out.rsplit_once(' ').unwrap();
    (verdict.to_string(), secs.parse().unwrap())
}

fn fetch(d: &Daemon, sb: &str, host: &str) -> String {
    d.ok(&["exec", sb, "--", "python3", "-c", FETCH, host, "8080"])
        .trim()
        .to_string()
}

/// Serve HTTP on port 8080 in `sb`, and wait until it accepts.
fn serve(d: &Daemon, sb: &str) {
    d.ok(&[
        "exec",
        "-d",
        sb,
        "--",
        "python3",
        "-m",
        "http.server",
        "8080",
        "--bind",
        "0.0.0.0",
    ]);
    let t0 = Instant::now();
    while probe(d, sb, "127.0.0.1", 8080).0 != "connected 127.0.0.1" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "http.server in {sb} did not come up"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `dwell --as-tenant t2 ARGS`, which must succeed.
fn as_t2(d: &Daemon, args: &[&str]) -> String {
    let mut v = vec!["--as-tenant", "t2"];
    v.extend_from_slice(args);
    d.ok(&v)
}

/// The sandbox's address on `network`, from `inspect`.
fn address(d: &Daemon, sb: &str, network: &str) -> String {
    let v = d.inspect(sb);
    v["networks"]
        .as_array()
        .unwrap_or_else(|| panic!("{sb} is on no network: {v}"))
        .iter()
        .find(|n| n["network"] == network)
        .unwrap_or_else(|| panic!("{sb} is not on {network}: {v}"))["address"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The private network port tables in this namespace.
fn port_tables() -> Vec<String> {
    leftovers()
        .into_iter()
        .filter(|l| l.contains("dwell_dp"))
        .collect()
}

/// Private network ports, their tables and bridges in this namespace.
fn leftovers() -> Vec<String> {
    // (`ip`, not /sys/class/net: sysfs shows the host's namespace here.)
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .filter(|n| n.starts_with("dp") || n.starts_with("dwb"))
        .collect();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    left.extend(
        String::from_utf8_lossy(&tables.stdout)
            .lines()
            .filter(|l| l.contains("dwell_dp"))
            .map(String::from),
    );
    left
}

fn checks(isolation: &str) {
    // Only in this process's private namespace (NAT needs it; see the
    // module docs).
    netns::enable_forwarding();
    let mut d = Daemon::start();
    let iso = ["--isolation", isolation];

    d.ok(&["network", "create", "team"]);
    d.ok(&["network", "create", "other"]);
    let team: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "inspect", "team", "--json"])).unwrap();
    let subnet = team["subnet"].as_str().unwrap().to_string();
    // A name is unique per tenant; another tenant may use it, here even
    // with the same subnet (its own bridge keeps them apart).
    let dup = d.run(&["network", "create", "team"]);
    assert_eq!(dup.status.code(), Some(1), "{}", stderr(&dup));
    assert!(
        stderr(&dup).contains("already has a network named"),
        "{}",
        stderr(&dup)
    );
    d.tenant_key("t2");
    as_t2(&d, &["network", "create", "team", "--subnet", &subnet]);
    // Another tenant's network is not found.
    let out = d.run(&["--as-tenant", "t2", "network", "inspect", "other"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no network named"),
        "{}",
        stderr(&out)
    );

    let mut args = vec!["--network", "team"];
    args.extend_from_slice(&iso);
    d.create("db", &args);
    d.create("app", &args);
    let mut args = vec!["--network", "other"];
    args.extend_from_slice(&iso);
    d.create("spy", &args);
    as_t2(
        &d,
        &[
            "create",
            "--name",
            "x",
            "--memory",
            "256M",
            "--disk",
            "512M",
            "--network",
            "team",
            "--isolation",
            isolation,
        ],
    );
    let db_ip = address(&d, "db", "team");
    let app_ip = address(&d, "app", "team");
    assert_ne!(db_ip, app_ip);
    serve(&d, "db");
    serve(&d, "app");

    // By name, both ways, plain and qualified; HTTP through urllib.
    assert_eq!(fetch(&d, "app", "db"), "200");
    assert_eq!(fetch(&d, "app", "db.team"), "200");
    assert_eq!(fetch(&d, "db", "app"), "200");
    assert_eq!(
        probe(&d, "app", "db", 8080).0,
        format!("connected {app_ip}")
    );

    // Another network's member knows no such name and has no path.
    assert_eq!(probe(&d, "spy", "db", 8080).0, "noname");
    let (v, secs) = probe(&d, "spy", &db_ip, 8080);
    assert_eq!(v, "unreachable", "spy reaching db by address");
    assert!(secs < 1.0, "fails fast, not after {secs} s");
    // Another tenant's member on the same subnet: no path either.
    let out = as_t2(
        &d,
        &["exec", "x", "--", "python3", "-c", PROBE, &app_ip, "8080"],
    );
    assert!(out.starts_with("timeout"), "x reaching app: {out}");

    // No way out without --net: no default route.
    let (v, secs) = probe(&d, "app", "192.0.2.1", 80);
    assert_eq!(v, "unreachable", "a network member without --net");
    assert!(secs < 1.0);
    // The host keeps no address on the network: one it has elsewhere, in
    // the network's own subnet, is not reachable through the bridge.
    let host_ip = subnet.replace(".0/", ".1/").replace("/24", "/32");
    netns::run(&[
        "ip",
        "link",
        "add",
        "hostaddr0",
        "type",
        "veth",
        "peer",
        "name",
        "hostaddr1",
    ]);
    netns::run(&["ip", "addr", "add", &host_ip, "dev", "hostaddr0"]);
    netns::run(&["ip", "link", "set", "hostaddr0", "up"]);
    // (UDP: one-way delivery is reaching it too; TCP would also need a
    // route back.)
    let host_service = UdpSocket::bind("0.0.0.0:0").unwrap();
    host_service
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let port = host_service.local_addr().unwrap().port();
    d.ok(&[
        "exec",
        "app",
        "--",
        "python3",
        "-c",
        SEND_UDP,
        host_ip.trim_end_matches("/32"),
        &port.to_string(),
    ]);
    let mut buf = [0u8; 16];
    let got = host_service.recv_from(&mut buf);
    assert!(
        got.is_err(),
        "the host received a datagram from a network member: {got:?}"
    );

    // NAT and a network together: eth0 out, eth1 to the peers.
    let mut args = vec!["--net", "--network", "team"];
    args.extend_from_slice(&iso);
    d.create("both", &args);
    assert_eq!(fetch(&d, "both", "db"), "200");
    assert_eq!(
        probe(&d, "db", "both", 22).0,
        "refused",
        "db resolves and reaches it"
    );
    // Its way out leads to no other network's member.
    let spy_ip = address(&d, "spy", "other");
    let (v, _) = probe(&d, "both", &spy_ip, 8080);
    assert!(
        v == "timeout" || v == "unreachable",
        "a NAT member reaching another network: {v}"
    );
    d.ok(&["rm", "-f", "both"]);

    // A peer that joins while a member is paused: the member knows its
    // name once resumed.
    d.ok(&["pause", "db"]);
    let mut args = vec!["--network", "team"];
    args.extend_from_slice(&iso);
    d.create("late", &args);
    d.ok(&["resume", "db"]);
    assert_eq!(probe(&d, "db", "late", 22).0, "refused");
    d.ok(&["rm", "-f", "late"]);
    assert_eq!(
        probe(&d, "db", "late", 22).0,
        "noname",
        "forgotten once gone"
    );

    // Stop and start keep the address; names work again.
    d.ok(&["stop", "app"]);
    d.ok(&["start", "app"]);
    assert_eq!(address(&d, "app", "team"), app_ip);
    assert_eq!(fetch(&d, "app", "db"), "200");
    serve(&d, "app");
    assert_eq!(fetch(&d, "db", "app"), "200");
    if isolation == "gvisor" {
        // Hibernated and restored: same address, interface set up anew.
        d.ok(&["hibernate", "app"]);
        d.ok(&["resume", "app"]);
        assert_eq!(address(&d, "app", "team"), app_ip);
        assert_eq!(fetch(&d, "app", "db"), "200");
        assert_eq!(fetch(&d, "db", "app"), "200");
    }

    // Members keep talking while the daemon is killed and restarted.
    d.restart();
    assert_eq!(fetch(&d, "app", "db.team"), "200");
    // Every change is in the audit log.
    let audit = d.ok(&["audit", "--json"]);
    assert!(
        audit.contains("/v1/networks") && audit.contains("POST"),
        "{audit}"
    );

    // A stopped sandbox joins a network; a running one is refused.
    let out = d.run(&["update", "spy", "--network-add", "team"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only while it is stopped"),
        "{}",
        stderr(&out)
    );
    d.ok(&["stop", "spy"]);
    d.ok(&["update", "spy", "--network-add", "team"]);
    d.ok(&["start", "spy"]);
    assert_eq!(fetch(&d, "spy", "db.team"), "200");
    // db learnt spy's name (nothing serves on spy's 8080: refused).
    assert_eq!(probe(&d, "db", "spy", 8080).0, "refused");

    // A network with members cannot go.
    let out = d.run(&["network", "rm", "team"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("still has 3 member(s)") && err.contains("db"),
        "{err}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&d.ok(&["network", "ls", "--json"])).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // A member that dies while the daemon is down: the restarted
    // daemon's reconciler removes its port (and table).
    let before = port_tables();
    let db_id = d.inspect("db")["id"].as_str().unwrap().to_string();
    let pid = d.host_pid(&db_id);
    d.kill9();
    netns::run(&["kill", "-9", &pid.to_string()]);
    d.restart();
    let t0 = Instant::now();
    // (The table goes before the state is recorded: wait for both.)
    while port_tables().len() != before.len() - 1 || d.inspect("db")["state"] != "error" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the dead member's port table stays ({:?}) or it is not marked error:\n{}",
            port_tables(),
            d.ok(&["logs", "db"])
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    for sb in ["db", "app", "spy"] {
        d.ok(&["rm", "-f", sb]);
    }
    as_t2(&d, &["rm", "-f", "x"]);
    d.ok(&["network", "rm", "team", "other"]);
    as_t2(&d, &["network", "rm", "team"]);
    let left = leftovers();
    assert!(left.is_empty(), "left behind: {left:?}");
    drop(host_service);
}

#[test]
fn a_members_huge_or_endless_hosts_file_is_not_read_into_the_daemon() {
    if can_run() {
        in_private_netns("hosts_helper_namespace");
    }
}

#[test]
fn gvisor_a_members_huge_or_endless_hosts_file_is_not_read_into_the_daemon() {
    if can_run_gvisor() {
        in_private_netns("hosts_helper_gvisor");
    }
}

#[test]
#[ignore = "helper of a_members_huge_or_endless_hosts_file_is_not_read_into_the_daemon"]
fn hosts_helper_namespace() {
    if netns::is_helper() {
        hosts_checks("namespace");
    }
}

#[test]
#[ignore = "helper of gvisor_a_members_huge_or_endless_hosts_file_is_not_read_into_the_daemon"]
fn hosts_helper_gvisor() {
    if netns::is_helper() {
        hosts_checks("gvisor");
    }
}

/// The daemon's peak resident memory so far (`VmHWM`), in bytes.
fn peak_rss(d: &Daemon) -> u64 {
    let pid = d.pid().expect("the daemon runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kb * 1024
}

/// `sb`'s `/etc/hosts` when it is a regular file of at most 64 KiB, else
/// what it is instead.
fn hosts_of(d: &Daemon, sb: &str) -> String {
    d.ok(&[
        "exec",
        sb,
        "--",
        "sh",
        "-c",
        "if [ -L /etc/hosts ]; then echo symlink; \
         elif [ $(stat -c %s /etc/hosts) -gt 65536 ]; then echo huge; \
         else cat /etc/hosts; fi",
    ])
}

/// Root in a member makes its `/etc/hosts` a sparse file of gigabytes, or
/// a symlink to `/dev/zero`; a peer joining makes the daemon refresh the
/// member's peer names. The daemon must not read that file into memory
/// (its peak RSS stays put) and the member must still get the names (the
/// file is replaced by dwell's block alone). Last, a synchronous exec of
/// endless output is refused at its cap.
fn hosts_checks(isolation: &str) {
    const HUGE: &str = "3G";
    /// More than the daemon may grow while it refreshes the names.
    const MAX_GROWTH: u64 = 256 << 20;
    let d = Daemon::start();
    let net = ["--network", "team", "--isolation", isolation];
    d.ok(&["network", "create", "team"]);
    d.create("m", &net);

    // A sparse file of gigabytes.
    d.ok(&["exec", "m", "--", "truncate", "-s", HUGE, "/etc/hosts"]);
    assert_eq!(hosts_of(&d, "m").trim(), "huge");
    let before = peak_rss(&d);
    d.create("p1", &net);
    let grew = peak_rss(&d).saturating_sub(before);
    assert!(
        grew < MAX_GROWTH,
        "the daemon's peak RSS grew by {grew} bytes refreshing a member with a {HUGE} /etc/hosts"
    );
    let hosts = hosts_of(&d, "m");
    assert!(hosts.contains("p1.team"), "{hosts}");
    assert!(hosts.contains("127.0.0.1\tlocalhost"), "{hosts}");

    // A symlink to an endless device (its size says 0).
    d.ok(&[
        "exec",
        "m",
        "--",
        "sh",
        "-c",
        "rm -f /etc/hosts && ln -s /dev/zero /etc/hosts",
    ]);
    assert_eq!(hosts_of(&d, "m").trim(), "symlink");
    let before = peak_rss(&d);
    d.create("p2", &net);
    let grew = peak_rss(&d).saturating_sub(before);
    assert!(
        grew < MAX_GROWTH,
        "the daemon's peak RSS grew by {grew} bytes refreshing a member whose /etc/hosts is /dev/zero"
    );
    let hosts = hosts_of(&d, "m");
    assert!(
        hosts.contains("p1.team") && hosts.contains("p2.team"),
        "{hosts}"
    );
    // The name works (nothing serves on p2's 8080: refused).
    assert_eq!(probe(&d, "m", "p2", 8080).0, "refused");

    // The member's own start refreshes it too (the reconciler's path).
    d.ok(&["exec", "m", "--", "truncate", "-s", HUGE, "/etc/hosts"]);
    d.ok(&["stop", "m"]);
    let before = peak_rss(&d);
    d.ok(&["start", "m"]);
    let grew = peak_rss(&d).saturating_sub(before);
    assert!(
        grew < MAX_GROWTH,
        "the daemon's peak RSS grew by {grew} bytes"
    );
    let hosts = hosts_of(&d, "m");
    assert!(hosts.contains("p2.team"), "{hosts}");

    // The same class: a synchronous exec's output is what the daemon
    // holds for its JSON answer; endless output is refused at the cap.
    let before = peak_rss(&d);
    let out = d.run(&["exec", "--json", "m", "--", "cat", "/dev/zero"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("16777216 byte limit"),
        "{}",
        stderr(&out)
    );
    let grew = peak_rss(&d).saturating_sub(before);
    assert!(
        grew < MAX_GROWTH,
        "the daemon's peak RSS grew by {grew} bytes"
    );

    for sb in ["m", "p1", "p2"] {
        d.ok(&["rm", "-f", sb]);
    }
    d.ok(&["network", "rm", "team"]);
}
