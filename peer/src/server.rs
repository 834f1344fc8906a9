//! The node's `peer.v1.Peer` service: it streams chunks of the files this node holds to
//! other peers, tells them what it holds as that grows (`Holdings`, module `holdings`), and
//! answers `Status`.
//!
//! The bytes come from a [`ChunkSource`] ([`StoreSource`]: the home's store of shared
//! files, downloads and replica chunks); the service only checks, paces and streams.
//!
//! Every `GetChunks` and `Holdings` must carry a ticket the tracker signed for the
//! requested file and a proof made with the key the ticket names (`crate::auth`); both are
//! checked against the tracker's public key ([`TrackerKey`], learnt from heartbeats and
//! kept in the home) before anything else is looked at, with no call to the tracker. A
//! missing, forged, altered or expired ticket, or a missing, wrong or replayed proof, is
//! UNAUTHENTICATED, a ticket for another file is PERMISSION_DENIED, and until the key is
//! known every request is UNAVAILABLE "not ready". While the tracker does not answer
//! ([`TrackerReach`]), a certificate stands in for the ticket.
//!
//! What a client may take is bounded (`limits`): streams per connection, per client and in
//! total, chunk bytes in memory, connections (`conn`); see [`StreamLimits`] for the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{FileId, Method, PeerId};
use proto::peer::v1 as pb;
use proto::peer::v1::peer_server::{Peer, PeerServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

mod conn;
mod holdings;
mod limits;
mod meter;
mod source;
mod upload;

use crate::auth::Gate;
pub use crate::auth::{TrackerKey, TrackerReach};
use conn::ConnInfo;
use holdings::Followers;
use limits::{Kind, Limits, MAX_REQUEST};
pub use limits::{StreamCaps, StreamLimits};
use meter::{MeterHandle, Metered};
pub use source::{ChunkReader, ChunkSource, Holding, RELOAD_EVERY, Refused, StoreSource};
use upload::Upload;

use crate::flood::{self, Flood};
use crate::ratelimit::RateLimiter;
use crate::transport::MAX_MESSAGE;

/// Most chunks one GetChunks may ask for.
const MAX_INDICES: usize = 256;

/// Counters reported by `Status`.
#[derive(Default)]
pub struct NodeStats {
    pub active_uploads: AtomicU32,
    pub bytes_sent: AtomicU64,
}

/// The Peer service of one node.
pub struct PeerService {
    source: Arc<dyn ChunkSource>,
    peer_id: PeerId,
    addr: String,
    started_at_ms: i64,
    upload_limit: Option<Arc<RateLimiter>>,
    stats: Arc<NodeStats>,
    /// Checks the tickets, certificates and proofs that requests carry.
    gate: Gate,
    /// The open Holdings streams.
    followers: Followers,
    /// What clients may take.
    limits: Arc<Limits>,
    /// Flooded search and peer exchange (a node only; `None` answers UNIMPLEMENTED).
    flood: Option<Arc<Flood>>,
}

impl PeerService {
    /// A service serving `source` to requests whose ticket verifies under `key` (or, while
    /// `reach` says the tracker does not answer, whose certificate does).
    pub fn new(
        source: Arc<dyn ChunkSource>,
        peer_id: PeerId,
        addr: String,
        upload_limit: Option<Arc<RateLimiter>>,
        key: TrackerKey,
        reach: TrackerReach,
    ) -> Self {
        Self {
            source,
            peer_id,
            addr,
            started_at_ms: crate::now_ms(),
            upload_limit,
            stats: Arc::default(),
            gate: Gate::new(key, reach),
            followers: Followers::default(),
            limits: Arc::new(Limits::new(StreamLimits::default())),
            flood: None,
        }
    }

    /// The same service taking flooded searches and peer exchange through `flood`.
    pub fn with_flood(mut self, flood: Arc<Flood>) -> Self {
        self.flood = Some(flood);
        self
    }

    fn flood(&self) -> Result<&Arc<Flood>, Status> {
        self.flood
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this node does not take flooded searches"))
    }

    /// The same service with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = Arc::new(Limits::new(limits));
        self
    }

    pub fn stats(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }
}

/// Decrements the active-upload count when an upload ends, however it ends.
struct UploadGuard(Arc<NodeStats>);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.active_uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The status for a holding whose bytes cannot be opened.
fn refused(id: &FileId, e: Refused) -> Status {
    match e {
        Refused::Changed(why) => Status::failed_precondition(format!("the shared file {why}")),
        Refused::Unreadable(e) => {
            tracing::warn!(file = %id, "cannot open data: {e}");
            Status::failed_precondition("data not readable")
        }
    }
}

