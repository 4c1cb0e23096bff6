//! The CLI's connection to a daemon: HTTP/1.1 over the local unix socket
//! (`--socket`, `DWELL_SOCKET`) or over TCP with an API key (`--host`,
//! `DWELL_HOST`, `DWELL_API_KEY`), plus WebSocket upgrades for streaming.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use dwell_contract::ACT_FOR_HEADER;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;

/// Where the daemon is.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, key: Option<String> },
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Client {
    pub endpoint: Endpoint,
    /// Act for this tenant (`--as-tenant`; the daemon allows admins only).
    /// A valid header value: see [`Client::new`].
    as_tenant: Option<String>,
}

/// Something that is a byte stream to the daemon.
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// An error answer of the API, shown to users as is.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    /// The error's code (empty when the answer was not the API's error).
    pub code: String,
    pub message: String,
    /// The error's facts, which the CLI's hints are worded from.
    pub facts: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = crate::hints::with_hint(&self.message, &self.code, &self.facts);
        write!(f, "{shown}")
    }
}

impl std::error::Error for ApiFailure {}

impl Client {
    /// A client of the daemon at `endpoint`, acting for `as_tenant` when
    /// given (refused here when it cannot be sent as a header).
    pub fn new(endpoint: Endpoint, as_tenant: Option<String>) -> Result<Client> {
        if let Some(t) = &as_tenant {
            if t.trim().is_empty() || hyper::header::HeaderValue::from_str(t).is_err() {
                bail!(
                    "--as-tenant {t:?} is not a tenant name; list the tenants with `dwell tenant ls`"
                );
            }
        }
        Ok(Client {
            endpoint,
            as_tenant,
        })
    }

    async fn connect(&self) -> Result<Box<dyn Conn>> {
        match &self.endpoint {
            Endpoint::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    anyhow!(
                        "cannot reach the dwell daemon at {}: {e}; start it with `dwell serve` (or point --socket / DWELL_SOCKET at its socket)",
                        p.display()
                    )
                })?;
                Ok(Box::new(s))
            }
            Endpoint::Tcp { addr, .. } => {
                let s = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
                    anyhow!("cannot reach the dwell daemon at {addr}: {e}; check DWELL_HOST and that `dwell serve --listen {addr}` runs")
                })?;
                s.set_nodelay(true).ok();
                Ok(Box::new(s))
            }
        }
    }

    fn authority(&self) -> String {
        match &self.endpoint {
            Endpoint::Unix(_) => "localhost".into(),
            Endpoint::Tcp { addr, .. } => addr.clone(),
        }
    }

    fn key(&self) -> Option<&str> {
        match &self.endpoint {
            Endpoint::Tcp { key, .. } => key.as_deref(),
            Endpoint::Unix(_) => None,
        }
    }

    /// Send one request with a body and return the raw response.
    pub async fn send<B>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: B,
    ) -> Result<Response<Incoming>>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = self.connect().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(conn))
            .await
            .context("HTTP handshake with the daemon failed")?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.authority())
            .header("content-type", content_type);
        if let Some(k) = self.key() {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(t) = &self.as_tenant {
            req = req.header(ACT_FOR_HEADER, t);
        }
        let req = req.body(body)?;
        let resp = sender
            .send_request(req)
            .await
            .context("the daemon closed the connection")?;
        Ok(resp)
    }

    /// JSON request, JSON answer; API errors become [`ApiFailure`].
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b)?),
            None => Bytes::new(),
        };
        let resp = self
            .send(method, path, "application/json", Full::new(bytes))
            .await?;
        let resp = check(resp).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        if body.is_empty() {
            return Ok(serde_json::from_str("null")?);
        }
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "the daemon sent an answer this CLI does not understand ({} bytes)",
                body.len()
            )
        })
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.json(Method::POST, path, Some(body)).await
    }

    /// Stream a local reader up as a request body.
    pub async fn upload<R: AsyncRead + Send + Unpin + 'static>(
        &self,
        path: &str,
        reader: R,
    ) -> Result<serde_json::Value> {
        let stream = tokio_util_like::reader_stream(reader);
        let body = StreamBody::new(futures_util::StreamExt::map(stream, |r| r.map(Frame::data)));
        let resp = self
            .send(Method::PUT, path, "application/octet-stream", body)
            .await?;
        let resp = check(resp).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
    }

    /// Open a WebSocket on `path`.
    pub async fn websocket(&self, path: &str) -> Result<WebSocketStream<Box<dyn Conn>>> {
        let conn = self.connect().await?;
        let uri = format!("ws://{}{}", self.authority(), path);
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                uri.as_str(),
            )?;
        if let Some(k) = self.key() {
            req.headers_mut()
                .insert("authorization", format!("Bearer {k}").parse()?);
        }
        if let Some(t) = &self.as_tenant {
            req.headers_mut().insert(ACT_FOR_HEADER, t.parse()?);
        }
        match tokio_tungstenite::client_async(req, conn).await {
            Ok((ws, _)) => Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                let status = resp.status();
                let body = resp.body().clone().unwrap_or_default();
                Err(failure(status, &body).into())
            }
            Err(e) => bail!("cannot open a stream to the daemon: {e}"),
        }
    }
}

/// Turn an error status into an [`ApiFailure`].
pub async fn check(resp: Response<Incoming>) -> Result<Response<Incoming>> {
    if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(resp);
    }
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Err(failure(status, &body).into())
}

fn failure(status: StatusCode, body: &[u8]) -> ApiFailure {
    match serde_json::from_slice::<dwell_contract::ErrorBody>(body) {
        Ok(e) => ApiFailure {
            status,
            code: e.error.code,
            message: e.error.message,
            facts: e.error.facts,
        },
        Err(_) => ApiFailure {
            status,
            code: String::new(),
            facts: Default::default(),
            message: format!(
                "the daemon answered {status}: {}",
                String::from_utf8_lossy(body).trim()
            ),
        },
    }
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reader as a stream of chunks (64 KiB).
pub(crate) mod tokio_util_like {
    use bytes::Bytes;
    use futures_util::Stream;
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub fn reader_stream<R: AsyncRead + Send + Unpin + 'static>(
        reader: R,
    ) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
        futures_util::stream::unfold(Some(reader), |r| async move {
            let mut r = r?;
            let mut buf = vec![0u8; 64 * 1024];
            match r.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Bytes::from(buf)), Some(r)))
                }
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}
