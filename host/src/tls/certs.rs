//! Making a cluster's certificates (`ringshare cert ca`, `ringshare cert
//! node`), with rcgen: a CA per cluster, and per node a certificate signed
//! by it whose subject alternative name is the host the node is reached at
//! (its advertised address), usable to serve and to call (both extended key
//! usages), like CockroachDB's `cert create-ca` / `create-node`.
//!
//! Files, in PEM: a CA folder holds `ca.crt` and `ca.key`; a node folder
//! holds `ca.crt` (a copy), `node.crt` and `node.key`. Keys are written
//! readable by their owner only.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use super::{CA_CERT, CA_KEY, NODE_CERT, NODE_KEY, TlsError, host_of};

/// Days a new CA stays valid by default.
pub const CA_DAYS: u32 = 3650;
/// Days a new node certificate stays valid by default.
pub const NODE_DAYS: u32 = 365;

/// Makes a new cluster CA in `out` (created if missing). Refuses to replace
/// an existing CA key: every node certificate of the cluster depends on it.
pub fn make_ca(out: &Path, days: u32) -> Result<(), TlsError> {
    let key_path = out.join(CA_KEY);
    if key_path.exists() {
        return Err(TlsError::file(&key_path, "already exists: a new CA would orphan every node certificate of it"));
    }
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| TlsError::Make(e.to_string()))?;
    params.distinguished_name.push(DnType::CommonName, format!("ringshare cluster CA {}", short_id()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| TlsError::Make(e.to_string()))?;
    let cert = params.self_signed(&key).map_err(|e| TlsError::Make(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| TlsError::file(out, e))?;
    write_private(&key_path, &key.serialize_pem())?;
    write(&out.join(CA_CERT), &cert.pem())
}

/// Issues, with the CA in `ca_dir`, a certificate for the node reached at
/// `addr` (`host:port`; the host becomes its subject alternative name, as
/// an IP address or a DNS name), written with a copy of the CA certificate
/// into `out` (created if missing). Answers the names it was issued for.
pub fn make_node(ca_dir: &Path, addr: &str, out: &Path, days: u32) -> Result<Vec<String>, TlsError> {
    let host = host_of(addr).ok_or_else(|| TlsError::Usage(format!("{addr:?} is not HOST:PORT")))?;
    let (ca_cert_path, ca_key_path) = (ca_dir.join(CA_CERT), ca_dir.join(CA_KEY));
    let ca_pem = read(&ca_cert_path)?;
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?).map_err(|e| TlsError::file(&ca_key_path, e))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).map_err(|e| TlsError::file(&ca_cert_path, e))?;
    super::credentials::check_key_matches(&ca_pem, &ca_key).map_err(|why| TlsError::file(&ca_key_path, why))?;

    let names = vec![host.to_owned()];
    let mut params = CertificateParams::new(names.clone()).map_err(|e| TlsError::Usage(format!("{host:?}: {e}")))?;
    params.distinguished_name.push(DnType::CommonName, format!("ringshare node {addr}"));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, days);
    let key = KeyPair::generate().map_err(|e| TlsError::Make(e.to_string()))?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| TlsError::Make(e.to_string()))?;
    std::fs::create_dir_all(out).map_err(|e| TlsError::file(out, e))?;
    write_private(&out.join(NODE_KEY), &key.serialize_pem())?;
    write(&out.join(NODE_CERT), &cert.pem())?;
    write(&out.join(CA_CERT), &ca_pem)?;
    Ok(names)
}

fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    // A little slack before now for clocks a bit behind this one.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

fn short_id() -> String {
    let bytes: [u8; 4] = rand::random();
    hex::encode(bytes)
}

fn read(path: &Path) -> Result<String, TlsError> {
    std::fs::read_to_string(path).map_err(|e| TlsError::file(path, e))
}

fn write(path: &Path, text: &str) -> Result<(), TlsError> {
    std::fs::write(path, text).map_err(|e| TlsError::file(path, e))
}

/// Writes `text` to a new file readable by its owner only (replacing one).
fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let temp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(|e| TlsError::file(&temp, e))?;
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| TlsError::file(&temp, e))?;
    std::fs::rename(&temp, path).map_err(|e| TlsError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::super::host_of;
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7000"), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:7000"), Some("::1"));
        assert_eq!(host_of("node-a.example:443"), Some("node-a.example"));
        assert_eq!(host_of("127.0.0.1"), None);
        assert_eq!(host_of(":7000"), None);
        assert_eq!(host_of("host:port"), None);
    }

    #[test]
    fn a_ca_is_never_replaced_and_issues_node_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, node) = (dir.path().join("ca"), dir.path().join("node"));
        make_ca(&ca, CA_DAYS).unwrap();
        let again = make_ca(&ca, CA_DAYS).unwrap_err().to_string();
        assert!(again.contains("ca.key") && again.contains("already exists"), "{again}");
        let names = make_node(&ca, "127.0.0.1:7001", &node, NODE_DAYS).unwrap();
        assert_eq!(names, ["127.0.0.1"]);
        for file in [CA_CERT, NODE_CERT, NODE_KEY] {
            assert!(node.join(file).is_file(), "{file}");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(node.join(NODE_KEY)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key is private");
        // Issued for its host: it loads, and names that host.
        let loaded = super::super::Credentials::load(&node).unwrap();
        assert!(super::super::speaks_for(&loaded.own_der(), "127.0.0.1:9999"));
        assert!(!super::super::speaks_for(&loaded.own_der(), "127.0.0.2:7001"));
    }

    #[test]
    fn issuing_without_a_ca_key_or_with_a_bad_address_is_refused_naming_why() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        make_ca(&ca, CA_DAYS).unwrap();
        let bad = make_node(&ca, "no-port", &dir.path().join("n"), 1).unwrap_err().to_string();
        assert!(bad.contains("HOST:PORT"), "{bad}");
        std::fs::remove_file(ca.join(CA_KEY)).unwrap();
        let missing = make_node(&ca, "127.0.0.1:1", &dir.path().join("n"), 1).unwrap_err().to_string();
        assert!(missing.contains("ca.key"), "{missing}");
    }
}
