//! Pulling an image: resolve the reference to one linux/amd64 manifest
//! (following image indexes), fetch and verify its config, download the
//! layers the store lacks (in parallel, resumable), then hand everything to
//! the image store, which extracts each layer once and records the image.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dwell_storage::{Image, Pulled, Reference, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::download::{self, Blob, Failure};
use crate::context::blocking;
use crate::controller::Controller;
use crate::error::{Error, Result};

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
const ACCEPT: [&str; 4] = [
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One layer of a pull, as announced.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PullLayer {
    pub digest: String,
    pub size: u64,
    pub present: bool,
}

/// A step of a pull (the API streams these; same shape as the contract's).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullEvent {
    Resolved {
        source: String,
        digest: String,
        layers: Vec<PullLayer>,
    },
    Progress {
        digest: String,
        done: u64,
        total: u64,
    },
    Downloaded {
        digest: String,
    },
    Extracting,
    Done {
        image: Box<Image>,
        fetched_bytes: u64,
        reused_layers: usize,
        shared_layers: usize,
    },
}

#[derive(Deserialize)]
struct Desc {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Vec<Desc>,
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
}

/// Where a pull goes: a mirror or the registry itself.
struct Source {
    host: String,
    mirror: bool,
}

/// What the tenant's client for one host holds.
struct Session {
    client: oci_client::Client,
    auth: RegistryAuth,
    with_credentials: bool,
    host: String,
}

