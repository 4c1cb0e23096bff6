//! The rustls configurations of the node channel, and the node name a
//! peer's certificate carries.
//!
//! Both sides trust only the cluster CA (a root store holding nothing
//! else), speak TLS 1.3 only (every peer is a dwell node of the same
//! build family) with the ring provider, and offer ALPN `http/1.1`. The
//! server requires a client certificate that chains to the CA; the client
//! verifies the server's certificate for [`SERVER_NAME`](crate::identity::SERVER_NAME). Node names are
//! read from the common name of the (already verified) peer certificate.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// The ALPN protocol of the node channel.
pub const ALPN: &[u8] = b"http/1.1";

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .context("the cluster CA certificate is not a usable trust anchor")?;
    Ok(Arc::new(roots))
}

/// The server side: a client certificate of this cluster required.
pub(crate) fn server_config(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    key: &PrivatePkcs8KeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .context("cannot set up the verifier of nodes' certificates")?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("cannot set up TLS 1.3")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![leaf.clone()], PrivateKeyDer::Pkcs8(key.clone_key()))
        .context("cannot use this node's certificate for the node listener")?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// The client side: presents this node's certificate, trusts only the
/// cluster CA.
pub(crate) fn client_config(
    ca: &CertificateDer<'static>,
    leaf: &CertificateDer<'static>,
    key: &PrivatePkcs8KeyDer<'static>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("cannot set up TLS 1.3")?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(vec![leaf.clone()], PrivateKeyDer::Pkcs8(key.clone_key()))
        .context("cannot use this node's certificate to connect to nodes")?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(cfg))
}

/// The node name of a cluster certificate: its subject's common name.
/// Only for certificates rustls has verified against the cluster CA.
pub fn node_name_of(cert: &CertificateDer<'_>) -> anyhow::Result<String> {
    let no = || anyhow!("the peer's certificate names no node (no common name in its subject)");
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version,
    //   serialNumber, signature, issuer, validity, subject, ... }, ... }
    let (_, cert_body, _) = der_read(cert.as_ref()).ok_or_else(no)?;
    let (_, mut tbs, _) = der_read(cert_body).ok_or_else(no)?;
    let mut field = 0;
    let subject = loop {
        let (tag, value, rest) = der_read(tbs).ok_or_else(no)?;
        tbs = rest;
        if field == 0 && tag == 0xa0 {
            continue; // the explicit version
        }
        // serialNumber, signature, issuer, validity, then subject.
        if field == 4 {
            break value;
        }
        field += 1;
    };
    // Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    let mut rdns = subject;
    while !rdns.is_empty() {
        let (_, set, rest) = der_read(rdns).ok_or_else(no)?;
        rdns = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, rest) = der_read(atvs).ok_or_else(no)?;
            atvs = rest;
            let (tag, oid, value) = der_read(atv).ok_or_else(no)?;
            // id-at-commonName, 2.5.4.3
            if tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (tag, text, _) = der_read(value).ok_or_else(no)?;
                // UTF8String, PrintableString or IA5String.
                if matches!(tag, 0x0c | 0x13 | 0x16) {
                    return String::from_utf8(text.to_vec())
                        .map_err(|_| anyhow!("the peer certificate's common name is not UTF-8"));
                }
                return Err(no());
            }
        }
    }
    Err(no())
}

/// One DER element of `input`: its tag, its contents and what follows it
/// (single-byte tags, definite lengths of up to 4 bytes).
fn der_read(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_elements_are_read_with_short_and_long_lengths() {
        assert_eq!(
            der_read(&[0x04, 0x02, 1, 2, 9]),
            Some((0x04, &[1u8, 2][..], &[9u8][..]))
        );
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(vec![5u8; 256]);
        let (tag, value, rest) = der_read(&long).unwrap();
        assert_eq!((tag, value.len(), rest.len()), (0x04, 256, 0));
        assert_eq!(der_read(&[0x04, 0x03, 1, 2]), None, "truncated");
        assert_eq!(der_read(&[0x04, 0x80]), None, "indefinite length");
        assert_eq!(der_read(&[0x04]), None);
    }

    #[test]
    fn garbage_names_no_node() {
        let e =
            node_name_of(&CertificateDer::from(vec![0x30, 0x03, 0x30, 0x01, 0x00])).unwrap_err();
        assert!(e.to_string().contains("names no node"), "{e}");
        assert!(node_name_of(&CertificateDer::from(Vec::new())).is_err());
    }

    #[test]
    fn configurations_speak_tls13_with_http11() {
        let t = crate::ClusterTls::from_secret(&[9u8; 32], "n1").unwrap();
        assert_eq!(t.server_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert_eq!(t.client_config().alpn_protocols, vec![b"http/1.1".to_vec()]);
    }
}
