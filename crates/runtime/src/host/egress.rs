//! Egress policy of a NAT sandbox: allow and deny lists of address blocks
//! (IPv4 and IPv6) and domain names (`example.com`, `*.example.com`), with
//! `0.0.0.0/0` (or `::/0`) meaning "deny everything not allowed".
//!
//! The lists are enforced by nftables sets in the sandbox's own table (see
//! [`super::network`]): the forward chain checks, in this order,
//! `deny_first` (refuse), `allow` (accept), `dns` (accept: addresses the
//! daemon's DNS resolver handed out for allowed names, each with a
//! timeout) and `deny_last` (refuse). [`Precedence`] decides which set a
//! deny entry goes to: with [`Precedence::DenyWins`] (dwell's own API) a
//! listed deny beats an allow and only the catch-all `0.0.0.0/0` is
//! checked last; with [`Precedence::AllowWins`] (E2B's semantics) every
//! deny is checked after the allows. Refused packets get a TCP reset or an
//! ICMP "administratively prohibited", so a denied connection fails at
//! once. Changing the lists replaces the sets' elements in one nft
//! transaction ([`apply`]): the rules change on a live sandbox atomically.
//!
//! Domain names are enforced by the resolver: it answers a denied name
//! with NXDOMAIN and pins the addresses of an allowed one into the `dns`
//! set ([`pin`]) before it answers; the set holds at most
//! [`DNS_SET_SIZE`] addresses. A new connection needs a live pin; one
//! already open to a pinned address goes on for [`CONN_GRACE`] after its
//! pin expires (the `dns_conn` set), so a long download does not break
//! when the name's TTL runs out. A rule change replaces both sets, so a
//! revocation cuts open connections too. The block list of
//! [`super::blocklist`] (host, metadata, link-local) is checked before any
//! of this and always applies. IPv6 entries are validated and kept, but
//! a NAT sandbox has no IPv6 route out: all of its IPv6 is refused anyway.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::blocklist::Cidr;
use crate::{Error, Result};

/// Which list wins when an address or name is on both.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Precedence {
    /// A deny entry beats an allow entry (dwell's API). `0.0.0.0/0` in the
    /// deny list only sets the default: allowed entries stay reachable.
    #[default]
    DenyWins,
    /// An allow entry beats every deny entry (E2B's API).
    AllowWins,
}

impl Precedence {
    pub fn as_str(self) -> &'static str {
        match self {
            Precedence::DenyWins => "deny_wins",
            Precedence::AllowWins => "allow_wins",
        }
    }
}

/// The egress rules of a sandbox as given (and stored): entries are
/// address blocks or domain names.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EgressRules {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub precedence: Precedence,
}

impl EgressRules {
    /// No entries: everything but the block list is reachable.
    pub fn is_open(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

/// A domain rule: one name, or every name below a suffix (`*.suffix`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainPattern {
    Exact(String),
    /// Matches names strictly below the suffix (not the suffix itself).
    Below(String),
}

impl DomainPattern {
    /// Parse `name` or `*.name` (case-insensitive, a final dot ignored).
    pub fn parse(s: &str) -> std::result::Result<DomainPattern, String> {
        let t = s.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, t.clone()),
        };
        check_name(&name)?;
        Ok(if wild {
            DomainPattern::Below(name)
        } else {
            DomainPattern::Exact(name)
        })
    }

    /// Whether `name` (lowercase, no final dot) matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            DomainPattern::Exact(n) => n == name,
            DomainPattern::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(n) => f.write_str(n),
            DomainPattern::Below(n) => write!(f, "*.{n}"),
        }
    }
}

/// A host name: labels of 1-63 letters, digits, '-' or '_' (not starting
/// or ending with '-'), at most 253 characters, not all digits at the end
/// (so a mistyped address is not taken for a name).
fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a domain name has 1 to 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label of a domain name has 1 to 63 characters".into());
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(
                "a domain name holds only letters, digits, '-', '_' and dots (write \
                 internationalised names in punycode); '*' only as a leading '*.'"
                    .into(),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label of a domain name cannot start or end with '-'".into());
        }
    }
    let last = name.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("it looks like an address, but is not a valid IPv4 or IPv6 address".into());
    }
    Ok(())
}

/// One entry of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Net(Cidr),
    Domain(DomainPattern),
}

