//! `/v1/console/`: logging in to the web console. `POST logins` makes a
//! one-time login link for the caller (`dwell ui`); `POST sessions` spends
//! such a link's token, or checks an API key, and sets the session cookie
//! ([`crate::session`]); `session` is the caller's own session (with its
//! CSRF token) and logs out; `sessions` lists and revokes the tenant's.
//! Everything else the console does goes through the ordinary routes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dwell_contract::console::{
    ConsoleSession, LoginLink, LoginLinkRequest, Revoked, SessionInfo, SessionLogin,
};
use dwell_contract::ErrorBody;
use dwell_store::{LoginGrant, LoginRefusal};

use crate::auth::{hash_key, random_hex};
use crate::auth::{principal_of_key, KeyLookup, Principal};
use crate::credential::Credential;
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::session;
use crate::AppState;

/// How long a login link is valid by default, and at most.
const LINK_TTL_SECS: u64 = 300;
const LINK_TTL_MAX_SECS: u64 = 86_400;

/// The prefix of a login link's token.
const TOKEN_PREFIX: &str = "dwl_";

fn view(s: &dwell_store::ConsoleSession, current: Option<&str>) -> ConsoleSession {
    ConsoleSession {
        id: s.id.clone(),
        tenant: s.grant.tenant.clone(),
        admin: s.grant.admin,
        key_id: s.grant.key_id.clone(),
        created_at: s.created_at,
        expires_at: s.expires_at,
        idle_timeout_secs: (s.idle_ms / 1000) as u64,
        last_seen_at: s.last_seen_at,
        user_agent: s.user_agent.clone(),
        current: current == Some(s.id.as_str()),
    }
}

#[utoipa::path(post, path = "/v1/console/logins", tag = "console",
    summary = "A one-time login link to the web console for the caller (what `dwell ui` prints)",
    description = "The link logs a browser in once, as the caller (an admin acting for a tenant: as that tenant), and is refused after use or after `valid_secs` (default 300). 409 when the daemon serves no TCP listener for browsers to reach; 403 for a console session (links come from API keys and the unix socket).",
    request_body(content = Option<LoginLinkRequest>),
    responses((status = 201, body = LoginLink), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn login_link(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    cred: Option<Extension<Credential>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<LoginLink>)> {
    // A session must not mint its own successors: links would outlive its
    // logout, revocation and end.
    if session_of(cred).is_some() {
        return Err(ApiError::new(
            403,
            "permission_denied",
            "a console session cannot make login links; use `dwell ui` with an API key or on the daemon's host",
        ));
    }
    let req: LoginLinkRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LoginLinkRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "bad login link request: {e}; send {{\"valid_secs\": 300}} or nothing"
            ))
        })?
    };
    let secs = req.valid_secs.unwrap_or(LINK_TTL_SECS);
    if secs == 0 || secs > LINK_TTL_MAX_SECS {
        return Err(ApiError::bad_request(format!(
            "valid_secs {secs} is out of range: a login link is valid for 1 to {LINK_TTL_MAX_SECS} seconds"
        )));
    }
    let Some(base) = st.console.url.as_deref() else {
        return Err(ApiError::new(
            409,
            "no_console",
            "the web console is served on the daemon's TCP listener, and this daemon has none: \
             start it with `dwell serve --listen 127.0.0.1:7070` (and --console-url if browsers reach it \
             by another address)",
        ));
    };
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32));
    let grant = LoginGrant {
        tenant: p.tenant.clone(),
        admin: p.admin,
        key_id: p.key_id.clone(),
    };
    let ttl_ms = (secs * 1000) as i64;
    st.ctl
        .add_console_login(&hash_key(&token), &grant, ttl_ms)?;
    Ok((
        StatusCode::CREATED,
        Json(LoginLink {
            // In the fragment: browsers send it to no server and put it in
            // no Referer; the page spends it with POST /v1/console/sessions.
            url: format!("{}/ui/login#token={token}", base.trim_end_matches('/')),
            expires_at: dwell_store::now_ms() + ttl_ms,
            tenant: p.tenant,
            admin: p.admin,
        }),
    ))
}

