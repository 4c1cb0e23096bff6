//! The cluster's identity of one node, made from the shared cluster secret.
//!
//! Every node of a cluster holds the same secret (a file of at least 32
//! random bytes, readable only by the daemon's user). From it each node
//! derives, with HKDF-SHA256 and fixed labels, the same Ed25519 seed, and
//! from that seed the same cluster CA: its key (a PKCS#8 v1 document is a
//! fixed prefix and the seed, RFC 8410) and its self-signed certificate
//! (deterministic: Ed25519 signatures are, and every field is fixed). Nothing
//! of the CA is ever written down or sent: a node that has the secret can
//! make it, one that does not cannot.
//!
//! At start each node makes a fresh key pair of its own and a leaf
//! certificate signed by that CA, for the name `dwell-node` (what clients
//! verify, [`SERVER_NAME`]) with the node's name as its common name (what
//! the other side reads as the peer's name). The leaf key lives only in
//! memory; a restart makes a new one. The rustls configurations built from
//! it are in [`crate::tls`].

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ED25519,
};
use ring::hkdf;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// The least length of a cluster secret, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;
/// The largest secret file read (a secret is a few dozen bytes; anything
/// this big is the wrong file).
const MAX_SECRET_BYTES: u64 = 64 * 1024;
/// The longest node name (the upper bound of an X.509 common name).
pub const MAX_NODE_NAME: usize = 64;
/// The name every node's certificate is issued for and every client
/// verifies: node names need not be DNS names, so the certificate's
/// subject alternative name is this, and the node's name is its common
/// name.
pub const SERVER_NAME: &str = "dwell-node";
/// The common name of the cluster CA.
const CA_NAME: &str = "dwell cluster CA";

/// HKDF salt and info of the CA's seed. Changing either makes every node
/// derive another CA: never change them without a protocol version bump.
const HKDF_SALT: &[u8] = b"dwell cluster secret v1";
const HKDF_INFO_CA: &[u8] = b"dwell cluster CA ed25519 seed v1";
const HKDF_INFO_ID: &[u8] = b"dwell cluster id v1";

/// The DER of an Ed25519 PKCS#8 v1 private key before its 32-byte seed
/// (RFC 8410 section 7): SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 },
/// OCTET STRING { OCTET STRING (32 bytes) } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The cluster's TLS identity of one node.
pub struct ClusterTls {
    pub(crate) node_name: String,
    pub(crate) cluster_id: String,
    pub(crate) ca: CertificateDer<'static>,
    pub(crate) leaf: CertificateDer<'static>,
    pub(crate) server: Arc<rustls::ServerConfig>,
    pub(crate) client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls")
            .field("node_name", &self.node_name)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

/// How to make a good secret file, for error messages.
fn how_to_make(path: &Path) -> String {
    let p = path.display();
    format!(
        "make one with `head -c 32 /dev/urandom > {p}; chmod 600 {p}` and copy that same file to \
         every node"
    )
}

impl ClusterTls {
    /// From the cluster secret file (shared by all nodes; >= 32 bytes;
    /// refused when group- or world-readable or not a regular file, with an
    /// error that says how to fix it), for node `node_name`.
    ///
    /// The file's bytes are the secret, less a trailing line end (`\n` or
    /// `\r\n`), so a secret written by an editor or `echo` is the same as
    /// one written without.
    pub fn from_secret_file(path: &Path, node_name: &str) -> anyhow::Result<ClusterTls> {
        let secret = read_secret_file(path)?;
        ClusterTls::from_secret(&secret, node_name)
            .with_context(|| format!("cannot use the cluster secret file {}", path.display()))
    }

    /// From the cluster secret itself (at least [`MIN_SECRET_BYTES`]
    /// bytes), for node `node_name`.
    pub fn from_secret(secret: &[u8], node_name: &str) -> anyhow::Result<ClusterTls> {
        if secret.len() < MIN_SECRET_BYTES {
            bail!(
                "the cluster secret has {} bytes, fewer than the {MIN_SECRET_BYTES} needed; make \
                 one of {MIN_SECRET_BYTES} random bytes (`head -c 32 /dev/urandom > FILE; chmod \
                 600 FILE`) and give every node the same",
                secret.len()
            );
        }
        check_node_name(node_name)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(secret);
        let seed = expand32(&prk, HKDF_INFO_CA);
        let id = expand32(&prk, HKDF_INFO_ID);
        let cluster_id = id[..8].iter().map(|b| format!("{b:02x}")).collect();

        let mut pkcs8 = ED25519_PKCS8_V1_PREFIX.to_vec();
        pkcs8.extend_from_slice(&seed);
        let ca_key =
            KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(pkcs8), &PKCS_ED25519)
                .context("cannot make the cluster CA key from the secret")?;
        let ca_params = ca_params();
        let ca = ca_params
            .self_signed(&ca_key)
            .context("cannot make the cluster CA certificate")?;
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key =
            KeyPair::generate_for(&PKCS_ED25519).context("cannot make this node's TLS key")?;
        let leaf = leaf_params(node_name)?
            .signed_by(&leaf_key, &issuer)
            .context("cannot sign this node's certificate with the cluster CA")?;
        let leaf_key = PrivatePkcs8KeyDer::from(leaf_key.serialize_der());

