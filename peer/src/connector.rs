//! The TCP connections under every gRPC channel the peer opens, to trackers and to nodes:
//! `TCP_NODELAY`, and TCP Fast Open ([`common::fastopen`]), so a command that reaches a
//! server it has reached before sends its first call in the SYN. A cold `peer get` opens
//! two connections before its first chunk arrives (the tracker's, then a holder's): with
//! Fast Open on both servers the first byte comes two round trips after start instead of
//! four. TLS, timeouts and HTTP/2 settings stay tonic's (this replaces only its
//! `HttpConnector`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tonic::codegen::Service;
use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

/// Connects to a URI's host and port (its addresses in the resolver's order).
#[derive(Debug, Clone, Copy, Default)]
pub struct Connector;

impl Service<Uri> for Connector {
    type Response = TokioIo<FirstFlight>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        Box::pin(async move {
            let stream = connect_uri(&uri).await?;
            Ok(TokioIo::new(FirstFlight::new(stream)))
        })
    }
}

/// A channel over [`Connector`] that connects on first use.
pub fn lazy(endpoint: &Endpoint) -> Channel {
    endpoint.connect_with_connector_lazy(Connector)
}

/// A channel over [`Connector`], connected now.
///
/// # Errors
/// When no address of the endpoint accepts a connection (or its TLS handshake fails).
pub async fn connect(endpoint: &Endpoint) -> Result<Channel, tonic::transport::Error> {
    endpoint.connect_with_connector(Connector).await
}

async fn connect_uri(uri: &Uri) -> io::Result<TcpStream> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host in the address"))?;
    // An IPv6 literal comes bracketed in a URI.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match connect_addr(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}

async fn connect_addr(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    common::fastopen::connect_with(&socket);
    socket.connect(addr).await
}

/// Holds what is written to a new connection until its first request is whole, so that
/// it leaves in one write and the SYN carries it (Fast Open sends only the first write
/// with the SYN; the rest waits for the handshake). HTTP/2 writes its 24-byte preface
/// alone, then its settings, then the request's headers and its body, flushing between
/// them; written as they come, the SYN carried the preface and settings only, and the
/// request waited a round trip for the handshake as before.
#[derive(Debug)]
pub struct FirstFlight {
    inner: TcpStream,
    /// Bytes not yet handed to the socket; `None` once the first flight has gone.
    held: Option<Vec<u8>>,
    /// How much of `held` the socket has taken.
    sent: usize,
    /// The first flight is going out (its request is whole, it grew past
    /// [`FIRST_FLIGHT_MAX`], or [`FIRST_FLIGHT_WAIT`] passed since a flush asked for it).
    releasing: bool,
    /// When a flush came before the request was whole: the latest the bytes may wait.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// Past this much the first flight goes out at once (a SYN carries one segment anyway).
const FIRST_FLIGHT_MAX: usize = 16 << 10;

/// How long a flush waits for the rest of the first request: its parts follow within
/// microseconds, and a connection with no request coming (or TLS, which cannot be read
/// here and is not held) must not wait long.
const FIRST_FLIGHT_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `bytes`, the start of a connection, hold a whole first request: an HTTP/2
/// HEADERS or DATA frame that ends its stream (every call the peer makes sends its one
/// request message so). Anything but cleartext HTTP/2 (TLS) counts as whole: there is
/// nothing to wait for.
fn first_request_whole(bytes: &[u8]) -> bool {
    let Some(mut rest) = bytes.strip_prefix(PREFACE) else {
        return !PREFACE.starts_with(bytes);
    };
    while let [l0, l1, l2, kind, flags, ..] = *rest {
        const DATA: u8 = 0;
        const HEADERS: u8 = 1;
        const END_STREAM: u8 = 1;
        let len = 9 + u32::from_be_bytes([0, l0, l1, l2]) as usize;
        if rest.len() < len {
            break;
        }
        if matches!(kind, DATA | HEADERS) && flags & END_STREAM != 0 {
            return true;
        }
        rest = &rest[len..];
    }
    false
}

impl FirstFlight {
    fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            held: Some(Vec::new()),
            sent: 0,
            releasing: false,
            deadline: None,
        }
    }

    /// Takes `bufs` into the first flight while it is held; `None` once it is going out.
    fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> Option<usize> {
        let held = self.held.as_mut().filter(|_| !self.releasing)?;
        if held.len() >= FIRST_FLIGHT_MAX {
            self.releasing = true;
            return None;
        }
        let mut n = 0;
        for b in bufs {
            held.extend_from_slice(b);
            n += b.len();
        }
        Some(n)
    }

    /// Hands the held bytes to the socket; ready once all of them are taken.
    fn poll_release(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.releasing = true;
        let Some(held) = &self.held else {
            return Poll::Ready(Ok(()));
        };
        while self.sent < held.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &held[self.sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.held = None;
        self.deadline = None;
        Poll::Ready(Ok(()))
    }

    /// Whether a flush may send the first flight now: its request is whole, or it has
    /// waited long enough (then the caller is woken at the deadline).
    fn poll_flight_ready(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &self.held {
            Some(held) if !self.releasing && !first_request_whole(held) => {
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_FLIGHT_WAIT)));
                deadline.as_mut().poll(cx)
            }
            _ => Poll::Ready(()),
        }
    }
}

