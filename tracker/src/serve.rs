//! The one port's serving loop: gRPC and REST over HTTP/1.1 and HTTP/2, plain or TLS, with
//! the bounds a port open to untrusted clients needs and `axum::serve` does not offer.
//!
//! - **A cap on connections** (`--max-connections`). Past it a new connection is accepted
//!   and closed at once (as Envoy does with its connection limit), counted in
//!   `tessera_connections_refused_total` and logged at most every 10 s. Closing rather than
//!   no longer accepting keeps the kernel's backlog from filling with connections nobody
//!   will serve, and tells a client at once to come back later.
//! - **A header timeout** (`--header-timeout`): a connection must have sent its first
//!   request's headers, TLS handshake included, within it; for HTTP/1 hyper applies it to
//!   every next request too.
//! - **An idle timeout** (`--idle-timeout`): a connection with no request open for that
//!   long, or whose open requests move no bytes either way for that long (a client that
//!   stopped reading, or sending its body), is closed. HTTP/2 clients are pinged every
//!   third of it and closed when they miss an answer; the answers are bytes read, so a
//!   peer's long-lived `Tasks` stream on a live connection is never idle, however quiet.
//!
//! Each connection is a task of its own (a slow client holds up nobody), watched by one
//! timer that sleeps until the next deadline that could pass.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::Config;
use crate::metrics::Connections;
use crate::tls;

/// Concurrent HTTP/2 streams per connection (hyper's default is 200): a bound on what one
/// connection can make the tracker work on at once. A peer keeps a handful open.
const MAX_STREAMS: u32 = 128;
/// How long a connection being closed for a timeout may take to finish before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// Refused connections are logged at most this often, with their count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// The connection bounds, from the settings.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: u32,
}

impl From<&Config> for Bounds {
    fn from(c: &Config) -> Self {
        Self {
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            max_connections: c.max_connections,
        }
    }
}

/// What [`serve`] returns: runs until shutdown (then lets open requests finish) or failure.
/// Dropping it drops every connection.
pub(crate) type Serving = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// What every connection task shares.
struct Shared {
    app: Router,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    bounds: Bounds,
    counters: Connections,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, over TLS when `tls` is given.
/// Handlers see the client's address as `ConnectInfo<SocketAddr>` either way.
pub(crate) fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<ServerConfig>>,
    bounds: Bounds,
    counters: Connections,
    shutdown: CancellationToken,
) -> Serving {
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout);
    let ping = (bounds.idle_timeout / 3).max(Duration::from_millis(10));
    http.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping)
        .max_concurrent_streams(MAX_STREAMS);
    let shared = Arc::new(Shared {
        app,
        tls: tls.map(TlsAcceptor::from),
        http,
        bounds,
        counters,
    });
    Box::pin(accept_loop(listener, shared, shutdown))
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let max = shared.bounds.max_connections;
    let slots = Arc::new(Semaphore::new(max as usize));
    let mut conns = JoinSet::new();
    let mut refused = common::telemetry::Tally::new(REFUSAL_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            () = shutdown.cancelled() => break,
        };
        let (tcp, addr) = match accepted {
            Ok(conn) => conn,
            Err(e) if is_per_connection(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.counters.refused();
            if let Some(refused) = refused.note() {
                tracing::warn!(
                    refused,
                    "{max} connections open (--max-connections): closing new ones at once"
                );
            }
            drop(tcp);
            continue;
        };
        conns.spawn(connection(
            tcp,
            addr,
            slot,
            shared.clone(),
            shutdown.clone(),
        ));
    }
    // Close the port, then let open connections finish (each was told to, by `shutdown`).
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// One connection, from accept to close, holding its slot.
async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    _slot: OwnedSemaphorePermit,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) {
    let _open = OpenConnection::new(&shared.counters);
    // No Nagle: a small answer (a re-Locate, a heartbeat) is several HTTP/2 frames written
    // one after another, and Nagle held the last ones back for the client's delayed ACK.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    let born = Instant::now();
    let Some(acceptor) = &shared.tls else {
        return serve_io(tcp, addr, born, &shared, &shutdown).await;
    };
    let deadline = tokio::time::Instant::from_std(born + shared.bounds.header_timeout);
    match tokio::time::timeout_at(deadline, tls::handshake(tcp, acceptor)).await {
        Ok(Ok(Some(tls))) => serve_io(tls, addr, born, &shared, &shutdown).await,
        Ok(Ok(None)) => tracing::debug!(%addr, "plain HTTP on the TLS port"),
        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
        Err(_) => {
            shared.counters.closed("header_timeout");
            tracing::debug!(%addr, "TLS handshake timed out");
        }
    }
}

/// Counts a connection open while it lives.
struct OpenConnection(Connections);