impl Controller {
    /// Pulls `reference` for `tenant` (any tenant may pull), sending
    /// progress to `events` when given. Returns the stored image.
    pub async fn pull_image(
        &self,
        tenant: &str,
        reference: &str,
        events: Option<mpsc::Sender<PullEvent>>,
    ) -> Result<Image> {
        if dwell_storage::is_builtin(reference) {
            return Err(Error::invalid(
                "reference",
                format!("{reference:?} is a built-in image; it is never pulled"),
            ));
        }
        let r = Reference::parse(reference)?;
        let settings = self.registry_settings();
        let mut sources: Vec<Source> = settings
            .mirrors
            .get(&r.registry)
            .into_iter()
            .flatten()
            .map(|m| Source {
                host: m.host.clone(),
                mirror: true,
            })
            .collect();
        sources.push(Source {
            host: r.registry.clone(),
            mirror: false,
        });
        sources.retain(|s| settings.is_allowed(&s.host));
        if sources.is_empty() {
            return Err(Error::RegistryNotAllowed {
                registry: r.registry.clone(),
                image: r.familiar(),
            });
        }
        let mut last = None;
        for s in sources {
            let session = self.session(tenant, &s.host, &settings)?;
            match self.pull_from(&session, &r, tenant, events.as_ref()).await {
                Ok(img) => return Ok(img),
                Err(e) if s.mirror => {
                    tracing::warn!(mirror = %s.host, image = %r, error = %e,
                        "the mirror failed; trying the next source");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Internal("no registry to pull from".into())))
    }

    fn session(
        &self,
        tenant: &str,
        host: &str,
        settings: &super::RegistrySettings,
    ) -> Result<Session> {
        let protocol = if settings.is_insecure(host) {
            ClientProtocol::HttpsExcept(vec![host.to_string()])
        } else {
            ClientProtocol::Https
        };
        let config = ClientConfig {
            protocol,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(15)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        };
        let (auth, with_credentials) = match self.registry_secret(tenant, host)? {
            Some((u, p)) => (RegistryAuth::Basic(u, p), true),
            None => (RegistryAuth::Anonymous, false),
        };
        Ok(Session {
            client: oci_client::Client::new(config),
            auth,
            with_credentials,
            host: host.to_string(),
        })
    }

    async fn pull_from(
        &self,
        s: &Session,
        r: &Reference,
        tenant: &str,
        events: Option<&mpsc::Sender<PullEvent>>,
    ) -> Result<Image> {
        let shown = r.familiar();
        let send = |e: PullEvent| async move {
            if let Some(tx) = events {
                let _ = tx.send(e).await;
            }
        };
        let oref = |digest: Option<&str>| match digest {
            Some(d) => oci_client::Reference::with_digest(
                s.host.clone(),
                r.repository.clone(),
                d.to_string(),
            ),
            None => oci_client::Reference::with_tag(
                s.host.clone(),
                r.repository.clone(),
                r.tag.clone().unwrap_or_else(|| "latest".into()),
            ),
        };
        let fail = |e: OciDistributionError| classify(e, &s.host, &shown, s.with_credentials);

        // Resolve to one image manifest.
        let mut want = r.digest.clone();
        let mut target = oref(want.as_deref());
        let (manifest_bytes, manifest_digest, manifest) = {
            let mut depth = 0;
            loop {
                depth += 1;
                let (bytes, _) = s
                    .client
                    .pull_manifest_raw(&target, &s.auth, &ACCEPT)
                    .await
                    .map_err(fail)?;
                if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                    return Err(bad(
                        &shown,
                        format!(
                            "its manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                            bytes.len()
                        ),
                    ));
                }
                let digest = format!("sha256:{}", hex(&Sha256::digest(&bytes)));
                if let Some(w) = &want {
                    if *w != digest {
                        return Err(bad(
                            &shown,
                            format!(
                                "the registry sent a manifest hashing to {digest} for {w}; it is \
                             corrupt or was tampered with"
                            ),
                        ));
                    }
                }
                let m: Manifest = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(&shown, format!("its manifest is not valid JSON: {e}")))?;
                if m.schema_version != 2 {
                    return Err(bad(
                        &shown,
                        format!(
                            "manifest schema version {} is not supported (only 2)",
                            m.schema_version
                        ),
                    ));
                }
                let is_index = INDEX_TYPES.contains(&m.media_type.as_str())
                    || (m.config.is_none() && !m.manifests.is_empty());
                if !is_index {
                    break (bytes, digest, m);
                }
                if depth >= 4 {
                    return Err(bad(&shown, "image indexes nest too deeply".into()));
                }
                let pick = pick_platform(&m.manifests).ok_or_else(|| {
                    let have: Vec<String> = m
                        .manifests
                        .iter()
                        .filter_map(|d| d.platform.as_ref())
                        .map(|p| format!("{}/{}", p.os, p.architecture))
                        .collect();
                    Error::NotInRegistry {
                        image: shown.clone(),
                        message: format!(
                            "image {shown} has no linux/amd64 variant (it has: {}); pull a \
                             reference built for this platform",
                            have.join(", ")
                        ),
                    }
                })?;
                // oci-client reads a manifest whole before dwell sees it;
                // at least refuse one the index already says is too big.
                if pick.size > MAX_MANIFEST_BYTES {
                    return Err(bad(
                        &shown,
                        format!(
                            "the index names a linux/amd64 manifest of {} bytes, more than the \
                             {MAX_MANIFEST_BYTES} allowed",
                            pick.size
                        ),
                    ));
                }
                want = Some(pick.digest.clone());
                target = oref(want.as_deref());
            }
        };
        let config_desc = manifest
            .config
            .ok_or_else(|| bad(&shown, "its manifest names no config".into()))?;
        check_digest(&shown, &config_desc.digest)?;
        if config_desc.size > MAX_CONFIG_BYTES {
            return Err(bad(
                &shown,
                format!(
                    "its config is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                    config_desc.size
                ),
            ));
        }
        for l in &manifest.layers {
            check_digest(&shown, &l.digest)?;
            if l.media_type.contains("zstd") {
                return Err(bad(
                    &shown,
                    format!(
                        "layer {} is zstd-compressed ({}), which dwell cannot extract yet; pull a \
                     gzip variant",
                        l.digest, l.media_type
                    ),
                ));
            }
            if l.media_type.contains("nondistributable") || l.media_type.contains("foreign") {
                return Err(bad(
                    &shown,
                    format!(
                        "layer {} is a foreign layer ({}) that registries do not serve",
                        l.digest, l.media_type
                    ),
                ));
            }
        }