/// Parse one entry; the error names the list (`allow-out`/`deny-out`).
pub fn parse_entry(list: &str, s: &str) -> std::result::Result<Entry, String> {
    let t = s.trim();
    let looks_net = t.contains('/')
        || t.contains(':')
        || t.parse::<IpAddr>().is_ok()
        || t.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if looks_net {
        return Cidr::parse(t).map(Entry::Net).map_err(|_| {
            format!(
                "{list} entry {s:?} is not a valid address or CIDR block; write an IPv4 or IPv6 \
                 address with an optional prefix length (203.0.113.7, 10.0.0.0/8, 2001:db8::/32, \
                 0.0.0.0/0 for everything) or a domain name (pypi.org, *.example.com)"
            )
        });
    }
    DomainPattern::parse(t).map(Entry::Domain).map_err(|why| {
        format!(
            "{list} entry {s:?} is not a valid domain name: {why}; write a name like pypi.org or \
             *.example.com, or an address block like 10.0.0.0/8"
        )
    })
}

/// Rules checked and sorted for enforcement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub allow_nets: Vec<Cidr>,
    pub deny_nets: Vec<Cidr>,
    pub allow_names: Vec<DomainPattern>,
    pub deny_names: Vec<DomainPattern>,
    /// `0.0.0.0/0` is in the deny list.
    pub deny_all: bool,
    pub precedence: Precedence,
}

/// What the resolver does with a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameVerdict {
    /// Answer NXDOMAIN: the name is denied (or not allowed under deny-all).
    Deny,
    /// Resolve it and pin its addresses into the sandbox's allow set.
    Pin,
    /// Resolve it; its addresses are reachable or not by the address rules.
    Pass,
}

/// At most this many entries in each list.
pub const MAX_ENTRIES: usize = 512;

impl Policy {
    /// Check `rules` (every bad entry is an error naming it).
    pub fn compile(rules: &EgressRules) -> std::result::Result<Policy, String> {
        let mut p = Policy {
            precedence: rules.precedence,
            ..Policy::default()
        };
        for (list, entries) in [("allow-out", &rules.allow), ("deny-out", &rules.deny)] {
            if entries.len() > MAX_ENTRIES {
                return Err(format!(
                    "{list} has {} entries; at most {MAX_ENTRIES} are allowed (use CIDR blocks \
                     or *.domain patterns to cover more)",
                    entries.len()
                ));
            }
            for e in entries {
                let deny = list == "deny-out";
                match (parse_entry(list, e)?, deny) {
                    (Entry::Net(c), true) if prefix(&c) == 0 && c.is_v4() => p.deny_all = true,
                    (Entry::Net(c), true) => p.deny_nets.push(c),
                    (Entry::Net(c), false) => p.allow_nets.push(c),
                    (Entry::Domain(d), true) => p.deny_names.push(d),
                    (Entry::Domain(d), false) => p.allow_names.push(d),
                }
            }
        }
        Ok(p)
    }

    /// The verdict on a DNS name (lowercase, no final dot).
    pub fn name_verdict(&self, name: &str) -> NameVerdict {
        let allowed = self.allow_names.iter().any(|d| d.matches(name));
        let denied = self.deny_names.iter().any(|d| d.matches(name));
        match (self.precedence, allowed, denied) {
            (Precedence::AllowWins, true, _) => NameVerdict::Pin,
            (Precedence::DenyWins, true, false) => NameVerdict::Pin,
            (_, _, true) => NameVerdict::Deny,
            _ if self.deny_all => NameVerdict::Deny,
            _ => NameVerdict::Pass,
        }
    }

    /// The IPv4 elements of the `deny_first`, `allow` and `deny_last` sets.
    pub fn sets_v4(&self) -> [Vec<Cidr>; 3] {
        let v4 = |l: &[Cidr]| -> Vec<Cidr> {
            super::blocklist::without_covered(l.iter().filter(|c| c.is_v4()).copied().collect())
        };
        let all = Cidr::parse("0.0.0.0/0").expect("a valid block");
        let mut last = Vec::new();
        let first = match self.precedence {
            Precedence::DenyWins => v4(&self.deny_nets),
            Precedence::AllowWins => {
                last = v4(&self.deny_nets);
                Vec::new()
            }
        };
        if self.deny_all {
            last = vec![all];
        }
        [first, v4(&self.allow_nets), last]
    }
}

