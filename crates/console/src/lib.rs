//! The web console: a browser front end for dwell's public REST and
//! WebSocket API, served by the daemon's TCP listener under `/ui/`.
//!
//! The front end (`web/`, Preact, with xterm.js and uPlot loaded on demand)
//! is bundled at build time by `build.rs` and embedded here; nothing is
//! fetched from a CDN or the network at run time. This crate only serves
//! those files: the console logs in and acts through the API's own routes
//! (`/v1/console/sessions` for the session cookie, then the same routes as
//! the CLI), so everything it does passes the controller's checks.

use axum::body::Body;
use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

/// One embedded file of the console.
pub struct Asset {
    /// Its name under `/ui/` (`index.html`, `main-3ZK2.js`).
    pub name: &'static str,
    pub mime: &'static str,
    /// A strong ETag (a hash of `body`).
    pub etag: &'static str,
    pub body: &'static [u8],
    /// `body` gzipped, served to clients that accept it.
    pub gzip: &'static [u8],
}

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// The file named `name`, if the console has one.
pub fn asset(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

/// The page every console path loads (the front end routes itself).
fn index() -> &'static Asset {
    asset("index.html").expect("build.rs embeds index.html")
}

/// `GET /` and `/ui` go to the console; `/ui/<file>` is that file, and every
/// other `/ui/...` path is the console's page for it.
pub fn router() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route(
            "/ui/",
            get(|headers: HeaderMap| async move { serve(index(), &headers) }),
        )
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move {
                match asset(&path) {
                    Some(a) if a.name != "index.html" => serve(a, &headers),
                    // A file-like name that is not ours is a 404, not a page.
                    None if looks_like_file(&path) => StatusCode::NOT_FOUND.into_response(),
                    _ => serve(index(), &headers),
                }
            }),
        )
}

fn looks_like_file(path: &str) -> bool {
    let last = path.rsplit('/').next().unwrap_or("");
    [
        ".js", ".css", ".map", ".png", ".svg", ".ico", ".woff2", ".json",
    ]
    .iter()
    .any(|ext| last.ends_with(ext))
}

/// The security headers of the page: only our own scripts run, the page
/// is never framed, nothing leaks in a Referer.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(a: &'static Asset, headers: &HeaderMap) -> Response {
    let mut res = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == a.etag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else if accepts_gzip(headers) {
        let mut r = Response::new(Body::from(a.gzip));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(a.body))
    };
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.mime));
    h.insert(header::ETAG, HeaderValue::from_static(a.etag));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    // Entry files and chunks carry a content hash in their names: they
    // never change. The page itself is checked each time.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if a.name == "index.html" {
            "no-cache"
        } else {
            "public, max-age=31536000, immutable"
        }),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if a.name == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    res
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    dwell_contract::accepts_gzip(
        headers
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_embedded_with_its_entry_files() {
        let html = std::str::from_utf8(index().body).unwrap();
        let js = html
            .split("src=\"/ui/")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("index.html names its script");
        assert!(asset(js).is_some(), "{js} is not embedded");
        for a in ASSETS {
            assert!(!a.gzip.is_empty() && a.gzip.len() <= a.body.len() + 64);
        }
    }

    #[test]
    fn files_are_files_and_pages_are_the_console() {
        assert!(looks_like_file("chunk-XYZ.js"));
        assert!(!looks_like_file("sandboxes/web1"));
        assert!(!looks_like_file("sandboxes/my.js.box/terminal"));
    }
}
