//! How a getter fetches chunks from another peer. The downloader only sees the
//! [`ChunkTransport`] trait, so a faster transport (raw TCP, QUIC) can slot in later; the
//! gRPC implementation keeps one HTTP/2 channel per source address.
//!
//! HTTP/2's default 64 KiB windows and tonic's 4 MiB message limit throttle bulk transfer,
//! so both sides (this client and `server`) use the settings below.
//!
//! Every request carries the ticket the tracker signed for the file (from Locate or from a
//! replication task); a node refuses requests without a valid one.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use common::{FileId, Ticket, TicketError};
use futures::{Stream, StreamExt};
use proto::peer::v1 as pb;
use proto::peer::v1::peer_client::PeerClient;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// Per-stream HTTP/2 window: a few chunks in flight per stream.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection HTTP/2 window.
pub const CONNECTION_WINDOW: u32 = 16 << 20;
/// Largest HTTP/2 frame either side accepts (fewer frames per chunk than the 16 KiB default).
pub const MAX_FRAME: u32 = 256 << 10;
/// Largest gRPC message: one chunk of the largest size plus framing.
pub const MAX_MESSAGE: usize = common::manifest::MAX_CHUNK_SIZE as usize + (64 << 10);

/// Why a fetch failed, as far as the scheduler cares.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source could not be reached or the connection broke; it may come back.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The source answered but will not serve these chunks (it lacks them or its copy
    /// changed); it may have them later.
    #[error("refused: {0}")]
    Refused(String),
    /// The source broke the protocol (wrong index, too many chunks, bad message).
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// The chunks of one request, in the order asked: `(index, data)`.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<(u32, Bytes), FetchError>> + Send>>;

/// Fetches chunks of a file from the peer at `addr`.
pub trait ChunkTransport: Send + Sync + 'static {
    /// Asks `addr` for chunks `indices` of `file_id`, presenting `ticket` (the tracker's
    /// permission; a node refuses a request without a valid one); the stream yields them
    /// one by one so the caller can notice a stall between chunks.
    fn fetch(
        &self,
        addr: &str,
        file_id: &FileId,
        indices: &[u32],
        ticket: Option<&Ticket>,
    ) -> impl Future<Output = Result<ChunkStream, FetchError>> + Send;

    /// Forgets any cached connection to `addr` (after it failed).
    fn forget(&self, addr: &str);
}

/// The gRPC transport: `peer.v1.Peer/GetChunks`.
#[derive(Default)]
pub struct GrpcTransport {
    channels: Mutex<HashMap<String, Channel>>,
}

/// An endpoint tuned for bulk transfer (client side).
pub fn tuned_endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A Peer client on `channel` with the message limits above.
pub fn peer_client(channel: Channel) -> PeerClient<Channel> {
    PeerClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE)
}

/// The wire form of a ticket.
pub(crate) fn ticket_to_pb(t: &Ticket) -> pb::Ticket {
    let c = &t.claims;
    pb::Ticket {
        file_id: c.file_id.to_string(),
        peer_id: c
            .peer_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        user: c.user.clone(),
        expires_at_ms: c.expires_at_ms,
        signature: Bytes::copy_from_slice(&t.signature),
    }
}

/// A ticket from its wire form (not yet verified).
///
/// # Errors
/// [`TicketError::Malformed`] when a field does not parse.
pub(crate) fn ticket_from_pb(t: &pb::Ticket) -> Result<Ticket, TicketError> {
    Ticket::from_parts(
        &t.file_id,
        &t.peer_id,
        t.user.clone(),
        t.expires_at_ms,
        &t.signature,
    )
}

fn classify(s: tonic::Status) -> FetchError {
    let msg = common::names::printable(s.message(), 200);
    match s.code() {
        // A refused ticket may be accepted later, once a fresh one is presented.
        Code::NotFound
        | Code::FailedPrecondition
        | Code::ResourceExhausted
        | Code::Unauthenticated
        | Code::PermissionDenied => FetchError::Refused(msg),
        Code::InvalidArgument | Code::OutOfRange => FetchError::Protocol(msg),
        _ => FetchError::Connect(format!("{}: {msg}", s.code())),
    }
}

impl GrpcTransport {
    fn channel(&self, addr: &str) -> Result<Channel, FetchError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ch = tuned_endpoint(addr)
            .map_err(|e| FetchError::Connect(format!("bad address {addr}: {e}")))?
            .connect_lazy();
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl ChunkTransport for GrpcTransport {
    async fn fetch(
        &self,
        addr: &str,
        file_id: &FileId,
        indices: &[u32],
        ticket: Option<&Ticket>,
    ) -> Result<ChunkStream, FetchError> {
        let mut client = peer_client(self.channel(addr)?);
        let req = pb::GetChunksRequest {
            file_id: file_id.to_string(),
            indices: indices.to_vec(),
            ticket: ticket.map(ticket_to_pb),
        };
        let stream = client.get_chunks(req).await.map_err(classify)?.into_inner();
        let expected = indices.to_vec();
        let mut pos = 0usize;
        let s = stream.map(move |item| {
            let c = item.map_err(classify)?;
            if expected.get(pos) != Some(&c.index) {
                return Err(FetchError::Protocol(format!(
                    "sent chunk {} where chunk {:?} was due",
                    c.index,
                    expected.get(pos)
                )));
            }
            pos += 1;
            Ok((c.index, c.data))
        });
        Ok(Box::pin(s))
    }

    fn forget(&self, addr: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(addr);
    }
}
