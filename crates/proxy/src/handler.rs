//! One request: find the sandbox port its host names, check access, reach
//! the port through the agent, and pass the request on (or pipe bytes for
//! an upgrade or a CONNECT).
//!
//! What a client without access learns: nothing about names. An unknown
//! host, an unknown sandbox, a port that is not exposed and a private port
//! asked for by name without valid credentials all get the same 404; only
//! the id form (`PORT-ID.D`, an unguessable id) answers 401 for a private
//! port. Pages naming sandbox and port (502, 503) are for clients with
//! access.
//!
//! Cross-site requests: every preview host shares one registrable domain,
//! so a page another sandbox serves is "same-site" with this one and the
//! browser sends this host's (SameSite=Lax) cookie with its scripted POSTs
//! and WebSocket handshakes. A request authorized by the cookie alone that
//! is not a safe method (GET, HEAD, OPTIONS) or is an upgrade must
//! therefore come from this very origin: an `Origin` header naming another
//! origin, or `Sec-Fetch-Site` other than `same-origin`/`none`, gets 403.
//! Token headers are not sent by browsers on their own and are not checked.

use std::net::SocketAddr;
use std::sync::Arc;

use dwell_contract::console::{SECURE_SESSION_COOKIE, SESSION_COOKIE};
use dwell_control::ports::{parse_host, HostTarget};
use dwell_control::{Error as CtlError, PortRoute};
use dwell_proto::{ErrorKind, TcpTunnel};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::sync::OwnedSemaphorePermit;

use crate::pages::{login_redirect, page};
use crate::{
    Body, BoxError, Shared, CLIENT_HEADER, CLIENT_TLS_HEADER, CONNECT_UPGRADE, COOKIE,
    E2B_TOKEN_HEADER, ENVD_PORT, LOGIN_PARAM, TOKEN_HEADER,
};
use dwell_api::forward::{NOT_OWNER_HEADER, PLANE_HEADER};
use dwell_control::controller::Elsewhere;

/// A kept upstream HTTP connection of one client connection.
struct Upstream<B> {
    sandbox: String,
    port: u16,
    sender: SendRequest<B>,
    _permit: OwnedSemaphorePermit,
}

/// What one client connection keeps between its requests.
pub(crate) struct ConnState<B> {
    peer: SocketAddr,
    /// Whether the client came over TLS (`X-Forwarded-Proto`).
    tls: bool,
    /// Armed by an envd handler to have the connection reset.
    reset: dwell_envd::ConnectionReset,
    upstream: tokio::sync::Mutex<Option<Upstream<B>>>,
    /// Whether the request came from another node of the cluster (over
    /// its node listener): served here, never forwarded again.
    from_node: bool,
}

impl<B> ConnState<B> {
    pub(crate) fn new(
        peer: SocketAddr,
        tls: bool,
        reset: dwell_envd::ConnectionReset,
    ) -> ConnState<B> {
        ConnState {
            peer,
            tls,
            reset,
            upstream: tokio::sync::Mutex::new(None),
            from_node: false,
        }
    }

    /// The state of one request another node forwarded (its client's
    /// address and scheme come in headers the forwarding node set).
    pub(crate) fn forwarded(
        peer: SocketAddr,
        tls: bool,
        reset: dwell_envd::ConnectionReset,
    ) -> ConnState<B> {
        ConnState {
            from_node: true,
            ..ConnState::new(peer, tls, reset)
        }
    }
}

/// A request body the proxy passes on: hyper's own for its listener, axum's
/// for requests other nodes forward.
pub(crate) trait ReqBody:
    hyper::body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

impl<T> ReqBody for T where
    T: hyper::body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static
{
}

/// A refusal: the page to answer with.
struct Refusal(Box<Response<Body>>);

impl Refusal {
    fn new(r: Response<Body>) -> Refusal {
        Refusal(Box::new(r))
    }
}

type Answer = Result<Response<Body>, Refusal>;

fn wants_html(h: &HeaderMap) -> bool {
    h.get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// The host a request is for, lower-case, without a port.
fn request_host<B: ReqBody>(req: &Request<B>) -> Option<String> {
    let (host, _) = split_authority(&raw_authority(req)?);
    (!host.is_empty()).then_some(host)
}

/// Every value of the cookies named `name` (another host of the domain may
/// have set one too, so there can be several).
fn cookie_values(h: &HeaderMap, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    out.push(val.to_string());
                }
            }
        }
    }
    out
}