        let ca = ca.der().clone();
        let leaf = leaf.der().clone();
        let server = crate::tls::server_config(&ca, &leaf, &leaf_key)?;
        let client = crate::tls::client_config(&ca, &leaf, &leaf_key)?;
        Ok(ClusterTls {
            node_name: node_name.to_string(),
            cluster_id,
            ca,
            leaf,
            server,
            client,
        })
    }

    /// This node's name (the common name of its certificate).
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// A short public tag of the cluster secret (16 hex digits, derived
    /// from the secret by a one-way function apart from the CA): nodes
    /// with the same secret show the same, so a log line can tell an
    /// operator which nodes disagree without showing the secret.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The cluster CA's certificate (the same on every node of the
    /// cluster).
    pub fn ca_certificate(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// This node's certificate (new at each start).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.leaf
    }

    /// The server side of the node channel: TLS 1.3, a client certificate
    /// of this cluster required.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.server.clone()
    }

    /// The client side of the node channel: presents this node's
    /// certificate and accepts only servers of this cluster.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.client.clone()
    }
}

fn expand32(prk: &hkdf::Prk, info: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let infos = [info];
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): cannot fail.
    prk.expand(&infos, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 expands to 32 bytes");
    out
}

/// The CA's certificate parameters: all fixed, so every node makes the
/// same certificate from the same key.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(9999, 12, 31);
    p
}

/// A node's certificate parameters: for [`SERVER_NAME`], its name as
/// common name, usable as TLS server and client. Valid from well before
/// now (nodes' clocks differ) for as long as the CA.
fn leaf_params(node_name: &str) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, node_name);
    p.subject_alt_names = vec![SanType::DnsName(
        SERVER_NAME
            .try_into()
            .context("the node certificate's name")?,
    )];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.use_authority_key_identifier_extension = true;
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(9999, 12, 31);
    Ok(p)
}

/// A node name fit for a certificate: 1 to [`MAX_NODE_NAME`] bytes of
/// UTF-8 without control characters.
fn check_node_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > MAX_NODE_NAME || name.chars().any(char::is_control) {
        bail!(
            "node name {name:?} cannot name a node's certificate: give 1 to {MAX_NODE_NAME} bytes \
             without control characters (`--node-name n1`)"
        );
    }
    Ok(())
}

/// Reads a secret file after checking that it is a regular file (not a
/// symbolic link) that only its owner can read.
fn read_secret_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let p = path.display();
    let meta = std::fs::symlink_metadata(path).with_context(|| {
        format!(
            "cannot read the cluster secret file {p}; {}",
            how_to_make(path)
        )
    })?;
    check_file(path, &meta)?;
    // O_NOFOLLOW and O_NONBLOCK: what is opened is what was checked (a
    // link swapped in meanwhile fails, a FIFO does not block), and it is
    // checked again through the open file.
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| {
            format!(
                "cannot open the cluster secret file {p} (is the daemon running as its owner?); \
                 {}",
                how_to_make(path)
            )
        })?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat the cluster secret file {p}"))?;
    check_file(path, &meta)?;
    let mut secret = Vec::new();
    file.by_ref()
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut secret)
        .with_context(|| format!("cannot read the cluster secret file {p}"))?;
    if secret.len() as u64 > MAX_SECRET_BYTES {
        bail!(
            "the cluster secret file {p} is larger than {MAX_SECRET_BYTES} bytes: not a secret \
             file; {}",
            how_to_make(path)
        );
    }
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.len() < MIN_SECRET_BYTES {
        bail!(
            "the cluster secret file {p} holds {} bytes, fewer than the {MIN_SECRET_BYTES} \
             needed; {}",
            secret.len(),
            how_to_make(path)
        );
    }
    Ok(secret)
}