fn prefix(c: &Cidr) -> u8 {
    match c {
        Cidr::V4(_, l) | Cidr::V6(_, l) => *l,
    }
}

/// The nftables set names (IPv4) in a sandbox's table.
pub const SET_DENY_FIRST: &str = "egress_deny_first";
pub const SET_ALLOW: &str = "egress_allow";
pub const SET_DNS: &str = "egress_dns";
pub const SET_DENY_LAST: &str = "egress_deny_last";
/// Addresses pinned for allowed names, held [`CONN_GRACE`] longer than
/// their pin: connections already open to them go on after the pin
/// expires (a long download), while new ones need a live pin. A rule
/// change replaces this set with the `dns` set, so a revocation still cuts
/// open connections.
pub const SET_DNS_CONN: &str = "egress_dns_conn";
/// How long an open connection to a pinned address outlives its pin.
pub const CONN_GRACE: Duration = Duration::from_secs(6 * 3600);
/// The most addresses the `dns` set of one sandbox holds: the resolver
/// refuses (SERVFAIL) to pin more until some expire, and the kernel would
/// refuse them too.
pub const DNS_SET_SIZE: usize = 4096;
/// The chain that refuses a packet with a reset or an ICMP error.
pub const CHAIN_REFUSE: &str = "egress_refuse";

/// Set declarations and the forward-chain rules of the egress policy, for
/// the table of [`super::network`] (`i`: the host veth).
pub fn table_parts(i: &str) -> (String, String) {
    let decls = format!(
        "  set {SET_DENY_FIRST} {{ type ipv4_addr; flags interval; }}
  set {SET_ALLOW} {{ type ipv4_addr; flags interval; }}
  set {SET_DNS} {{ type ipv4_addr; flags timeout; size {DNS_SET_SIZE}; }}
  set {SET_DENY_LAST} {{ type ipv4_addr; flags interval; }}
  set {SET_DNS_CONN} {{ type ipv4_addr; flags timeout; size {DNS_SET_SIZE}; }}
  chain {CHAIN_REFUSE} {{
    meta l4proto tcp reject with tcp reset
    reject with icmpx type admin-prohibited
  }}
"
    );
    let rules = format!(
        "    iifname \"{i}\" ip daddr @{SET_DENY_FIRST} jump {CHAIN_REFUSE}
    iifname \"{i}\" ip daddr @{SET_ALLOW} accept
    iifname \"{i}\" ip daddr @{SET_DNS} accept
    iifname \"{i}\" ct state established,related ip daddr @{SET_DNS_CONN} accept
    iifname \"{i}\" ip daddr @{SET_DENY_LAST} jump {CHAIN_REFUSE}
"
    );
    (decls, rules)
}

/// An address the resolver handed out, and for how long it stays allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pin {
    pub addr: Ipv4Addr,
    pub ttl: Duration,
}

/// The nft script that replaces every egress set's elements of `table`
/// with `policy`'s and `pins`.
pub fn apply_script(table: &str, policy: &Policy, pins: &[Pin]) -> String {
    let mut s = String::new();
    let [first, allow, last] = policy.sets_v4();
    for (set, items) in [
        (SET_DENY_FIRST, first),
        (SET_ALLOW, allow),
        (SET_DENY_LAST, last),
    ] {
        s.push_str(&format!("flush set inet {table} {set}\n"));
        if !items.is_empty() {
            let list: Vec<String> = items.iter().map(|c| c.to_string()).collect();
            s.push_str(&format!(
                "add element inet {table} {set} {{ {} }}\n",
                list.join(", ")
            ));
        }
    }
    s.push_str(&format!("flush set inet {table} {SET_DNS}\n"));
    s.push_str(&format!("flush set inet {table} {SET_DNS_CONN}\n"));
    s.push_str(&pin_script(table, pins));
    s
}