/// The host and port as the client wrote them (`Host`, or the authority
/// of a CONNECT or absolute-form request).
fn raw_authority<B: ReqBody>(req: &Request<B>) -> Option<String> {
    if req.method() == Method::CONNECT {
        return req.uri().authority().map(|a| a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
}

/// Splits `host[:port]` into the lower-case host (no trailing dot) and the
/// port, if one is written.
fn split_authority(a: &str) -> (String, Option<u16>) {
    let a = a.trim().trim_end_matches('.');
    let (h, p) = match a.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse().ok())
        }
        _ => (a, None),
    };
    (h.trim_end_matches('.').to_ascii_lowercase(), p)
}

/// Whether an `Origin` value is the origin of the request to `authority`
/// (`scheme://host[:port]` the client saw; the scheme may be https when a
/// front proxy terminates TLS, the port is then that scheme's default
/// unless written).
fn origin_matches(origin: &str, authority: &str) -> bool {
    let Some((scheme, rest)) = origin.trim().split_once("://") else {
        return false; // `null` and the like
    };
    let default = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return false,
    };
    if rest.contains(['/', '?', '#', '@']) {
        return false;
    }
    let (oh, op) = split_authority(rest);
    let (rh, rp) = split_authority(authority);
    !oh.is_empty() && oh == rh && op.unwrap_or(default) == rp.unwrap_or(default)
}

/// Whether a browser made this request from the page's own origin (or
/// from no page at all), judged by `Sec-Fetch-Site` and `Origin` when sent;
/// a client that sends neither is not a browser running another site's
/// script.
fn same_origin(h: &HeaderMap, authority: &str) -> bool {
    let site_ok = h
        .get("sec-fetch-site")
        .map(|v| v.to_str().is_ok_and(|s| s == "same-origin" || s == "none"))
        .unwrap_or(true);
    let origin_ok = h
        .get(header::ORIGIN)
        .map(|v| v.to_str().is_ok_and(|o| origin_matches(o, authority)))
        .unwrap_or(true);
    site_ok && origin_ok
}

/// Whether a request can change state or open a two-way channel (and so
/// must not be made by another site's script with this host's cookie).
fn unsafe_request<B: ReqBody>(req: &Request<B>) -> bool {
    !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || is_upgrade(req.headers())
}

/// The login parameter of a query and the query without it.
fn split_login(query: Option<&str>) -> (Option<String>, String) {
    let Some(q) = query else {
        return (None, String::new());
    };
    let mut token = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    let mut kept = false;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k == LOGIN_PARAM {
            token = Some(v.into_owned());
        } else {
            rest.append_pair(&k, &v);
            kept = true;
        }
    }
    (token, if kept { rest.finish() } else { String::new() })
}

/// Handles one request; never fails (errors are pages).
pub(crate) async fn handle<B: ReqBody>(
    shared: Arc<Shared>,
    conn: Arc<ConnState<B>>,
    req: Request<B>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let html = wants_html(req.headers());
    Ok(match route_and_serve(&shared, &conn, req, html).await {
        Ok(r) => r,
        Err(Refusal(r)) => *r,
    })
}

/// The one 404 for every host that serves nothing to this client: unknown
/// host or sandbox, a port not exposed, a private port by name without
/// access. It says nothing about which of these it is.
fn not_found(html: bool, host: &str, domain: &str) -> Refusal {
    Refusal::new(page(
        StatusCode::NOT_FOUND,
        html,
        "Not Found",
        &format!(
            "no sandbox port is served at {host} to this client. Host names look like \
             PORT-ID.{domain} (or PORT-NAME.{domain}); `dwell port SANDBOX PORT` exposes a \
             port and prints its URL, token and a one-time login link"
        ),
    ))
}

async fn route_and_serve<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState<B>>,
    req: Request<B>,
    html: bool,
) -> Answer {
    let domain = shared.opts.domain.clone();
    let Some(host) = request_host(&req) else {
        return Err(Refusal::new(page(
            StatusCode::BAD_REQUEST,
            html,
            "Bad Request",
            &format!("the request names no host; ask for http://PORT-ID.{domain}/"),
        )));
    };
    // The E2B hosts of the domain: `api.D` and `sandbox.D`.
    if let Some(label) = host
        .strip_suffix(domain.as_str())
        .and_then(|l| l.strip_suffix('.'))
    {
        match (label, &shared.opts.api) {
            ("api", Some(api)) => return Ok(serve_router(api.clone(), conn, req).await),
            ("sandbox", _) => return sandbox_host(shared, conn, req, html).await,
            _ => {}
        }
    }
    // The E2B data plane by id (as the SDKs reach it): envd checks the
    // sandbox's access token itself, the same way for every id, so that
    // an id that does not exist is not told apart from a wrong token.
    if let Some(envd) = &shared.opts.envd {
        if let Some((ENVD_PORT, HostTarget::Id(_))) = parse_host(&host, &domain) {
            return Ok(serve_router(envd.clone(), conn, req).await);
        }
    }
    let route = lookup(shared, &host, html).await?;
    if let Some(owner) = owner_of(shared, conn, &route, html).await? {
        return to_owner(shared, conn, owner, req).await;
    }
    serve_route(shared, conn, route, &host, true, req, html).await
}

