//! Extractors whose rejections are the API's JSON error: a malformed query
//! string, path or body is answered with `{"error": {...}}` and its
//! status, never axum's plain-text rejection. A JSON body must be an
//! object: every body of the API is one, and serde alone would read a
//! struct from an array of its field values (`[null, null]`).

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::IntoResponse;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The error of a rejected request part: its status, a code that matches,
/// and axum's explanation after `what`.
fn rejected(rejection: impl IntoResponse + std::fmt::Display, what: &str) -> ApiError {
    let message = format!("{what}: {rejection}");
    let status = rejection.into_response().status();
    ApiError::from_status(status.as_u16(), message)
}

/// A JSON request body, which must be an object.
pub struct Json<T>(pub T);

/// Why a JSON body was refused: its status and what was wrong with it.
/// As a response it is the JSON error `bad request body: <detail>`;
/// handlers that take `Result<Json<T>, BodyRejection>` word their own.
#[derive(Debug)]
pub struct BodyRejection {
    pub status: u16,
    pub detail: String,
}

impl IntoResponse for BodyRejection {
    fn into_response(self) -> axum::response::Response {
        ApiError::from_status(self.status, format!("bad request body: {}", self.detail))
            .into_response()
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = BodyRejection;

    async fn from_request(req: Request, state: &S) -> Result<Self, BodyRejection> {
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(e) => {
                let detail = e.body_text();
                return Err(BodyRejection {
                    status: e.into_response().status().as_u16(),
                    detail,
                });
            }
        };
        if !value.is_object() {
            return Err(BodyRejection {
                status: 400,
                detail: format!(
                    "it must be a JSON object ({{\"field\": value, ...}}), not {}; /openapi.json lists each body's fields",
                    kind(&value)
                ),
            });
        }
        // Like axum's own extractor: 422 naming the field that does not fit.
        serde_path_to_error::deserialize(value)
            .map(Json)
            .map_err(|e| BodyRejection {
                status: 422,
                detail: format!("{}: {}", e.path(), e.inner()),
            })
    }
}

/// What a JSON value is, in words.
fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// The query string.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Query(v)),
            Err(e) => Err(rejected(e, "bad query string")),
        }
    }
}

/// Path parameters.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => Err(rejected(e, "bad path")),
        }
    }
}

/// A WebSocket upgrade; a plain request gets the JSON error saying how to
/// open the WebSocket.
pub struct Upgrade(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(ws) => Ok(Upgrade(ws)),
            Err(e) => Err(rejected(
                e,
                "this route speaks WebSocket only; open it with a WebSocket client (GET with `Connection: Upgrade`, `Upgrade: websocket`)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Pair {
        #[allow(dead_code)]
        a: Option<u8>,
        #[allow(dead_code)]
        b: Option<u8>,
    }

    async fn take(Json(_): Json<Pair>) -> &'static str {
        "taken"
    }

    /// POST `body` as JSON to a real server whose handler reads a
    /// two-field struct with [`Json`].
    async fn post(body: &'static str) -> String {
        let app = axum::Router::new().route("/x", axum::routing::post(take));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            let req = format!(
                "POST /x HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn a_json_body_must_be_an_object() {
        // serde alone reads the struct from an array of its fields.
        let refused = post("  [null, null]").await;
        assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
        assert!(refused.contains("must be a JSON object"), "{refused}");
        assert!(refused.contains("not an array"), "{refused}");
        assert!(
            refused.contains(r#""code":"invalid_argument""#),
            "{refused}"
        );
        let null = post("null").await;
        assert!(null.contains("not null"), "{null}");
        let taken = post(" {\"a\": 1}").await;
        assert!(taken.starts_with("HTTP/1.1 200"), "{taken}");
        assert!(taken.ends_with("taken"), "{taken}");
        // A field of the wrong type: 422, as axum's own extractor says.
        let wrong = post("{\"a\": \"x\"}").await;
        assert!(wrong.starts_with("HTTP/1.1 422"), "{wrong}");
        assert!(
            wrong.contains("bad request body: a: invalid type"),
            "{wrong}"
        );
        let empty = post("").await;
        assert!(empty.starts_with("HTTP/1.1 400"), "{empty}");
        assert!(!empty.contains("must be a JSON object"), "{empty}");
    }
}
