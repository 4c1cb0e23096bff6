//! Extractors whose rejections are the API's JSON error: a malformed query
//! string, path or body is answered with `{"error": {...}}` and its
//! status, never axum's plain-text rejection.

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

/// A JSON request body.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(e) => Err(rejected(e, "bad request body")),
        }
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