/// The node that owns the route's sandbox, when it is not this one (in a
/// cluster, for a client of this node's proxy); a request that another
/// node forwarded for a sandbox this one does not own (moved meanwhile)
/// is refused with 409 and the owner's name.
async fn owner_of<B>(
    shared: &Arc<Shared>,
    conn: &ConnState<B>,
    route: &PortRoute,
    html: bool,
) -> Result<Option<Elsewhere>, Refusal> {
    if shared.opts.forward.is_none() && !conn.from_node {
        return Ok(None);
    }
    let ctl = shared.ctl.clone();
    let (tenant, id) = (route.sandbox.tenant.clone(), route.sandbox.id.clone());
    let owner = match tokio::task::spawn_blocking(move || ctl.owner(&tenant, &id)).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            return Err(Refusal::new(page(
                StatusCode::SERVICE_UNAVAILABLE,
                html,
                "Service Unavailable",
                &e.to_string(),
            )))
        }
        Err(e) => {
            return Err(Refusal::new(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                html,
                "Internal Server Error",
                &format!(
                    "the owner lookup of sandbox {} failed: {e}",
                    route.sandbox.name
                ),
            )))
        }
    };
    match owner {
        Some(e) if conn.from_node => {
            let mut r = page(
                StatusCode::CONFLICT,
                html,
                "Conflict",
                &format!(
                    "sandbox {} is owned by node {} now; retry the request",
                    route.sandbox.name, e.node
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&e.node) {
                r.headers_mut().insert(NOT_OWNER_HEADER, v);
            }
            Err(Refusal::new(r))
        }
        o => Ok(o),
    }
}

/// The whole request, to the proxy of the node that owns its sandbox
/// (access checks included: they are that node's). The client's address
/// and scheme go along in [`CLIENT_HEADER`] and [`CLIENT_TLS_HEADER`]. A
/// `CONNECT` goes as an upgrade to [`CONNECT_UPGRADE`] (the node channel
/// carries upgrades); once that node switched, the client gets its 200.
async fn to_owner<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &ConnState<B>,
    owner: Elsewhere,
    mut req: Request<B>,
) -> Answer {
    let Some(forward) = shared.opts.forward.clone() else {
        return Err(Refusal::new(page(
            StatusCode::INTERNAL_SERVER_ERROR,
            false,
            "Internal Server Error",
            &format!(
                "sandbox port owned by node {} and no way to reach it",
                owner.node
            ),
        )));
    };
    let connect = req.method() == Method::CONNECT;
    if connect {
        let authority = raw_authority(&req).unwrap_or_default();
        *req.method_mut() = Method::GET;
        *req.uri_mut() = Uri::from_static("/");
        let h = req.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&authority) {
            h.insert(header::HOST, v);
        }
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static(CONNECT_UPGRADE));
    }
    let h = req.headers_mut();
    dwell_api::forward::drop_node_headers(h);
    h.insert(PLANE_HEADER, HeaderValue::from_static("proxy"));
    if let Ok(v) = HeaderValue::from_str(&conn.peer.ip().to_string()) {
        h.insert(CLIENT_HEADER, v);
    }
    h.insert(
        CLIENT_TLS_HEADER,
        HeaderValue::from_static(if conn.tls { "1" } else { "0" }),
    );
    let resp = forward(owner, req.map(axum::body::Body::new)).await;
    if connect && resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Response::new(crate::pages::full("")));
    }
    Ok(resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
}

/// Whether a request another node forwarded stands for a `CONNECT`
/// ([`to_owner`]).
fn connect_upgrade<B>(conn: &ConnState<B>, req: &Request<B>) -> bool {
    conn.from_node
        && req.method() == Method::GET
        && req.headers().get(header::UPGRADE).is_some_and(|v| {
            v.as_bytes()
                .eq_ignore_ascii_case(CONNECT_UPGRADE.as_bytes())
        })
}

