//! The proxy's own answers (errors and the login redirect): a short page
//! that says what happened, why, and what to do, as HTML for browsers and
//! plain text for everything else.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use hyper::{Response, StatusCode};

use crate::Body;

/// An empty body of the proxy's body type.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A page with `status`, a one-line `title` and a `detail`.
pub fn page(status: StatusCode, html: bool, title: &str, detail: &str) -> Response<Body> {
    let (ct, body) = if html {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {t}</title></head>\
                 <body><h1>{code} {t}</h1><p>{d}</p><hr><p>dwell port proxy</p></body></html>\n",
                code = status.as_u16(),
                t = escape(title),
                d = escape(detail)
            ),
        )
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{} {title}\n{detail}\n", status.as_u16()),
        )
    };
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The answer to a good login link: set the cookie, go to `location`.
pub fn login_redirect(location: &str, cookie: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_escape_and_say_the_status() {
        let r = page(StatusCode::BAD_GATEWAY, true, "x<y", "a & b");
        assert_eq!(r.status(), 502);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        let s = String::from_utf8(b.to_vec()).unwrap();
        assert!(s.contains("502 x&lt;y") && s.contains("a &amp; b"), "{s}");
        let r = page(StatusCode::NOT_FOUND, false, "gone", "why");
        let b = r.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&b[..], b"404 gone\nwhy\n");
    }
}
