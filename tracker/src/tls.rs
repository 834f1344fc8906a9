//! Optional TLS on the tracker's one port (rustls with the ring provider, no OpenSSL).
//!
//! gRPC and HTTP share the port, so the server offers ALPN `h2` and `http/1.1` and the
//! connection code (hyper's, which speaks both) takes whatever the client picked.
//! Handshakes run in each connection's own task (the serving loop, which also bounds their
//! time), so a slow or silent client never holds up the others; a client that speaks plain
//! HTTP to the TLS port gets a `400` saying so instead of a reset it cannot explain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::Error;

/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE: u8 = 0x16;
/// The answer to a client that speaks plain HTTP to the TLS port.
const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\ncontent-length: 51\r\nconnection: close\r\n\r\n\
{\"error\":\"this port speaks TLS: use https:// URLs\"}";

/// Reads the certificate chain and private key (PEM) and builds the server's TLS settings.
///
/// # Errors
/// [`Error::Config`] naming the file when one cannot be read or holds no usable
/// certificate or key, or when the key does not match the certificate.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::Config(format!("TLS certificate {}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "TLS certificate {}: no certificate in the file",
            cert.display()
        )));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| Error::Config(format!("TLS key {}: {e}", key.display())))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            Error::Config(format!(
                "TLS key {} does not fit certificate {}: {e}",
                key.display(),
                cert.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS connection, or `None` when the client spoke something else (it was told so).
pub(crate) async fn handshake(
    mut tcp: TcpStream,
    acceptor: &TlsAcceptor,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    if first[0] != TLS_HANDSHAKE {
        tcp.write_all(PLAIN_HTTP_ANSWER).await?;
        tcp.shutdown().await?;
        // Read what the client sent until it hangs up: closing with unread input would
        // reset the connection and could destroy the answer before the client reads it.
        let mut sink = [0u8; 4096];
        let drain = async {
            while tcp.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        return Ok(None);
    }
    acceptor.accept(tcp).await.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plain_http_answer_has_the_length_it_declares() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(v["error"].as_str().unwrap().contains("https://"));
    }

    #[test]
    fn missing_files_are_named() {
        let e =
            server_config(Path::new("/nonexistent/cert.pem"), Path::new("/x/key.pem")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }
}