/// The route of a `PORT-ID.D` / `PORT-NAME.D` host, or the 404.
async fn lookup(shared: &Arc<Shared>, host: &str, html: bool) -> Result<PortRoute, Refusal> {
    let domain = shared.opts.domain.clone();
    let ctl = shared.ctl.clone();
    let (h, d) = (host.to_string(), domain.clone());
    match tokio::task::spawn_blocking(move || ctl.port_route(&h, &d)).await {
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => Err(not_found(html, host, &domain)),
        Ok(Err(e)) => {
            tracing::warn!("port proxy: looking up {host} failed: {e}");
            Err(Refusal::new(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                html,
                "Internal Server Error",
                "the daemon could not look the sandbox up; see its log",
            )))
        }
        Err(e) => {
            tracing::warn!("port proxy: the lookup of {host} failed: {e}");
            Err(not_found(html, host, &domain))
        }
    }
}

/// E2B's routing header naming the sandbox on `sandbox.D`.
const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// E2B's routing header naming the port on `sandbox.D`.
const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";

/// `sandbox.D`: the sandbox and port come from E2B's routing headers.
/// Port 49983 goes to envd (when served); another port is that sandbox's
/// exposed port, by id only and with token headers only (a cookie of this
/// shared host name would be one for every sandbox).
async fn sandbox_host<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState<B>>,
    req: Request<B>,
    html: bool,
) -> Answer {
    let domain = shared.opts.domain.clone();
    // (Read before any wait: a request body need not be shareable.)
    let (id, port) = {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        (header(SANDBOX_ID_HEADER), header(SANDBOX_PORT_HEADER))
    };
    let Some(id) = id else {
        return Err(Refusal::new(page(
            StatusCode::BAD_REQUEST,
            html,
            "Bad Request",
            &format!(
                "requests to sandbox.{domain} name their sandbox in the E2b-Sandbox-Id header \
                 and its port in E2b-Sandbox-Port (as the E2B SDKs do); or ask for \
                 PORT-ID.{domain}"
            ),
        )));
    };
    let port = match port {
        None => ENVD_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(Refusal::new(page(
                    StatusCode::BAD_REQUEST,
                    html,
                    "Bad Request",
                    &format!("E2b-Sandbox-Port {p:?} is not a port number (1-65535)"),
                )))
            }
        },
    };
    if port == ENVD_PORT {
        if let Some(envd) = &shared.opts.envd {
            return Ok(serve_router(envd.clone(), conn, req).await);
        }
    }
    // Ids only: a name here would tell who has a sandbox of that name.
    let host = format!("{port}-{id}.{domain}");
    if !dwell_control::ids::looks_like_id(&id) {
        return Err(not_found(html, &format!("sandbox.{domain}"), &domain));
    }
    let route = lookup(shared, &host, html).await?;
    if let Some(owner) = owner_of(shared, conn, &route, html).await? {
        return to_owner(shared, conn, owner, req).await;
    }
    serve_route(shared, conn, route, &host, false, req, html).await
}

/// Serves a found route: access checks, then the request. `cookies`:
/// whether login links and the access cookie count (not on `sandbox.D`).
async fn serve_route<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState<B>>,
    route: PortRoute,
    host: &str,
    cookies: bool,
    req: Request<B>,
    html: bool,
) -> Answer {
    let domain = shared.opts.domain.clone();
    let host = host.to_string();
    let Some(exposure) = &route.exposure else {
        return Err(not_found(html, &host, &domain));
    };
    if !exposure.public {
        // A one-time link (or the token itself) in the query: a cookie,
        // and back to the clean URL.
        let (token, rest) = split_login(req.uri().query());
        if let (Some(token), true) = (token, cookies) {
            return login(shared, &route, &host, &token, req.uri(), &rest, html);
        }
        match authorized(shared, &route, &host, req.headers(), cookies) {
            Auth::Token => {}
            Auth::Cookie => {
                let authority = raw_authority(&req).unwrap_or_default();
                if unsafe_request(&req) && !same_origin(req.headers(), &authority) {
                    return Err(Refusal::new(page(
                        StatusCode::FORBIDDEN,
                        html,
                        "Forbidden",
                        &format!(
                            "this {} request comes from another site's page (its Origin or \
                             Sec-Fetch-Site header says so) and carries only the access cookie \
                             of this port; only pages of this host may make such requests with \
                             it. Scripts and tools send the X-Dwell-Token header instead",
                            if is_upgrade(req.headers()) {
                                "upgrade (WebSocket)"
                            } else {
                                req.method().as_str()
                            }
                        ),
                    )));
                }
            }
            Auth::None if !route.by_id => return Err(not_found(html, &host, &domain)),
            Auth::None => {
                return Err(Refusal::new(page(
                    StatusCode::UNAUTHORIZED,
                    html,
                    "Unauthorized",
                    &format!(
                        "port {} of this sandbox is private: send its token in the X-Dwell-Token \
                         header, or open the one-time link `dwell port SANDBOX {}` prints",
                        route.port, route.port
                    ),
                )));
            }
        }
    }
    if req.method() == Method::CONNECT || connect_upgrade(conn, &req) {
        return connect(shared, &route, req, html).await;
    }
    if is_upgrade(req.headers()) {
        return upgrade(shared, conn, &route, req, html).await;
    }
    forward(shared, conn, &route, req, html).await
}