        // What this tenant may reuse from the store: content that entered
        // it through another tenant's credentialed pull is downloaded again
        // (with this tenant's session, which proves it may read it).
        let access = {
            let inner = self.inner.clone();
            blocking(move || inner.images.access()).await??
        };
        let images = &self.inner.images;
        let reusable = |d: &str| images.has_blob(d) && access.blob(d, tenant);

        // The config: from the store, or fetched (capped, verified).
        let config = if reusable(&config_desc.digest) {
            let (inner, d) = (self.inner.clone(), config_desc.digest.clone());
            blocking(move || inner.images.read_blob(&d, MAX_CONFIG_BYTES)).await??
        } else {
            fetch_small(s, &target, &config_desc, MAX_CONFIG_BYTES, &shown).await?
        };

        let layers: Vec<(String, u64, bool)> = manifest
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size, reusable(&l.digest)))
            .collect();
        let reused = layers.iter().filter(|l| l.2).count();
        send(PullEvent::Resolved {
            source: format!("{}/{}", s.host, r.repository),
            digest: manifest_digest.clone(),
            layers: layers
                .iter()
                .map(|(d, size, present)| PullLayer {
                    digest: d.clone(),
                    size: *size,
                    present: *present,
                })
                .collect(),
        })
        .await;

        // Download what is missing, a few layers at once.
        let fetched = Arc::new(AtomicU64::new(0));
        let shared = Arc::new(AtomicU64::new(0));
        let share = self.image_share();
        // Per tenant: a download (complete or partial) left by another
        // tenant's pull is neither reused as proof of access nor resumed.
        let dir = images
            .downloads_dir()
            .join(&hex(&Sha256::digest(tenant.as_bytes()))[..32]);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            bad(
                &shown,
                format!("creating the download directory {}: {e}", dir.display()),
            )
        })?;
        let parallel = self.registry_settings().parallel.max(1);
        let missing: Vec<(String, u64)> = layers
            .iter()
            .filter(|l| !l.2)
            .map(|l| (l.0.clone(), l.1))
            .collect();
        let mut jobs = Vec::with_capacity(missing.len());
        for (digest, size) in missing {
            let (fetched, dir, target) = (fetched.clone(), dir.clone(), target.clone());
            let (shared, share) = (shared.clone(), share.clone());
            let shown = shown.clone();
            jobs.push(Box::pin(async move {
                // Another daemon may have shared it through the object store.
                if let Some(store) = share {
                    let (d, dir) = (digest.clone(), dir.clone());
                    let hit = tokio::task::spawn_blocking(move || {
                        super::share::fetch(&store, &d, size, &dir)
                    })
                    .await
                    .unwrap_or(false);
                    if hit {
                        shared.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let progress = |done: u64| {
                    if let Some(tx) = events {
                        let _ = tx.try_send(PullEvent::Progress {
                            digest: digest.clone(),
                            done,
                            total: size,
                        });
                    }
                };
                let res = download::fetch(
                    Blob {
                        client: &s.client,
                        reference: &target,
                        digest: &digest,
                        size,
                        dir: &dir,
                    },
                    &progress,
                )
                .await;
                match res {
                    Ok((path, n)) => {
                        fetched.fetch_add(n, Ordering::Relaxed);
                        if let Some(tx) = events {
                            let _ = tx
                                .send(PullEvent::Downloaded {
                                    digest: digest.clone(),
                                })
                                .await;
                        }
                        Ok((digest.clone(), path))
                    }
                    Err(Failure::Registry(e)) => {
                        Err(classify(e, &s.host, &shown, s.with_credentials))
                    }
                    Err(Failure::Network(m)) => Err(Error::PullFailed {
                        image: shown.clone(),
                        message: format!(
                            "pulling {shown}: the connection to {} kept breaking ({m}); run the \
                             pull again to resume",
                            s.host
                        ),
                    }),
                    Err(Failure::Other(m)) => Err(bad(&shown, m)),
                }
            }));
        }
        let mut got = std::collections::HashMap::new();
        let mut stream = futures_util::stream::iter(jobs).buffer_unordered(parallel);
        while let Some(res) = stream.next().await {
            let (d, p) = res?;
            got.insert(d, p);
        }
        drop(stream);

        send(PullEvent::Extracting).await;
        let pulled = Pulled {
            reference: r.clone(),
            manifest: manifest_bytes,
            config,
            layers: layers
                .iter()
                .map(|(d, _, _)| (d.clone(), got.remove(d)))
                .collect(),
            source: format!("registry:{}/{}", s.host, r.repository),
            tenants: s.with_credentials.then(|| vec![tenant.to_string()]),
            tenant: tenant.to_string(),
        };
        let inner = self.inner.clone();
        let image = blocking(move || inner.images.add_pulled(pulled))
            .await?
            .map_err(|e| bad(&shown, e.to_string()))?;
        // Only public content goes to the object store, which any daemon's
        // pull of any tenant reads from.
        if let (Some(store), None) = (share, &image.tenants) {
            let (inner, blobs) = (self.inner.clone(), image.blobs.clone());
            blocking(move || super::share::publish(&store, &inner.images, &blobs)).await?;
        }
        send(PullEvent::Done {
            image: Box::new(image.clone()),
            fetched_bytes: fetched.load(Ordering::Relaxed),
            reused_layers: reused,
            shared_layers: shared.load(Ordering::Relaxed) as usize,
        })
        .await;
        Ok(image)
    }
}

