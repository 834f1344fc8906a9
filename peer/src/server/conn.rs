//! The node's connections: a cap on how many are open (in total and per IP address), a
//! deadline for a new one to start talking, an idle timeout, and the progress of the chunk
//! bytes queued on each, so one that stopped taking them is closed (tonic gives the service
//! no way to reset one HTTP/2 stream whose data is queued).
//!
//! Past a cap a new connection is accepted and closed at once, which tells the client to
//! come back later and keeps the kernel's backlog from filling. A connection must deliver
//! the HTTP/2 preface's 24 bytes (or as much of a TLS handshake) within
//! [`StreamLimits::handshake_timeout`] of being accepted, so a client that sends nothing or
//! half a preface holds nothing for long; afterwards a connection from which nothing was
//! read for [`StreamLimits::idle_timeout`] is closed (the node pings every 30 s, so a live
//! client answers well within it, and a half-open one is closed).
//!
//! The timers are checked whenever the connection's task polls the socket either way, and
//! one sleep per connection wakes it when the next deadline could pass.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::Connected;

use super::limits::{Limits, Scope, StreamLimits};

/// Bytes of the HTTP/2 client preface.
const PREFACE: u64 = 24;
/// Refused connections are logged at most this often, with their count.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// What the service learns of a connection (as a request extension).
#[derive(Clone)]
pub(crate) struct ConnInfo(Arc<ConnState>);

impl ConnInfo {
    pub(crate) fn ip(&self) -> IpAddr {
        self.0.remote.ip()
    }

    pub(crate) fn scope(&self) -> &Scope {
        &self.0.scope
    }

    /// Closes the connection: its next read or write fails, which ends it and every stream
    /// on it.
    pub(crate) fn kill(&self, why: &str) {
        if !self.0.killed.swap(true, Ordering::AcqRel) {
            tracing::info!(remote = %self.0.remote, "closing a connection: {why}");
            self.0.read.wake();
            self.0.write.wake();
        }
    }

    /// `n` chunk bytes were handed to hyper for this connection.
    pub(crate) fn queued(&self, n: usize) {
        if self.0.queued.fetch_add(n as u64, Ordering::AcqRel) == 0 {
            self.0.moved();
        }
    }

    /// `n` of its queued chunk bytes were written (or dropped).
    pub(crate) fn written(&self, n: usize) {
        self.0.moved();
        self.0.queued.fetch_sub(n as u64, Ordering::AcqRel);
    }
}

/// One connection's state, shared between its socket and its requests.
struct ConnState {
    remote: SocketAddr,
    /// Its per-connection stream caps.
    scope: Scope,
    killed: AtomicBool,
    read: AtomicWaker,
    write: AtomicWaker,
    accepted: Instant,
    /// Chunk bytes handed to hyper and not yet written.
    queued: AtomicU64,
    /// When a queued piece was last written, or bytes started to queue (ms since accepted).
    moved_ms: AtomicU64,
}

impl ConnState {
    fn moved(&self) {
        let ms = self.accepted.elapsed().as_millis() as u64;
        self.moved_ms.store(ms, Ordering::Release);
    }

    /// How long its queued bytes have not moved (zero when none are queued).
    fn stalled_for(&self) -> Duration {
        if self.queued.load(Ordering::Acquire) == 0 {
            return Duration::ZERO;
        }
        let moved = Duration::from_millis(self.moved_ms.load(Ordering::Acquire));
        self.accepted.elapsed().saturating_sub(moved)
    }
}

/// The open connections, for the stall sweep.
#[derive(Default)]
pub(crate) struct Conns(Mutex<Vec<Weak<ConnState>>>);

impl Conns {
    fn add(&self, c: &Arc<ConnState>) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(c));
    }

    /// Closes the connections whose queued chunk bytes have not moved for `stall`.
    pub(crate) fn close_stalled(&self, stall: Duration) {
        let stalled: Vec<ConnInfo> = {
            let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
            v.retain(|w| w.strong_count() > 0);
            v.iter()
                .filter_map(Weak::upgrade)
                .filter(|c| c.stalled_for() >= stall)
                .map(ConnInfo)
                .collect()
        };
        let why = format!(
            "its chunk streams took nothing for {}",
            humantime::format_duration(stall)
        );
        for c in stalled {
            c.kill(&why);
        }
    }
}

/// An accepted connection with its timers, holding its slots until it is dropped.
pub(crate) struct Conn {
    io: TcpStream,
    state: Arc<ConnState>,
    accepted: Instant,
    last_read: Instant,
    read_total: u64,
    handshake: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    _slots: [OwnedSemaphorePermit; 2],
}

