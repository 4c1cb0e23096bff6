//! Networking of a sandbox. Every sandbox has its own network namespace
//! with loopback up. In NAT mode it also gets a veth pair (`eth0` inside, a
//! /30 from the NAT pool) and an nftables table of its own, in the `inet`
//! family so that one table sees IPv4 and IPv6: it drops everything the
//! sandbox sends to the host itself (either family), forwards none of its
//! IPv6 (a sandbox has no IPv6 route out), drops forwarded IPv4 to other
//! sandboxes (the pool) and to the block list of [`super::blocklist`]
//! (cloud metadata, link-local, the host's own addresses, `--deny-net`),
//! drops spoofed sources, refuses what the sandbox's egress policy denies
//! (the sets of [`super::egress`]), and masquerades the rest. Of the host
//! the sandbox reaches only its DNS resolver, the daemon's, on the
//! gateway address port 53 ([`DNS_PORT`]); every DNS packet it sends to
//! any address is redirected there, so the egress policy's domain rules
//! cannot be bypassed with another name server.
//! Both runtimes use it: the namespace runtime names the sandbox's network
//! namespace by its PID 1, the gVisor runtime by a pinned namespace file
//! (see [`Netns`]).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::blocklist::{self, Cidr};
use super::{egress, layout};
use crate::{Error, Result};

/// The default pool /30 subnets are taken from.
pub const DEFAULT_NAT_POOL: &str = "10.200.0.0/16";

/// The port the sandbox's DNS resolver answers on, at the gateway address
/// (the daemon's resolver; every DNS packet the sandbox sends, to any
/// address, is redirected there).
pub const DNS_PORT: u16 = 53;

/// The name of sandbox `id`'s nftables table (family `inet`).
pub fn table_name(id: &str) -> String {
    format!("dwell_{}", layout::host_veth(id))
}

const LOCK_FILE: &str = "/run/dwell-ns-network.lock";

/// What was set up for one sandbox (stored as `network.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetInfo {
    pub host_if: String,
    pub table: String,
    pub sandbox_ip: Ipv4Addr,
    pub gateway_ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// The network namespace that gets the sandbox's end of the veth pair.
#[derive(Debug, Clone, Copy)]
pub enum Netns<'a> {
    /// The namespace of this process (the sandbox's PID 1).
    Pid(i32),
    /// A namespace file (`/proc/<pid>/ns/net` or a bind mount of one).
    Path(&'a Path),
}

impl Netns<'_> {
    /// The `netns` argument of `ip link`: a pid, or a path (iproute2 opens
    /// names holding a '/' as paths).
    pub(crate) fn ip_target(&self) -> String {
        match self {
            Netns::Pid(pid) => pid.to_string(),
            Netns::Path(p) => p.display().to_string(),
        }
    }

    /// `nsenter` arguments that enter this namespace.
    pub(crate) fn nsenter_args(&self) -> Vec<String> {
        match self {
            Netns::Pid(pid) => vec!["-t".into(), pid.to_string(), "-n".into()],
            Netns::Path(p) => vec![format!("--net={}", p.display())],
        }
    }
}

/// NAT needs IPv4 forwarding; the runtime never turns it on by itself.
pub fn check_forwarding() -> Result<()> {
    let v = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    if v.trim() == "1" {
        return Ok(());
    }
    Err(Error::Unsupported {
        what: "NAT networking".into(),
        why: "IPv4 forwarding is off (net.ipv4.ip_forward = 0), so the host would not route \
              the sandbox's packets"
            .into(),
        fix: "enable it with `sysctl -w net.ipv4.ip_forward=1` and persist it in \
              /etc/sysctl.d/99-dwell.conf, or start the sandbox with network mode none"
            .into(),
    })
}

