//! How a getter fetches chunks from another peer. The downloader only sees the
//! [`ChunkTransport`] trait, so a faster transport (raw TCP, QUIC) can slot in later; the
//! gRPC implementation keeps one HTTP/2 channel per source address.
//!
//! HTTP/2's default 64 KiB windows and tonic's 4 MiB message limit throttle bulk transfer,
//! so both sides (this client and `server`) use the settings below.
//!
//! A node that serves TLS advertises `https://HOST:PORT` (a plain one `HOST:PORT`), so the
//! address alone tells a getter how to connect; TLS peers are checked against the
//! certificate authorities of `--ca` ([`ClientTls`]).
//!
//! Every request carries the ticket the tracker signed for the file (from Locate or from a
//! replication task) and a proof made with the key the ticket names (this home's key,
//! [`Identity`]), plus the home's certificate, which a node accepts instead of an expired
//! ticket while its tracker does not answer; a node refuses requests without them.
//!
//! Besides chunks, a getter follows what a partial source holds ([`HoldingsStream`],
//! `Holdings` on the same channel), so it asks for a chunk that landed there at once.

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Bitfield, FileId, Method, Ticket};
use futures::{Stream, StreamExt};
use proto::peer::v1 as pb;
use proto::peer::v1::origin_client::OriginClient;
use proto::peer::v1::peer_client::PeerClient;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::identity::Identity;

/// The most chunk bytes a getter asks one source for at once (its per-source memory
/// bound): 32 requests of 1 MiB, twice the bandwidth-delay product of a 1 Gbit/s link at
/// 120 ms.
pub const MAX_IN_FLIGHT_BYTES: u64 = 32 << 20;
/// Per-stream HTTP/2 window: one stream carries one request of at most one 16 MiB chunk,
/// and a 4 MiB window keeps a 1 MiB chunk in flight whole.
pub const STREAM_WINDOW: u32 = 4 << 20;
/// Per-connection HTTP/2 window, above [`MAX_IN_FLIGHT_BYTES`] so flow control never binds
/// before the getter's own depth does.
pub const CONNECTION_WINDOW: u32 = 48 << 20;
/// Largest HTTP/2 frame either side accepts: a 1 MiB chunk in one frame (plus a small one),
/// which measured ~7 % faster than 256 KiB frames and far fewer than the 16 KiB default.
pub const MAX_FRAME: u32 = 1 << 20;
/// Largest gRPC message: one chunk of the largest size plus framing.
pub const MAX_MESSAGE: usize = common::manifest::MAX_CHUNK_SIZE as usize + (64 << 10);

/// Why a fetch failed, as far as the scheduler cares.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The source could not be reached or the connection broke; it may come back.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The source answered but will not serve these chunks now (busy, or a ticket it does
    /// not take); it may later.
    #[error("refused: {0}")]
    Refused(String),
    /// The source says it lacks chunks it is listed for (or its copy changed).
    #[error("not held: {0}")]
    NotHeld(String),
    /// The source broke the protocol (wrong index, too many chunks, bad message).
    #[error("protocol violation: {0}")]
    Protocol(String),
}

/// The chunks of one request, in the order asked: `(index, data)`.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<(u32, Bytes), FetchError>> + Send>>;

/// What a source holds of one file, as it grows: each item is its whole holding then.
pub type HoldingsStream = Pin<Box<dyn Stream<Item = Result<Bitfield, FetchError>> + Send>>;

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

    /// Asks `addr` to choose `pick` of `candidates` (super-seeding: the node sends the ones
    /// it has sent least); the stream yields at most `pick` chunks, each one of the
    /// candidates, in any order. By default the first `pick` candidates are asked for.
    fn fetch_pick(
        &self,
        addr: &str,
        file_id: &FileId,
        candidates: &[u32],
        pick: u32,
        ticket: Option<&Ticket>,
    ) -> impl Future<Output = Result<ChunkStream, FetchError>> + Send {
        let n = (pick as usize).min(candidates.len());
        self.fetch(addr, file_id, &candidates[..n], ticket)
    }

    /// Follows what `addr` holds of `file_id` (`chunks` chunks long), presenting `ticket`:
    /// its whole holding at once, then again whenever it grows; the stream ends once it
    /// holds every chunk or its ticket runs out. By default nothing is followed (an error),
    /// and the downloader learns holdings from the tracker alone.
    fn holdings(
        &self,
        addr: &str,
        file_id: &FileId,
        chunks: u32,
        ticket: Option<&Ticket>,
    ) -> impl Future<Output = Result<HoldingsStream, FetchError>> + Send {
        let _ = (addr, file_id, chunks, ticket);
        std::future::ready(Err(FetchError::Refused(
            "this transport does not follow holdings".into(),
        )))
    }

    /// Forgets any cached connection to `addr` (after it failed).
    fn forget(&self, addr: &str);
}

