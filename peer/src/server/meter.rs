//! Counts a `GetChunks` stream's chunk bytes until the connection's socket took them, and
//! ends a connection whose queued bytes stop moving.
//!
//! tonic copies each message into a frame that hyper and h2 queue, per stream, as long as
//! the client's flow-control windows are shut: a client that stops reading leaves them in
//! the node's memory, after the stream's own code is done with them. So [`Metered`] wraps
//! the Peer service's responses: when a message's frame comes out of tonic, the counts the
//! stream took for it ([`limits::Held`](super::limits::Held), deposited in the request's
//! [`StreamMeter`]) are tied to the frame's bytes (`Bytes::from_owner`), and released when
//! h2 has written the last of them, or dropped them with the connection.
//!
//! Large frames go to hyper in pieces of about 1 MiB (a 1 MiB chunk stays one frame), and
//! each piece written is progress for its connection. A connection with queued bytes of
//! which no piece was written for `stall_timeout` is closed (the sweep below). Progress is
//! counted per connection, as a getter counts it per source ("a chunk within its stall
//! timeout"): HTTP/2 sends a connection's streams a frame at a time in turn, so on a slow
//! link one stream may wait for the others' pieces, and a getter at 1 MB/s moves a piece a
//! second. A client that keeps one stream moving and stalls the others holds no more than
//! its share of the buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;

use super::conn::{ConnInfo, Conns};
use super::limits::{Held, Limits};

/// Pieces a frame is cut into for hyper; a frame up to 1/16 longer stays whole.
const PIECE: usize = 1 << 20;

/// Every second until `stop`: closes the connections stalled for `stall`, and gives
/// memory back to the system once a burst of uploads has drained.
pub(crate) async fn sweep(
    conns: Arc<Conns>,
    limits: Arc<Limits>,
    stall: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1).min(stall / 2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut high = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        conns.close_stalled(stall);
        // Chunk buffers are a megabyte or more, which glibc serves from its heaps once it
        // has seen a few freed (its mmap threshold grows) and keeps when they are freed:
        // without this, a node stays at its peak after a flood.
        let used = limits.buffered();
        high = high.max(used);
        if high >= TRIM_AFTER && used <= high / 4 {
            release_free_memory();
            high = used;
        }
    }
}

/// Buffered chunk bytes that, once drained, are worth a trim.
const TRIM_AFTER: u64 = 8 << 20;

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer; it only returns the allocator's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() {}

/// One request's account: the counts its stream deposited and no frame carries yet.
pub(crate) struct StreamMeter {
    conn: Option<ConnInfo>,
    deposits: Mutex<Vec<(OwnedSemaphorePermit, Held)>>,
}

impl StreamMeter {
    /// Hands over the counts of a message about to be yielded: `slot` is one of the stream's
    /// message slots, `held` its bytes.
    pub(crate) fn deposit(&self, slot: OwnedSemaphorePermit, held: Held) {
        let mut d = self.deposits.lock().unwrap_or_else(|p| p.into_inner());
        d.push((slot, held));
    }

    fn take(&self) -> Vec<(OwnedSemaphorePermit, Held)> {
        std::mem::take(&mut *self.deposits.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The meter of the request being served, as a request extension.
#[derive(Clone)]
pub(crate) struct MeterHandle(pub(crate) Arc<StreamMeter>);

/// A service whose responses are metered (the node wraps its Peer service in it).
#[derive(Clone)]
pub(crate) struct Metered<S>(pub(crate) S);

impl<S: NamedService> NamedService for Metered<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Metered<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        let meter = Arc::new(StreamMeter {
            conn: req.extensions().get::<ConnInfo>().cloned(),
            deposits: Mutex::default(),
        });
        req.extensions_mut().insert(MeterHandle(meter.clone()));
        let fut = self.0.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|inner| {
                Body::new(MeteredBody {
                    inner,
                    meter,
                    rest: None,
                })
            }))
        })
    }
}

/// Counts, tied to one frame's bytes, that are released when the last piece is written.
struct FrameHold {
    _slots: Vec<OwnedSemaphorePermit>,
    _held: Vec<OwnedSemaphorePermit>,
}

/// A piece of a frame as hyper holds it; dropped once h2 wrote it.
struct Piece {
    data: Bytes,
    conn: Option<ConnInfo>,
    _hold: Arc<FrameHold>,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        if let Some(c) = &self.conn {
            c.written(self.data.len());
        }
    }
}

struct MeteredBody {
    inner: Body,
    meter: Arc<StreamMeter>,
    /// What is left of a metered frame to hand out, with its counts.
    rest: Option<(Bytes, Arc<FrameHold>)>,
}

impl MeteredBody {
    fn next_piece(&mut self) -> Option<Bytes> {
        let (data, hold) = self.rest.as_mut()?;
        let piece = if data.len() > PIECE + PIECE / 16 {
            data.split_to(PIECE)
        } else {
            std::mem::take(data)
        };
        let hold = hold.clone();
        if data.is_empty() {
            self.rest = None;
        }
        let conn = self.meter.conn.clone();
        if let Some(c) = &conn {
            c.queued(piece.len());
        }
        Some(Bytes::from_owner(Piece {
            data: piece,
            conn,
            _hold: hold,
        }))
    }
}

impl HttpBody for MeteredBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let me = &mut *self;
        if let Some(p) = me.next_piece() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        let frame = match Pin::new(&mut me.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => f,
            other => return other,
        };
        let data = match frame.into_data() {
            Ok(d) => d,
            Err(other) => return Poll::Ready(Some(Ok(other))),
        };
        let deposits = me.meter.take();
        if deposits.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        // The messages are in `data` now: their own buffers are gone, so the copies'
        // counts go, and the rest follows the frame.
        let (mut slots, mut held) = (Vec::new(), Vec::new());
        for (slot, h) in deposits {
            slots.push(slot);
            held.extend(h.held);
        }
        let hold = Arc::new(FrameHold {
            _slots: slots,
            _held: held,
        });
        me.rest = Some((data, hold));
        Poll::Ready(me.next_piece().map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        // A stream's length is not known ahead (tonic's is not either).
        SizeHint::default()
    }
}
