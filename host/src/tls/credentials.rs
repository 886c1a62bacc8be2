//! A node's credentials (`--tls-dir`): its certificate and key and its
//! cluster's CA, checked when loaded (each file parses, the key is the
//! certificate's, the certificate is the CA's and valid now), and what
//! they make: the listener's rustls configuration (client certificates of
//! the CA asked for but not required, so browsers still reach REST) and the
//! gRPC channels' client configuration (peers must present a certificate
//! of the CA naming the host they were called at).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::{CA_CERT, HANDSHAKE_TIMEOUT, NODE_CERT, NODE_KEY, TlsError, host_of};

/// A node's credentials, loaded and checked.
pub struct Credentials {
    dir: PathBuf,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl Credentials {
    /// Loads `ca.crt`, `node.crt` and `node.key` from `dir`; refuses, naming
    /// the file, any that is missing or does not parse, a key that is not
    /// the certificate's, and a certificate that is not the CA's or is not
    /// valid now (expired, not yet valid).
    pub fn load(dir: &Path) -> Result<Self, TlsError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| TlsError::file(&path, e)).map(|text| (path, text))
        };
        let ((ca_path, ca_pem), (cert_path, cert_pem), (key_path, key_pem)) =
            (read(CA_CERT)?, read(NODE_CERT)?, read(NODE_KEY)?);
        let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| TlsError::file(&ca_path, format!("not a PEM certificate ({e})")))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| TlsError::file(&cert_path, format!("not a PEM certificate ({e})")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| TlsError::file(&key_path, format!("not a PEM private key ({e})")))?;
        keys_match(&cert, &key).map_err(|why| TlsError::file(&key_path, why))?;
        issued_and_valid(&ca, &cert).map_err(|why| TlsError::file(&cert_path, why))?;
        Ok(Self { dir: dir.to_path_buf(), ca_pem, cert_pem, key_pem, ca, cert, key })
    }

    /// The folder the credentials came from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The listener's TLS configuration: this node's certificate; a client
    /// certificate of the CA verified when presented, none required; ALPN
    /// `h2` (peers, HTTP/2 clients) and `http/1.1`.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = provider();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.clone()).map_err(|e| TlsError::file(self.dir.join(CA_CERT), e))?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::file(self.dir.join(CA_CERT), e))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Make(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key.clone_key())
            .map_err(|e| TlsError::file(self.dir.join(NODE_CERT), e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        config.ignore_client_order = true;
        Ok(Arc::new(config))
    }

    /// What the gRPC channels to peers present and trust; a handshake has
    /// [`HANDSHAKE_TIMEOUT`], as on the listener.
    pub fn client_config(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .timeout(HANDSHAKE_TIMEOUT)
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
    }

    /// This node's own certificate.
    pub fn own_der(&self) -> CertificateDer<'static> {
        self.cert.clone()
    }
}

/// rustls with *ring*, AES-128-GCM first, and the listener chooses by its
/// own order: nodes move files over TLS, and AES-128 (10 rounds, against
/// AES-256's 14) takes about a quarter less of the CPU per byte, with a
/// security margin TLS 1.3 requires every implementation to accept. The
/// peers, browsers and curl all offer it; a client that does not gets the
/// next suite both know.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let first = cipher_suite::TLS13_AES_128_GCM_SHA256.suite();
    provider.cipher_suites.sort_by_key(|suite| suite.suite() != first);
    Arc::new(provider)
}

/// Whether the certificate `der` (a peer's, verified by the handshake)
/// names the host of `addr` (`host:port`): a member may only speak for the
/// address its certificate was issued for.
pub fn speaks_for(der: &CertificateDer<'_>, addr: &str) -> bool {
    let Some(host) = host_of(addr) else { return false };
    let Ok(name) = ServerName::try_from(host) else { return false };
    webpki::EndEntityCert::try_from(der).is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Whether `key` is the private key of `cert`.
fn keys_match(cert: &CertificateDer<'static>, key: &PrivateKeyDer<'static>) -> Result<(), String> {
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key.clone_key()).map_err(|e| format!("unusable key: {e}"))?;
    rustls::sign::CertifiedKey::new(vec![cert.clone()], signing)
        .keys_match()
        .map_err(|_| "is not the key of the certificate beside it".to_owned())
}

/// Whether `key` (rcgen's) is the key of the certificate in `cert_pem`.
pub fn check_key_matches(cert_pem: &str, key: &rcgen::KeyPair) -> Result<(), String> {
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| format!("not a certificate ({e})"))?;
    keys_match(&cert, &PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?)
}

/// Whether `cert` was issued by the CA `ca` and is valid now.
fn issued_and_valid(ca: &CertificateDer<'static>, cert: &CertificateDer<'static>) -> Result<(), String> {
    let anchor = webpki::anchor_from_trusted_cert(ca).map_err(|e| format!("the CA beside it does not parse: {e}"))?;
    let cert = webpki::EndEntityCert::try_from(cert).map_err(|e| format!("does not parse: {e}"))?;
    let anchors = [anchor];
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } => "has expired".to_owned(),
        webpki::Error::CertNotValidYet { .. } => "is not valid yet".to_owned(),
        webpki::Error::UnknownIssuer => "was not issued by the CA beside it (ca.crt)".to_owned(),
        other => format!("is not usable: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, make_ca, make_node};
    use super::*;

    /// A node folder like `make_node`'s, but with a certificate valid
    /// from `from` to `to` days from now.
    fn node_valid(dir: &Path, from: i64, to: i64) -> PathBuf {
        let ca = dir.join("ca");
        if !ca.join(CA_KEY).exists() {
            make_ca(&ca, 30).unwrap();
        }
        let ca_pem = std::fs::read_to_string(ca.join(CA_CERT)).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(ca.join(CA_KEY)).unwrap()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages =
            vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(to);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let out = dir.join(format!("node{from}{to}"));
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(NODE_CERT), cert.pem()).unwrap();
        std::fs::write(out.join(NODE_KEY), key.serialize_pem()).unwrap();
        std::fs::write(out.join(CA_CERT), ca_pem).unwrap();
        out
    }

    #[test]
    fn expired_and_not_yet_valid_certificates_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let expired = Credentials::load(&node_valid(dir.path(), -10, -1)).err().unwrap().to_string();
        assert!(expired.contains("node.crt") && expired.contains("has expired"), "{expired}");
        let early = Credentials::load(&node_valid(dir.path(), 2, 10)).err().unwrap().to_string();
        assert!(early.contains("node.crt") && early.contains("not valid yet"), "{early}");
        assert!(Credentials::load(&node_valid(dir.path(), -1, 1)).is_ok());
    }

    #[test]
    fn loaded_credentials_make_both_configurations_and_name_their_host() {
        let dir = tempfile::tempdir().unwrap();
        make_ca(&dir.path().join("ca"), 30).unwrap();
        make_node(&dir.path().join("ca"), "127.0.0.1:7000", &dir.path().join("n"), 30).unwrap();
        let credentials = Credentials::load(&dir.path().join("n")).unwrap();
        let server = credentials.server_config().unwrap();
        assert_eq!(server.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let first = server.crypto_provider().cipher_suites[0].suite();
        assert_eq!(first, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, "the listener chooses AES-128-GCM first");
        assert!(server.ignore_client_order, "by its own order");
        let _ = credentials.client_config();
        assert!(speaks_for(&credentials.own_der(), "127.0.0.1:1"));
        assert!(!speaks_for(&credentials.own_der(), "localhost:1"));
        assert!(!speaks_for(&credentials.own_der(), "garbage"));
    }
}
