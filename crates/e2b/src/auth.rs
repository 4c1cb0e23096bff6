//! The `X-API-KEY` header of the E2B SDKs, resolved against dwell's API
//! keys (`dwk_HEX`, or `e2b_HEX`, the form the SDKs accept): the key's tenant owns every sandbox made with it, and never sees
//! another tenant's (their ids answer 404).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::E2bError;
use crate::E2bState;

/// Middleware: resolve the key into a [`Principal`] or answer 401.
pub async fn api_key(State(st): State<E2bState>, mut req: Request, next: Next) -> Response {
    let headers = req.headers();
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .map(str::trim)
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return E2bError::new(
            401,
            "this request has no API key; set E2B_API_KEY to a dwell API key (`dwell tenant create NAME` prints one; the SDKs want it spelled `e2b_` + its hex)",
        )
        .into_response();
    };
    match dwell_api::auth::principal_of_key(&st.ctl, key) {
        Ok(dwell_api::auth::KeyLookup::Valid(p)) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Ok(dwell_api::auth::KeyLookup::Revoked { id }) => {
            E2bError::new(401, dwell_api::auth::revoked_message(&id)).into_response()
        }
        Ok(dwell_api::auth::KeyLookup::Unknown) => E2bError::new(
            401,
            "the API key is not a dwell API key; set E2B_API_KEY to a key from `dwell tenant create` (or <data-dir>/admin.key), as `dwk_HEX` or as `e2b_HEX`",
        )
        .into_response(),
        Err(e) => E2bError::new(500, e.to_string()).into_response(),
    }
}