#[utoipa::path(post, path = "/v1/console/sessions", tag = "console",
    summary = "Log in to the web console: spend a login link's token, or show an API key; sets the session cookie",
    description = "Needs no other authentication. The answer sets an HttpOnly, SameSite=Strict cookie and carries the session's CSRF token, which every later state-changing request of the session sends in X-Dwell-CSRF. A used, expired or unknown token is refused (401); so is a request from another site's page (403).",
    request_body = SessionLogin,
    security(()),
    responses((status = 201, body = SessionInfo), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn login(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<crate::extract::Json<SessionLogin>, crate::extract::BodyRejection>,
) -> ApiResult<Response> {
    session::same_origin(&headers, false)?;
    let crate::extract::Json(b) = body.map_err(|e| {
        ApiError::bad_request(format!(
            "bad login request: {}; send {{\"token\": \"dwl_...\"}} (from `dwell ui`) or {{\"api_key\": \"dwk_...\"}} as application/json",
            e.detail
        ))
    })?;
    let grant = match (b.token.as_deref(), b.api_key.as_deref()) {
        (Some(token), None) => match st.ctl.take_console_login(&hash_key(token.trim()))? {
            Ok(g) => g,
            Err(why) => {
                let what = match why {
                    LoginRefusal::Used => "was already used (each link logs in once)",
                    LoginRefusal::Expired => "has expired",
                    LoginRefusal::Unknown => "is not valid",
                };
                return Err(ApiError::unauthorized(format!(
                    "this login link {what}; run `dwell ui` for a new one, or log in with an API key"
                )));
            }
        },
        (None, Some(key)) => {
            match principal_of_key(&st.ctl, key.trim())? {
                KeyLookup::Valid(p) => LoginGrant {
                    tenant: p.tenant,
                    admin: p.admin,
                    key_id: p.key_id,
                },
                KeyLookup::Revoked { id } => {
                    return Err(ApiError::unauthorized(crate::auth::revoked_message(&id)))
                }
                KeyLookup::Unknown => return Err(ApiError::unauthorized(
                    "the API key is not valid; check it (the admin key is in <data-dir>/admin.key)",
                )),
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "send exactly one of \"token\" (a `dwell ui` link's) or \"api_key\"",
            ))
        }
    };
    let user_agent: String = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect();
    let secret = random_hex(32);
    let id = format!("cs-{}", random_hex(8));
    let s = st.ctl.add_console_session(
        &id,
        &hash_key(&secret),
        &random_hex(32),
        &grant,
        st.console.session_ttl.as_millis() as i64,
        st.console.idle_timeout.as_millis() as i64,
        &user_agent,
    )?;
    // Unauthenticated routes are not audited by the middleware: a login is
    // recorded here, under the key (or `local`) that made it possible.
    if let Err(e) = st.ctl.audit_request(
        &grant.tenant,
        &grant.key_id,
        "POST",
        "/v1/console/sessions",
        201,
    ) {
        tracing::warn!("audit log: {e}");
    }
    let info = SessionInfo {
        session: view(&s, Some(&s.id)),
        csrf_token: s.csrf.clone(),
    };
    let mut res = (StatusCode::CREATED, Json(info)).into_response();
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&st.console, Some(&secret)),
    );
    res.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    Ok(res)
}

/// The console session making the request, if a session is (not an API
/// key or the unix socket).
fn session_of(cred: Option<Extension<Credential>>) -> Option<dwell_store::ConsoleSession> {
    match cred {
        Some(Extension(Credential::Session(s))) => Some(s),
        _ => None,
    }
}

fn own(cred: Option<Extension<Credential>>) -> ApiResult<dwell_store::ConsoleSession> {
    session_of(cred).ok_or_else(|| {
        ApiError::not_found(
            "this request was not made by a console session (it used an API key or the unix socket); \
             log in at /ui/",
        )
    })
}

#[utoipa::path(get, path = "/v1/console/session", tag = "console",
    summary = "The console session making this request, with its CSRF token",
    responses((status = 200, body = SessionInfo), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn current(cred: Option<Extension<Credential>>) -> ApiResult<Response> {
    let s = own(cred)?;
    let info = SessionInfo {
        session: view(&s, Some(&s.id)),
        csrf_token: s.csrf.clone(),
    };
    let mut res = Json(info).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
    Ok(res)
}

#[utoipa::path(delete, path = "/v1/console/session", tag = "console",
    summary = "Log out: revoke the console session making this request and clear its cookie",
    responses((status = 204), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn logout(
    State(st): State<AppState>,
    cred: Option<Extension<Credential>>,
) -> ApiResult<Response> {
    let s = own(cred)?;
    st.ctl
        .revoke_console_sessions(&s.grant.tenant, Some(&s.id))?;
    let mut res = StatusCode::NO_CONTENT.into_response();
    res.headers_mut()
        .insert(header::SET_COOKIE, session::set_cookie(&st.console, None));
    Ok(res)
}

#[utoipa::path(get, path = "/v1/console/sessions", tag = "console",
    summary = "The tenant's live console sessions, newest first",
    responses((status = 200, body = Vec<ConsoleSession>), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn list(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    cred: Option<Extension<Credential>>,
) -> ApiResult<Json<Vec<ConsoleSession>>> {
    let current = session_of(cred).map(|s| s.id);
    Ok(Json(
        st.ctl
            .console_sessions(&p.tenant)?
            .iter()
            .map(|s| view(s, current.as_deref()))
            .collect(),
    ))
}

#[utoipa::path(delete, path = "/v1/console/sessions/{session}", tag = "console",
    summary = "Revoke one of the tenant's console sessions: its next request is refused",
    params(("session" = String, Path, description = "The session's id (`cs-...`)")),
    responses((status = 204), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn revoke(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
    cred: Option<Extension<Credential>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if st.ctl.revoke_console_sessions(&p.tenant, Some(&id))? == 0 {
        return Err(ApiError::not_found(format!(
            "no live console session {id:?} in tenant {}; list them with `dwell ui sessions`",
            p.tenant
        )));
    }
    let mut res = StatusCode::NO_CONTENT.into_response();
    if session_of(cred).is_some_and(|s| s.id == id) {
        res.headers_mut()
            .insert(header::SET_COOKIE, session::set_cookie(&st.console, None));
    }
    Ok(res)
}

#[utoipa::path(delete, path = "/v1/console/sessions", tag = "console",
    summary = "Revoke every console session of the tenant",
    responses((status = 200, body = Revoked), (status = "default", description = "Error", body = ErrorBody)))]
pub async fn revoke_all(
    State(st): State<AppState>,
    Extension(p): Extension<Principal>,
) -> ApiResult<Json<Revoked>> {
    Ok(Json(Revoked {
        revoked: st.ctl.revoke_console_sessions(&p.tenant, None)?,
    }))
}