/// The certificate authorities this peer trusts for `https://` trackers and TLS nodes
/// (`--ca`); none by default, so TLS connections fail until one is given. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ClientTls {
    ca: Option<Certificate>,
}

/// Why `--ca` is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read --ca {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--ca {0} holds no PEM certificate")]
    Empty(String),
}

impl ClientTls {
    /// Trusts the CA certificates (PEM) in `path`, or nothing when `None`.
    ///
    /// # Errors
    /// When the file cannot be read or holds no certificate.
    pub fn load(path: Option<&Path>) -> Result<Self, CaError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let shown = crate::output::safe(&path.display().to_string());
        let pem = std::fs::read(path).map_err(|source| CaError::Read {
            path: shown.clone(),
            source,
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .filter(|c| c.is_ok())
            .count();
        if certs == 0 {
            return Err(CaError::Empty(shown));
        }
        Ok(Self {
            ca: Some(Certificate::from_pem(pem)),
        })
    }

    /// Whether a CA was given.
    pub fn has_ca(&self) -> bool {
        self.ca.is_some()
    }

    /// `endpoint` with TLS settings when its URI is `https://`.
    ///
    /// # Errors
    /// When tonic refuses the TLS settings.
    pub fn apply(&self, endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
        if endpoint.uri().scheme_str() != Some("https") {
            return Ok(endpoint);
        }
        let mut cfg = ClientTlsConfig::new();
        if let Some(ca) = &self.ca {
            cfg = cfg.ca_certificate(ca.clone());
        }
        endpoint.tls_config(cfg)
    }
}

/// The URI of a node's advertised address: `https://HOST:PORT` stays, `HOST:PORT` gets
/// `http://`.
pub fn node_uri(addr: &str) -> String {
    if addr.starts_with("https://") || addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// The local IP used to reach `url`'s host: connect a UDP socket (no packet is sent) and
/// read its local address.
pub async fn route_ip(url: &str) -> Option<std::net::IpAddr> {
    let uri: tonic::transport::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let bind: std::net::SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(target).await.ok()?;
    Some(sock.local_addr().ok()?.ip())
}

/// The gRPC transport: `peer.v1.Peer/GetChunks`.
pub struct GrpcTransport {
    channels: Mutex<HashMap<String, Channel>>,
    tls: ClientTls,
    /// Signs every request.
    identity: Arc<Identity>,
}

impl GrpcTransport {
    /// A transport that checks TLS nodes against `tls` and proves `identity`'s key.
    pub fn new(tls: ClientTls, identity: Arc<Identity>) -> Self {
        Self {
            channels: Mutex::default(),
            tls,
            identity,
        }
    }

    /// A client of the Peer service at `addr`, on this transport's channel to it.
    ///
    /// # Errors
    /// A bad address.
    pub fn peer(&self, addr: &str) -> Result<PeerClient<Channel>, FetchError> {
        Ok(peer_client(self.channel(addr)?))
    }

    /// A client of the Origin service (a searching `peer search`) at `addr`.
    ///
    /// # Errors
    /// A bad address.
    pub fn origin(&self, addr: &str) -> Result<OriginClient<Channel>, FetchError> {
        Ok(OriginClient::new(self.channel(addr)?))
    }

    /// This transport's key and certificate.
    pub fn identity(&self) -> &Arc<Identity> {
        &self.identity
    }

    /// The proof and certificate for one request.
    fn credentials(
        &self,
        method: Method,
        file_id: &FileId,
    ) -> (Option<pb::Proof>, Option<pb::Certificate>) {
        let proof = self.identity.prove(method, file_id);
        let cert = self.identity.certificate();
        (
            Some(pb::Proof::from(&proof)),
            cert.as_ref().map(pb::Certificate::from),
        )
    }
}

/// An endpoint for the node at `addr` (advertised form, see [`node_uri`]) tuned for bulk
/// transfer (client side).
pub fn tuned_endpoint(addr: &str, tls: &ClientTls) -> Result<Endpoint, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(node_uri(addr))?;
    Ok(tls
        .apply(endpoint)?
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

/// What a running node says about itself (the Peer service's `Status`).
#[derive(Debug, Clone)]
pub struct NodeStatus {
    pub peer_id: String,
    pub addr: String,
    pub files: u32,
    pub active_uploads: u32,
    pub bytes_sent: u64,
}

/// Asks the node at `addr` (advertised form, see [`node_uri`]) how it is doing; `None` when
/// it does not answer within a few seconds.
pub async fn node_status(addr: &str, tls: &ClientTls) -> Option<NodeStatus> {
    let ep = tuned_endpoint(addr, tls)
        .ok()?
        .connect_timeout(Duration::from_secs(2));
    let ask = async {
        let s = peer_client(crate::connector::connect(&ep).await.ok()?)
            .status(pb::StatusRequest {})
            .await
            .ok()?
            .into_inner();
        Some(NodeStatus {
            peer_id: s.peer_id,
            addr: s.addr,
            files: s.files,
            active_uploads: s.active_uploads,
            bytes_sent: s.bytes_sent,
        })
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}

fn classify(s: tonic::Status) -> FetchError {
    let msg = common::names::printable(&status_detail(&s), 300);
    match s.code() {
        // A refused ticket may be accepted later, once a fresh one is presented.
        Code::NotFound | Code::FailedPrecondition => FetchError::NotHeld(msg),
        Code::ResourceExhausted | Code::Unauthenticated | Code::PermissionDenied => {
            FetchError::Refused(msg)
        }
        Code::InvalidArgument | Code::OutOfRange => FetchError::Protocol(msg),
        _ => FetchError::Connect(format!("{}: {msg}", s.code())),
    }
}

/// A status's message followed by the chain of errors behind it (a connection failure's
/// message alone is just "transport error"; the cause, e.g. a refused certificate, is
/// below it).
pub fn status_detail(s: &tonic::Status) -> String {
    let mut out = s.message().to_string();
    let mut next = std::error::Error::source(s);
    while let Some(e) = next {
        let m = e.to_string();
        // "transport error" says nothing the rest of the chain does not.
        if !m.is_empty() && m != "transport error" && !out.contains(&m) {
            out = format!("{out}: {m}");
        }
        next = e.source();
    }
    out
}

impl GrpcTransport {
    fn channel(&self, addr: &str) -> Result<Channel, FetchError> {
        let mut map = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let ep = tuned_endpoint(addr, &self.tls)
            .map_err(|e| FetchError::Connect(format!("bad address {addr}: {e}")))?;
        let ch = crate::connector::lazy(&ep);
        map.insert(addr.to_string(), ch.clone());
        Ok(ch)
    }
}

impl GrpcTransport {
    /// Sends one `GetChunks` and returns the answer's stream of chunks.
    async fn request(
        &self,
        addr: &str,
        file_id: &FileId,
        indices: &[u32],
        pick: u32,
        ticket: Option<&Ticket>,
    ) -> Result<tonic::Streaming<pb::Chunk>, FetchError> {
        let mut client = peer_client(self.channel(addr)?);
        let (proof, certificate) = self.credentials(Method::GetChunks, file_id);
        let req = pb::GetChunksRequest {
            file_id: file_id.to_string(),
            indices: indices.to_vec(),
            ticket: ticket.map(pb::Ticket::from),
            pick,
            proof,
            certificate,
        };
        Ok(client.get_chunks(req).await.map_err(classify)?.into_inner())
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
        let stream = self.request(addr, file_id, indices, 0, ticket).await?;
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

    async fn fetch_pick(
        &self,
        addr: &str,
        file_id: &FileId,
        candidates: &[u32],
        pick: u32,
        ticket: Option<&Ticket>,
    ) -> Result<ChunkStream, FetchError> {
        let stream = self
            .request(addr, file_id, candidates, pick, ticket)
            .await?;
        let mut left: std::collections::HashSet<u32> = candidates.iter().copied().collect();
        // An old node ignores `pick` and streams every candidate: take the first `pick`.
        let s = stream.take(pick as usize).map(move |item| {
            let c = item.map_err(classify)?;
            if !left.remove(&c.index) {
                return Err(FetchError::Protocol(format!(
                    "sent chunk {}, which was not a candidate (or twice)",
                    c.index
                )));
            }
            Ok((c.index, c.data))
        });
        Ok(Box::pin(s))
    }

    async fn holdings(
        &self,
        addr: &str,
        file_id: &FileId,
        chunks: u32,
        ticket: Option<&Ticket>,
    ) -> Result<HoldingsStream, FetchError> {
        let mut client = peer_client(self.channel(addr)?);
        let (proof, certificate) = self.credentials(Method::Holdings, file_id);
        let req = pb::HoldingsRequest {
            file_id: file_id.to_string(),
            ticket: ticket.map(pb::Ticket::from),
            proof,
            certificate,
        };
        let stream = client.holdings(req).await.map_err(classify)?.into_inner();
        let mut have = Bitfield::new(chunks);
        let s = stream.map(move |item| {
            let u = item.map_err(classify)?;
            apply_holdings(&mut have, &u)?;
            Ok(have.clone())
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

/// Applies one `HoldingsUpdate` to `have`.
///
/// # Errors
/// A protocol violation when the bitfield has the wrong length or an index is past the end.
fn apply_holdings(have: &mut Bitfield, u: &pb::HoldingsUpdate) -> Result<(), FetchError> {
    let n = have.len();
    if !u.have.is_empty() {
        *have =
            Bitfield::from_bytes(&u.have, n).map_err(|e| FetchError::Protocol(e.to_string()))?;
    }
    if let Some(&bad) = u.added.iter().find(|&&i| i >= n) {
        return Err(FetchError::Protocol(format!(
            "holds chunk {bad}, past the end ({n} chunks)"
        )));
    }
    for &i in &u.added {
        have.set(i);
    }
    Ok(())
}
