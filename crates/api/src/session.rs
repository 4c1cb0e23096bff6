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
use dwell_contract::console::{CSRF_HEADER, SECURE_SESSION_COOKIE, SESSION_COOKIE};
use dwell_store::{ConsoleSession, SessionLookup};

use crate::auth::{hash_key, Principal};
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

    /// The session cookie's name: `__Host-` prefixed over HTTPS.
    pub fn cookie_name(&self) -> &'static str {
        if self.secure() {
            SECURE_SESSION_COOKIE
        } else {
            SESSION_COOKIE
        }
    }
}

/// The value of the session cookie, if the request has one. Two of them
/// (a page of a sibling domain can set a `Domain=` cookie of the same name
/// that the browser sends first) is an error: which one is the user's
/// cannot be told, so neither is used.
pub fn cookie<'h>(
    settings: &ConsoleSettings,
    headers: &'h HeaderMap,
) -> Result<Option<&'h str>, ApiError> {
    let name = settings.cookie_name();
    let mut found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, value)| value.trim());
    let first = found.next();
    if found.next().is_some() {
        return Err(ApiError::unauthorized(format!(
            "the request carries two {name} cookies, one of them set by another page of this site \
             (a sandbox's preview?); log in again at /ui/ (logging in clears this one). Serve the \
             console over HTTPS (--console-url https://...) or on a domain of its own to rule this out"
        )));
    }
    Ok(first.filter(|v| !v.is_empty()))
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
        "{}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict{secure}",
        settings.cookie_name()
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
    // Refused before the session is even looked up: a refused request
    // neither learns whether the cookie is live nor keeps it from idling out.
    same_origin(headers, is_upgrade(headers))?;
    let safe = matches!(*method, Method::GET | Method::HEAD);
    let sent = headers.get(CSRF_HEADER).map(|v| v.as_bytes());
    if !safe && sent.is_none_or(<[u8]>::is_empty) {
        return Err(csrf_refusal(method));
    }
    let mut session = live(st, st.ctl.console_session(&hash_key(secret)))?;
    if !safe && !constant_time_eq(sent.unwrap_or(b""), session.csrf.as_bytes()) {
        return Err(csrf_refusal(method));
    }
    if let Err(e) = st.ctl.touch_console_session(&mut session) {
        tracing::warn!("marking console session {} seen: {e}", session.id);
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

/// The session a lookup found, if it holds: not revoked, not expired, and
/// the API key it was opened with not revoked (a session lives no longer
/// than its key); else the refusal to answer.
fn live(
    st: &AppState,
    lookup: dwell_control::Result<SessionLookup>,
) -> Result<ConsoleSession, ApiError> {
    let relogin = "log in again at /ui/ (or get a link with `dwell ui`)";
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!("looking up {what}: {e}");
        ApiError::internal("the daemon could not check the console session; see its log")
    };
    let session = match lookup {
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
        Err(e) => return Err(failed("a console session", &e)),
    };
    let grant = &session.grant;
    let key = grant.key_id.strip_prefix("admin:").unwrap_or(&grant.key_id);
    if key != "local" {
        match st.ctl.api_key_by_id(key) {
            Ok(Some(k)) if k.revoked_at.is_none() => {}
            Ok(_) => {
                return Err(ApiError::unauthorized(format!(
                    "the API key {key} this console session was opened with has been revoked; {relogin} with a valid key"
                )))
            }
            Err(e) => return Err(failed(&format!("API key {key}"), &e)),
        }
    }
    Ok(session)
}

fn csrf_refusal(method: &Method) -> ApiError {
    ApiError::new(
        403,
        "csrf",
        format!(
            "a console session's {method} needs its CSRF token in the {CSRF_HEADER} header \
             (GET /v1/console/session gives it to the console's page); refused"
        ),
    )
}

/// Console session `id` as the store has it now, if it still holds (not
/// revoked, not expired, its key not revoked): `Ok(None)` when it ended,
/// an error when the store could not say.
pub fn by_id(st: &AppState, id: &str) -> Result<Option<ConsoleSession>, ApiError> {
    match live(st, st.ctl.console_session_by_id(id)) {
        Ok(now) => Ok(Some(now)),
        Err(e) if e.status.is_server_error() => Err(e),
        Err(_) => Ok(None),
    }
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
    fn the_cookie_is_found_among_others_and_two_are_refused() {
        let plain = ConsoleSettings::default();
        let h = headers(&[("cookie", "a=1; dwell_session=abc ; b=2")]);
        assert_eq!(cookie(&plain, &h).unwrap(), Some("abc"));
        let none = headers(&[("cookie", "dwell_sessionx=1")]);
        assert_eq!(cookie(&plain, &none).unwrap(), None);
        let empty = headers(&[("cookie", "dwell_session=")]);
        assert_eq!(cookie(&plain, &empty).unwrap(), None);
        // A sibling page's Domain cookie sent before the user's own.
        let tossed = headers(&[("cookie", "dwell_session=theirs; dwell_session=mine")]);
        assert_eq!(cookie(&plain, &tossed).unwrap_err().status, 401);
        let split = headers(&[
            ("cookie", "dwell_session=theirs"),
            ("cookie", "dwell_session=mine"),
        ]);
        assert!(cookie(&plain, &split).is_err());
        // Over HTTPS only the __Host- cookie counts.
        let tls = ConsoleSettings {
            url: Some("https://console.example".into()),
            ..Default::default()
        };
        let h = headers(&[("cookie", "dwell_session=planted; __Host-dwell_session=mine")]);
        assert_eq!(cookie(&tls, &h).unwrap(), Some("mine"));
        assert!(set_cookie(&tls, Some("x"))
            .to_str()
            .unwrap()
            .starts_with("__Host-dwell_session=x;"));
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
