//! A minimal client of the dwell API over its unix socket: HTTP/1.1 JSON on
//! one kept-alive connection (re-opened if the daemon closes it), or a fresh
//! connection per request to measure what one-shot clients pay.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::error::{Error, Result};

/// A connection to the daemon.
pub struct Api {
    socket: PathBuf,
    conn: Option<SendRequest<Full<Bytes>>>,
    /// Sandbox ids created through this client and not yet deleted.
    created: Vec<String>,
}

impl Api {
    pub fn new(socket: &Path) -> Api {
        Api {
            socket: socket.to_path_buf(),
            conn: None,
            created: Vec::new(),
        }
    }

    async fn open(&self) -> Result<SendRequest<Full<Bytes>>> {
        let s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| Error::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|source| Error::Http {
                what: "the handshake".into(),
                source,
            })?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Drop the kept-alive connection: the next request opens a new one.
    pub fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Send one request and return the JSON answer (`null` for an empty body).
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let what = format!("{method} {path}");
        let bytes = self.call_raw(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::BadAnswer {
            what,
            detail: e.to_string(),
        })
    }

    /// Send one request and return the answer's bytes (a success status).
    pub async fn call_raw(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Bytes> {
        let what = format!("{method} {path}");
        let (status, bytes) = self.request(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(Error::Api {
                what,
                status,
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        Ok(bytes)
    }

    /// Send one request and return the answer's status and bytes, whatever
    /// the status (for callers that tell answers apart, like a 202 or the
    /// 404 of a route the daemon lacks).
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Bytes)> {
        let what = format!("{method} {path}");
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        // A kept-alive connection the daemon closed in between fails before
        // anything is sent; retry once on a new one.
        for attempt in 0..2 {
            let mut sender = match self.conn.take() {
                Some(s) if !s.is_closed() => s,
                _ => self.open().await?,
            };
            if sender.ready().await.is_err() {
                continue;
            }
            let req = Request::builder()
                .method(method.clone())
                .uri(path)
                .header("host", "localhost")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(payload.clone())))
                .map_err(|e| Error::Other(format!("cannot build {what}: {e}")))?;
            let resp = match sender.send_request(req).await {
                Ok(r) => r,
                Err(e) if attempt == 0 && e.is_canceled() => continue,
                Err(source) => return Err(Error::Http { what, source }),
            };
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|source| Error::Http {
                    what: what.clone(),
                    source,
                })?
                .to_bytes();
            self.conn = Some(sender);
            return Ok((status.as_u16(), bytes));
        }
        Err(Error::Other(format!(
            "{what}: the daemon closed the connection twice in a row"
        )))
    }

    /// `POST /v1/sandboxes`; returns the new sandbox's id.
    pub async fn create(&mut self, name: &str) -> Result<String> {
        self.create_with(serde_json::json!({ "name": name })).await
    }

    /// `POST /v1/sandboxes` with `body`; returns the new sandbox's id and
    /// tracks it (deleted at the end of the run).
    pub async fn create_with(&mut self, body: Value) -> Result<String> {
        let v = self
            .call(Method::POST, "/v1/sandboxes", Some(&body))
            .await?;
        let id = v["id"].as_str().ok_or_else(|| Error::BadAnswer {
            what: "POST /v1/sandboxes".into(),
            detail: format!("no \"id\" in {v}"),
        })?;
        self.created.push(id.to_string());
        Ok(id.to_string())
    }

    /// `POST /v1/sandboxes/{id}/exec` of `argv`; fails unless it exits 0.
    pub async fn exec(&mut self, id: &str, argv: &[&str]) -> Result<Value> {
        let path = format!("/v1/sandboxes/{id}/exec");
        let v = self
            .call(
                Method::POST,
                &path,
                Some(&serde_json::json!({ "argv": argv })),
            )
            .await?;
        if v["exit"]["code"].as_i64() != Some(0) {
            return Err(Error::BadAnswer {
                what: format!("POST {path} {argv:?}"),
                detail: format!("the command did not exit 0: {v}"),
            });
        }
        Ok(v)
    }

    pub async fn pause(&mut self, id: &str) -> Result<()> {
        self.call(Method::POST, &format!("/v1/sandboxes/{id}/pause"), None)
            .await
            .map(drop)
    }

    pub async fn resume(&mut self, id: &str) -> Result<()> {
        self.call(Method::POST, &format!("/v1/sandboxes/{id}/resume"), None)
            .await
            .map(drop)
    }

    /// `DELETE /v1/sandboxes/{id}?force=true`.
    pub async fn delete(&mut self, id: &str) -> Result<()> {
        self.call(
            Method::DELETE,
            &format!("/v1/sandboxes/{id}?force=true"),
            None,
        )
        .await?;
        self.created.retain(|c| c != id);
        Ok(())
    }

    /// Remember a sandbox made by other means (the CLI) for [`Api::delete_all`].
    pub fn track(&mut self, id: String) {
        self.created.push(id);
    }

    /// Forget a sandbox another client deleted.
    pub fn untrack(&mut self, id: &str) {
        self.created.retain(|c| c != id);
    }

    /// Delete every sandbox this client created; returns the failures.
    pub async fn delete_all(&mut self) -> Vec<Error> {
        let mut errors = Vec::new();
        for id in self.created.clone() {
            if let Err(e) = self.delete(&id).await {
                errors.push(e);
            }
        }
        errors
    }
}