impl OpenConnection {
    fn new(c: &Connections) -> Self {
        c.opened();
        Self(c.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.ended();
    }
}

/// Serves HTTP on one established connection until it ends, a timeout closes it, or
/// shutdown (then open requests may finish).
async fn serve_io<I>(
    io: I,
    addr: SocketAddr,
    born: Instant,
    shared: &Shared,
    shutdown: &CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let state = Arc::new(Activity::new(born));
    let io = TokioIo::new(Watched {
        inner: io,
        state: state.clone(),
    });
    let (app, svc_state) = (shared.app.clone(), state.clone());
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let open = Open::begin(&svc_state);
        req.extensions_mut().insert(ConnectInfo(addr));
        let call = app.clone().oneshot(req);
        async move {
            let resp = call.await?;
            Ok::<_, Infallible>(resp.map(|body| Counted { body, _open: open }))
        }
    });
    let conn = shared.http.serve_connection(io, svc);
    tokio::pin!(conn);
    let mut closing: Option<Instant> = None;
    let mut stopping = false;
    loop {
        let next = match closing {
            Some(at) => at + CLOSE_GRACE,
            None => state.deadline(&shared.bounds),
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(%addr, "connection ended: {e}");
                }
                return;
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(next)) => {
                if closing.is_some() {
                    tracing::debug!(%addr, "connection dropped: it did not close in time");
                    return;
                }
                let now = Instant::now();
                if let Some(reason) = state.expired(now, &shared.bounds) {
                    tracing::debug!(%addr, reason, "closing connection");
                    shared.counters.closed(reason);
                    conn.as_mut().graceful_shutdown();
                    closing = Some(now);
                }
            }
            () = shutdown.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// What a connection's watchdog looks at: open requests and the last byte moved. Times
/// are milliseconds since the connection was accepted.
struct Activity {
    born: Instant,
    /// Requests whose response has not ended.
    open: AtomicUsize,
    /// Whether any request came.
    served: AtomicBool,
    /// When a byte was last read or written.
    last_io: AtomicU64,
    /// When `open` last fell to 0.
    idle_since: AtomicU64,
}

impl Activity {
    fn new(born: Instant) -> Self {
        Self {
            born,
            open: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            last_io: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
        }
    }

    fn ms(&self, at: Instant) -> u64 {
        u64::try_from(at.duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    fn touch(&self) {
        self.last_io
            .store(self.ms(Instant::now()), Ordering::Relaxed);
    }

    /// When the rule that applies now would close the connection. Every event moves it
    /// later, so sleeping until it and looking again never closes late.
    fn deadline(&self, b: &Bounds) -> Instant {
        if self.open.load(Ordering::Acquire) > 0 {
            self.at(self.last_io.load(Ordering::Relaxed)) + b.idle_timeout
        } else if !self.served.load(Ordering::Acquire) {
            self.born + b.header_timeout
        } else {
            self.at(self.idle_since.load(Ordering::Acquire)) + b.idle_timeout
        }
    }

    /// Why the connection must close at `now`, if it must.
    fn expired(&self, now: Instant, b: &Bounds) -> Option<&'static str> {
        if now < self.deadline(b) {
            return None;
        }
        Some(if self.open.load(Ordering::Acquire) > 0 {
            "stalled"
        } else if !self.served.load(Ordering::Acquire) {
            "header_timeout"
        } else {
            "idle"
        })
    }
}

/// One request open on a connection, until its response body is dropped (sent or reset).
struct Open(Arc<Activity>);

impl Open {
    fn begin(state: &Arc<Activity>) -> Self {
        state.served.store(true, Ordering::Release);
        state.open.fetch_add(1, Ordering::AcqRel);
        state.touch();
        Self(state.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since.store(s.ms(Instant::now()), Ordering::Release);
        s.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as open while it lives.
struct Counted {
    body: axum::body::Body,
    _open: Open,
}

impl Body for Counted {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream, noting when bytes move.
struct Watched<I> {
    inner: I,
    state: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.touch();
        }
        res
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            header_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_connections: 1,
        }
    }

    #[test]
    fn a_connection_without_a_request_expires_after_the_header_timeout() {
        let born = Instant::now();
        let a = Activity::new(born);
        let b = bounds();
        assert_eq!(a.deadline(&b), born + b.header_timeout);
        assert_eq!(a.expired(born + Duration::from_secs(1), &b), None);
        assert_eq!(
            a.expired(born + b.header_timeout, &b),
            Some("header_timeout")
        );
    }

    #[test]
    fn an_open_request_expires_only_when_no_byte_moves() {
        let born = Instant::now();
        let a = Arc::new(Activity::new(born));
        let b = bounds();
        let open = Open::begin(&a);
        let moved = a.at(a.last_io.load(Ordering::Relaxed));
        // Long past the header timeout: a request is open, so only silence counts.
        assert_eq!(a.expired(moved + Duration::from_secs(9), &b), None);
        assert_eq!(a.expired(moved + b.idle_timeout, &b), Some("stalled"));
        drop(open);
        let idle = a.at(a.idle_since.load(Ordering::Relaxed));
        assert_eq!(a.deadline(&b), idle + b.idle_timeout);
        assert_eq!(a.expired(idle + b.idle_timeout, &b), Some("idle"));
    }
}
