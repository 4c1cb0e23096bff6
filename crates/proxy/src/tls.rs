//! TLS of the port proxy (`--proxy-tls-cert PEM --proxy-tls-key PEM`):
//! rustls with the ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` only
//! (the proxy speaks HTTP/1.1; clients that also offer h2, like the E2B
//! SDKs' reqwest and httpx transports, fall back to it).
//!
//! The certificate and key are read at startup: a file that cannot be
//! read, holds no PEM certificate or key, or a key that is not the
//! certificate's stops the daemon with a message naming the file.
//! [`Certificate::reload`] reads them again (the daemon does on SIGHUP):
//! new handshakes then present the new certificate, connections already
//! open keep theirs, and files that do not load leave the old certificate
//! in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The ALPN protocols the proxy offers.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// The certificate the proxy presents, from its two files; replaceable
/// while the proxy serves ([`Certificate::reload`]).
#[derive(Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl Certificate {
    /// Reads a PEM certificate chain (leaf first) and its PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), checking that they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let current = certified(cert, key, &provider)?;
        Ok(Arc::new(Certificate {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(current)),
        }))
    }

    /// Reads the files again; on success new handshakes present what they
    /// hold now, on failure the certificate in use stays (and the error
    /// says why).
    pub fn reload(&self) -> Result<(), String> {
        let fresh = certified(&self.cert, &self.key, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    /// The certificate chain in use.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.now().cert.clone()
    }

    /// The certificate file (`--proxy-tls-cert`).
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }

    fn now(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.now())
    }
}

/// The certificate and key of two files, checked to belong together.
fn certified(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    CertifiedKey::from_der(chain, key_der, provider).map_err(|e| {
        format!(
            "--proxy-tls-key {} does not go with the certificate in --proxy-tls-cert {} ({e}); \
             give the private key the certificate was issued for",
            key.display(),
            cert.display()
        )
    })
}

/// The server side of the proxy's TLS, presenting `cert`.
pub fn server_config(cert: &Arc<Certificate>) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(cert.provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read {flag} {}: {e}; give a readable PEM file",
            path.display()
        )
    })
}

/// The certificates of a PEM file, leaf first.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, "--proxy-tls-cert")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "--proxy-tls-cert {} is not a valid PEM certificate file: {e}",
                path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "--proxy-tls-cert {} holds no certificate (no `BEGIN CERTIFICATE` block); give the \
             PEM certificate chain, the server's certificate first",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, "--proxy-tls-key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "--proxy-tls-key {} holds no usable private key ({e}); give the PEM private key \
             (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`) of the \
             certificate",
            path.display()
        )
    })
}

/// The names of `names` the leaf certificate of `chain` is not valid for
/// (a wildcard `*.DOMAIN` covers every `LABEL.DOMAIN`).
pub fn uncovered(chain: &[CertificateDer<'_>], names: &[String]) -> Vec<String> {
    let Some(leaf) = chain.first() else {
        return names.to_vec();
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return names.to_vec();
    };
    names
        .iter()
        .filter(|n| {
            !ServerName::try_from(n.as_str())
                .is_ok_and(|sn| ee.verify_is_valid_for_subject_name(&sn).is_ok())
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `*.d.test` and `d.test` with its key,
    /// and another key (test material only, made with openssl).
    fn data(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata")
            .join(name)
    }

    #[test]
    fn a_certificate_and_its_key_load() {
        let cert = Certificate::load(&data("wildcard.pem"), &data("wildcard.key")).unwrap();
        let cfg = server_config(&cert).unwrap();
        assert_eq!(cfg.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(cert.chain(), read_chain(&data("wildcard.pem")).unwrap());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let (cert, key) = (data("wildcard.pem"), data("wildcard.key"));
        let e = Certificate::load(&cert, &data("other.key")).unwrap_err();
        assert!(e.contains("does not go with the certificate"), "{e}");
        let e = Certificate::load(&key, &key).unwrap_err();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = Certificate::load(&cert, &cert).unwrap_err();
        assert!(e.contains("holds no usable private key"), "{e}");
        let e = Certificate::load(&data("missing.pem"), &key).unwrap_err();
        assert!(
            e.contains("cannot read --proxy-tls-cert") && e.contains("missing.pem"),
            "{e}"
        );
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = std::env::temp_dir().join(format!("dwell-proxy-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("c.pem"), dir.join("k.pem"));
        std::fs::copy(data("wildcard.pem"), &cert).unwrap();
        std::fs::copy(data("wildcard.key"), &key).unwrap();
        let c = Certificate::load(&cert, &key).unwrap();
        let before = c.chain();
        std::fs::copy(data("other.key"), &key).unwrap();
        let e = c.reload().unwrap_err();
        assert!(e.contains("does not go with"), "{e}");
        assert_eq!(c.chain(), before, "the old certificate stays");
        std::fs::copy(data("wildcard.key"), &key).unwrap();
        c.reload().unwrap();
        assert_eq!(c.chain(), before);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_the_certificate_does_not_cover_are_found() {
        let chain = read_chain(&data("wildcard.pem")).unwrap();
        let names = [
            "8080-abc.d.test".to_string(),
            "api.d.test".to_string(),
            "d.test".to_string(),
            "api.other.test".to_string(),
            "a.b.d.test".to_string(),
        ];
        assert_eq!(
            uncovered(&chain, &names),
            ["api.other.test".to_string(), "a.b.d.test".to_string()]
        );
        assert_eq!(uncovered(&[], &names[..1]), names[..1].to_vec());
    }
}
