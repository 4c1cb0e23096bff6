//! What the API's answers on TCP carry now that browsers call it (the web
//! console): headers that keep a browser from treating an answer as a
//! page, a script or a stylesheet of anyone's (files a sandbox wrote come
//! back through here), and gzip for large JSON answers to clients that
//! accept it (a list of a thousand sandboxes is most of a megabyte).

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// JSON answers from this size on are gzipped (below it the header costs
/// about what it saves).
const GZIP_FROM: u64 = 8 * 1024;

/// Larger answers are sent as they are: compressing them would hold a
/// blocking thread for long.
const GZIP_UP_TO: u64 = 8 << 20;

/// No answer of the API is a document: nothing in it runs, it is never
/// framed, and no other site may embed it.
const CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Middleware, outermost on the TCP router.
pub async fn answers(req: Request, next: Next) -> Response {
    let gzip = dwell_contract::accepts_gzip(
        req.headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok()),
    );
    let mut res = next.run(req).await;
    harden(res.headers_mut());
    if gzip && is_json(res.headers()) && !res.headers().contains_key(header::CONTENT_ENCODING) {
        match res.body().size_hint().exact() {
            Some(n) if (GZIP_FROM..=GZIP_UP_TO).contains(&n) => return gzipped(res).await,
            _ => {}
        }
    }
    res
}

fn harden(h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

async fn gzipped(res: Response) -> Response {
    use std::io::Write;
    let (mut parts, body) = res.into_parts();
    let bytes = match axum::body::to_bytes(body, GZIP_UP_TO as usize).await {
        Ok(b) => b,
        Err(e) => {
            // The answer broke off (its credential revoked, say): so does
            // what the client gets, not an empty answer that looks whole.
            tracing::warn!("reading an answer to gzip it: {e}");
            parts.headers.remove(header::CONTENT_LENGTH);
            let broken = futures_util::stream::once(async move {
                Err::<axum::body::Bytes, _>(std::io::Error::other(e.to_string()))
            });
            return Response::from_parts(parts, Body::from_stream(broken));
        }
    };
    // Off the async threads: a few large answers at once must not stall
    // every other request.
    let plain = bytes.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(plain.len() / 8),
            flate2::Compression::fast(),
        );
        gz.write_all(&plain)?;
        gz.finish()
    })
    .await;
    let Ok(Ok(out)) = out else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    parts
        .headers
        .append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    Response::from_parts(parts, Body::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use axum::Router;
    use std::io::Read;

    async fn call(app: Router, accept: Option<&str>) -> (HeaderMap, Vec<u8>) {
        use tower::ServiceExt;
        let mut req = Request::builder().uri("/");
        if let Some(a) = accept {
            req = req.header(header::ACCEPT_ENCODING, a);
        }
        let res = app.oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        (parts.headers, bytes.to_vec())
    }

    #[tokio::test]
    async fn large_json_is_gzipped_for_who_accepts_it_and_every_answer_is_hardened() {
        let big: Vec<u32> = (0..10_000).collect();
        let json = serde_json::to_vec(&big).unwrap();
        let app = || {
            let big = big.clone();
            Router::new()
                .route("/", get(move || async move { axum::Json(big) }))
                .layer(axum::middleware::from_fn(answers))
        };
        let (h, body) = call(app(), Some("gzip")).await;
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(plain, json);
        assert!(body.len() < json.len() / 2);
        let (h, body) = call(app(), None).await;
        assert!(!h.contains_key(header::CONTENT_ENCODING));
        assert_eq!(body, json);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("sandbox"));
        // Small answers and bytes (a file a sandbox wrote) stay as they are.
        let small = Router::new()
            .route("/", get(|| async { "<script>alert(1)</script>" }))
            .layer(axum::middleware::from_fn(answers));
        let (h, _) = call(small, Some("gzip")).await;
        assert!(!h.contains_key(header::CONTENT_ENCODING));
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }
}
