//! Downloading one blob into the image store's `downloads/` directory:
//! `<hex>.partial` while it grows, `<hex>` once its size and sha256 match
//! its descriptor. A partial file left by an interrupted pull (even a
//! killed daemon) is resumed with an HTTP range request; a network error
//! mid-blob is retried a few times, each retry resuming where it stopped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::BlobResponse;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Attempts per blob (the first plus retries).
const ATTEMPTS: u32 = 5;

/// Why a download failed.
#[derive(Debug)]
pub enum Failure {
    /// The registry answered with an error (auth, not found, ...).
    Registry(OciDistributionError),
    /// The connection broke mid-blob (retried).
    Network(String),
    /// The content is wrong (digest or size) or a local file failed.
    Other(String),
}

/// One blob to fetch.
pub struct Blob<'a> {
    pub client: &'a oci_client::Client,
    pub reference: &'a oci_client::Reference,
    /// `sha256:<hex>`.
    pub digest: &'a str,
    /// The size its descriptor states.
    pub size: u64,
    /// The image store's downloads directory.
    pub dir: &'a Path,
}

/// In-process lock per digest: two pulls never write one partial file.
static LOCKS: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

fn lock_for(digest: &str) -> Arc<tokio::sync::Mutex<()>> {
    let mut m = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
    m.retain(|_, l| Arc::strong_count(l) > 1);
    m.entry(digest.to_string()).or_default().clone()
}

/// Fetches `b` (resuming a partial file), verifies it, and returns the
/// verified file and how many bytes came over the network. `progress` gets
/// the bytes present so far.
pub async fn fetch(
    b: Blob<'_>,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(PathBuf, u64), Failure> {
    let hex = dwell_storage::digest_hex(b.digest)
        .ok_or_else(|| Failure::Other(format!("{} is not a sha256 digest", b.digest)))?;
    let lock = lock_for(&hex);
    let _held = lock.lock().await;
    let done = b.dir.join(&hex);
    let partial = b.dir.join(format!("{hex}.partial"));
    let io = |what: &str, p: &Path, e: std::io::Error| {
        Failure::Other(format!("{what} {}: {e}", p.display()))
    };

    // A complete download from an earlier, interrupted pull.
    if tokio::fs::metadata(&done).await.is_ok() {
        let (sum, len) = hash_file(&done).await.map_err(|e| io("read", &done, e))?;
        if sum == hex && len == b.size {
            progress(len);
            return Ok((done, 0));
        }
        let _ = tokio::fs::remove_file(&done).await;
    }

    // Resume a partial one: hash what is there.
    let mut hasher = Sha256::new();
    let mut have = 0u64;
    if let Ok(mut f) = tokio::fs::File::open(&partial).await {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f
                .read(&mut buf)
                .await
                .map_err(|e| io("read", &partial, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            have += n as u64;
        }
    }
    if have > b.size {
        let _ = tokio::fs::remove_file(&partial).await;
        hasher = Sha256::new();
        have = 0;
    }
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&partial)
        .await
        .map_err(|e| io("open", &partial, e))?;
    // Large writes: each write of a tokio file is a trip to a blocking
    // thread, and the network hands over small chunks.
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, file);
    progress(have);

    let mut fetched = 0u64;
    let mut attempt = 0;
    // Descriptor without alternate URLs: never fetch from elsewhere.
    let desc = OciDescriptor {
        digest: b.digest.to_string(),
        size: b.size as i64,
        ..Default::default()
    };
    while have < b.size {
        attempt += 1;
        let res = stream_once(
            &b,
            &desc,
            &mut file,
            &mut hasher,
            &mut have,
            &mut fetched,
            progress,
        )
        .await;
        match res {
            Ok(()) => {}
            Err(Failure::Registry(e)) if attempt < ATTEMPTS && transient(&e) => {
                tracing::debug!(digest = b.digest, attempt, error = %e, "blob download retried");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(Failure::Network(m)) if attempt < ATTEMPTS => {
                tracing::debug!(digest = b.digest, attempt, error = %m, "blob download retried");
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
    file.flush().await.map_err(|e| io("write", &partial, e))?;
    file.get_mut()
        .sync_all()
        .await
        .map_err(|e| io("fsync", &partial, e))?;
    drop(file);
    let sum = dwell_storage::image::reference::hex_lower(&hasher.finalize());
    if have != b.size || sum != hex {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(Failure::Other(format!(
            "blob {} does not match its digest (got sha256:{sum}, {have} of {} bytes); the \
             registry sent corrupt or tampered content",
            b.digest, b.size
        )));
    }
    tokio::fs::rename(&partial, &done)
        .await
        .map_err(|e| io("rename", &partial, e))?;
    Ok((done, fetched))
}

/// One request: from `have` to the end (or as far as it goes).
async fn stream_once(
    b: &Blob<'_>,
    desc: &OciDescriptor,
    file: &mut tokio::io::BufWriter<tokio::fs::File>,
    hasher: &mut Sha256,
    have: &mut u64,
    fetched: &mut u64,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(), Failure> {
    let resp = b
        .client
        .pull_blob_stream_partial(b.reference, desc, *have, None)
        .await
        .map_err(Failure::Registry)?;
    let mut stream = match resp {
        BlobResponse::Partial(s) => s.stream,
        BlobResponse::Full(s) => {
            // The registry ignored the range: start over.
            if *have > 0 {
                file.flush()
                    .await
                    .map_err(|e| Failure::Other(format!("write downloaded blob: {e}")))?;
                file.get_mut()
                    .set_len(0)
                    .await
                    .map_err(|e| Failure::Other(format!("truncate partial blob: {e}")))?;
                *hasher = Sha256::new();
                *have = 0;
            }
            s.stream
        }
    };
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Failure::Network(e.to_string()))?;
        if *have + chunk.len() as u64 > b.size {
            return Err(Failure::Other(format!(
                "blob {} is larger than the {} bytes its descriptor states; refusing it",
                b.digest, b.size
            )));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| Failure::Other(format!("write downloaded blob: {e}")))?;
        hasher.update(&chunk);
        *have += chunk.len() as u64;
        *fetched += chunk.len() as u64;
        progress(*have);
    }
    Ok(())
}

/// Network trouble worth retrying (not an answer like 401 or 404).
fn transient(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_timeout() || r.is_connect() || r.is_request() || r.is_body() || r.is_decode()
        }
        OciDistributionError::IoError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code >= 500,
        _ => false,
    }
}

/// sha256 (hex) and length of a file.
async fn hash_file(p: &Path) -> std::io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(p).await?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((
        dwell_storage::image::reference::hex_lower(&h.finalize()),
        len,
    ))
}
