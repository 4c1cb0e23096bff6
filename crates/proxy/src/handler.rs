//! One request: find the sandbox port its host names, check access, reach
//! the port through the agent, and pass the request on (or pipe bytes for
//! an upgrade or a CONNECT).

use std::net::SocketAddr;
use std::sync::Arc;

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
    Body, BoxError, Shared, COOKIE, E2B_TOKEN_HEADER, ENVD_PORT, LOGIN_PARAM, TOKEN_HEADER,
};

/// A kept upstream HTTP connection of one client connection.
struct Upstream {
    sandbox: String,
    port: u16,
    sender: SendRequest<Incoming>,
    _permit: OwnedSemaphorePermit,
}

/// What one client connection keeps between its requests.
pub(crate) struct ConnState {
    peer: SocketAddr,
    upstream: tokio::sync::Mutex<Option<Upstream>>,
}

impl ConnState {
    pub(crate) fn new(peer: SocketAddr) -> ConnState {
        ConnState {
            peer,
            upstream: tokio::sync::Mutex::new(None),
        }
    }
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
fn request_host(req: &Request<Incoming>) -> Option<String> {
    let raw = if req.method() == Method::CONNECT {
        req.uri().authority().map(|a| a.as_str().to_string())
    } else {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_string()))
    }?;
    let raw = raw.trim().trim_end_matches('.');
    let host = match raw.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

fn cookie_value(h: &HeaderMap, name: &str) -> Option<String> {
    for v in h.get_all(header::COOKIE) {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.to_string());
                }
            }
        }
    }
    None
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
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let html = wants_html(req.headers());
    Ok(match route_and_serve(&shared, &conn, req, html).await {
        Ok(r) => r,
        Err(Refusal(r)) => *r,
    })
}

fn not_found(html: bool, host: &str, domain: &str) -> Refusal {
    Refusal::new(page(
        StatusCode::NOT_FOUND,
        html,
        "Not Found",
        &format!(
            "no sandbox port is served at {host}. Host names look like PORT-ID.{domain} \
             (or PORT-NAME.{domain}); `dwell port SANDBOX` prints them"
        ),
    ))
}

