//! The node's own TLS identity (`--tls-cert`, `--tls-key`).

use std::path::Path;

use super::NodeError;
use crate::output;

/// The certificate chain and key in `cert` and `key`, checked to hold a PEM certificate
/// and a PEM private key (whether they fit each other is checked when the server starts).
///
/// # Errors
/// When a file cannot be read or does not hold what it should.
pub fn identity(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<tonic::transport::Identity>, NodeError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let shown = |p: &Path| output::safe(&p.display().to_string());
    let read = |flag: &str, p: &Path| {
        std::fs::read(p)
            .map_err(|e| NodeError::Tls(format!("cannot read {flag} {}: {e}", shown(p))))
    };
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    if !CertificateDer::pem_slice_iter(&cert_pem).any(|c| c.is_ok()) {
        return Err(NodeError::Tls(format!(
            "--tls-cert {} holds no PEM certificate",
            shown(cert)
        )));
    }
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        return Err(NodeError::Tls(format!(
            "--tls-key {} holds no PEM private key",
            shown(key)
        )));
    }
    Ok(Some(tonic::transport::Identity::from_pem(
        cert_pem, key_pem,
    )))
}