/// The message for chunk `index` of `len` bytes as read.
fn chunk_msg(
    id: &FileId,
    index: u32,
    len: u64,
    read: std::io::Result<Vec<u8>>,
    stats: &NodeStats,
) -> Result<pb::Chunk, Status> {
    match read {
        Ok(data) => {
            stats.bytes_sent.fetch_add(len, Ordering::Relaxed);
            crate::metrics::metrics().chunk_served(len);
            Ok(pb::Chunk {
                index,
                data: Bytes::from(data),
            })
        }
        Err(e) => {
            if e.kind() == std::io::ErrorKind::NotFound {
                // A replica chunk dropped since the record was cached.
                tracing::debug!(file = %id, index, "chunk gone: {e}");
            } else {
                tracing::warn!(file = %id, index, "read failed: {e}");
            }
            Err(Status::failed_precondition("chunk not readable"))
        }
    }
}

impl PeerService {
    /// The chunks of `req` that this node will send, in order: the requested ones, or with
    /// `pick` > 0 the held candidates sent least so far (super-seeding).
    fn chosen(
        &self,
        id: &FileId,
        holding: &Holding,
        req: &pb::GetChunksRequest,
    ) -> Result<Vec<u32>, Status> {
        let n = holding.chunk_count();
        if let Some(&bad) = req.indices.iter().find(|&&i| i >= n) {
            return Err(Status::invalid_argument(format!(
                "chunk {bad} is past the end ({n} chunks)"
            )));
        }
        if holding.changed() {
            return Err(Status::failed_precondition(
                "the shared file changed on disk",
            ));
        }
        let indices = if req.pick > 0 {
            let held: Vec<u32> = req
                .indices
                .iter()
                .copied()
                .filter(|&i| holding.have.get(i))
                .collect();
            if held.is_empty() {
                return Err(Status::failed_precondition(
                    "this node holds none of the candidate chunks",
                ));
            }
            crate::upload_ledger::ledger().pick(id, n, &held, req.pick as usize)
        } else {
            req.indices.clone()
        };
        if let Some(&lack) = indices.iter().find(|&&i| !holding.have.get(i)) {
            return Err(Status::failed_precondition(format!(
                "this node does not hold chunk {lack}"
            )));
        }
        Ok(indices)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type GetChunksStream = upload::ChunkStream;

    async fn get_chunks(
        &self,
        request: Request<pb::GetChunksRequest>,
    ) -> Result<Response<Self::GetChunksStream>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let meter = request
            .extensions()
            .get::<MeterHandle>()
            .map(|m| m.0.clone());
        let req = request.into_inner();
        let id: FileId = req
            .file_id
            .parse()
            .map_err(|_| Status::invalid_argument("bad file id"))?;
        if req.indices.len() > MAX_INDICES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_INDICES} chunks per request"
            )));
        }
        // Before anything about the file is looked at, so an unticketed caller learns nothing.
        let user = self
            .gate
            .admit(
                Method::GetChunks,
                &id,
                req.ticket.as_ref(),
                req.proof.as_ref(),
                req.certificate.as_ref(),
            )?
            .user;
        let admission = self.limits.admit(Kind::Uploads, &user, conn.as_ref())?;
        let Some(mut holding) = self.source.holding(&id, &req.indices) else {
            return Err(Status::not_found("this node holds nothing of that file"));
        };
        // A getter may have heard of a chunk (from the tracker) that a `peer get` in this
        // home recorded after the source last read its record, and re-reads are at most
        // every RELOAD_EVERY (Holdings streams keep them that frequent): look again once
        // one is due before refusing, so the caller is not turned away for a chunk held here.
        if req.pick == 0 && req.indices.iter().any(|&i| !holding.have.get(i)) {
            tokio::time::sleep(RELOAD_EVERY).await;
            holding = self
                .source
                .holding(&id, &req.indices)
                .ok_or_else(|| Status::not_found("this node holds nothing of that file"))?;
        }
        let indices = self.chosen(&id, &holding, &req)?;
        let upload = Upload {
            source: self.source.clone(),
            id,
            holding,
            indices: indices.into_iter(),
            limit: self.upload_limit.clone(),
            stats: self.stats.clone(),
            admission,
            meter,
        };
        Ok(Response::new(upload.stream()))
    }

    type HoldingsStream = holdings::UpdateStream;

    async fn holdings(
        &self,
        request: Request<pb::HoldingsRequest>,
    ) -> Result<Response<Self::HoldingsStream>, Status> {
        let conn = request.extensions().get::<ConnInfo>().cloned();
        let req = request.into_inner();
        let id: FileId = req
            .file_id
            .parse()
            .map_err(|_| Status::invalid_argument("bad file id"))?;
        let grant = self.gate.admit(
            Method::Holdings,
            &id,
            req.ticket.as_ref(),
            req.proof.as_ref(),
            req.certificate.as_ref(),
        )?;
        let (until, user) = (grant.until, grant.user);
        let slot = self.limits.admit(Kind::Holdings, &user, conn.as_ref())?;
        let Some(holding) = holdings::current(self.source.as_ref(), &id) else {
            return Err(Status::not_found("this node holds nothing of that file"));
        };
        let stream = self
            .followers
            .follow(self.source.clone(), id, holding, until, slot);
        Ok(Response::new(stream))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryReply>, Status> {
        let flood = self.flood()?;
        let req = request.into_inner();
        let sender = self.gate.admit_peer(
            Method::Query,
            &flood::query_subject(&req.query_id),
            req.proof.as_ref(),
            req.certificate.as_ref(),
        )?;
        flood.on_query(req, &sender).map(Response::new)
    }

    async fn contacts(
        &self,
        request: Request<pb::ContactsRequest>,
    ) -> Result<Response<pb::ContactsReply>, Status> {
        let flood = self.flood()?;
        let req = request.into_inner();
        let sender = self.gate.admit_peer(
            Method::Contacts,
            &flood::contacts_subject(),
            req.proof.as_ref(),
            req.certificate.as_ref(),
        )?;
        Ok(Response::new(pb::ContactsReply {
            addrs: flood.exchange(&req.addr, &sender)?,
        }))
    }

    async fn chunk_map(
        &self,
        request: Request<pb::ChunkMapRequest>,
    ) -> Result<Response<pb::ChunkMapReply>, Status> {
        let req = request.into_inner();
        let id: FileId = req
            .file_id
            .parse()
            .map_err(|_| Status::invalid_argument("bad file id"))?;
        self.gate.admit_peer(
            Method::ChunkMap,
            &id,
            req.proof.as_ref(),
            req.certificate.as_ref(),
        )?;
        let not_held = || Status::not_found("this node does not hold that file's chunk map");
        let holding = self.source.holding(&id, &[]).ok_or_else(not_held)?;
        if holding.changed() || !holding.have.is_complete() {
            return Err(not_held());
        }
        let m = holding.rec.manifest().map_err(|_| not_held())?;
        Ok(Response::new(pb::ChunkMapReply {
            name: m.name.clone(),
            size: m.size,
            sha256: Bytes::copy_from_slice(&m.sha256.0),
            chunk_size: m.chunk_size,
            chunk_hashes: m.packed_hashes().into(),
        }))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let files = self.source.file_count();
        Ok(Response::new(pb::StatusResponse {
            peer_id: self.peer_id.to_string(),
            addr: self.addr.clone(),
            files,
            active_uploads: self.stats.active_uploads.load(Ordering::Relaxed),
            bytes_sent: self.stats.bytes_sent.load(Ordering::Relaxed),
            started_at_ms: self.started_at_ms,
        }))
    }
}

