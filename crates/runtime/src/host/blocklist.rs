//! The addresses a NAT sandbox may never reach through the host: every
//! cloud's instance-metadata and platform endpoints, link-local ranges
//! (v4 and v6, where metadata services and the host's link-local
//! addresses live), the host's own addresses on every interface, and what
//! the operator adds with `dwell serve --deny-net`. The nftables table of
//! each sandbox drops forwarded traffic to them (see [`super::network`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Always blocked, whatever the operator configures.
pub const DEFAULT_DENY: &[&str] = &[
    // IPv4 link-local: AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle,
    // Hetzner ... metadata at 169.254.169.254, and the host's link-local.
    "169.254.0.0/16",
    // Alibaba Cloud metadata.
    "100.100.100.200/32",
    // Azure wireserver (platform agent endpoint).
    "168.63.129.16/32",
    // Oracle Cloud legacy metadata.
    "192.0.0.192/32",
    // IPv6 link-local (the host's link-local addresses included).
    "fe80::/10",
    // AWS metadata over IPv6.
    "fd00:ec2::254/128",
    // GCP metadata over IPv6.
    "fd20:ce::254/128",
];

/// An address block, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cidr {
    V4(Ipv4Addr, u8),
    V6(Ipv6Addr, u8),
}

impl Cidr {
    /// Parse `addr/len` or a bare address (a single host).
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = |why: &str| {
            Error::Other(format!(
                "invalid blocked network {s:?}: {why}; write an IPv4 or IPv6 address with an \
                 optional prefix length, such as 169.254.169.254, 10.0.0.0/8 or fd00::/8"
            ))
        };
        let (addr, len) = match s.trim().split_once('/') {
            Some((a, l)) => (
                a,
                Some(l.parse::<u8>().map_err(|_| bad("bad prefix length"))?),
            ),
            None => (s.trim(), None),
        };
        match addr.parse::<IpAddr>().map_err(|_| bad("not an address"))? {
            IpAddr::V4(a) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(bad("an IPv4 prefix is at most 32"));
                }
                Ok(Cidr::V4(Ipv4Addr::from(u32::from(a) & mask4(len)), len))
            }
            IpAddr::V6(a) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(bad("an IPv6 prefix is at most 128"));
                }
                Ok(Cidr::V6(Ipv6Addr::from(u128::from(a) & mask6(len)), len))
            }
        }
    }

    /// Whether `other` lies inside this block.
    pub fn contains(&self, other: &Cidr) -> bool {
        match (self, other) {
            (Cidr::V4(a, l), Cidr::V4(b, m)) => {
                m >= l && u32::from(*b) & mask4(*l) == u32::from(*a)
            }
            (Cidr::V6(a, l), Cidr::V6(b, m)) => {
                m >= l && u128::from(*b) & mask6(*l) == u128::from(*a)
            }
            _ => false,
        }
    }

    pub fn is_v4(&self) -> bool {
        matches!(self, Cidr::V4(..))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4(a, l) => write!(f, "{a}/{l}"),
            Cidr::V6(a, l) => write!(f, "{a}/{l}"),
        }
    }
}

fn mask4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn mask6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Check operator-given blocks (`--deny-net`), so a typo stops the daemon
/// rather than every NAT start.
pub fn validate(extra: &[String]) -> Result<()> {
    extra.iter().try_for_each(|s| Cidr::parse(s).map(|_| ()))
}

/// The defaults, `extra` and `host` addresses, without blocks that lie
/// inside another one (nftables refuses overlapping set elements), sorted.
pub fn merge(extra: &[String], host: &[IpAddr]) -> Result<Vec<Cidr>> {
    let mut all: Vec<Cidr> = DEFAULT_DENY
        .iter()
        .map(|s| Cidr::parse(s))
        .chain(extra.iter().map(|s| Cidr::parse(s)))
        .collect::<Result<_>>()?;
    all.extend(host.iter().map(|a| match a {
        IpAddr::V4(a) => Cidr::V4(*a, 32),
        IpAddr::V6(a) => Cidr::V6(*a, 128),
    }));
    Ok(without_covered(all))
}

/// `blocks` sorted, without duplicates and without blocks that lie inside
/// another one.
pub fn without_covered(mut blocks: Vec<Cidr>) -> Vec<Cidr> {
    blocks.sort();
    blocks.dedup();
    blocks
        .iter()
        .filter(|c| !blocks.iter().any(|o| o != *c && o.contains(c)))
        .copied()
        .collect()
}

/// Every address configured on the host's interfaces, v4 and v6.
pub fn host_addresses() -> Result<Vec<IpAddr>> {
    let out = Command::new("ip")
        .args(["-o", "addr", "show"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Io {
            context: "listing the host's addresses: running ip (install iproute2)".into(),
            source: e,
        })?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "listing the host's addresses: `ip -o addr show` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(parse_addresses(&String::from_utf8_lossy(&out.stdout)))
}

/// The addresses in `ip -o addr show` output.
fn parse_addresses(out: &str) -> Vec<IpAddr> {
    out.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            it.find(|w| *w == "inet" || *w == "inet6")?;
            it.next()?.split('/').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_clears_host_bits() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(
            Cidr::parse("169.254.169.254").unwrap().to_string(),
            "169.254.169.254/32"
        );
        assert_eq!(
            Cidr::parse("fd00:ec2::254").unwrap().to_string(),
            "fd00:ec2::254/128"
        );
        assert_eq!(Cidr::parse("fe80::1/10").unwrap().to_string(), "fe80::/10");
        for bad in [
            "",
            "x",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "1.2.3.4/8/8",
        ] {
            let err = Cidr::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid blocked network"), "{bad}: {err}");
        }
    }

    #[test]
    fn merge_drops_what_another_block_covers() {
        let host: Vec<IpAddr> = vec![
            "169.254.3.4".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "203.0.113.7".parse().unwrap(),
            "2001:db8::7".parse().unwrap(),
        ];
        let merged = merge(&["203.0.113.0/24".into(), "10.9.0.0/16".into()], &host).unwrap();
        let s: Vec<String> = merged.iter().map(|c| c.to_string()).collect();
        assert!(s.contains(&"169.254.0.0/16".to_string()));
        assert!(s.contains(&"203.0.113.0/24".to_string()));
        assert!(s.contains(&"2001:db8::7/128".to_string()));
        assert!(s.contains(&"fd00:ec2::254/128".to_string()));
        assert!(!s.contains(&"169.254.3.4/32".to_string()), "{s:?}");
        assert!(!s.contains(&"203.0.113.7/32".to_string()), "{s:?}");
        assert!(!s.contains(&"fe80::1/128".to_string()), "{s:?}");
    }

    #[test]
    fn reads_v4_and_v6_from_ip_output() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever\n\
                   2: eth0    inet 192.0.2.10/24 brd 192.0.2.255 scope global eth0\n";
        let got = parse_addresses(out);
        assert_eq!(got.len(), 3);
        assert!(got.contains(&"fe80::1".parse().unwrap()));
        assert!(got.contains(&"192.0.2.10".parse().unwrap()));
    }
}