/// The nft script that adds `pins` to the `dns` set, each with its own
/// timeout, and to the `dns_conn` set with [`CONN_GRACE`] more (an element
/// already there is replaced, so its timeout starts anew).
pub fn pin_script(table: &str, pins: &[Pin]) -> String {
    let mut s = String::new();
    for p in pins {
        let secs = p.ttl.as_secs().max(1);
        for (set, secs) in [(SET_DNS, secs), (SET_DNS_CONN, secs + CONN_GRACE.as_secs())] {
            // add (a no-op if present), delete, add: works on every kernel
            // whether or not a re-add refreshes an element's timeout.
            s.push_str(&format!(
                "add element inet {table} {set} {{ {a} }}\n\
                 delete element inet {table} {set} {{ {a} }}\n\
                 add element inet {table} {set} {{ {a} timeout {secs}s }}\n",
                a = p.addr
            ));
        }
    }
    s
}

/// Replace the egress sets of `table` with `policy` and `pins`, in one
/// transaction.
pub fn apply(table: &str, policy: &Policy, pins: &[Pin]) -> Result<()> {
    super::nft::run_script(
        &apply_script(table, policy, pins),
        "applying the egress rules",
    )
}

/// [`apply`] to a sandbox's table if it has one (a sandbox that is not
/// running has none; its rules are installed at its next start).
pub fn apply_if_present(table: &str, policy: &Policy, pins: &[Pin]) -> Result<()> {
    if !table_exists(table) {
        return Ok(());
    }
    apply(table, policy, pins)
}

/// Install `rules` in sandbox `id`'s table at start (nothing to do for
/// open rules: the sets start empty).
pub fn install(id: &str, rules: &EgressRules) -> Result<()> {
    if rules.is_open() {
        return Ok(());
    }
    let policy = Policy::compile(rules)
        .map_err(|e| Error::Other(format!("the sandbox's egress rules are invalid: {e}")))?;
    apply(&super::network::table_name(id), &policy, &[])
}

/// Add `pins` to the `dns` set of `table`, in one transaction.
pub fn pin(table: &str, pins: &[Pin]) -> Result<()> {
    if pins.is_empty() {
        return Ok(());
    }
    super::nft::run_script(
        &pin_script(table, pins),
        "adding resolved addresses to the egress allow set",
    )
}

