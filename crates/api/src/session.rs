//! Console sessions as an authentication: a request without an API key
//! but with the console's session cookie runs as the session's principal.
//! Since a browser sends cookies on its own, a cookie alone proves nothing
//! about who wrote the request; so on top of `SameSite=Strict`:
//! - a state-changing request (anything but GET and HEAD) must carry the
//!   session's CSRF token in `X-Dwell-CSRF`, which a page of another site
//!   cannot read or set (no CORS here);
//! - a request the browser marks as cross-site (`Sec-Fetch-Site`), or
//!   whose `Origin` is not this server's, is refused; a WebSocket upgrade
//!   (which browsers open across sites without preflight) must name this
//!   server as its `Origin`.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use dwell_contract::console::{CSRF_HEADER, SESSION_COOKIE};
use dwell_store::{ConsoleSession, SessionLookup};
use sha2::{Digest, Sha256};

use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

/// How the daemon runs the console's logins (`dwell serve --console-url`,
/// `--console-session-ttl`).
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    /// Where browsers reach the console (`http://127.0.0.1:7070`), for the
    /// login links of `dwell ui`; `None` without a TCP listener.
    pub url: Option<String>,
    /// A session's absolute lifetime.
    pub session_ttl: Duration,
    /// A session ends after this long without a request.
    pub idle_timeout: Duration,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        ConsoleSettings {
            url: None,
            session_ttl: Duration::from_secs(12 * 3600),
            idle_timeout: Duration::from_secs(2 * 3600),
        }
    }
}

impl ConsoleSettings {
    /// Cookies are `Secure` when browsers reach the console over HTTPS.
    pub fn secure(&self) -> bool {
        self.url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }
}

/// The console session a request was authenticated by (a request
/// extension beside its [`Principal`]).
#[derive(Debug, Clone)]
pub struct SessionId(pub String);

