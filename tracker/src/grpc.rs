//! The gRPC adapter for peers: `tracker.v1.Tracker` over [`TrackerService`]. Every method is
//! thin: read the session from the `authorization` metadata, convert the prost message to
//! `common` types (refusing what does not parse), call the domain, convert back. Prost types
//! never leave this module, and [`Error`] becomes a `tonic::Status` only here. Tickets,
//! certificates and manifests convert with the `From`/`TryFrom` impls of the `proto` crate,
//! which the peer uses too.

use std::net::SocketAddr;
use std::pin::Pin;

use axum::extract::ConnectInfo;
use bytes::Bytes;
use common::ticket::PUBLIC_KEY_LEN;
use common::{FileId, Manifest, ManifestError, PeerId, TicketVerifier};
use proto::peer::v1 as peer_pb;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_server::{Tracker, TrackerServer};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::Error;
use crate::app::audit::Fault;
use crate::app::{
    Assignment, FileView, HolderView, HoldingInput, SearchQuery, SessionView, TrackerService,
};
use crate::error::DB_UNAVAILABLE;
use crate::model::HoldingKind;

/// Largest message accepted or sent (a manifest of a huge file is the biggest: 32 bytes a
/// chunk, 8 MiB at the default --max-chunks-per-file; or an announce of a collection with
/// its listing, at most 8 MiB, and a manifest of a few chunks), unless [`max_message`]
/// says more.
pub const MAX_MESSAGE: usize = 16 << 20;

// An announce carrying the largest listing fits, with room for its manifest.
const _: () = assert!(MAX_MESSAGE >= common::collection::MAX_LISTING + (1 << 20));

/// The message limit for `max_chunks_per_file`: [`MAX_MESSAGE`], or room for such a
/// manifest (32 bytes a chunk) and a Locate's partial holders (at most 128, a bit a chunk
/// each) when the setting was raised that far.
pub fn max_message(max_chunks_per_file: u32) -> usize {
    let chunks = max_chunks_per_file as usize;
    MAX_MESSAGE.max(chunks.saturating_mul(32 + 128 / 8).saturating_add(1 << 20))
}

/// The gRPC name of the tracker's service, as health checks and reflection name it.
pub const SERVICE: &str = "tracker.v1.Tracker";

/// How often the health service's status follows the database.
const HEALTH_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Keeps `grpc.health.v1.Health` true until `shutdown`: the tracker is SERVING while its
/// database answers (what `/healthz` says), NOT_SERVING while it does not.
pub async fn report_health(
    svc: TrackerService,
    reporter: tonic_health::server::HealthReporter,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut last = None;
    loop {
        let ok = svc.health().await.is_ok();
        if last != Some(ok) {
            proto::introspect::report(&reporter, &[SERVICE], ok).await;
            last = Some(ok);
        }
        tokio::select! {
            _ = tokio::time::sleep(HEALTH_EVERY) => {}
            _ = shutdown.cancelled() => {
                proto::introspect::report(&reporter, &[SERVICE], false).await;
                return;
            }
        }
    }
}

/// The tonic service, with explicit message limits (see [`max_message`]).
pub fn service(svc: TrackerService) -> TrackerServer<Grpc> {
    let limit = max_message(svc.config().max_chunks_per_file);
    TrackerServer::new(Grpc { svc })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit)
}

/// The gRPC face of the tracker.
pub struct Grpc {
    svc: TrackerService,
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        let msg = e.to_string();
        match e {
            Error::InvalidArgument(_) => Status::invalid_argument(msg),
            Error::Unauthenticated(_) => Status::unauthenticated(msg),
            Error::PermissionDenied(_) => Status::permission_denied(msg),
            Error::NotFound(_) => Status::not_found(msg),
            Error::AlreadyExists(_) => Status::already_exists(msg),
            Error::Throttled { .. } | Error::LimitReached(_) => Status::resource_exhausted(msg),
            Error::Database(_) => {
                crate::error::log_unavailable(&msg);
                Status::unavailable(DB_UNAVAILABLE)
            }
            Error::Io { .. } | Error::Config(_) | Error::Internal(_) => {
                tracing::error!(cause = %msg, "request failed");
                Status::internal("internal error")
            }
        }
    }
}