fn check_file(path: &Path, meta: &std::fs::Metadata) -> anyhow::Result<()> {
    let p = path.display();
    let ft = meta.file_type();
    if ft.is_symlink() {
        bail!(
            "the cluster secret file {p} is a symbolic link; give the path of the file itself \
             (a regular file of mode 0600), or {}",
            how_to_make(path)
        );
    }
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        bail!(
            "the cluster secret file {p} is {what}; {}",
            how_to_make(path)
        );
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        bail!(
            "the cluster secret file {p} belongs to uid {}, not to the daemon's user (uid {me}): \
             its owner could replace it and act as a node of the cluster; `chown {me} {p}`",
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "the cluster secret file {p} has mode {mode:04o}: its group or others may read it, \
             and whoever can read it can act as a node of the cluster; make it readable by the \
             daemon's user only: `chmod 600 {p}`"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn write(dir: &Path, name: &str, data: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn the_same_secret_makes_the_same_ca_and_new_node_keys() {
        let a = ClusterTls::from_secret(SECRET, "n1").unwrap();
        let b = ClusterTls::from_secret(SECRET, "n2").unwrap();
        let c = ClusterTls::from_secret(b"another secret of thirty-two bytes", "n1").unwrap();
        assert_eq!(a.ca_certificate(), b.ca_certificate());
        assert_eq!(a.cluster_id(), b.cluster_id());
        assert_eq!(a.cluster_id().len(), 16);
        assert_ne!(a.ca_certificate(), c.ca_certificate());
        assert_ne!(a.cluster_id(), c.cluster_id());
        let again = ClusterTls::from_secret(SECRET, "n1").unwrap();
        assert_ne!(
            a.certificate(),
            again.certificate(),
            "a fresh key per start"
        );
        assert_eq!(a.node_name(), "n1");
        assert_eq!(crate::tls::node_name_of(a.certificate()).unwrap(), "n1");
        assert_eq!(crate::tls::node_name_of(b.certificate()).unwrap(), "n2");
    }

    #[test]
    fn the_node_certificate_chains_to_the_ca_for_the_node_name() {
        let a = ClusterTls::from_secret(SECRET, "node one ü").unwrap();
        let anchor = webpki::anchor_from_trusted_cert(a.ca_certificate()).unwrap();
        let ee = webpki::EndEntityCert::try_from(a.certificate()).unwrap();
        let now = rustls_pki_types::UnixTime::now();
        ee.verify_for_usage(
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
            &[anchor],
            &[],
            now,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .unwrap();
        let name = rustls_pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        ee.verify_is_valid_for_subject_name(&name).unwrap();
        assert_eq!(
            crate::tls::node_name_of(a.certificate()).unwrap(),
            "node one ü"
        );
    }

    #[test]
    fn short_secrets_and_bad_node_names_are_refused() {
        let e = ClusterTls::from_secret(&SECRET[..31], "n1").unwrap_err();
        assert!(format!("{e:#}").contains("31 bytes"), "{e:#}");
        for bad in ["", "a\nb", &"x".repeat(65)] {
            let e = ClusterTls::from_secret(SECRET, bad).unwrap_err();
            assert!(format!("{e:#}").contains("--node-name"), "{e:#}");
        }
        ClusterTls::from_secret(SECRET, &"x".repeat(64)).unwrap();
    }

    #[test]
    fn secret_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();

        let good = write(d, "good", SECRET, 0o600);
        let from_file = ClusterTls::from_secret_file(&good, "n1").unwrap();
        let direct = ClusterTls::from_secret(SECRET, "n1").unwrap();
        assert_eq!(from_file.ca_certificate(), direct.ca_certificate());

        // A line end is not part of the secret; 0400 is fine too.
        let mut lined = SECRET.to_vec();
        lined.extend_from_slice(b"\r\n");
        let lined = write(d, "lined", &lined, 0o400);
        let t = ClusterTls::from_secret_file(&lined, "n1").unwrap();
        assert_eq!(t.ca_certificate(), direct.ca_certificate());

        let msg = |path: &Path| {
            format!(
                "{:#}",
                ClusterTls::from_secret_file(path, "n1").unwrap_err()
            )
        };

        let short = write(d, "short", &SECRET[..20], 0o600);
        let e = msg(&short);
        assert!(
            e.contains("holds 20 bytes") && e.contains("head -c 32 /dev/urandom"),
            "{e}"
        );

        let open = write(d, "open", SECRET, 0o644);
        let e = msg(&open);
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        let group = write(d, "group", SECRET, 0o640);
        assert!(msg(&group).contains("mode 0640"));

        let link = d.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let e = msg(&link);
        assert!(e.contains("symbolic link"), "{e}");

        let sub = d.join("dir");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = msg(&sub);
        assert!(
            e.contains("is a directory") && e.contains("chmod 600"),
            "{e}"
        );

        let e = msg(&d.join("missing"));
        assert!(
            e.contains("cannot read the cluster secret file") && e.contains("missing"),
            "{e}"
        );

        let big = write(d, "big", &vec![7u8; MAX_SECRET_BYTES as usize + 1], 0o600);
        assert!(msg(&big).contains("larger than"));
    }
}