impl Conn {
    /// When the connection times out unless it reads more.
    fn deadline(&self) -> Instant {
        if self.read_total < PREFACE {
            self.accepted + self.handshake
        } else {
            self.last_read + self.idle
        }
    }

    /// An error once the connection was killed or timed out; otherwise arms the timer.
    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.state.killed.load(Ordering::Acquire) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        // Deadlines only move later (each read pushes the idle one), so the timer is left
        // alone until it fires, then set to the deadline now due and polled again.
        for _ in 0..2 {
            if self.timer.as_mut().poll(cx).is_pending() {
                break;
            }
            let deadline = self.deadline();
            if Instant::now() >= deadline {
                let what = if self.read_total < PREFACE {
                    "it did not start HTTP/2 in time"
                } else {
                    "it sent nothing for too long"
                };
                tracing::debug!(remote = %self.state.remote, "closing a connection: {what}");
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.timer.as_mut().reset(deadline);
        }
        Ok(())
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = &mut *self;
        me.state.read.register(cx.waker());
        let before = buf.filled().len();
        match Pin::new(&mut me.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    me.read_total += n;
                    me.last_read = Instant::now();
                }
                if me.state.killed.load(Ordering::Acquire) {
                    return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match me.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl Conn {
    /// Runs a write-side poll: fails once killed or timed out.
    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        self.state.write.register(cx.waker());
        if self.state.killed.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        match f(Pin::new(&mut self.io), cx) {
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
            ready => ready,
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.on_write(cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.on_write(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.on_write(cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo(self.state.clone())
    }
}

/// Hands out connection slots: one of the total and one of the remote IP's.
struct Slots {
    total: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, Arc<Semaphore>>>,
    ip_cap: usize,
}

impl Slots {
    fn take(&self, ip: IpAddr) -> Option<[OwnedSemaphorePermit; 2]> {
        let total = self.total.clone().try_acquire_owned().ok()?;
        let sem = {
            let mut map = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            if map.len() >= 64 && !map.contains_key(&ip) {
                map.retain(|_, s| Arc::strong_count(s) > 1);
            }
            map.entry(ip)
                .or_insert_with(|| Arc::new(Semaphore::new(self.ip_cap)))
                .clone()
        };
        let ip = sem.try_acquire_owned().ok()?;
        Some([total, ip])
    }
}

/// The node's accepted connections, as tonic serves them: each with its slots and timers;
/// over a cap, closed at once and not yielded.
pub(crate) fn incoming(
    listener: TcpListener,
    limits: Arc<Limits>,
    conns: Arc<Conns>,
) -> impl Stream<Item = io::Result<Conn>> + Send {
    let cfg: StreamLimits = limits.cfg.clone();
    let slots = Slots {
        total: Arc::new(Semaphore::new(cfg.connections)),
        per_ip: Mutex::default(),
        ip_cap: cfg.connections_per_ip,
    };
    let state = (
        listener,
        slots,
        common::telemetry::Tally::new(REFUSAL_LOG_EVERY),
        cfg,
        conns,
    );
    futures::stream::unfold(
        state,
        |(listener, slots, mut refusals, cfg, conns)| async move {
            loop {
                let (tcp, remote) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        if !is_per_connection(&e) {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        continue;
                    }
                };
                let Some(held) = slots.take(remote.ip()) else {
                    if let Some(refused) = refusals.note() {
                        tracing::warn!(
                            refused,
                            last = %remote,
                            "connection caps reached (in total or for one address): closing new ones at once"
                        );
                    }
                    continue;
                };
                // No Nagle: a chunk's last frame must not wait for the getter's delayed ACK.
                let _ = tcp.set_nodelay(true);
                let now = Instant::now();
                let state = Arc::new(ConnState {
                    remote,
                    scope: Scope::connection(&cfg),
                    killed: AtomicBool::new(false),
                    read: AtomicWaker::new(),
                    write: AtomicWaker::new(),
                    accepted: now,
                    queued: AtomicU64::new(0),
                    moved_ms: AtomicU64::new(0),
                });
                conns.add(&state);
                let conn = Conn {
                    io: tcp,
                    state,
                    accepted: now,
                    last_read: now,
                    read_total: 0,
                    handshake: cfg.handshake_timeout,
                    idle: cfg.idle_timeout,
                    timer: Box::pin(tokio::time::sleep_until(now + cfg.handshake_timeout)),
                    _slots: held,
                };
                return Some((Ok(conn), (listener, slots, refusals, cfg, conns)));
            }
        },
    )
}

/// Errors of one connection that `accept` reports; the listener itself is fine.
fn is_per_connection(e: &io::Error) -> bool {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}