fn token<T>(req: &Request<T>) -> Option<&str> {
    let value = req.metadata().get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn peer_id(s: &str) -> Result<PeerId, Status> {
    s.parse()
        .map_err(|e: common::ids::PeerIdParseError| Status::invalid_argument(e.to_string()))
}

fn file_id(s: &str) -> Result<FileId, Status> {
    s.parse()
        .map_err(|e: common::ids::FileIdParseError| Status::invalid_argument(e.to_string()))
}

/// A peer's Ed25519 public key from `field`, `whose` it is for the message: required, and
/// refused unless it is 32 bytes that are a key (a ticket naming anything else could never
/// be used).
fn public_key(bytes: &[u8], field: &str, whose: &str) -> Result<[u8; PUBLIC_KEY_LEN], Status> {
    if bytes.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field}: {whose} 32-byte Ed25519 public key is required"
        )));
    }
    match TicketVerifier::from_public(bytes) {
        Ok(v) => Ok(v.public_key()),
        Err(_) if bytes.len() != PUBLIC_KEY_LEN => Err(Status::invalid_argument(format!(
            "{field}: {whose} Ed25519 public key must be 32 bytes, not {}",
            bytes.len()
        ))),
        Err(_) => Err(Status::invalid_argument(format!(
            "{field}: not an Ed25519 public key ({whose})"
        ))),
    }
}

fn kind(code: i32) -> Result<Option<HoldingKind>, Status> {
    match code {
        0 => Ok(None),
        c => HoldingKind::from_code(c)
            .map(Some)
            .ok_or_else(|| Status::invalid_argument(format!("unknown holding kind {c}"))),
    }
}

fn manifest(m: Option<pb::Manifest>) -> Result<Manifest, Status> {
    let m = m.ok_or_else(|| Status::invalid_argument("manifest is missing"))?;
    Manifest::try_from(m).map_err(|e| {
        Status::invalid_argument(match e {
            ManifestError::BadSha256(_) => "manifest sha256 must be 32 bytes".to_string(),
            e => format!("invalid manifest: {e}"),
        })
    })
}

fn file_info(f: FileView) -> pb::FileInfo {
    pb::FileInfo {
        id: f.id.to_string(),
        name: f.name,
        size: f.size,
        sha256: f.sha256.to_hex(),
        r#type: f.file_type.as_str().to_string(),
        chunk_size: f.chunk_size,
        chunks: f.chunks,
        holders: f.holders,
        created_at_ms: f.created_at_ms,
    }
}

fn holder(h: HolderView) -> pb::Holder {
    pb::Holder {
        peer_id: h.peer_id.into(),
        addr: h.addr,
        have: h
            .have
            .map(|b| Bytes::copy_from_slice(b.as_bytes()))
            .unwrap_or_default(),
    }
}

fn task(a: Assignment) -> pb::Task {
    match a {
        Assignment::Fetch(f) => pb::Task {
            id: f.id,
            work: Some(pb::task::Work::Fetch(pb::FetchReplica {
                file_id: f.file.to_string(),
                chunk: f.chunk,
                chunk_sha256: Bytes::copy_from_slice(&f.sha256.0),
                chunk_len: f.len,
                name: f.name,
                file_size: f.file_size,
                chunk_size: f.chunk_size,
                sources: f.sources.into_iter().map(holder).collect(),
                ticket: Some(peer_pb::Ticket::from(&*f.ticket)),
            })),
        },
        Assignment::Drop { id, file, chunks } => pb::Task {
            id,
            work: Some(pb::task::Work::Drop(pb::DropReplica {
                file_id: file.to_string(),
                chunks,
            })),
        },
        Assignment::Get { id, file } => pb::Task {
            id,
            work: Some(pb::task::Work::Get(pb::FetchFile {
                file_id: file.to_string(),
            })),
        },
    }
}

/// The stream of a node's tasks.
pub type TaskStream = Pin<Box<dyn Stream<Item = Result<pb::Task, Status>> + Send + 'static>>;

fn session(s: SessionView, ticket_public_key: &[u8]) -> pb::Session {
    pb::Session {
        token: s.token,
        user: s.user,
        expires_at_ms: s.expires_at_ms,
        ticket_public_key: Bytes::copy_from_slice(ticket_public_key),
    }
}