/// The gRPC name of the node's service, as health checks and reflection name it.
pub const SERVICE: &str = "peer.v1.Peer";

/// How long a request may take to arrive whole and be answered (the headers of a stream):
/// a client that sends half a request does not hold its stream for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Serves `service` on an already bound `listener` until `shutdown` is cancelled, beside the
/// standard health service and server reflection; over TLS with `tls` (the node's
/// certificate and key). Connections and streams are bounded by the service's
/// [`StreamLimits`].
///
/// The node only receives small requests, so it keeps hyper's default receive windows and
/// frame size; what makes chunks fast is the getter's side ([`crate::transport`]).
///
/// # Errors
/// When the TLS identity is unusable or the server fails (not when it is shut down).
pub async fn run(
    listener: TcpListener,
    service: Arc<PeerService>,
    tls: Option<tonic::transport::Identity>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    // Holdings streams last as long as a download: end them, or shutdown would wait for them.
    let followers = service.followers.stop.clone();
    let limits = service.limits.clone();
    let cfg = limits.cfg.clone();
    let svc = PeerServer::from_arc(service)
        .max_decoding_message_size(MAX_REQUEST)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = Metered(svc);
    let conns = Arc::new(conn::Conns::default());
    let incoming = conn::incoming(listener, limits.clone(), conns.clone());
    let stall = cfg.stall_timeout;
    tokio::spawn(meter::sweep(conns, limits, stall, shutdown.clone()));
    // A node serves chunks as long as it runs: SERVING until shutdown.
    let (reporter, health) = proto::introspect::health();
    proto::introspect::report(&reporter, &[SERVICE], true).await;
    let health = health.max_decoding_message_size(MAX_REQUEST);
    let reflection =
        proto::introspect::reflection(&[SERVICE]).max_decoding_message_size(MAX_REQUEST);
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .max_concurrent_streams(cfg.h2_streams())
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(svc)
        .add_service(health)
        .add_service(reflection)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.cancelled().await;
            followers.cancel();
        })
        .await
}

#[cfg(test)]
mod tests;
