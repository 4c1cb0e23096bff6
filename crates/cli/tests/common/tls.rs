//! TLS for the tests of the port proxy's HTTPS: a throwaway CA and a
//! wildcard certificate made with the `openssl` command (in a temporary
//! directory, gone with it), and a small HTTPS/1.1 client on rustls that
//! reaches 127.0.0.1 while naming any host (SNI and `Host`), so no DNS is
//! needed.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use dwell_testkit::http::{parse, Response};

/// A CA and a certificate for `*.DOMAIN` and `DOMAIN` it signed.
pub struct TestCa {
    pub dir: tempfile::TempDir,
    /// The CA's certificate (PEM): what clients trust.
    pub ca: PathBuf,
    /// The server's certificate (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The domain of the certificate.
    pub domain: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl; scripts/install-deps.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the `openssl` command is there (skips the test otherwise).
pub fn have_openssl() -> bool {
    Command::new("openssl").arg("version").output().is_ok()
}

impl TestCa {
    /// A new CA and a server certificate for `*.{domain}` and `{domain}`.
    pub fn make(domain: &str) -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("dwell-tls-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=dwell test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        let ca = TestCa {
            ca: d.join("ca.pem"),
            cert: d.join("cert.pem"),
            key: d.join("key.pem"),
            domain: domain.to_string(),
            dir,
        };
        ca.reissue();
        ca
    }

    /// A new key and certificate for the domain, over the old files.
    pub fn reissue(&self) {
        let d = self.dir.path();
        let domain = &self.domain;
        openssl(
            d,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "key.pem",
                "-out",
                "csr.pem",
                "-subj",
                &format!("/CN={domain}"),
            ],
        );
        std::fs::write(
            d.join("ext.cnf"),
            format!(
                "subjectAltName=DNS:*.{domain},DNS:{domain}\nbasicConstraints=CA:FALSE\n\
                 keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "csr.pem",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "cert.pem",
                "-days",
                "2",
                "-extfile",
                "ext.cnf",
            ],
        );
    }

    /// A client configuration trusting only this CA, offering `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&self.ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    }
}

/// The certificate the server at `addr` presents for `sni` (DER).
pub fn presented(ca: &TestCa, addr: &str, sni: &str) -> Vec<u8> {
    let s = connect(ca.client(&[b"http/1.1"]), addr, sni).unwrap();
    s.conn.peer_certificates().unwrap()[0].to_vec()
}

/// A TLS connection to `addr` for host name `sni`.
pub fn connect(
    cfg: Arc<rustls::ClientConfig>,
    addr: &str,
    sni: &str,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_string())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let conn = rustls::ClientConnection::new(cfg, name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    // Finish the handshake now, so that its errors come back here.
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// One HTTPS/1.1 request to `addr` for `host` (SNI, and `Host` with the
/// port of `addr`), trusting only `ca`; `Connection: close`.
pub fn request(
    ca: &TestCa,
    addr: &str,
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut s = connect(ca.client(&[b"h2", b"http/1.1"]), addr, host)?;
    assert_eq!(
        s.conn.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the proxy picks HTTP/1.1 from h2 and http/1.1"
    );
    // `Host` as a browser writes it: with the port unless it is 443.
    let authority = match addr.rsplit_once(':') {
        Some((_, "443")) | None => host.to_string(),
        Some((_, port)) => format!("{host}:{port}"),
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    s.flush()?;
    let mut raw = Vec::new();
    if let Err(e) = s.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e);
        }
    }
    Ok(parse(&raw))
}
