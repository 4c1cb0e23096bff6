//! Authentication. On the unix socket the kernel has already checked the
//! caller (the socket is `0600` root): it acts as admin of the `default`
//! tenant. On TCP every request carries an API key, as
//! `Authorization: Bearer <key>` or `X-API-Key: <key>`; only the key's
//! SHA-256 is stored, and it maps to a tenant. An admin may act for another
//! tenant by naming it in `X-Dwell-Tenant` ([`act_for`]; CLI `--as-tenant`).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::credential::Credential;
use crate::error::ApiError;
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: String,
    pub admin: bool,
    /// The API key's id, or `local` on the unix socket (for the audit log).
    pub key_id: String,
}

/// Refuses `p` unless it is an admin; `what` names the refused request
/// (`importing images`, `the nodes of a cluster`).
pub(crate) fn require_admin(p: &Principal, what: &str) -> Result<(), ApiError> {
    if p.admin {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "permission_denied",
        format!("{what} is for admins: this needs an admin API key"),
    ))
}

/// The tenant of local (unix socket) callers.
pub const DEFAULT_TENANT: &str = "default";

/// Middleware for the unix socket.
pub async fn local(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(Principal {
        tenant: DEFAULT_TENANT.into(),
        admin: true,
        key_id: "local".into(),
    });
    next.run(req).await
}

/// The header with which an admin acts for another tenant (the CLI's
/// `--as-tenant`).
pub use dwell_contract::ACT_FOR_HEADER;

/// Middleware, inside authentication: a request naming a tenant in
/// [`ACT_FOR_HEADER`] runs as that tenant's own (non-admin) key would, so an
/// operator can list, inspect, stop and delete any tenant's sandboxes. Only
/// admins may (403), and only for a tenant that exists (404). The audit log
/// records the request under that tenant with the admin's key id marked
/// `admin:<id>`.
pub async fn act_for(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let tenant = match req.headers().get(ACT_FOR_HEADER) {
        Some(value) => value.to_str().map(|v| v.trim().to_string()),
        // Browsers set no headers on a WebSocket: the web console names
        // the tenant in the upgrade's query instead.
        None if crate::session::is_upgrade(req.headers()) => match ws_act_for(req.uri()) {
            Some(t) => Ok(t),
            None => return next.run(req).await,
        },
        None => return next.run(req).await,
    };
    let Ok(tenant) = tenant else {
        return ApiError::bad_request(format!(
            "the {ACT_FOR_HEADER} header is not text; send a tenant name"
        ))
        .into_response_();
    };
    let Some(p) = req.extensions().get::<Principal>().cloned() else {
        return next.run(req).await; // an unauthenticated path (health, API description)
    };
    if tenant != p.tenant {
        if !p.admin {
            return ApiError::new(
                403,
                "permission_denied",
                format!(
                    "only an admin API key may act for another tenant; this key belongs to \
                     tenant {:?} (drop --as-tenant / {ACT_FOR_HEADER})",
                    p.tenant
                ),
            )
            .into_response_();
        }
        match state.ctl.tenant(&tenant) {
            Ok(Some(_)) => {}
            Ok(None) if tenant == DEFAULT_TENANT => {}
            Ok(None) => {
                return ApiError::new(
                    404,
                    "not_found",
                    format!("no tenant named {tenant:?}; list them with `dwell tenant ls`"),
                )
                .into_response_()
            }
            Err(e) => return ApiError::internal(e.to_string()).into_response_(),
        }
        req.extensions_mut().insert(Principal {
            tenant,
            admin: false,
            key_id: format!("admin:{}", p.key_id),
        });
    }
    next.run(req).await
}

/// The query parameter with which a WebSocket upgrade acts for a tenant
/// (what [`ACT_FOR_HEADER`] is elsewhere).
pub const ACT_FOR_QUERY: &str = "as_tenant";

fn ws_act_for(uri: &axum::http::Uri) -> Option<String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(uri.query()?).ok()?;
    pairs
        .into_iter()
        .find(|(k, _)| k == ACT_FOR_QUERY)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