impl AsyncRead for FirstFlight {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for FirstFlight {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(n) = this.hold(&[io::IoSlice::new(buf)]) {
            return Poll::Ready(Ok(n));
        }
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(n) = this.hold(bufs) {
            return Poll::Ready(Ok(n));
        }
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_flight_ready(cx));
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.poll_release(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_by_name_and_by_ipv4_literal() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        for uri in [
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
        ] {
            let uri: Uri = uri.parse().unwrap();
            let (client, server) = tokio::join!(connect_uri(&uri), listener.accept());
            let client = client.unwrap();
            assert!(client.nodelay().unwrap());
            assert_eq!(client.peer_addr().unwrap(), listener.local_addr().unwrap());
            server.unwrap();
        }
    }

    #[tokio::test]
    async fn the_first_flight_leaves_at_the_first_flush_in_one_piece() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = connected_pair().await;
        client.write_all(b"preface ").await.unwrap();
        client.write_all(b"request").await.unwrap();
        // Nothing left before the flush.
        let mut buf = [0u8; 64];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(100), server.read(&mut buf))
                .await;
        assert!(early.is_err(), "bytes left before the flush: {early:?}");
        client.flush().await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"preface request");
        // After the first flight, writes go straight through, and reads work throughout.
        client.write_all(b"more").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"more");
        server.write_all(b"answer").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"answer");
    }

    /// A connection made by the connector, wrapped as it is for tonic, and its server end.
    async fn connected_pair() -> (FirstFlight, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("http://{}", listener.local_addr().unwrap())
            .parse()
            .unwrap();
        let (client, server) = tokio::join!(connect_uri(&uri), listener.accept());
        (FirstFlight::new(client.unwrap()), server.unwrap().0)
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut f = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 1];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_first_request_is_whole_when_a_frame_ends_its_stream() {
        let settings = frame(4, 0, &[0, 4, 0, 0x40, 0, 0]);
        let headers = frame(1, 4, b"hpack");
        let body_end = frame(0, 1, b"\0\0\0\0\x02hi");
        let mut b = PREFACE[..10].to_vec();
        assert!(!first_request_whole(&b), "part of the preface");
        b = PREFACE.to_vec();
        assert!(!first_request_whole(&b), "the preface alone");
        b.extend_from_slice(&settings);
        assert!(!first_request_whole(&b), "settings");
        b.extend_from_slice(&headers);
        assert!(
            !first_request_whole(&b),
            "headers that do not end the stream"
        );
        b.extend_from_slice(&body_end[..7]);
        assert!(!first_request_whole(&b), "a frame header cut short");
        b.extend_from_slice(&body_end[7..]);
        assert!(first_request_whole(&b), "the body's last frame");
        let mut get = PREFACE.to_vec();
        get.extend_from_slice(&frame(1, 5, b"hpack"));
        assert!(first_request_whole(&get), "headers that end the stream");
        assert!(
            first_request_whole(&[0x16, 3, 1, 0, 200]),
            "TLS is not held"
        );
    }

    #[tokio::test]
    async fn an_unfinished_request_is_held_only_briefly() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = connected_pair().await;
        let mut sent = PREFACE.to_vec();
        sent.extend_from_slice(&frame(4, 0, &[]));
        client.write_all(&sent).await.unwrap();
        // No request follows: the flush still completes (after FIRST_FLIGHT_WAIT).
        tokio::time::timeout(std::time::Duration::from_secs(30), client.flush())
            .await
            .expect("the flush waited past its deadline")
            .unwrap();
        let mut got = vec![0u8; sent.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn a_big_first_flight_goes_out_unflushed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, mut server) = connected_pair().await;
        let big = vec![7u8; FIRST_FLIGHT_MAX + 100];
        client.write_all(&big).await.unwrap();
        client.write_all(b"x").await.unwrap();
        let mut got = vec![0u8; big.len() + 1];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(got[big.len()], b'x');
    }

    #[tokio::test]
    async fn a_closed_port_is_an_error_not_a_hang() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let uri: Uri = format!("http://127.0.0.1:{port}").parse().unwrap();
        let e = connect_uri(&uri).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
    }
}
