//! Optional TLS on the tracker's one port (rustls with the ring provider, no OpenSSL).
//!
//! gRPC and HTTP share the port, so the server offers ALPN `h2` and `http/1.1` and the
//! connection code (axum's, which speaks both) takes whatever the client picked.
//! Handshakes run in their own tasks, so a slow or silent client never holds up the
//! others; a client that speaks plain HTTP to the TLS port gets a `400` saying so instead
//! of a reset it cannot explain.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::future::IntoFuture;
use std::pin::Pin;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::Error;

/// A client gets this long to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Finished handshakes waiting for the server to take them.
const BACKLOG: usize = 64;
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

/// What [`serve`] returns: runs until shutdown (then lets open requests finish) or failure.
pub(crate) type Serving = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// Serves `app` on `listener` until `shutdown` is cancelled, over TLS when `tls` is given.
/// Handlers see the client's address as `ConnectInfo<SocketAddr>` either way.
///
/// # Errors
/// When the listener's address cannot be read.
pub(crate) fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<Serving> {
    let make = app.into_make_service_with_connect_info::<SocketAddr>();
    let stop = shutdown.cancelled_owned();
    Ok(match tls {
        // No Nagle (the TLS path sets it in `handshake`): a small answer (a re-Locate, a
        // heartbeat) is several HTTP/2 frames written one after another, and Nagle held
        // the last ones back for the client's delayed ACK (~40 ms each).
        None => Box::pin(
            axum::serve(listener.tap_io(no_delay), make)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
        // `tap_io` (a no-op here) is what gives a custom listener axum's `ConnectInfo`.
        Some(config) => Box::pin(
            axum::serve(TlsListener::new(listener, config)?.tap_io(|_| {}), make)
                .with_graceful_shutdown(stop)
                .into_future(),
        ),
    })
}

fn no_delay(tcp: &mut TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
}

/// A listener whose connections have completed a TLS handshake; serve it with
/// `axum::serve` like a `TcpListener`.
pub struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `listener` and hands out connections once their handshake is done.
    ///
    /// # Errors
    /// When the listener's address cannot be read.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(BACKLOG);
        let acceptor = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(Self {
            local,
            ready,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (acceptor, ready) = (acceptor.clone(), ready.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, &acceptor)).await {
                Ok(Ok(Some(tls))) => {
                    let _ = ready.send((tls, addr)).await;
                }
                Ok(Ok(None)) => tracing::debug!(%addr, "plain HTTP on the TLS port"),
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        });
    }
}

/// The TLS connection, or `None` when the client spoke something else (it was told so).
async fn handshake(
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