/// The SHA-256 (hex) of a session's or login token's secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the kernel's random source");
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the session cookie, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The `Set-Cookie` value of a new session (or, with `None`, one that
/// clears it).
pub fn set_cookie(settings: &ConsoleSettings, secret: Option<&str>) -> HeaderValue {
    let (value, age) = match secret {
        Some(s) => (s, settings.session_ttl.as_secs()),
        None => ("", 0),
    };
    let secure = if settings.secure() { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("a cookie of hex and fixed words")
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a request a browser sent for a page of another site: one marked
/// `Sec-Fetch-Site: cross-site`/`same-site`, or with an `Origin` that is not
/// this server (`Host`). With `need_origin`, an `Origin` must be present.
pub fn same_origin(headers: &HeaderMap, need_origin: bool) -> Result<(), ApiError> {
    let refuse = |why: String| {
        Err(ApiError::new(
            403,
            "cross_site",
            format!("refused a console request from another site: {why}; the console's own pages at /ui/ may make it"),
        ))
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return refuse(format!("the browser marks it {site}"));
        }
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    match headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("?"))
    {
        Some(origin) => {
            let authority = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            match (authority, host) {
                (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
                _ => refuse(format!(
                    "its Origin {origin:?} is not this server ({})",
                    host.unwrap_or("no Host header")
                )),
            }
        }
        None if need_origin => refuse("it names no Origin".into()),
        None => Ok(()),
    }
}

/// Whether a request is a WebSocket upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The principal of a request authenticated by the session cookie
/// `secret`, after the checks above; or the error to answer.
pub fn principal(
    st: &AppState,
    secret: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(Principal, ConsoleSession), ApiError> {
    let relogin = "log in again at /ui/ (or get a link with `dwell ui`)";
    let session = match st.ctl.console_session(&hash_secret(secret)) {
        Ok(SessionLookup::Valid(s)) => s,
        Ok(SessionLookup::Revoked) => {
            return Err(ApiError::unauthorized(format!(
                "this console session was revoked (logged out); {relogin}"
            )))
        }
        Ok(SessionLookup::Expired) => {
            return Err(ApiError::unauthorized(format!(
                "this console session has expired; {relogin}"
            )))
        }
        Ok(SessionLookup::Unknown) => {
            return Err(ApiError::unauthorized(format!(
                "the console session cookie is not valid; {relogin}"
            )))
        }
        Err(e) => {
            tracing::error!("looking up a console session: {e}");
            return Err(ApiError::internal(
                "the daemon could not check the console session; see its log",
            ));
        }
    };
    // A session lives no longer than the API key it was opened with.
    let key = session
        .grant
        .key_id
        .strip_prefix("admin:")
        .unwrap_or(&session.grant.key_id);
    if key != "local" {
        match st.ctl.api_key_by_id(key) {
            Ok(Some(k)) if k.revoked_at.is_none() => {}
            Ok(_) => {
                return Err(ApiError::unauthorized(format!(
                    "the API key {key} this console session was opened with has been revoked; {relogin} with a valid key"
                )))
            }
            Err(e) => {
                tracing::error!("looking up API key {key}: {e}");
                return Err(ApiError::internal(
                    "the daemon could not check the console session; see its log",
                ));
            }
        }
    }
    let upgrade = is_upgrade(headers);
    same_origin(headers, upgrade)?;
    if !matches!(*method, Method::GET | Method::HEAD) {
        let sent = headers
            .get(CSRF_HEADER)
            .map(|v| v.as_bytes())
            .unwrap_or(b"");
        if !constant_time_eq(sent, session.csrf.as_bytes()) {
            return Err(ApiError::new(
                403,
                "csrf",
                format!(
                    "a console session's {method} needs its CSRF token in the {CSRF_HEADER} header \
                     (GET /v1/console/session gives it to the console's page); refused"
                ),
            ));
        }
    }
    Ok((
        Principal {
            tenant: session.grant.tenant.clone(),
            admin: session.grant.admin,
            key_id: session.grant.key_id.clone(),
        },
        session,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let h = headers(&[("cookie", "a=1; dwell_session=abc ; b=2")]);
        assert_eq!(cookie(&h), Some("abc"));
        assert_eq!(cookie(&headers(&[("cookie", "dwell_sessionx=1")])), None);
        assert_eq!(cookie(&headers(&[("cookie", "dwell_session=")])), None);
    }

    #[test]
    fn only_this_server_s_pages_pass() {
        let ok = headers(&[
            ("host", "127.0.0.1:7070"),
            ("origin", "http://127.0.0.1:7070"),
        ]);
        assert!(same_origin(&ok, true).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7070")]), false).is_ok());
        assert!(same_origin(&headers(&[("host", "127.0.0.1:7070")]), true).is_err());
        for bad in [
            headers(&[
                ("host", "127.0.0.1:7070"),
                ("origin", "http://evil.example"),
            ]),
            headers(&[("host", "127.0.0.1:7070"), ("origin", "null")]),
            headers(&[
                ("host", "127.0.0.1:7070"),
                ("origin", "http://127.0.0.1:7071"),
            ]),
            headers(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "cross-site")]),
            headers(&[("host", "127.0.0.1:7070"), ("sec-fetch-site", "same-site")]),
        ] {
            assert_eq!(same_origin(&bad, false).unwrap_err().status, 403, "{bad:?}");
        }
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_over_https() {
        let mut s = ConsoleSettings::default();
        let c = set_cookie(&s, Some("ff"));
        let c = c.to_str().unwrap();
        assert!(
            c.starts_with("dwell_session=ff; ")
                && c.contains("HttpOnly")
                && c.contains("SameSite=Strict")
        );
        assert!(!c.contains("Secure"));
        s.url = Some("https://console.example".into());
        assert!(set_cookie(&s, None)
            .to_str()
            .unwrap()
            .ends_with("Max-Age=0; HttpOnly; SameSite=Strict; Secure"));
    }
}
