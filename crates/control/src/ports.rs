//! Port exposures' naming and credentials, shared by the REST API (which
//! prints URLs and login links) and the port proxy (which checks them).
//!
//! * Host names: `PORT-ID.DOMAIN` (the form E2B's `getHost(port)` builds),
//!   `PORT-NAME--TENANT.DOMAIN`, and `PORT-NAME.DOMAIN` for a sandbox of
//!   the `default` tenant (names are unique per tenant only, so a bare name
//!   never reaches another tenant's sandbox).
//! * A private exposure has a random token, shown once; only its BLAKE3
//!   hash is stored. Clients send it in `X-Dwell-Token` (or E2B's
//!   `e2b-traffic-access-token`).
//! * One-time login links carry a token signed with the daemon's key
//!   (sandbox, port, expiry, a nonce, bound to the exposure's token hash);
//!   the proxy redeems each nonce once and answers with a cookie signed
//!   the same way, bound to the host name, that lasts [`COOKIE_LIFETIME_MS`].
//!   Re-exposing or unexposing the port (a new token hash) voids both.
//! * Redeemed nonces are kept in memory, per exposure (at most
//!   [`MAX_REDEEMED_PER_EXPOSURE`] unexpired ones: more links of that
//!   exposure are refused until some expire; other exposures are not
//!   affected). A link's MAC also covers a random key of the daemon process,
//!   so links minted before a restart are void after it and a used link
//!   cannot be replayed once the daemon forgot it. Cookies survive restarts.
//! * An exposure may name the `Host` header its server gets instead of the
//!   client's ([`check_host_header`]: `host[:port]`, where `${PORT}` stands
//!   for the port; E2B's `maskRequestHost`). `X-Forwarded-Host` keeps the
//!   client's.
//! * `--` separates name and tenant in host names, so new sandbox and tenant
//!   names may not contain it; older names that do are reached by id only.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, RwLock};

use dwell_store::Exposure;

use crate::model::Sandbox;

/// The tenant whose sandboxes `PORT-NAME.DOMAIN` names.
pub const DEFAULT_TENANT: &str = "default";
/// How long a one-time login link is valid.
pub const LOGIN_LIFETIME_MS: i64 = 15 * 60 * 1000;
/// How long the cookie a login link sets is valid.
pub const COOKIE_LIFETIME_MS: i64 = 24 * 60 * 60 * 1000;
/// Unexpired redeemed login nonces remembered per exposure (sandbox and
/// port); while that many are, more links of that exposure are refused.
pub const MAX_REDEEMED_PER_EXPOSURE: usize = 1000;

/// Where the port proxy is reached, for the URLs the daemon prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// The domain under which `PORT-ID.DOMAIN` names are served.
    pub domain: String,
    /// The port of URLs (`None`: the scheme's default, 80 or 443).
    pub url_port: Option<u16>,
    /// Whether the proxy serves TLS (`https://` URLs).
    pub tls: bool,
}

impl PortSettings {
    /// `http[s]://LABEL.DOMAIN[:PORT]/` for a host label (`8080-ID`).
    pub fn url(&self, label: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        match self.url_port {
            Some(p) => format!("{scheme}://{label}.{}:{p}/", self.domain),
            None => format!("{scheme}://{label}.{}/", self.domain),
        }
    }
}

/// The proxy's mutable state kept by the controller.
#[derive(Default)]
pub(crate) struct PortState {
    pub(crate) settings: RwLock<Option<PortSettings>>,
    /// Redeemed login nonces and when their links expire, per exposure
    /// (sandbox id and port).
    redeemed: Mutex<HashMap<(String, u16), HashMap<String, i64>>>,
    /// A random key of this process that login links' MACs cover.
    boot_key: OnceLock<[u8; 32]>,
}