/// Fetches a small blob (a config) whole, capped and verified.
async fn fetch_small(
    s: &Session,
    target: &oci_client::Reference,
    d: &Desc,
    cap: u64,
    shown: &str,
) -> Result<Vec<u8>> {
    let desc = oci_client::manifest::OciDescriptor {
        digest: d.digest.clone(),
        size: d.size as i64,
        ..Default::default()
    };
    let mut stream = s
        .client
        .pull_blob_stream(target, &desc)
        .await
        .map_err(|e| classify(e, &s.host, shown, s.with_credentials))?;
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::PullFailed {
            image: shown.to_string(),
            message: format!("pulling {shown}: reading its config failed: {e}; try again"),
        })?;
        out.extend_from_slice(&chunk);
        if out.len() as u64 > cap {
            return Err(bad(shown, format!("its config is larger than {cap} bytes")));
        }
    }
    let actual = format!("sha256:{}", hex(&Sha256::digest(&out)));
    if actual != d.digest {
        return Err(bad(
            shown,
            format!(
            "its config hashes to {actual}, not {}; the registry sent corrupt or tampered content",
            d.digest
        ),
        ));
    }
    Ok(out)
}

/// linux/amd64 (no variant or v1) from an index.
fn pick_platform(list: &[Desc]) -> Option<&Desc> {
    list.iter().find(|d| {
        d.platform.as_ref().is_some_and(|p| {
            p.os == "linux"
                && p.architecture == "amd64"
                && p.variant
                    .as_deref()
                    .is_none_or(|v| v == "v1" || v.is_empty())
        })
    })
}

fn check_digest(shown: &str, d: &str) -> Result<()> {
    if dwell_storage::digest_hex(d).is_some() {
        Ok(())
    } else {
        Err(bad(
            shown,
            format!("digest {d:?} is not sha256:<64 hex digits>"),
        ))
    }
}

fn bad(shown: &str, why: String) -> Error {
    Error::PullFailed {
        image: shown.to_string(),
        message: format!("pulling {shown} failed: {why}"),
    }
}

fn hex(b: &[u8]) -> String {
    dwell_storage::image::reference::hex_lower(b)
}

