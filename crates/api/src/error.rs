//! API errors: a stable code, a message that says what went wrong, the
//! structured facts behind it, and the matching HTTP status. The body is
//! the contract's [`ErrorBody`]: `{"error": {"code", "message", "facts"}}`.
//! Advice in a client's own terms (a CLI command, an SDK call) is the
//! client's to word from the code and facts.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use dwell_contract::error::code;
use dwell_contract::{ErrorBody, ErrorDetail};
use dwell_proto::ErrorKind;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Named facts of the error ([`dwell_contract::error::fact`]).
    pub facts: BTreeMap<String, String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
            facts: BTreeMap::new(),
        }
    }
    /// The same error with one more fact.
    pub fn with_fact(mut self, name: &str, value: impl Into<String>) -> ApiError {
        self.facts.insert(name.into(), value.into());
        self
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, code::INVALID_ARGUMENT, message)
    }
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(401, code::UNAUTHENTICATED, message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, code::PERMISSION_DENIED, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, code::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(500, code::INTERNAL, message)
    }
    /// An error with a status chosen by the HTTP layer (a rejected request
    /// part, an unknown route) and the code that goes with it.
    pub fn from_status(status: u16, message: impl Into<String>) -> ApiError {
        let code = match status {
            404 => code::NOT_FOUND,
            405 => code::METHOD_NOT_ALLOWED,
            413 => code::PAYLOAD_TOO_LARGE,
            415 => code::UNSUPPORTED_MEDIA_TYPE,
            400..=499 => code::INVALID_ARGUMENT,
            _ => code::INTERNAL,
        };
        ApiError::new(status, code, message)
    }
    /// Response without going through `IntoResponse` (for middleware).
    pub fn into_response_(self) -> Response {
        self.into_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                facts: self.facts,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

/// The facts of a control-plane error, by name
/// ([`dwell_control::Error::facts`]), for the error body.
pub fn facts_of(e: &dwell_control::Error) -> BTreeMap<String, String> {
    e.facts()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

impl From<dwell_control::Error> for ApiError {
    fn from(e: dwell_control::Error) -> Self {
        let facts = facts_of(&e);
        let mut err = ApiError::from_control(e);
        err.facts.extend(facts);
        err
    }
}

impl ApiError {
    /// The status, code and message of a control-plane error.
    fn from_control(e: dwell_control::Error) -> ApiError {
        use dwell_storage::StorageError as S;
        match e {
            dwell_control::Error::Agent(a) => a.into(),
            // What the caller named or asked for, refused by the storage
            // layer: the caller's to fix, not a daemon failure.
            dwell_control::Error::Storage(
                ref s @ (S::InvalidName { .. } | S::InvalidSize { .. }),
            ) => ApiError::new(400, code::INVALID_ARGUMENT, s.to_string()),
            dwell_control::Error::Storage(ref s @ S::ImageNotFound(_)) => {
                ApiError::new(404, code::IMAGE_NOT_FOUND, s.to_string())
            }
            // A sandbox whose volume is not here (archived) or already is.
            dwell_control::Error::Storage(
                ref s @ (S::VolumeNotFound(_) | S::VolumeExists(_)),
            ) => ApiError::new(
                409,
                code::CONFLICT,
                format!("{s}; the sandbox's volume is not in the state this request needs (an archived sandbox's volume is in the snapshot store: start it first)"),
            ),
            // The database itself failed (unreachable, refused a
            // statement): what it said names hosts and users, so it goes to
            // the log, and the caller learns only that it happened.
            dwell_control::Error::Store(
                ref st @ (dwell_store::Error::Sql(_)
                | dwell_store::Error::Open { .. }
                | dwell_store::Error::Constraint(_)),
            ) => {
                tracing::error!("metadata store: {st}");
                ApiError::new(
                    500,
                    "store_error",
                    "the daemon's metadata store failed (the daemon's log says how); retry, and \
                     tell the operator if it goes on",
                )
            }
            e => ApiError::new(e.status(), e.code(), e.to_string()),
        }
    }
}

impl From<dwell_proto::Error> for ApiError {
    fn from(e: dwell_proto::Error) -> Self {
        if let dwell_proto::Error::TooLarge { .. } = e {
            return ApiError::new(
                413,
                code::PAYLOAD_TOO_LARGE,
                format!(
                    "{e}; stream it instead (the streaming exec, or a file download), or make it \
                     smaller"
                ),
            );
        }
        let (status, code) = match e.remote_kind() {
            Some(ErrorKind::NotFound) | Some(ErrorKind::NoSuchProcess) => (404, code::NOT_FOUND),
            Some(ErrorKind::PermissionDenied) | Some(ErrorKind::ReadOnly) => {
                (403, code::PERMISSION_DENIED)
            }
            Some(ErrorKind::AlreadyExists) => (409, code::ALREADY_EXISTS),
            Some(ErrorKind::DirectoryNotEmpty) => (409, code::DIRECTORY_NOT_EMPTY),
            Some(ErrorKind::IsADirectory)
            | Some(ErrorKind::NotADirectory)
            | Some(ErrorKind::InvalidArgument) => (400, code::INVALID_ARGUMENT),
            Some(ErrorKind::NoSpace) => (507, code::NO_SPACE),
            Some(ErrorKind::TooManyStreams) => (429, code::TOO_MANY_STREAMS),
            // The sandbox's own system refused (a busy mount point, an I/O
            // error of its volume): about the sandbox, not the daemon.
            Some(_) => (409, code::AGENT_ERROR),
            None => (502, code::AGENT_UNREACHABLE),
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Middleware: a handler that panics answers the JSON error (500) instead
/// of a connection closed without a response; the panic itself is logged
/// by the daemon's panic hook.
pub async fn catch_panic(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use futures_util::FutureExt;
    let path = req.uri().path().to_string();
    match std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            // The panic's text may name host paths: the log gets it, the
            // client only that it happened.
            tracing::error!("a handler panicked while serving {path}: {what}");
            ApiError::internal(format!(
                "the daemon failed while serving {path}; this is a bug of dwell: report it with the daemon's log"
            ))
            .into_response()
        }
    }
}

/// The fallback of unknown routes.
pub async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!(
        "no route {}; the routes are listed in /openapi.json",
        uri.path()
    ))
}

/// The fallback of a known route called with a method it does not serve.
pub async fn no_method(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        405,
        code::METHOD_NOT_ALLOWED,
        format!(
            "{} does not serve {method}; its methods are listed in /openapi.json",
            uri.path()
        ),
    )
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    /// Control names its facts without depending on the HTTP contract;
    /// the names it puts in an error body must be the contract's.
    #[test]
    fn control_and_the_contract_spell_every_fact_alike() {
        use dwell_contract::error::fact as wire;
        use dwell_control::error::fact as ctl;
        let pairs = [
            (ctl::SANDBOX, wire::SANDBOX),
            (ctl::STATE, wire::STATE),
            (ctl::ACTION, wire::ACTION),
            (ctl::TENANT, wire::TENANT),
            (ctl::RESOURCE, wire::RESOURCE),
            (ctl::LIMIT, wire::LIMIT),
            (ctl::USED, wire::USED),
            (ctl::ASKED, wire::ASKED),
            (ctl::SNAPSHOT, wire::SNAPSHOT),
            (ctl::NAME, wire::NAME),
        ];
        for (c, w) in pairs {
            assert_eq!(c, w);
        }
    }

    async fn boom() -> &'static str {
        panic!("boom in a handler")
    }

    /// A real server with [`catch_panic`] in front of a handler that
    /// panics: the client gets the JSON error, not a closed connection.
    #[tokio::test]
    async fn a_panicking_handler_answers_the_json_error() {
        let app = axum::Router::new()
            .route("/boom", axum::routing::get(boom))
            .layer(axum::middleware::from_fn(catch_panic));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let answer = tokio::task::spawn_blocking(move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /boom HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        })
        .await
        .unwrap();
        assert!(answer.starts_with("HTTP/1.1 500"), "{answer}");
        assert!(answer.contains("application/json"), "{answer}");
        assert!(answer.contains(r#""code":"internal""#), "{answer}");
        // The panic's text stays in the log: it may name host paths.
        assert!(!answer.contains("boom in a handler"), "{answer}");
        assert!(
            answer.contains("report it with the daemon's log"),
            "{answer}"
        );
    }

    #[test]
    fn control_errors_keep_their_facts_and_storage_refusals_are_the_callers() {
        let e = ApiError::from(dwell_control::Error::NameTaken("work".into()));
        assert_eq!((e.status.as_u16(), e.code), (409, code::NAME_TAKEN));
        assert_eq!(e.facts.get("name").map(String::as_str), Some("work"));
        // A sandbox that sleeps and does not wake on use: its own code,
        // with the state and what needed it running.
        let e = ApiError::from(dwell_control::Error::Asleep {
            sandbox: "web".into(),
            state: dwell_control::State::Hibernated,
            action: "file read".into(),
            message: "sandbox web is hibernated and does not wake on use".into(),
        });
        assert_eq!((e.status.as_u16(), e.code), (409, code::SANDBOX_PAUSED));
        let fact = |k: &str| e.facts.get(k).map(String::as_str);
        assert_eq!(
            (fact("sandbox"), fact("state"), fact("action")),
            (Some("web"), Some("hibernated"), Some("file read"))
        );
        let e = ApiError::from(dwell_control::Error::Storage(
            dwell_storage::StorageError::ImageNotFound("nope".into()),
        ));
        assert_eq!((e.status.as_u16(), e.code), (404, code::IMAGE_NOT_FOUND));
        let e = ApiError::from(dwell_control::Error::Storage(
            dwell_storage::StorageError::VolumeNotFound("v".into()),
        ));
        assert_eq!((e.status.as_u16(), e.code), (409, code::CONFLICT));
        // The sandbox's own system refusing (EBUSY on a mount point) is
        // about the sandbox; an agent that cannot be reached is a gateway
        // failure.
        let busy = dwell_proto::Error::Remote(dwell_proto::RemoteError {
            kind: ErrorKind::Other,
            message: "remove /.dwell: Device or resource busy".into(),
        });
        let e = ApiError::from(dwell_control::Error::Agent(busy));
        assert_eq!((e.status.as_u16(), e.code), (409, code::AGENT_ERROR));
        let gone = dwell_proto::Error::Unreachable("no socket".into());
        let e = ApiError::from(dwell_control::Error::Agent(gone));
        assert_eq!((e.status.as_u16(), e.code), (502, code::AGENT_UNREACHABLE));
        // More than the daemon holds for one answer (a sync exec's output).
        let big = dwell_proto::Error::TooLarge {
            what: "the output of process 7".into(),
            max: 16,
        };
        let e = ApiError::from(big);
        assert_eq!((e.status.as_u16(), e.code), (413, code::PAYLOAD_TOO_LARGE));
        assert!(e.message.contains("16 byte limit"), "{}", e.message);
        let e = ApiError::from(dwell_control::Error::Internal("x".into()));
        assert_eq!((e.status.as_u16(), e.code), (500, code::INTERNAL));
        assert!(e.facts.is_empty());
    }
}