impl PortState {
    /// Marks `nonce` of the exposure `(sandbox_id, port)` redeemed; false
    /// when it already was, or when that exposure has
    /// [`MAX_REDEEMED_PER_EXPOSURE`] unexpired redeemed links.
    pub(crate) fn redeem(
        &self,
        sandbox_id: &str,
        port: u16,
        nonce: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> bool {
        let mut all = self.redeemed.lock().unwrap_or_else(|p| p.into_inner());
        // Forget expired links (and exposures left with none) now and then.
        if all.len() > 1024 {
            all.retain(|_, m| {
                m.retain(|_, exp| *exp > now_ms);
                !m.is_empty()
            });
        }
        let m = all.entry((sandbox_id.to_string(), port)).or_default();
        if m.len() >= MAX_REDEEMED_PER_EXPOSURE {
            m.retain(|_, exp| *exp > now_ms);
        }
        if m.len() >= MAX_REDEEMED_PER_EXPOSURE || m.contains_key(nonce) {
            return false;
        }
        m.insert(nonce.to_string(), expires_ms);
        true
    }

    /// This process's random key for login links (made on first use).
    pub(crate) fn boot_key(&self) -> std::io::Result<[u8; 32]> {
        if let Some(k) = self.boot_key.get() {
            return Ok(*k);
        }
        let mut k = [0u8; 32];
        getrandom::fill(&mut k)
            .map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
        Ok(*self.boot_key.get_or_init(|| k))
    }
}

/// The result of exposing a port.
#[derive(Debug, Clone)]
pub struct Exposed {
    pub sandbox: Sandbox,
    pub exposure: Exposure,
    /// The new access token of a private exposure (shown only now); `None`
    /// when the port is public or already was exposed the same way.
    pub token: Option<String>,
    /// False when the port already was exposed the same way.
    pub created: bool,
}

/// What a proxied host name leads to.
#[derive(Debug, Clone)]
pub struct PortRoute {
    pub sandbox: Sandbox,
    pub port: u16,
    /// The exposure that covers the port (its own, or the sandbox's
    /// every-port exposure); `None` when the port is not exposed.
    pub exposure: Option<Exposure>,
    /// Whether the host named the sandbox by id (unguessable) rather than
    /// by name (guessable: the proxy then says no more than for an unknown
    /// host to a client without access).
    pub by_id: bool,
}

/// What the sandbox part of a host name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTarget {
    Id(String),
    Name { name: String, tenant: String },
}

/// The host label of a port of a sandbox (`8080-ID`).
pub fn host_label(port: u16, sandbox_id: &str) -> String {
    format!("{port}-{sandbox_id}")
}

/// Parses `PORT-X.DOMAIN[:port]` (case-insensitive); `None` when the host
/// is not under `domain` or not of that shape.
pub fn parse_host(host: &str, domain: &str) -> Option<(u16, HostTarget)> {
    let host = host.trim().trim_end_matches('.');
    // Drop a `:port` (host names here are never IPv6 literals).
    let host = match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.to_ascii_lowercase();
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let label = host.strip_suffix(&domain)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let (port, rest) = label.split_once('-')?;
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    if rest.is_empty() {
        return None;
    }
    let target = if crate::ids::looks_like_id(rest) {
        HostTarget::Id(rest.to_string())
    } else if let Some((name, tenant)) = rest.rsplit_once("--") {
        if name.is_empty() || tenant.is_empty() {
            return None;
        }
        HostTarget::Name {
            name: name.to_string(),
            tenant: tenant.to_string(),
        }
    } else {
        HostTarget::Name {
            name: rest.to_string(),
            tenant: DEFAULT_TENANT.to_string(),
        }
    };
    Some((port, target))
}

/// A fresh exposure token (64 hex digits) and its stored hash.
pub fn new_token() -> std::io::Result<(String, String)> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| std::io::Error::other(format!("OS random source: {e}")))?;
    let token: String = b.iter().map(|x| format!("{x:02x}")).collect();
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The stored hash of an exposure token.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}

/// Whether `token` hashes to `hash` (constant-time comparison of hashes).
pub fn token_matches(hash: &str, token: &str) -> bool {
    match blake3::Hash::from_hex(hash) {
        Ok(h) => h == blake3::hash(token.as_bytes()),
        Err(_) => false,
    }
}

/// What stands for the port in an exposure's host header.
pub const PORT_VAR: &str = "${PORT}";

/// The longest host header an exposure may name (a DNS name's 253, a port).
pub const MAX_HOST_HEADER_LEN: usize = 260;