/// Whether the sandbox's table exists (it runs with NAT).
pub fn table_exists(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(allow: &[&str], deny: &[&str], p: Precedence) -> Policy {
        Policy::compile(&EgressRules {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            precedence: p,
        })
        .unwrap()
    }

    #[test]
    fn entries_parse_or_say_why_not() {
        assert!(matches!(
            parse_entry("allow-out", "10.1.2.0/24"),
            Ok(Entry::Net(_))
        ));
        assert!(matches!(
            parse_entry("allow-out", "2001:db8::/32"),
            Ok(Entry::Net(_))
        ));
        assert_eq!(
            parse_entry("allow-out", "PyPI.org."),
            Ok(Entry::Domain(DomainPattern::Exact("pypi.org".into())))
        );
        assert_eq!(
            parse_entry("allow-out", "*.example.com"),
            Ok(Entry::Domain(DomainPattern::Below("example.com".into())))
        );
        for (bad, says) in [
            ("10.0.0.0/33", "not a valid address or CIDR"),
            ("300.1.1.1", "not a valid address or CIDR"),
            ("exa mple.com", "not a valid domain name"),
            ("foo.*.com", "not a valid domain name"),
            ("-a.com", "cannot start or end"),
            ("", "not a valid"),
        ] {
            let e = parse_entry("deny-out", bad).unwrap_err();
            assert!(e.contains(says) && e.contains("deny-out"), "{bad}: {e}");
        }
    }

    #[test]
    fn wildcards_match_names_below_only() {
        let d = DomainPattern::parse("*.example.com").unwrap();
        assert!(d.matches("a.example.com"));
        assert!(d.matches("a.b.example.com"));
        assert!(!d.matches("example.com"));
        assert!(!d.matches("badexample.com"));
    }

    #[test]
    fn deny_wins_natively_allow_wins_for_e2b() {
        let d = rules(&["a.test"], &["a.test", "0.0.0.0/0"], Precedence::DenyWins);
        assert_eq!(d.name_verdict("a.test"), NameVerdict::Deny);
        assert_eq!(d.name_verdict("b.test"), NameVerdict::Deny);
        let a = rules(&["a.test"], &["a.test", "0.0.0.0/0"], Precedence::AllowWins);
        assert_eq!(a.name_verdict("a.test"), NameVerdict::Pin);
        assert_eq!(a.name_verdict("b.test"), NameVerdict::Deny);
        let open = rules(&[], &["bad.test"], Precedence::DenyWins);
        assert_eq!(open.name_verdict("ok.test"), NameVerdict::Pass);
        assert_eq!(open.name_verdict("bad.test"), NameVerdict::Deny);
    }

    #[test]
    fn sets_put_denies_first_or_last_by_precedence() {
        let s = |v: &Vec<Cidr>| v.iter().map(|c| c.to_string()).collect::<Vec<_>>();
        let d = rules(
            &["192.0.2.0/24"],
            &["192.0.2.10", "0.0.0.0/0"],
            Precedence::DenyWins,
        );
        let [first, allow, last] = d.sets_v4();
        assert_eq!(s(&first), ["192.0.2.10/32"]);
        assert_eq!(s(&allow), ["192.0.2.0/24"]);
        assert_eq!(s(&last), ["0.0.0.0/0"]);
        let a = rules(&["192.0.2.0/24"], &["192.0.2.10"], Precedence::AllowWins);
        let [first, allow, last] = a.sets_v4();
        assert!(first.is_empty());
        assert_eq!(s(&allow), ["192.0.2.0/24"]);
        assert_eq!(s(&last), ["192.0.2.10/32"]);
    }

    #[test]
    fn scripts_flush_and_fill_in_one_go() {
        let p = rules(&["10.0.0.0/8"], &["0.0.0.0/0"], Precedence::DenyWins);
        let pins = [Pin {
            addr: Ipv4Addr::new(192, 0, 2, 10),
            ttl: Duration::from_secs(60),
        }];
        let s = apply_script("dwell_x", &p, &pins);
        assert!(s.contains("flush set inet dwell_x egress_allow\n"));
        assert!(s.contains("add element inet dwell_x egress_allow { 10.0.0.0/8 }"));
        assert!(s.contains("add element inet dwell_x egress_deny_last { 0.0.0.0/0 }"));
        assert!(s.contains("add element inet dwell_x egress_dns { 192.0.2.10 timeout 60s }"));
        assert!(!s.contains("add element inet dwell_x egress_deny_first"));
    }

    #[test]
    fn the_pin_set_is_bounded() {
        let (decls, _) = table_parts("veth0");
        assert!(
            decls.contains(&format!(
                "set {SET_DNS} {{ type ipv4_addr; flags timeout; size {DNS_SET_SIZE}; }}"
            )),
            "{decls}"
        );
    }

    #[test]
    fn open_connections_outlive_their_pin_until_a_rule_change() {
        let (decls, rules) = table_parts("veth0");
        assert!(decls.contains(&format!("set {SET_DNS_CONN} {{")), "{decls}");
        // Only established flows, and after the explicit denies.
        let conn = rules
            .lines()
            .position(|l| {
                l.contains(&format!(
                    "ct state established,related ip daddr @{SET_DNS_CONN} accept"
                ))
            })
            .expect("the dns_conn rule");
        let deny_first = rules
            .lines()
            .position(|l| l.contains(SET_DENY_FIRST))
            .unwrap();
        assert!(deny_first < conn, "{rules}");
        let pin = Pin {
            addr: "192.0.2.7".parse().unwrap(),
            ttl: Duration::from_secs(60),
        };
        let s = pin_script("dwell_x", &[pin]);
        assert!(
            s.contains(&format!("{SET_DNS} {{ 192.0.2.7 timeout 60s }}")),
            "{s}"
        );
        let grace = 60 + CONN_GRACE.as_secs();
        assert!(
            s.contains(&format!("{SET_DNS_CONN} {{ 192.0.2.7 timeout {grace}s }}")),
            "{s}"
        );
        // A rule change starts both sets anew from the pins still allowed.
        let a = apply_script("dwell_x", &rules_of(&[], &["0.0.0.0/0"]), &[]);
        assert!(
            a.contains(&format!("flush set inet dwell_x {SET_DNS_CONN}")),
            "{a}"
        );
    }

    fn rules_of(allow: &[&str], deny: &[&str]) -> Policy {
        rules(allow, deny, Precedence::DenyWins)
    }

    #[test]
    fn too_many_entries_are_refused() {
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("h{i}.test")).collect();
        let e = Policy::compile(&EgressRules {
            allow: many,
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.contains("at most"), "{e}");
    }
}