/// Middleware for TCP: resolve the API key (or the web console's session
/// cookie, [`crate::session`]) or answer 401.
pub async fn api_key(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path == "/openapi.json" {
        return next.run(req).await;
    }
    // Logging in to the console is how a browser gets its credential.
    if path == "/v1/console/sessions" && req.method() == axum::http::Method::POST {
        return next.run(req).await;
    }
    let headers = req.headers();
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        let secret = match crate::session::cookie(&state.console, headers) {
            Ok(s) => s,
            Err(e) => {
                let mut res = e.into_response_();
                res.headers_mut().insert(
                    axum::http::header::SET_COOKIE,
                    crate::session::set_cookie(&state.console, None),
                );
                return res;
            }
        };
        if let Some(secret) = secret {
            return match crate::session::principal(&state, secret, req.method(), headers) {
                Ok((p, session)) => {
                    req.extensions_mut().insert(p);
                    req.extensions_mut().insert(Credential::Session(session));
                    next.run(req).await
                }
                Err(e) => e.into_response_(),
            };
        }
        return ApiError::unauthorized(
            "this request has no API key; send it as `Authorization: Bearer <key>` (the CLI reads DWELL_API_KEY)",
        )
        .into_response_();
    };
    match principal_of_key(&state.ctl, key) {
        Ok(KeyLookup::Valid(p)) => {
            req.extensions_mut().insert(Credential::Key(p.key_id.clone()));
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(KeyLookup::Revoked { id }) => ApiError::unauthorized(revoked_message(&id)).into_response_(),
        Ok(KeyLookup::Unknown) => ApiError::unauthorized(
            "the API key is not valid; check DWELL_API_KEY (the admin key is in <data-dir>/admin.key)",
        )
        .into_response_(),
        // The store's error may name files of the data dir: it goes to
        // the log, not to a caller that has not even shown a valid key.
        Err(e) => {
            tracing::error!("looking up an API key: {e}");
            ApiError::internal("the daemon could not check the API key; see its log").into_response_()
        }
    }
}

/// What an API key turned out to be.
#[derive(Debug)]
pub enum KeyLookup {
    Valid(Principal),
    /// A key an admin revoked (`dwell tenant key revoke`).
    Revoked {
        id: String,
    },
    Unknown,
}

/// Why a revoked key is refused, and what to do (for every listener).
pub fn revoked_message(id: &str) -> String {
    format!("the API key {id} was revoked; ask an admin for a new key")
}

/// Who an API key belongs to. Shared by every listener that takes API
/// keys (the REST API, the E2B control plane), so that a revoked key is
/// refused on all of them from the moment it is revoked. Records the use
/// (`last_used_at`, at most once a minute per key).
pub fn principal_of_key(
    ctl: &dwell_control::Controller,
    key: &str,
) -> dwell_control::Result<KeyLookup> {
    let Some(k) = ctl.api_key(&hash_key(&canonical_key(key)))? else {
        return Ok(KeyLookup::Unknown);
    };
    if k.revoked_at.is_some() {
        return Ok(KeyLookup::Revoked { id: k.key.id });
    }
    if let Err(e) = ctl.api_key_used(&k) {
        tracing::warn!("cannot record the use of API key {}: {e}", k.key.id);
    }
    Ok(KeyLookup::Valid(Principal {
        tenant: k.key.tenant,
        admin: k.key.admin,
        key_id: k.key.id,
    }))
}

/// The prefix of a key's E2B form: the E2B SDKs refuse, before sending
/// anything, a key that is not `e2b_` and hex, so every dwell key is also
/// accepted as `e2b_` + its hex (the same secret, another spelling).
pub const E2B_KEY_PREFIX: &str = "e2b_";

/// A key as it is stored: its E2B form (`e2b_HEX`) is the dwell key
/// `dwk_HEX`; anything else is itself.
pub fn canonical_key(key: &str) -> std::borrow::Cow<'_, str> {
    match key.strip_prefix(E2B_KEY_PREFIX) {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("dwk_{hex}").into()
        }
        _ => key.into(),
    }
}

/// A dwell key's E2B form (`dwk_HEX` → `e2b_HEX`), for E2B_API_KEY.
pub fn e2b_form(key: &str) -> Option<String> {
    key.strip_prefix("dwk_")
        .map(|hex| format!("{E2B_KEY_PREFIX}{hex}"))
}

/// SHA-256 of a key, hex.
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// A fresh API key: `dwk_` and 32 random bytes in hex.
pub fn new_key() -> String {
    format!("dwk_{}", random_hex(32))
}

/// `n` random bytes in hex (keys, console tokens and sessions).
pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the OS random source is unavailable");
    hex(&b)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Middleware: record every request that changes something in the audit
/// log, after it ran (with its status).
pub async fn audit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let who = req.extensions().get::<Principal>().cloned();
    let resp = next.run(req).await;
    let changes = !matches!(
        method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    if let (true, Some(p)) = (changes, who) {
        if let Err(e) = state.ctl.audit_request(
            &p.tenant,
            &p.key_id,
            method.as_str(),
            &path,
            resp.status().as_u16(),
        ) {
            tracing::warn!("audit log: {e}");
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_e2b_form_of_a_key_is_the_same_key() {
        let k = new_key();
        let e = e2b_form(&k).unwrap();
        assert!(e.starts_with("e2b_") && e.len() == k.len());
        assert_eq!(canonical_key(&e), k);
        assert_eq!(hash_key(&canonical_key(&e)), hash_key(&k));
        // Anything else is looked up as it is (and then is unknown).
        for other in ["e2b_", "e2b_abc", "e2b_zz", "dwk_x", "nope"] {
            assert_eq!(canonical_key(other), other);
        }
        let upper = format!("e2b_{}", "A".repeat(64));
        assert_eq!(canonical_key(&upper), format!("dwk_{}", "A".repeat(64)));
    }
}