/// Checks an exposure's host header: `host[:port]`, a DNS name or IPv4
/// address (letters, digits, `-`, `.`) with an optional numeric port,
/// where `${PORT}` may stand anywhere for the port the request goes to.
/// The error says what is wrong, to be shown as is.
pub fn check_host_header(mask: &str) -> Result<(), String> {
    let example = "app.example.com:${PORT} or ${PORT}-app.example.com";
    if mask.is_empty() {
        return Err(format!(
            "the host is empty; give host[:port], such as {example}"
        ));
    }
    if mask.len() > MAX_HOST_HEADER_LEN {
        return Err(format!(
            "the host is {} bytes long; give at most {MAX_HOST_HEADER_LEN}",
            mask.len()
        ));
    }
    // The longest port stands in for the variable.
    let host = mask.replace(PORT_VAR, "65535");
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':')))
    {
        let what = if c == '$' || c == '{' || c == '}' {
            format!("{c:?} outside of {PORT_VAR}, the only variable")
        } else {
            format!("the character {c:?}")
        };
        return Err(format!(
            "{mask:?} has {what}; give host[:port] with letters, digits, '-' and '.', such as \
             {example}"
        ));
    }
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host.as_str(), None),
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "{mask:?} has no port number after its ':'; give host:PORT with a number or \
                 {PORT_VAR}, such as {example}"
            ));
        }
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.split('.').any(|l| l.is_empty() || l.len() > 63) {
        return Err(format!(
            "{mask:?} is not a host name: its dot-separated labels must be 1 to 63 characters \
             long; give host[:port], such as {example}"
        ));
    }
    Ok(())
}

/// The host header an exposure names, for a request to `port`.
pub fn host_header_for(mask: &str, port: u16) -> String {
    mask.replace(PORT_VAR, &port.to_string())
}

/// What a login token says (before its MAC and nonce are checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Login {
    pub(crate) sandbox_id: String,
    pub(crate) port: u16,
    pub(crate) expires_ms: i64,
    pub(crate) nonce: String,
    pub(crate) mac: String,
}

impl Login {
    /// `l1.SANDBOX.PORT.EXPIRES.NONCE.MAC`.
    pub(crate) fn encode(&self) -> String {
        format!(
            "l1.{}.{}.{}.{}.{}",
            self.sandbox_id, self.port, self.expires_ms, self.nonce, self.mac
        )
    }

    pub(crate) fn parse(s: &str) -> Option<Login> {
        let mut it = s.split('.');
        if it.next()? != "l1" {
            return None;
        }
        let l = Login {
            sandbox_id: it.next()?.to_string(),
            port: it.next()?.parse().ok()?,
            expires_ms: it.next()?.parse().ok()?,
            nonce: it.next()?.to_string(),
            mac: it.next()?.to_string(),
        };
        it.next().is_none().then_some(l)
    }

    /// The bytes the MAC covers: the link's fields, the exposure's token
    /// hash and the daemon process's random key (so a restart voids links).
    pub(crate) fn signed(&self, token_hash: &str, boot_key: &[u8; 32]) -> Vec<u8> {
        let boot: String = boot_key.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "login\0{}\0{}\0{}\0{}\0{token_hash}\0{boot}",
            self.sandbox_id, self.port, self.expires_ms, self.nonce
        )
        .into_bytes()
    }
}