#[tonic::async_trait]
impl Tracker for Grpc {
    async fn register(
        &self,
        req: Request<pb::Credentials>,
    ) -> Result<Response<pb::Session>, Status> {
        let c = req.into_inner();
        let s = self.svc.register(&c.user, &c.password).await?;
        Ok(Response::new(session(s, &self.svc.ticket_public_key())))
    }

    async fn login(&self, req: Request<pb::Credentials>) -> Result<Response<pb::Session>, Status> {
        let ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let c = req.into_inner();
        let s = self.svc.login(&c.user, &c.password, ip).await?;
        Ok(Response::new(session(s, &self.svc.ticket_public_key())))
    }

    async fn logout(
        &self,
        req: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        self.svc.logout(token(&req)).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn certify(
        &self,
        req: Request<pb::CertifyRequest>,
    ) -> Result<Response<pb::CertifyResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let key = public_key(&r.key, "key", "the peer's")?;
        let cert = self.svc.certify(&caller, &peer, key)?;
        Ok(Response::new(pb::CertifyResponse {
            certificate: Some(peer_pb::Certificate::from(&cert)),
            ticket_public_key: Bytes::copy_from_slice(&self.svc.ticket_public_key()),
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let interval = self
            .svc
            .heartbeat(&caller, &peer, &r.addr, r.storage_quota, r.storage_used)
            .await?;
        Ok(Response::new(pb::HeartbeatResponse {
            interval_ms: u32::try_from(interval.as_millis()).unwrap_or(u32::MAX),
            ticket_public_key: Bytes::copy_from_slice(&self.svc.ticket_public_key()),
        }))
    }

    async fn sync_holdings(
        &self,
        req: Request<pb::SyncHoldingsRequest>,
    ) -> Result<Response<pb::SyncHoldingsResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let holdings = r
            .holdings
            .into_iter()
            .map(|h| {
                Ok(HoldingInput {
                    file_id: h.file_id,
                    kind: kind(h.kind)?.unwrap_or(HoldingKind::Downloaded),
                    have: h.have.to_vec(),
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let unknown_file_ids = self.svc.sync_holdings(&caller, &peer, holdings).await?;
        Ok(Response::new(pb::SyncHoldingsResponse { unknown_file_ids }))
    }

    async fn announce(
        &self,
        req: Request<pb::AnnounceRequest>,
    ) -> Result<Response<pb::AnnounceResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let m = manifest(r.manifest)?;
        // Empty for a plain file, or a collection the tracker knows.
        let listing = (!r.listing.is_empty()).then_some(r.listing);
        let f = self.svc.announce(&caller, &peer, m, listing).await?;
        Ok(Response::new(pb::AnnounceResponse {
            file: Some(file_info(f)),
        }))
    }

    async fn report_chunks(
        &self,
        req: Request<pb::ReportChunksRequest>,
    ) -> Result<Response<pb::ReportChunksResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let file = file_id(&r.file_id)?;
        let kind = kind(r.kind)?.unwrap_or(HoldingKind::Downloaded);
        self.svc
            .report_chunks(&caller, &peer, &file, kind, &r.chunks)
            .await?;
        Ok(Response::new(pb::ReportChunksResponse {}))
    }

    async fn unindex(
        &self,
        req: Request<pb::UnindexRequest>,
    ) -> Result<Response<pb::UnindexResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let file = file_id(&r.file_id)?;
        self.svc.unindex(&caller, &peer, &file).await?;
        Ok(Response::new(pb::UnindexResponse {}))
    }

    async fn search(
        &self,
        req: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let file_type = match r.r#type.trim() {
            "" => None,
            t => Some(
                t.parse()
                    .map_err(|e: common::filetype::FileTypeParseError| {
                        Status::invalid_argument(e.to_string())
                    })?,
            ),
        };
        let page = self.svc.search(&SearchQuery {
            query: r.query,
            file_type,
            limit: Some(r.limit),
            offset: r.offset,
        })?;
        Ok(Response::new(pb::SearchResponse {
            items: page.items.into_iter().map(file_info).collect(),
            total: page.total,
        }))
    }

    async fn resolve(
        &self,
        req: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let files = self.svc.resolve(&caller, &req.into_inner().term);
        Ok(Response::new(pb::ResolveResponse {
            files: files.into_iter().map(file_info).collect(),
        }))
    }

    async fn locate(
        &self,
        req: Request<pb::LocateRequest>,
    ) -> Result<Response<pb::LocateResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let req = req.into_inner();
        let file = file_id(&req.file_id)?;
        let key = public_key(&req.requester_key, "requester_key", "the getter's")?;
        let l = self.svc.locate(&caller, &file, key)?;
        Ok(Response::new(pb::LocateResponse {
            // The hashes were packed once, when the file was indexed.
            // Named as the file is for this caller, which the id does not cover.
            manifest: (!req.have_manifest).then(|| pb::Manifest {
                name: l.file.name.clone(),
                ..pb::Manifest::with_packed_hashes(&l.manifest, l.packed_hashes.clone())
            }),
            ticket: Some(peer_pb::Ticket::from(&l.ticket)),
            file: Some(file_info(l.file)),
            holders: l.holders.into_iter().map(holder).collect(),
        }))
    }

    async fn list_peers(
        &self,
        req: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        self.svc.authenticate(token(&req))?;
        let peers = self
            .svc
            .list_peers()
            .into_iter()
            .map(|p| pb::PeerInfo {
                id: p.id.to_string(),
                user: p.user,
                addr: p.addr,
                state: if p.up { "up" } else { "down" }.to_string(),
                last_seen_ms: p.last_seen_ms.unwrap_or(0),
                storage_quota: p.storage_quota,
                storage_used: p.storage_used,
            })
            .collect();
        Ok(Response::new(pb::ListPeersResponse { peers }))
    }

    type TasksStream = TaskStream;

    async fn tasks(
        &self,
        req: Request<pb::TasksRequest>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let key = public_key(&r.node_key, "node_key", "the node's")?;
        let rx = self.svc.open_tasks(&caller, &peer, key).await?;
        let stream = ReceiverStream::new(rx).map(|a| Ok(task(a)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_task(
        &self,
        req: Request<pb::CompleteTaskRequest>,
    ) -> Result<Response<pb::CompleteTaskResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        self.svc
            .complete_task(&caller, &peer, r.task_id, r.ok, &r.error)
            .await?;
        Ok(Response::new(pb::CompleteTaskResponse {}))
    }

    async fn queue_get(
        &self,
        req: Request<pb::QueueGetRequest>,
    ) -> Result<Response<pb::QueueGetResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let file = file_id(&r.file_id)?;
        let task_id = self.svc.queue_get(&caller, &peer, file).await?;
        Ok(Response::new(pb::QueueGetResponse { task_id }))
    }

    async fn cancel_get(
        &self,
        req: Request<pb::CancelGetRequest>,
    ) -> Result<Response<pb::CancelGetResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let peer = peer_id(&r.peer_id)?;
        let file = file_id(&r.file_id)?;
        let cancelled = self.svc.cancel_get(&caller, &peer, file).await?;
        Ok(Response::new(pb::CancelGetResponse { cancelled }))
    }

    async fn report_source(
        &self,
        req: Request<pb::ReportSourceRequest>,
    ) -> Result<Response<pb::ReportSourceResponse>, Status> {
        let caller = self.svc.authenticate(token(&req))?;
        let r = req.into_inner();
        let reporter = peer_id(&r.reporter_peer_id)?;
        let source = peer_id(&r.peer_id)?;
        let file = file_id(&r.file_id)?;
        let fault = match pb::SourceFault::try_from(r.fault) {
            Ok(pb::SourceFault::BadData) => Fault::BadData,
            Ok(pb::SourceFault::NotHeld) => Fault::NotHeld,
            Ok(pb::SourceFault::Stalled) => Fault::Stalled,
            _ => return Err(Status::invalid_argument("fault must be set")),
        };
        self.svc
            .report_source(&caller, &reporter, &file, &source, r.chunk, fault)?;
        Ok(Response::new(pb::ReportSourceResponse {}))
    }
}