/// Parse `a.b.c.d/len`.
pub fn parse_pool(pool: &str) -> Result<(u32, u8)> {
    let bad = || {
        Error::Other(format!(
            "invalid NAT pool {pool:?}: expected a.b.c.d/len with len <= 30"
        ))
    };
    let (addr, len) = pool.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u8 = len.parse().map_err(|_| bad())?;
    if len > 30 {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Ok((u32::from(addr) & mask, len))
}

/// The /30 subnets of `pool` in the order tried for `id`.
fn candidates(pool: (u32, u8), id: &str) -> impl Iterator<Item = u32> {
    let count: u64 = 1u64 << (30 - pool.1);
    let start = layout::fnv1a(id) % count;
    (0..count).map(move |i| pool.0 + (((start + i) % count) as u32) * 4)
}

/// Run a host command to success and return its stdout; its stderr goes
/// into the error with `what` was being done.
pub(super) fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| Error::Io {
        context: format!("{what}: running {:?} (is it installed?)", cmd.get_program()),
        source: e,
    })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{what}: {:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// IPv4 addresses configured on the host.
fn host_addrs() -> Result<Vec<u32>> {
    let out = run(
        Command::new("ip").args(["-o", "-4", "addr", "show"]),
        "listing addresses",
    )?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "inet")?;
            let addr = it.next()?.split('/').next()?;
            addr.parse::<Ipv4Addr>().ok().map(u32::from)
        })
        .collect())
}

pub(crate) struct Lock(File);

impl Lock {
    pub(crate) fn take() -> Result<Lock> {
        let f = File::create(LOCK_FILE).map_err(|e| Error::Io {
            context: format!("opening {LOCK_FILE}"),
            source: e,
        })?;
        // SAFETY: valid fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } < 0 {
            return Err(Error::Io {
                context: format!("locking {LOCK_FILE}"),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Lock(f))
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: valid fd.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// The nftables family of the sandboxes' tables (and the one of tables an
/// older daemon made, which teardown still removes).
const FAMILY: &str = "inet";
const OLD_FAMILY: &str = "ip";

/// `{ a, b, ... }` of the blocks of one family, or None when there are none.
fn nft_set(blocks: &[Cidr], v4: bool) -> Option<String> {
    let items: Vec<String> = blocks
        .iter()
        .filter(|c| c.is_v4() == v4)
        .map(|c| c.to_string())
        .collect();
    (!items.is_empty()).then(|| format!("{{ {} }}", items.join(", ")))
}

/// The table of one sandbox. `deny` holds the blocks besides the pool
/// (see [`blocklist::merge`]); the pool is added here.
fn ruleset(info: &NetInfo, pool: &str, deny: &[Cidr]) -> Result<String> {
    let NetInfo {
        host_if: i,
        table: t,
        sandbox_ip: ip,
        ..
    } = info;
    let mut blocks = deny.to_vec();
    blocks.push(Cidr::parse(pool)?);
    let blocks = blocklist::without_covered(blocks);
    let v4 = nft_set(&blocks, true).expect("the pool is an IPv4 block");
    let v6 = nft_set(&blocks, false)
        .map(|set| format!("    iifname \"{i}\" ip6 daddr {set} drop\n"))
        .unwrap_or_default();
    let gw = info.gateway_ip;
    let (egress_sets, egress_rules) = egress::table_parts(i);
    Ok(format!(
        "table {FAMILY} {t} {{
{egress_sets}  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"{i}\" ct state established,related accept
    iifname \"{i}\" ip saddr {ip} ip daddr {gw} meta l4proto {{ tcp, udp }} th dport {DNS_PORT} accept
    iifname \"{i}\" drop
  }}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname \"{i}\" meta nfproto ipv4 meta l4proto {{ tcp, udp }} th dport {DNS_PORT} dnat ip to {gw}
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname \"{i}\" ip daddr {v4} drop
{v6}    iifname \"{i}\" meta nfproto ipv6 drop
    iifname \"{i}\" ip saddr != {ip} drop
{egress_rules}    oifname \"{i}\" ct state established,related accept
    oifname \"{i}\" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {ip} oifname != \"{i}\" masquerade
  }}
}}
"
    ))
}