/// The bytes a proxy cookie's MAC covers.
pub(crate) fn cookie_signed(
    host: &str,
    sandbox_id: &str,
    port: u16,
    expires_ms: i64,
    token_hash: &str,
) -> Vec<u8> {
    format!(
        "cookie\0{}\0{sandbox_id}\0{port}\0{expires_ms}\0{token_hash}",
        host.to_ascii_lowercase()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {

    #[test]
    fn host_headers_are_host_and_port_with_the_port_variable() {
        for ok in [
            "custom-host.example.com:${PORT}",
            "${PORT}-myapp.example.com",
            "example.com",
            "example.com.",
            "10.0.0.1:8080",
            "localhost",
        ] {
            assert_eq!(check_host_header(ok), Ok(()), "{ok}");
        }
        let long = format!("{}.com", "a.".repeat(130));
        for bad in [
            "",
            "a b.com",
            "x.com/path",
            "x.com:",
            "x.com:abc",
            "x.com:1:2",
            "$HOME.com",
            "${HOST}.com",
            "a..b",
            ":80",
            "x.com\r\nX-Evil: 1",
            long.as_str(),
        ] {
            assert!(check_host_header(bad).is_err(), "{bad:?} passed");
        }
        assert_eq!(
            host_header_for("h.example.com:${PORT}", 8080),
            "h.example.com:8080"
        );
        assert_eq!(host_header_for("${PORT}-a.b", 3000), "3000-a.b");
    }

    use super::*;

    #[test]
    fn host_names_parse() {
        let id = "abcdefghijkmnpqrstuv";
        assert_eq!(
            parse_host(&format!("8080-{id}.localhost:8081"), "localhost"),
            Some((8080, HostTarget::Id(id.into())))
        );
        assert_eq!(
            parse_host("3000-Web.Example.COM", "example.com"),
            Some((
                3000,
                HostTarget::Name {
                    name: "web".into(),
                    tenant: DEFAULT_TENANT.into()
                }
            ))
        );
        assert_eq!(
            parse_host("3000-my-app--team-a.example.com.", "example.com"),
            Some((
                3000,
                HostTarget::Name {
                    name: "my-app".into(),
                    tenant: "team-a".into()
                }
            ))
        );
        for bad in [
            "example.com",
            "x.example.com",
            "0-web.example.com",
            "70000-web.example.com",
            "8080-.example.com",
            "8080-web.other.com",
            "8080-web.a.example.com",
            "8080-web--.example.com",
            "8080-web.notexample.com",
        ] {
            assert_eq!(parse_host(bad, "example.com"), None, "{bad}");
        }
    }

    #[test]
    fn tokens_and_logins() {
        let (t, h) = new_token().unwrap();
        assert_eq!(t.len(), 64);
        assert!(token_matches(&h, &t));
        assert!(!token_matches(&h, "nope"));
        assert!(!token_matches("not hex", &t));
        let l = Login {
            sandbox_id: "abc".into(),
            port: 80,
            expires_ms: 5,
            nonce: "n1".into(),
            mac: "m".into(),
        };
        assert_eq!(Login::parse(&l.encode()), Some(l.clone()));
        assert_eq!(Login::parse("l1.a.80.5.n"), None);
        assert_eq!(Login::parse("l2.a.80.5.n.m"), None);
        let st = PortState::default();
        assert!(st.redeem("a", 80, "n1", 10, 0));
        assert!(!st.redeem("a", 80, "n1", 10, 0));
        // Another process signs differently.
        let k = st.boot_key().unwrap();
        assert_eq!(st.boot_key().unwrap(), k);
        assert_ne!(PortState::default().boot_key().unwrap(), k);
        assert_ne!(l.signed("h", &k), l.signed("h", &[0; 32]));
    }

    #[test]
    fn redeemed_links_are_capped_per_exposure() {
        let st = PortState::default();
        for i in 0..MAX_REDEEMED_PER_EXPOSURE {
            assert!(st.redeem("a", 80, &format!("n{i}"), 100, 0));
        }
        // This exposure is full while its links are valid ...
        assert!(!st.redeem("a", 80, "more", 100, 0));
        // ... other exposures are not affected ...
        assert!(st.redeem("a", 81, "more", 100, 0));
        assert!(st.redeem("b", 80, "more", 100, 0));
        // ... and once they expired, it takes new ones (old ones stay void
        // by their expiry).
        assert!(st.redeem("a", 80, "more", 300, 200));
    }

    #[test]
    fn urls() {
        let s = PortSettings {
            domain: "localhost".into(),
            url_port: Some(8081),
            tls: false,
        };
        assert_eq!(s.url("80-x"), "http://80-x.localhost:8081/");
        let s = PortSettings {
            domain: "d.io".into(),
            url_port: None,
            tls: false,
        };
        assert_eq!(s.url("80-x"), "http://80-x.d.io/");
        let s = PortSettings {
            domain: "d.io".into(),
            url_port: Some(8443),
            tls: true,
        };
        assert_eq!(s.url("80-x"), "https://80-x.d.io:8443/");
    }
}
