//! The S3-compatible backend, through the `object_store` crate.
//!
//! The store owns a small private tokio runtime and blocks on it, so the snapshot engine stays
//! synchronous; call it from plain threads or `spawn_blocking`, never directly on an async worker.
//! Every request is retried with exponential backoff on transient failures (connection errors,
//! 5xx, throttling) by `object_store`'s retry layer. A `put` is a single PUT of the whole object,
//! which S3 makes visible atomically; chunks are small (one chunk each), so a snapshot streams
//! through memory a few chunks at a time and uploads/downloads run in parallel, one per worker.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjPath;
use object_store::{BackoffConfig, ObjectStore, PutPayload, RetryConfig};

use super::{ChunkStore, ObjectInfo};
use crate::error::{Error, Result};

/// How to reach an S3-compatible bucket. Unset credentials and region fall back to the standard
/// `AWS_*` environment variables.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`; may be empty).
    pub prefix: String,
    /// Endpoint URL for non-AWS servers, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    pub region: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: bool,
    /// Requests in flight at once (default 8).
    pub parallelism: Option<usize>,
    /// Retries per request on transient errors (default 5).
    pub max_retries: Option<usize>,
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]`.
    pub fn from_url(url: &str) -> Result<S3Config> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            Error::Config(format!(
                "{url:?} is not an s3:// URL; write s3://bucket/prefix"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Config(format!(
                "{url:?} names no bucket; write s3://bucket/prefix"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            ..S3Config::default()
        })
    }
}

/// A store in an S3-compatible bucket.
pub struct S3Store {
    inner: Arc<dyn ObjectStore>,
    rt: Option<tokio::runtime::Runtime>,
    prefix: String,
    name: String,
    parallelism: usize,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store({})", self.name)
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // Never blocks, so dropping the store inside async code is safe too.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl S3Store {
    /// Connects (lazily: the first request does the network I/O).
    pub fn new(cfg: &S3Config) -> Result<S3Store> {
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&cfg.bucket)
            .with_allow_http(cfg.allow_http)
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(5),
                    base: 2.0,
                },
                max_retries: cfg.max_retries.unwrap_or(5),
                retry_timeout: Duration::from_secs(120),
            });
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        b = b.with_region(cfg.region.clone().unwrap_or_else(|| {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".into())
        }));
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(k) = &cfg.secret_access_key {
            b = b.with_secret_access_key(k);
        }
        let inner = b
            .build()
            .map_err(|e| Error::Config(format!("S3 bucket {:?}: {e}", cfg.bucket)))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dwell-snapshot-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::Config(format!("cannot start the S3 I/O runtime: {e}")))?;
        let name = if cfg.prefix.is_empty() {
            format!("s3://{}", cfg.bucket)
        } else {
            format!("s3://{}/{}", cfg.bucket, cfg.prefix)
        };
        Ok(S3Store {
            inner: Arc::new(inner),
            rt: Some(rt),
            prefix: cfg.prefix.trim_matches('/').to_string(),
            name,
            parallelism: cfg.parallelism.unwrap_or(8).max(1),
        })
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn key_of(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        if self.prefix.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(&self.prefix)
                .map(|r| r.trim_start_matches('/'))
                .unwrap_or(s)
                .to_string()
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt
            .as_ref()
            .expect("runtime lives until drop")
            .block_on(f)
    }

    fn err(&self, action: &'static str, key: &str, e: object_store::Error) -> Error {
        Error::Store {
            store: self.name.clone(),
            action,
            key: key.to_string(),
            reason: e.to_string(),
        }
    }
}

impl ChunkStore for S3Store {
    fn describe(&self) -> String {
        self.name.clone()
    }

    fn parallelism(&self) -> usize {
        self.parallelism
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let payload = PutPayload::from(data.to_vec());
        self.block_on(self.inner.put(&self.path(key), payload))
            .map(|_| ())
            .map_err(|e| self.err("put", key, e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let r = self.block_on(async {
            let g = self.inner.get(&self.path(key)).await?;
            g.bytes().await
        });
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        match self.block_on(self.inner.head(&self.path(key))) {
            Ok(m) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: m.size,
                modified: SystemTime::from(m.last_modified),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("head", key, e)),
        }
    }

    fn delete(&self, key: &str) -> Result<()> {
        match self.block_on(self.inner.delete(&self.path(key))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = self.path(prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self
            .block_on(self.inner.list(Some(&p)).try_collect())
            .map_err(|e| self.err("list", prefix, e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                modified: SystemTime::from(m.last_modified),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        Ok(()) // a completed PUT is durable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c = S3Config::from_url("s3://b/some/prefix/").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("b", "some/prefix"));
        let c = S3Config::from_url("s3://b").unwrap();
        assert_eq!(c.prefix, "");
        assert!(S3Config::from_url("http://x").is_err());
        assert!(S3Config::from_url("s3:///p").is_err());
    }
}
