//! Image references, docker style: `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`.
//!
//! A reference is parsed once and normalized so that every spelling of the
//! same image finds the same entry:
//!
//! - the first path component is a registry host when it contains `.` or
//!   `:` or is `localhost`; otherwise the registry is `docker.io` (and
//!   `index.docker.io` is spelled `docker.io`);
//! - a one-component Docker Hub path gets `library/` (`python` is
//!   `docker.io/library/python`);
//! - the tag defaults to `latest` unless a digest is given;
//! - a digest is `sha256:` and 64 lower-case hex digits.
//!
//! [`Reference::familiar`] gives back the short form users type
//! (`python:3.12`, `registry.local:5000/team/py:1`).

use std::fmt;

use crate::error::{Result, StorageError};

/// Docker Hub's canonical registry name.
pub const DOCKER_HUB: &str = "docker.io";
/// The tag used when a reference names none.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (host included), as the distribution spec caps it.
const MAX_NAME: usize = 255;

/// A parsed, normalized image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Registry host (with port), e.g. `docker.io`, `localhost:5000`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/python`.
    pub repository: String,
    /// Tag; `None` only when a digest is given without one.
    pub tag: Option<String>,
    /// Manifest digest, `sha256:<hex>`.
    pub digest: Option<String>,
}

impl Reference {
    /// Parses `s`; errors say which part is wrong and what is allowed.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |reason: String| StorageError::InvalidReference {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(bad("it is empty; write e.g. python:3.12 or \
                 registry.example.com:5000/team/app:1"
                .into()));
        }
        if s.len() > 512 {
            return Err(bad("it is longer than 512 characters".into()));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(parse_digest(d).map_err(bad)?)),
            None => (s, None),
        };
        // A tag follows the last ':' that comes after the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                check_tag(t).map_err(bad)?;
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("the repository name is empty".into()));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                check_host(first).map_err(bad)?;
                (first.to_string(), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            DOCKER_HUB.to_string()
        } else {
            registry
        };
        check_path(&path).map_err(bad)?;
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if registry.len() + 1 + repository.len() > MAX_NAME {
            return Err(bad(format!(
                "the repository name is longer than {MAX_NAME} characters"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository` (no tag or digest).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The fully qualified form, e.g. `docker.io/library/python:3.12`.
    pub fn normalized(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The key an image is stored under: by digest when there is one (a
    /// digest pins the content, the tag is then only informative),
    /// otherwise by tag.
    pub fn key(&self) -> String {
        match &self.digest {
            Some(d) => format!("{}@{d}", self.name()),
            None => self.normalized(),
        }
    }

    /// The short form users type: `python:3.12`, `team/app:1`,
    /// `localhost:5000/app@sha256:...`.
    pub fn familiar(&self) -> String {
        let mut s = if self.registry == DOCKER_HUB {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The same repository pinned to `digest` (tag kept for display).
    pub fn with_digest(&self, digest: &str) -> Self {
        Self {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.familiar())
    }
}

/// Lower-case hex of a byte string (digests).
pub fn hex_lower(bytes: &[u8]) -> String {
    crate::fsutil::hex(bytes)
}

/// `sha256:<64 hex>`, lower-cased.
fn parse_digest(d: &str) -> std::result::Result<String, String> {
    let Some(hex) = d.strip_prefix("sha256:") else {
        return Err(format!(
            "digest {d:?} is not supported; only sha256:<64 hex digits> digests are"
        ));
    };
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "digest {d:?} is malformed; a sha256 digest has 64 hex digits"
        ));
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(t: &str) -> std::result::Result<(), String> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {t:?} is invalid; a tag is 1-128 letters, digits, '_', '.' or '-' and does \
             not start with '.' or '-'"
        ))
    }
}

/// A host name or IPv4 address with an optional port (`[v6]:port` too).
fn check_host(h: &str) -> std::result::Result<(), String> {
    let err = || {
        format!("registry host {h:?} is invalid; write HOST or HOST:PORT, e.g. registry.local:5000")
    };
    let (host, port) = if let Some(rest) = h.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(err)?;
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(err());
        }
        match after {
            "" => (None, None),
            a => (None, Some(a.strip_prefix(':').ok_or_else(err)?)),
        }
    } else {
        match h.rsplit_once(':') {
            Some((host, port)) => (Some(host), Some(port)),
            None => (Some(h), None),
        }
    };
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return Err(err());
        }
    }
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        if p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535) {
            return Err(err());
        }
    }
    Ok(())
}

/// Path components: lower-case alphanumerics separated by `.`, `_`, `__`
/// or one or more `-`.
fn check_path(path: &str) -> std::result::Result<(), String> {
    for comp in path.split('/') {
        let bytes = comp.as_bytes();
        let ok = !comp.is_empty()
            && bytes[0].is_ascii_lowercase() | bytes[0].is_ascii_digit()
            && {
                let last = bytes[bytes.len() - 1];
                last.is_ascii_lowercase() || last.is_ascii_digit()
            }
            && bytes.iter().all(|&b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && separators_ok(comp);
        if !ok {
            let hint = if comp.bytes().any(|b| b.is_ascii_uppercase()) {
                " (repository names must be lower case)"
            } else {
                ""
            };
            return Err(format!(
                "repository component {comp:?} is invalid{hint}; use lower-case letters and \
                 digits separated by '.', '_', '__' or '-', and '/' between components"
            ));
        }
    }
    Ok(())
}

/// Separators: `.` and `_` alone, `__`, or runs of `-`; never mixed.
fn separators_ok(comp: &str) -> bool {
    let b = comp.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let sep = &comp[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::Reference;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().normalized()
    }

    #[test]
    fn normalizes_docker_style() {
        assert_eq!(norm("python"), "docker.io/library/python:latest");
        assert_eq!(norm("python:3.12"), "docker.io/library/python:3.12");
        assert_eq!(norm("team/app:1"), "docker.io/team/app:1");
        assert_eq!(
            norm("index.docker.io/library/python:3"),
            "docker.io/library/python:3"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(
            norm("registry.local:5000/team/py:1"),
            "registry.local:5000/team/py:1"
        );
        assert_eq!(norm("127.0.0.1:5000/a/b/c"), "127.0.0.1:5000/a/b/c:latest");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("python@{d}")),
            format!("docker.io/library/python@{d}")
        );
        assert_eq!(
            norm(&format!(
                "python:3@{}",
                d.to_uppercase().replace("SHA", "sha")
            )),
            format!("docker.io/library/python:3@{d}")
        );
        let r = Reference::parse(&format!("python:3@{d}")).unwrap();
        assert_eq!(r.key(), format!("docker.io/library/python@{d}"));
    }

    #[test]
    fn familiar_round_trips() {
        for s in [
            "python:3.12",
            "team/app:1",
            "localhost:5000/app:latest",
            "registry.local:5000/team/py:1",
            "a__b.c-d--e:x_Y.1-2",
        ] {
            let r = Reference::parse(s).unwrap();
            assert_eq!(r.familiar(), s);
            assert_eq!(Reference::parse(&r.familiar()).unwrap(), r);
        }
        assert_eq!(
            Reference::parse("python").unwrap().familiar(),
            "python:latest"
        );
        assert_eq!(
            Reference::parse("docker.io/library/python:3")
                .unwrap()
                .familiar(),
            "python:3"
        );
    }

    #[test]
    fn refuses_bad_references() {
        for s in [
            "",
            "Python",
            "a//b",
            "/a",
            "a/",
            "a:",
            "a:-x",
            "a@sha256:abc",
            "a@md5:0123",
            "-a",
            "a-",
            "a..b",
            "a._b",
            "bad host:5000/a",
            "host.x:99999/a",
            "host.x:/a",
            "a b",
            "a:b:c",
        ] {
            let e = Reference::parse(s);
            assert!(e.is_err(), "{s:?} parsed as {e:?}");
            println!("{s:?}: {}", e.unwrap_err());
        }
    }
}