async fn route_and_serve(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState>,
    req: Request<Incoming>,
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
    let ctl = shared.ctl.clone();
    let (h, d) = (host.clone(), domain.clone());
    let route = match tokio::task::spawn_blocking(move || ctl.port_route(&h, &d)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) => return Err(not_found(html, &host, &domain)),
        Ok(Err(e)) => {
            tracing::warn!("port proxy: looking up {host} failed: {e}");
            return Err(Refusal::new(page(
                StatusCode::INTERNAL_SERVER_ERROR,
                html,
                "Internal Server Error",
                "the daemon could not look the sandbox up; see its log",
            )));
        }
        Err(e) => {
            tracing::warn!("port proxy: the lookup of {host} failed: {e}");
            return Err(not_found(html, &host, &domain));
        }
    };
    if route.port == ENVD_PORT {
        if let Some(envd) = &shared.opts.envd {
            return Ok(serve_envd(envd.clone(), req).await);
        }
    }
    let Some(exposure) = &route.exposure else {
        return Err(Refusal::new(page(
            StatusCode::NOT_FOUND,
            html,
            "Port Not Exposed",
            &format!(
                "port {port} of sandbox {name} is not exposed. Expose it with \
                 `dwell expose {name} {port}` (or `dwell port {name} {port}`)",
                port = route.port,
                name = route.sandbox.name
            ),
        )));
    };
    if !exposure.public {
        // A one-time link (or the token itself) in the query: a cookie,
        // and back to the clean URL.
        let (token, rest) = split_login(req.uri().query());
        if let Some(token) = token {
            return login(shared, &route, &host, &token, req.uri(), &rest, html);
        }
        if !authorized(shared, &route, &host, req.headers()) {
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
    if req.method() == Method::CONNECT {
        return connect(shared, &route, req, html).await;
    }
    if is_upgrade(req.headers()) {
        return upgrade(shared, conn, &route, req, html).await;
    }
    forward(shared, conn, &route, req, html).await
}

/// Whether the request carries a valid token or cookie for `route`.
fn authorized(shared: &Shared, route: &PortRoute, host: &str, h: &HeaderMap) -> bool {
    let Some(hash) = route.exposure.as_ref().and_then(|e| e.token_hash.as_ref()) else {
        return false;
    };
    for name in [TOKEN_HEADER, E2B_TOKEN_HEADER] {
        if let Some(t) = h.get(name).and_then(|v| v.to_str().ok()) {
            if dwell_control::ports::token_matches(hash, t.trim()) {
                return true;
            }
        }
    }
    cookie_value(h, COOKIE).is_some_and(|c| shared.ctl.port_cookie_valid(route, host, &c))
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
    if !ok {
        return Err(Refusal::new(page(
            StatusCode::UNAUTHORIZED,
            html,
            "Unauthorized",
            "this link is not valid: it was used already, has expired (links last 15 minutes), \
             or the port was exposed again since. `dwell port SANDBOX PORT` prints a new one",
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
    let location = if rest.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{rest}", uri.path())
    };
    let max_age = dwell_control::ports::COOKIE_LIFETIME_MS / 1000;
    Ok(login_redirect(
        &location,
        &format!("{COOKIE}={cookie}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"),
    ))
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
async fn connect(
    shared: &Arc<Shared>,
    route: &PortRoute,
    req: Request<Incoming>,
    html: bool,
) -> Answer {
    let (tunnel, permit) = tunnel(shared, route, html).await?;
    let idle = shared.opts.idle_timeout;
    let what = format!("CONNECT to port {} of {}", route.port, route.sandbox.name);
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
    Ok(Response::new(crate::pages::full("")))
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
/// credentials, `X-Forwarded-*` set.
fn outbound(conn: &ConnState, mut req: Request<Incoming>, upgrade: bool) -> Request<Incoming> {
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
    h.insert("x-forwarded-proto", HeaderValue::from_static("http"));
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
async fn forward(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState>,
    route: &PortRoute,
    req: Request<Incoming>,
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
    let req = outbound(conn, req, false);
    let resp = tokio::time::timeout(shared.opts.idle_timeout, up.sender.send_request(req)).await;
    let resp = match resp {
        Err(_) => return Err(timed_out(shared, route, html)),
        Ok(Err(e)) => return Err(gateway_error(route, html, &e.to_string())),
        Ok(Ok(r)) => r,
    };
    *slot = Some(up);
    let (mut parts, body) = resp.into_parts();
    strip_hop(&mut parts.headers, false);
    // The client's connection is ours (HTTP/1.1, kept alive), whatever
    // the server spoke.
    parts.version = hyper::Version::HTTP_11;
    Ok(Response::from_parts(parts, box_body(body)))
}

/// An `Upgrade` (WebSocket): the handshake over a fresh upstream
/// connection; on 101 the two upgraded connections are piped.
async fn upgrade(
    shared: &Arc<Shared>,
    conn: &Arc<ConnState>,
    route: &PortRoute,
    mut req: Request<Incoming>,
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
    let req = outbound(conn, req, true);
    let resp = match tokio::time::timeout(shared.opts.idle_timeout, sender.send_request(req)).await
    {
        Err(_) => return Err(timed_out(shared, route, html)),
        Ok(Err(e)) => return Err(gateway_error(route, html, &e.to_string())),
        Ok(Ok(r)) => r,
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = resp.into_parts();
        strip_hop(&mut parts.headers, false);
        parts.version = hyper::Version::HTTP_11;
        return Ok(Response::from_parts(parts, box_body(body)));
    }
    let mut resp = resp;
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

/// A request for the envd port, served by the E2B data plane in-process.
async fn serve_envd(envd: axum::Router, req: Request<Incoming>) -> Response<Body> {
    use hyper::service::Service;
    let svc = hyper_util::service::TowerToHyperService::new(envd);
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
        assert_eq!(cookie_value(&h, COOKIE).as_deref(), Some("v.w"));
        assert_eq!(cookie_value(&h, "c"), None);
    }
}