/// What grants a request access to a private port.
enum Auth {
    /// Nothing valid.
    None,
    /// A token header (browsers never send it on their own).
    Token,
    /// Only the login cookie (browsers do send it on their own).
    Cookie,
}

/// Whether the request carries a valid token, or any valid cookie, for
/// `route`.
fn authorized(
    shared: &Shared,
    route: &PortRoute,
    host: &str,
    h: &HeaderMap,
    cookies: bool,
) -> Auth {
    let Some(hash) = route.exposure.as_ref().and_then(|e| e.token_hash.as_ref()) else {
        return Auth::None;
    };
    for name in [TOKEN_HEADER, E2B_TOKEN_HEADER] {
        if let Some(t) = h.get(name).and_then(|v| v.to_str().ok()) {
            if dwell_control::ports::token_matches(hash, t.trim()) {
                return Auth::Token;
            }
        }
    }
    if cookies
        && cookie_values(h, COOKIE)
            .iter()
            .any(|c| shared.ctl.port_cookie_valid(route, host, c))
    {
        Auth::Cookie
    } else {
        Auth::None
    }
}

fn login(
    shared: &Shared,
    route: &PortRoute,
    host: &str,
    token: &str,
    uri: &Uri,
    rest: &str,
    html: bool,
) -> Answer {
    let hash = route
        .exposure
        .as_ref()
        .and_then(|e| e.token_hash.clone())
        .unwrap_or_default();
    let ok = dwell_control::ports::token_matches(&hash, token)
        || shared.ctl.redeem_port_login(route, token);
    if !ok && !route.by_id {
        return Err(not_found(html, host, &shared.opts.domain));
    }
    if !ok {
        return Err(Refusal::new(page(
            StatusCode::UNAUTHORIZED,
            html,
            "Unauthorized",
            &format!(
                "this link is not valid: it was used already, has expired (links last {} \
                 minutes), or the port was exposed again since. `dwell port SANDBOX PORT` \
                 prints a new one",
                dwell_control::ports::LOGIN_LIFETIME_MS / 60_000
            ),
        )));
    }
    let cookie = shared.ctl.port_cookie(route, host).map_err(|e| {
        Refusal::new(page(
            StatusCode::INTERNAL_SERVER_ERROR,
            html,
            "Internal Server Error",
            &format!("cannot sign the access cookie: {e}"),
        ))
    })?;
    let location = local_location(uri.path(), rest);
    let max_age = dwell_control::ports::COOKIE_LIFETIME_MS / 1000;
    Ok(login_redirect(
        &location,
        &format!("{COOKIE}={cookie}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"),
    ))
}

/// Where a login sends the browser: a path on this host. `//x` and `/\\x`
/// would be read as another host, so the path gets exactly one leading `/`.
fn local_location(path: &str, rest: &str) -> String {
    let path = format!("/{}", path.trim_start_matches(['/', '\\']));
    if rest.is_empty() {
        path
    } else {
        format!("{path}?{rest}")
    }
}