/// Create the veth pair, address both ends, route and install the table.
/// `netns` is the sandbox's network namespace; `deny` the operator's
/// blocks on top of [`blocklist::DEFAULT_DENY`] and the host's addresses
/// (read now). The subnet of an earlier `network.json` in `state_dir` is
/// tried first, so a sandbox set up again (a restored gVisor sandbox)
/// keeps its address while it is free.
pub fn setup(
    id: &str,
    netns: Netns<'_>,
    pool: &str,
    deny: &[String],
    state_dir: &Path,
) -> Result<NetInfo> {
    check_forwarding()?;
    let parsed = parse_pool(pool)?;
    let host_if = layout::host_veth(id);
    let _lock = Lock::take()?;
    let used = host_addrs()?;
    let mask = if parsed.1 == 0 {
        0
    } else {
        u32::MAX << (32 - parsed.1)
    };
    let earlier = std::fs::read(state_dir.join(layout::NETWORK_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<NetInfo>(&b).ok())
        .map(|i| u32::from(i.gateway_ip) & !3)
        .filter(|n| n & mask == parsed.0);
    let net = earlier
        .into_iter()
        .chain(candidates(parsed, id))
        .find(|n| !used.iter().any(|a| a & !3 == *n))
        .ok_or_else(|| {
            Error::Other(format!(
                "the NAT pool {pool} is exhausted; configure a larger pool"
            ))
        })?;
    let info = NetInfo {
        table: table_name(id),
        host_if,
        gateway_ip: Ipv4Addr::from(net + 1),
        sandbox_ip: Ipv4Addr::from(net + 2),
        prefix_len: 30,
    };
    let host: Vec<std::net::IpAddr> = blocklist::host_addresses()?;
    let rules = ruleset(&info, pool, &blocklist::merge(deny, &host)?)?;
    let result = configure(&info, netns, &rules);
    if let Err(e) = result {
        teardown(id);
        return Err(e);
    }
    let json = serde_json::to_vec_pretty(&info).expect("NetInfo serialises");
    std::fs::write(state_dir.join(layout::NETWORK_FILE), json).map_err(|e| Error::Io {
        context: "writing network.json".into(),
        source: e,
    })?;
    Ok(info)
}

fn configure(info: &NetInfo, netns: Netns<'_>, rules: &str) -> Result<()> {
    let target = netns.ip_target();
    let h = info.host_if.as_str();
    run(
        Command::new("ip").args([
            "link", "add", h, "type", "veth", "peer", "name", "eth0", "netns", &target,
        ]),
        "creating the veth pair",
    )?;
    let gw = format!("{}/{}", info.gateway_ip, info.prefix_len);
    run(
        Command::new("ip").args(["addr", "add", &gw, "dev", h]),
        "addressing the host veth",
    )?;
    run(
        Command::new("ip").args(["link", "set", h, "up"]),
        "bringing the host veth up",
    )?;
    let inside = |args: &[&str], what: &str| -> Result<String> {
        run(
            Command::new("nsenter")
                .args(netns.nsenter_args())
                .arg("ip")
                .args(args),
            what,
        )
    };
    let ip = format!("{}/{}", info.sandbox_ip, info.prefix_len);
    inside(
        &["addr", "add", &ip, "dev", "eth0"],
        "addressing eth0 in the sandbox",
    )?;
    inside(&["link", "set", "eth0", "up"], "bringing eth0 up")?;
    inside(
        &[
            "route",
            "add",
            "default",
            "via",
            &info.gateway_ip.to_string(),
        ],
        "adding the default route",
    )?;
    super::nft::run_script(rules, "installing the sandbox's nftables table")?;
    Ok(())
}

/// Whether interface `ifname` exists in this process's network namespace
/// (asked of the kernel: `/sys/class/net` shows the namespace sysfs was
/// mounted in, which a daemon in a namespace of its own may not share).
pub(crate) fn link_exists(ifname: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", ifname])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Remove the veth and the table of sandbox `id` (whatever exists of them).
pub fn teardown(id: &str) {
    let host_if = layout::host_veth(id);
    let table = table_name(id);
    if link_exists(&host_if) {
        let _ = run(
            Command::new("ip").args(["link", "del", &host_if]),
            "deleting veth",
        );
    }
    for family in [FAMILY, OLD_FAMILY] {
        let listed = Command::new("nft")
            .args(["list", "table", family, &table])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if listed {
            let _ = run(
                Command::new("nft").args(["delete", "table", family, &table]),
                "deleting table",
            );
        }
    }
}

/// Bring `lo` up in the calling process's network namespace.
pub fn loopback_up() -> std::result::Result<(), String> {
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!(
            "socket for lo: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: zeroed ifreq is valid; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: fd and req are valid for these ioctls.
    let res = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
    if res < 0 {
        return Err(format!("bringing lo up: {err}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_and_candidates() {
        let p = parse_pool("10.200.0.0/16").unwrap();
        assert_eq!(p, (u32::from(Ipv4Addr::new(10, 200, 0, 0)), 16));
        let c: Vec<u32> = candidates(p, "abc").take(3).collect();
        assert!(c
            .iter()
            .all(|n| n % 4 == 0 && *n >= p.0 && *n < p.0 + 65536));
        assert!(parse_pool("10.0.0.0/31").is_err());
        assert!(parse_pool("x").is_err());
    }

    fn test_info() -> NetInfo {
        NetInfo {
            host_if: "dw0123".into(),
            table: "dwell_dw0123".into(),
            sandbox_ip: Ipv4Addr::new(10, 200, 0, 2),
            gateway_ip: Ipv4Addr::new(10, 200, 0, 1),
            prefix_len: 30,
        }
    }

    #[test]
    fn ruleset_mentions_interface() {
        let info = test_info();
        let deny = blocklist::merge(&[], &[]).unwrap();
        let r = ruleset(&info, DEFAULT_NAT_POOL, &deny).unwrap();
        assert!(r.contains("iifname \"dw0123\" drop"));
        assert!(r.contains("masquerade"));
    }

    #[test]
    fn ruleset_is_inet_and_blocks_metadata_v6_and_the_host() {
        let info = test_info();
        let host = [
            "192.0.2.10".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        ];
        let deny = blocklist::merge(&["198.51.100.0/24".into()], &host).unwrap();
        let r = ruleset(&info, DEFAULT_NAT_POOL, &deny).unwrap();
        assert!(r.starts_with("table inet dwell_dw0123 {"), "{r}");
        let v4 = "iifname \"dw0123\" ip daddr { 10.200.0.0/16, 100.100.100.200/32, \
                  168.63.129.16/32, 169.254.0.0/16, 192.0.0.192/32, 192.0.2.10/32, \
                  198.51.100.0/24 } drop";
        assert!(r.contains(v4), "{r}");
        let v6 = "iifname \"dw0123\" ip6 daddr { 2001:db8::10/128, fd00:ec2::254/128, \
                  fd20:ce::254/128, fe80::/10 } drop";
        assert!(r.contains(v6), "{r}");
        assert!(
            r.contains("iifname \"dw0123\" meta nfproto ipv6 drop"),
            "{r}"
        );
        assert!(r.contains("iifname \"dw0123\" ip saddr != 10.200.0.2 drop"));
        // Blocks come before the spoofing check and the v6 drop before any accept.
        let at = |s: &str| r.find(s).unwrap();
        assert!(at("ip daddr {") < at("ip saddr !="));
        assert!(at("nfproto ipv6 drop") < at("oifname \"dw0123\" ct state"));
        // The egress sets after the block list, in their order.
        assert!(at("ip saddr !=") < at("@egress_deny_first"));
        assert!(at("@egress_deny_first") < at("@egress_allow accept"));
        assert!(at("@egress_allow accept") < at("@egress_dns accept"));
        assert!(at("@egress_dns accept") < at("@egress_deny_last"));
    }

    #[test]
    fn only_dns_of_the_host_is_reachable_and_all_dns_goes_there() {
        let info = test_info();
        let r = ruleset(
            &info,
            DEFAULT_NAT_POOL,
            &blocklist::merge(&[], &[]).unwrap(),
        )
        .unwrap();
        let accept = "iifname \"dw0123\" ip saddr 10.200.0.2 ip daddr 10.200.0.1 meta l4proto \
                      { tcp, udp } th dport 53 accept";
        assert!(
            r.find(accept).unwrap() < r.find("iifname \"dw0123\" drop").unwrap(),
            "{r}"
        );
        assert!(r.contains("th dport 53 dnat ip to 10.200.0.1"), "{r}");
    }

    #[test]
    fn the_ruleset_is_accepted_by_nft() {
        if unsafe { libc::geteuid() } != 0 || !Path::new("/usr/sbin/nft").exists() {
            eprintln!("SKIP: needs root and nft");
            return;
        }
        let host = ["192.0.2.10".parse().unwrap()];
        let deny = blocklist::merge(&[], &host).unwrap();
        let r = ruleset(&test_info(), DEFAULT_NAT_POOL, &deny).unwrap();
        // -c: check only, nothing is installed.
        use std::io::Write;
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(r.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{r}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