/// Turns a registry error into a control error that says what to do.
fn classify(e: OciDistributionError, host: &str, shown: &str, with_credentials: bool) -> Error {
    let auth = |detail: String| Error::RegistryAuth {
        registry: host.to_string(),
        image: shown.to_string(),
        message: if with_credentials {
            format!(
                "registry {host} refused the stored login for {shown} ({detail}); check the user \
                 name and password, then `dwell registry login {host}` again"
            )
        } else {
            format!(
                "registry {host} needs a login to pull {shown} ({detail}); run `dwell registry \
                 login {host} -u USER --password-stdin` first"
            )
        },
    };
    let missing = |detail: String| Error::NotInRegistry {
        image: shown.to_string(),
        message: format!(
            "registry {host} has no image {shown} ({detail}); check the repository name and tag"
        ),
    };
    match e {
        OciDistributionError::UnauthorizedError { url } => auth(format!("401 for {url}")),
        OciDistributionError::AuthenticationFailure(m) => auth(echoed(&m)),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}", e.code))
                .collect();
            let text = echoed(&envelope.to_string());
            let has = |c: &str| codes.iter().any(|x| x.eq_ignore_ascii_case(c));
            if has("Unauthorized") || has("Denied") {
                auth(text)
            } else if has("ManifestUnknown") || has("NameUnknown") || has("BlobUnknown") {
                missing(text)
            } else {
                bad(shown, format!("registry {host} answered: {text}"))
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 | 403 => auth(format!("HTTP {code}")),
            404 => missing(format!("HTTP 404 {}", echoed(&message))),
            _ => Error::PullFailed {
                image: shown.to_string(),
                message: format!(
                    "pulling {shown}: registry {host} answered HTTP {code}: {}; try again later",
                    echoed(&message)
                ),
            },
        },
        OciDistributionError::RequestError(r) => {
            if let Some(st) = r.status() {
                match st.as_u16() {
                    401 | 403 => return auth(format!("HTTP {st}")),
                    404 => return missing(format!("HTTP {st}")),
                    _ => {}
                }
            }
            Error::PullFailed {
                image: shown.to_string(),
                message: format!(
                    "pulling {shown}: cannot reach registry {host}: {}; check the host name and \
                     port, and whether it speaks HTTPS (plain-HTTP registries must be named with \
                     `dwell serve --insecure-registry {host}`)",
                    echoed(&r.to_string())
                ),
            }
        }
        OciDistributionError::DigestError(d) => bad(
            shown,
            format!(
            "the registry sent content that does not match its digest ({d}); it is corrupt or was \
             tampered with"
        ),
        ),
        other => bad(shown, echoed(&other.to_string())),
    }
}

/// Most bytes of a registry's own text passed on to the tenant.
const ECHOED_BYTES: usize = 512;

/// A registry's text as it may reach the tenant: control characters
/// replaced by spaces, trimmed, cut at [`ECHOED_BYTES`] (on a character
/// boundary) with a marker, so a registry can neither flood the error nor
/// smuggle terminal escapes into it.
fn echoed(text: &str) -> String {
    let clean: String = text
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() <= ECHOED_BYTES {
        return clean;
    }
    let mut end = ECHOED_BYTES;
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut)", &clean[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_registry_text_is_cut_and_has_no_control_characters() {
        let hostile = format!("\x1b[2Jroot:x:0:0\r\n{}", "é".repeat(2000));
        let out = echoed(&hostile);
        assert!(!out.chars().any(char::is_control), "{out:?}");
        assert!(out.len() <= ECHOED_BYTES + "… (cut)".len(), "{}", out.len());
        assert!(out.ends_with("… (cut)"));
        assert_eq!(echoed("  blob unknown\n"), "blob unknown");
        let e = classify(
            OciDistributionError::ServerError {
                code: 500,
                url: "http://r/v2/".into(),
                message: "x".repeat(1 << 20),
            },
            "r",
            "r/x:1",
            false,
        );
        assert!(e.to_string().len() < 2048, "{}", e.to_string().len());
    }
}