/// Removes the `Set-Cookie`s of a server's answer that would set the
/// proxy's own cookie (name compared case-insensitively), so a sandbox
/// cannot plant or override the login cookie of this or any other host.
fn strip_our_cookie(h: &mut HeaderMap) {
    let kept: Vec<HeaderValue> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let name = v
                .as_bytes()
                .split(|b| *b == b'=' || *b == b';')
                .next()
                .unwrap_or_default();
            let name = name.trim_ascii();
            // Nor may it set the web console's session cookie, which a
            // browser would send to the console of a sibling domain.
            ![COOKIE, SESSION_COOKIE, SECURE_SESSION_COOKIE]
                .iter()
                .any(|ours| name.eq_ignore_ascii_case(ours.as_bytes()))
        })
        .cloned()
        .collect();
    if kept.len() == h.get_all(header::SET_COOKIE).iter().count() {
        return;
    }
    h.remove(header::SET_COOKIE);
    for v in kept {
        h.append(header::SET_COOKIE, v);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|s| {
                s.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Opens a tunnel to the route's port: a permit, the agent (waking the
/// sandbox), then a connection inside.
async fn tunnel(
    shared: &Shared,
    route: &PortRoute,
    html: bool,
) -> Result<(TcpTunnel, OwnedSemaphorePermit), Refusal> {
    let sb = &route.sandbox;
    let Some(permit) = shared.permit(&sb.id) else {
        return Err(Refusal::new(page(
            StatusCode::SERVICE_UNAVAILABLE,
            html,
            "Too Many Connections",
            &format!(
                "sandbox {} already has {} proxied connections open; close some and retry",
                sb.name, shared.opts.per_sandbox
            ),
        )));
    };
    let client = match shared
        .ctl
        .agent_for(&sb.tenant, &sb.id, "proxied request")
        .await
    {
        Ok((_, c)) => c,
        Err(CtlError::NotFound(_)) => {
            return Err(not_found(html, &sb.id, &shared.opts.domain));
        }
        // Refused by its state (stopped, or paused without auto-resume):
        // every such error is a 409 of the control plane.
        Err(e) if e.status() == 409 => {
            return Err(Refusal::new(page(
                StatusCode::SERVICE_UNAVAILABLE,
                html,
                "Sandbox Not Running",
                &format!(
                    "{e}; start or resume it (`dwell start {0}` / `dwell resume {0}`)",
                    sb.name
                ),
            )));
        }
        Err(e) => {
            return Err(Refusal::new(page(
                StatusCode::BAD_GATEWAY,
                html,
                "Bad Gateway",
                &format!("cannot reach the agent of sandbox {}: {e}", sb.name),
            )));
        }
    };
    let mut r = client.connect_tcp("127.0.0.1", route.port).await;
    if matches!(&r, Err(e) if e.remote_kind() == Some(ErrorKind::ConnectionRefused)) {
        // A server bound to the IPv6 loopback only.
        if let Ok(t) = client.connect_tcp("::1", route.port).await {
            r = Ok(t);
        }
    }
    match r {
        Ok(t) => Ok((t, permit)),
        Err(e) => {
            if !client.is_connected() {
                shared.ctl.agent_failed(&sb.id).await;
            }
            let detail = match e.remote_kind() {
                Some(ErrorKind::ConnectionRefused) => format!(
                    "nothing listens on port {port} inside sandbox {name}; start your server \
                     bound to 0.0.0.0 or 127.0.0.1 (for example `dwell exec -d {name} -- python3 \
                     -m http.server {port}`)",
                    port = route.port,
                    name = sb.name
                ),
                _ => format!(
                    "cannot connect to port {} inside sandbox {}: {e}",
                    route.port, sb.name
                ),
            };
            let status = if e.remote_kind() == Some(ErrorKind::TooManyStreams) {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            Err(Refusal::new(page(status, html, "Bad Gateway", &detail)))
        }
    }
}

/// `CONNECT`: 200, then raw bytes both ways.
async fn connect<B: ReqBody>(
    shared: &Arc<Shared>,
    route: &PortRoute,
    req: Request<B>,
    html: bool,
) -> Answer {
    let (tunnel, permit) = tunnel(shared, route, html).await?;
    let idle = shared.opts.idle_timeout;
    let what = format!("CONNECT to port {} of {}", route.port, route.sandbox.name);
    // Another node's CONNECT comes as an upgrade: it switches with a 101.
    let switch = req.method() != Method::CONNECT;
    tokio::spawn(async move {
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            Ok(up) => {
                if let Err(e) = crate::pipe(TokioIo::new(up), tunnel, idle).await {
                    tracing::debug!("{what} ended: {e}");
                }
            }
            Err(e) => tracing::debug!("{what}: the client did not switch: {e}"),
        }
    });
    let mut resp = Response::new(crate::pages::full(""));
    if switch {
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static(CONNECT_UPGRADE));
    }
    Ok(resp)
}

/// Headers that concern one hop, never passed on.
const HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Removes hop-by-hop headers (those `Connection` names too); keeps
/// `Connection`/`Upgrade` when `upgrade`.
fn strip_hop(h: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(upgrade && n == header::UPGRADE))
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP {
        if upgrade && n == "connection" {
            continue;
        }
        h.remove(n);
    }
    if !upgrade {
        h.remove(header::UPGRADE);
    } else {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// The request as the sandbox's server gets it: origin-form, no proxy
/// credentials, `X-Forwarded-*` set (`X-Forwarded-Host`: the client's
/// host), `Host` replaced when the route's exposure names one.
fn outbound<B: ReqBody>(
    conn: &ConnState<B>,
    route: &PortRoute,
    mut req: Request<B>,
    upgrade: bool,
) -> Request<B> {
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Ok(u) = pq.parse::<Uri>() {
        *req.uri_mut() = u;
    }
    let host = req.headers().get(header::HOST).cloned();
    let h = req.headers_mut();
    strip_hop(h, upgrade);
    h.remove(TOKEN_HEADER);
    h.remove(E2B_TOKEN_HEADER);
    // Our cookie stays ours.
    let cookies: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with(&format!("{COOKIE}=")))
        .map(str::to_string)
        .collect();
    h.remove(header::COOKIE);
    if !cookies.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cookies.join("; ")) {
            h.insert(header::COOKIE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&conn.peer.ip().to_string()) {
        h.insert("x-forwarded-for", v);
    }
    if let Some(host) = host {
        h.insert("x-forwarded-host", host);
    }
    if let Some(mask) = route.exposure.as_ref().and_then(|e| e.host_header.as_ref()) {
        // Checked when it was stored: a header value.
        let masked = dwell_control::ports::host_header_for(mask, route.port);
        if let Ok(v) = HeaderValue::from_str(&masked) {
            h.insert(header::HOST, v);
        }
    }
    let proto = if conn.tls { "https" } else { "http" };
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    req
}

fn box_body(b: Incoming) -> Body {
    b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

fn gateway_error(route: &PortRoute, html: bool, e: &str) -> Refusal {
    Refusal::new(page(
        StatusCode::BAD_GATEWAY,
        html,
        "Bad Gateway",
        &format!(
            "the server on port {} inside sandbox {} did not answer over HTTP: {e}",
            route.port, route.sandbox.name
        ),
    ))
}

fn timed_out(shared: &Shared, route: &PortRoute, html: bool) -> Refusal {
    Refusal::new(page(
        StatusCode::GATEWAY_TIMEOUT,
        html,
        "Gateway Timeout",
        &format!(
            "the server on port {} inside sandbox {} did not answer within {} s",
            route.port,
            route.sandbox.name,
            shared.opts.idle_timeout.as_secs()
        ),
    ))
}

/// A plain request, over the client connection's kept upstream connection
/// when it goes to the same port and is still open.
async fn forward<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState<B>>,
    route: &PortRoute,
    req: Request<B>,
    html: bool,
) -> Answer {
    let mut slot = conn.upstream.lock().await;
    let mut up = match slot.take() {
        Some(mut u) if u.sandbox == route.sandbox.id && u.port == route.port => {
            match u.sender.ready().await {
                Ok(()) => Some(u),
                Err(_) => None,
            }
        }
        _ => None,
    };
    if up.is_none() {
        let (t, permit) = tunnel(shared, route, html).await?;
        let (sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(t))
            .await
            .map_err(|e| gateway_error(route, html, &e.to_string()))?;
        tokio::spawn(async move {
            let _ = c.await;
        });
        up = Some(Upstream {
            sandbox: route.sandbox.id.clone(),
            port: route.port,
            sender,
            _permit: permit,
        });
    }
    let mut up = up.expect("set above");
    let req = outbound(conn, route, req, false);
    let resp = tokio::time::timeout(shared.opts.idle_timeout, up.sender.send_request(req)).await;
    let resp = match resp {
        Err(_) => return Err(timed_out(shared, route, html)),
        Ok(Err(e)) => return Err(gateway_error(route, html, &e.to_string())),
        Ok(Ok(r)) => r,
    };
    *slot = Some(up);
    let (mut parts, body) = resp.into_parts();
    strip_hop(&mut parts.headers, false);
    strip_our_cookie(&mut parts.headers);
    // The client's connection is ours (HTTP/1.1, kept alive), whatever
    // the server spoke.
    parts.version = hyper::Version::HTTP_11;
    Ok(Response::from_parts(parts, box_body(body)))
}

/// An `Upgrade` (WebSocket): the handshake over a fresh upstream
/// connection; on 101 the two upgraded connections are piped.
async fn upgrade<B: ReqBody>(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState<B>>,
    route: &PortRoute,
    mut req: Request<B>,
    html: bool,
) -> Answer {
    let (t, permit) = tunnel(shared, route, html).await?;
    let (mut sender, c) = hyper::client::conn::http1::handshake(TokioIo::new(t))
        .await
        .map_err(|e| gateway_error(route, html, &e.to_string()))?;
    tokio::spawn(async move {
        let _ = c.with_upgrades().await;
    });
    let client_side = hyper::upgrade::on(&mut req);
    let req = outbound(conn, route, req, true);
    let mut resp =
        match tokio::time::timeout(shared.opts.idle_timeout, sender.send_request(req)).await {
            Err(_) => return Err(timed_out(shared, route, html)),
            Ok(Err(e)) => return Err(gateway_error(route, html, &e.to_string())),
            Ok(Ok(r)) => r,
        };
    strip_our_cookie(resp.headers_mut());
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop(&mut parts.headers, false);
        parts.version = hyper::Version::HTTP_11;
        return Ok(Response::from_parts(parts, box_body(body)));
    }
    let server_side = hyper::upgrade::on(&mut resp);
    let idle = shared.opts.idle_timeout;
    let what = format!("upgrade to port {} of {}", route.port, route.sandbox.name);
    tokio::spawn(async move {
        let _permit = permit;
        match tokio::try_join!(client_side, server_side) {
            Ok((a, b)) => {
                if let Err(e) = crate::pipe(TokioIo::new(a), TokioIo::new(b), idle).await {
                    tracing::debug!("{what} ended: {e}");
                }
            }
            Err(e) => tracing::debug!("{what}: no switch: {e}"),
        }
    });
    let (parts, _) = resp.into_parts();
    Ok(Response::from_parts(parts, crate::pages::full("")))
}

/// A request served in-process by one of the E2B routers (envd, or the
/// control plane), with `X-Forwarded-Proto` saying how the client came
/// (URLs the routers hand out, like template upload links, use it) and
/// the connection's [`dwell_envd::ConnectionReset`] (a process stream of a
/// sandbox that went away arms it).
async fn serve_router<B: ReqBody>(
    router: axum::Router,
    conn: &ConnState<B>,
    mut req: Request<B>,
) -> Response<Body> {
    use hyper::service::Service;
    let proto = if conn.tls { "https" } else { "http" };
    req.headers_mut()
        .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    req.extensions_mut().insert(conn.reset.clone());
    let svc = hyper_util::service::TowerToHyperService::new(router);
    match svc.call(req).await {
        Ok(r) => r.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_parameter_is_split_off() {
        assert_eq!(split_login(None), (None, String::new()));
        assert_eq!(
            split_login(Some("dwell_token=abc")),
            (Some("abc".into()), String::new())
        );
        assert_eq!(
            split_login(Some("a=1&dwell_token=x.y&b=two+words")),
            (Some("x.y".into()), "a=1&b=two+words".into())
        );
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut plain = h.clone();
        strip_hop(&mut plain, false);
        assert_eq!(plain.len(), 1, "{plain:?}");
        strip_hop(&mut h, true);
        assert_eq!(h.get(header::UPGRADE).unwrap(), "websocket");
        assert_eq!(h.get(header::CONNECTION).unwrap(), "upgrade");
        assert!(h.get("x-private").is_none());
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; dwell_port=v.w; b=2"),
        );
        h.append(
            header::COOKIE,
            HeaderValue::from_static("dwell_port=planted"),
        );
        assert_eq!(cookie_values(&h, COOKIE), ["v.w", "planted"]);
        assert!(cookie_values(&h, "c").is_empty());
    }

    #[test]
    fn origins_must_be_the_requests_own() {
        for (origin, authority, same) in [
            ("http://8080-x.d.test", "8080-x.d.test", true),
            ("http://8080-x.d.test:8081", "8080-X.d.test:8081", true),
            ("https://8080-x.d.test", "8080-x.d.test", true),
            ("http://8080-x.d.test:80", "8080-x.d.test", true),
            ("http://8080-other.d.test:8081", "8080-x.d.test:8081", false),
            ("http://8080-x.d.test:8082", "8080-x.d.test:8081", false),
            ("https://8080-x.d.test", "8080-x.d.test:80", false),
            ("null", "8080-x.d.test", false),
            ("ftp://8080-x.d.test", "8080-x.d.test", false),
            ("http://evil@8080-x.d.test", "8080-x.d.test", false),
        ] {
            assert_eq!(
                origin_matches(origin, authority),
                same,
                "{origin} {authority}"
            );
        }
        let mut h = HeaderMap::new();
        assert!(same_origin(&h, "a.d"), "no browser headers");
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(!same_origin(&h, "a.d"));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h, "a.d"));
        h.insert(header::ORIGIN, HeaderValue::from_static("http://b.d"));
        assert!(!same_origin(&h, "a.d"));
    }

    #[test]
    fn logins_stay_on_this_host() {
        assert_eq!(local_location("/", ""), "/");
        assert_eq!(local_location("//evil.com", ""), "/evil.com");
        assert_eq!(local_location("/\\evil.com", "a=1"), "/evil.com?a=1");
        assert_eq!(local_location("/app/x", "a=1"), "/app/x?a=1");
    }

    #[test]
    fn the_servers_cannot_set_our_cookie() {
        let mut h = HeaderMap::new();
        for c in [
            "dwell_port=x; Domain=d.test",
            "app=1",
            " DWELL_PORT=y",
            "dwell_port",
            "dwell_portal=2",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        strip_our_cookie(&mut h);
        let left: Vec<_> = h.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(left, ["app=1", "dwell_portal=2"]);
    }
}
