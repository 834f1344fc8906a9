//! The node's `peer.v1.Peer` service: it streams chunks of the files in this home's store to
//! other peers, and answers `Status`.
//!
//! Records are cached by file id and re-read from disk when a file id is unknown or a
//! requested chunk is not in the cached `have` (a `peer get` in the same home writes its
//! record every half second, and this node serves those chunks while the download runs);
//! re-reads of one record happen at most every [`RELOAD_EVERY`].
//!
//! A shared file is the user's own file: before serving it the node checks that its length
//! and mtime still match the record. A changed or vanished file is refused, the record is
//! marked `changed`, and the holding is withdrawn at the tracker, so nobody is handed bytes
//! that no longer match the manifest. The same check runs over every shared file
//! periodically ([`PeerService::check_shared_files`], called by `serve`), one code path.
//!
//! Replica chunks (kind `replica`) are served from their chunk files
//! (`HOME/replicas/<id>/<chunk>.chunk`), only the chunks the record lists.
//!
//! Every `GetChunks` must carry a ticket the tracker signed for the requested file; it is
//! checked against the tracker's public key ([`TrackerKey`], learnt from heartbeats and
//! kept in the home) before anything else is looked at, with no call to the tracker. A
//! missing, forged, altered or expired ticket is UNAUTHENTICATED, one for another file is
//! PERMISSION_DENIED, and until the key is known every request is UNAVAILABLE "not ready".

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Bitfield, FileId, PeerId, TicketError};
use proto::peer::v1 as pb;
use proto::peer::v1::peer_server::{Peer, PeerServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

mod tickets;

pub use tickets::TrackerKey;
use tickets::VerifiedTickets;

use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::ratelimit::RateLimiter;
use crate::tracker_client::TrackerClient;
use crate::transport::{CONNECTION_WINDOW, MAX_FRAME, MAX_MESSAGE, STREAM_WINDOW, ticket_from_pb};

/// How often one record may be re-read from disk.
pub const RELOAD_EVERY: Duration = Duration::from_millis(200);
/// Most chunks one GetChunks may ask for.
const MAX_INDICES: usize = 256;

/// Test-only fault injection: `PEER_TEST_CORRUPT_CHUNKS=3,7` makes this node flip a byte of
/// chunks 3 and 7 of every file it serves (so tests can check that getters catch it).
pub const CORRUPT_ENV: &str = "PEER_TEST_CORRUPT_CHUNKS";

struct Cached {
    rec: Option<Arc<(StoreRecord, Bitfield)>>,
    loaded_at: Instant,
}

/// Counters reported by `Status`.
#[derive(Default)]
pub struct NodeStats {
    pub active_uploads: AtomicU32,
    pub bytes_sent: AtomicU64,
}

/// The Peer service of one node.
pub struct PeerService {
    home: Home,
    peer_id: PeerId,
    addr: String,
    started_at_ms: i64,
    upload_limit: Option<Arc<RateLimiter>>,
    tracker: Option<TrackerClient>,
    stats: Arc<NodeStats>,
    cache: Mutex<HashMap<FileId, Cached>>,
    corrupt: HashSet<u32>,
    /// Checks the tickets that requests carry.
    key: TrackerKey,
    /// Tickets whose signature already verified.
    verified: VerifiedTickets,
}

impl PeerService {
    /// A service serving `home`'s store to requests whose ticket verifies under `key`.
    /// `tracker` (if any) is told when a shared file changed on disk.
    pub fn new(
        home: Home,
        peer_id: PeerId,
        addr: String,
        upload_limit: Option<Arc<RateLimiter>>,
        tracker: Option<TrackerClient>,
        key: TrackerKey,
    ) -> Self {
        let corrupt = std::env::var(CORRUPT_ENV)
            .ok()
            .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
            .unwrap_or_default();
        Self {
            home,
            peer_id,
            addr,
            started_at_ms: crate::now_ms(),
            upload_limit,
            tracker,
            stats: Arc::default(),
            cache: Mutex::default(),
            corrupt,
            key,
            verified: VerifiedTickets::default(),
        }
    }

    /// Checks that `ticket` lets its holder fetch chunks of `file` now.
    fn check_ticket(&self, ticket: Option<&pb::Ticket>, file: &FileId) -> Result<(), Status> {
        let Some(key) = self.key.get() else {
            return Err(Status::unavailable(
                "not ready: this node does not know the tracker's ticket key yet",
            ));
        };
        let Some(ticket) = ticket else {
            return Err(Status::unauthenticated(
                "a ticket from the tracker is required (Locate the file first)",
            ));
        };
        let ticket = ticket_from_pb(ticket).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let now = crate::now_ms();
        if self.verified.accepts(&ticket, &key, file, now) {
            return Ok(());
        }
        match key.verify(&ticket, file, now) {
            Ok(c) => {
                tracing::trace!(file = %file, user = %c.user, "ticket accepted");
                self.verified.insert(&ticket, &key, now);
                Ok(())
            }
            Err(e @ TicketError::WrongFile { .. }) => Err(Status::permission_denied(e.to_string())),
            Err(TicketError::BadSignature) => Err(Status::unauthenticated(
                "ticket signature is not valid (forged, altered or from another tracker)",
            )),
            Err(e @ TicketError::Expired { .. }) => Err(Status::unauthenticated(format!(
                "{e}; Locate the file again for a fresh one"
            ))),
            Err(e) => Err(Status::unauthenticated(e.to_string())),
        }
    }

    pub fn stats(&self) -> Arc<NodeStats> {
        self.stats.clone()
    }

    /// The record for `id`, re-read from disk if unknown or lacking one of `needed`
    /// (at most every [`RELOAD_EVERY`]).
    fn lookup(&self, id: &FileId, needed: &[u32]) -> Option<Arc<(StoreRecord, Bitfield)>> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(id) {
                let fresh = c.loaded_at.elapsed() < RELOAD_EVERY;
                let sufficient = c
                    .rec
                    .as_ref()
                    .is_some_and(|r| needed.iter().all(|&i| r.1.get(i)));
                if sufficient || fresh {
                    return c.rec.clone();
                }
            }
        }
        self.reload(id)
    }

    fn reload(&self, id: &FileId) -> Option<Arc<(StoreRecord, Bitfield)>> {
        let rec = match self.home.record(id) {
            Ok(r) => r.map(|r| {
                let have = if r.complete && !r.changed {
                    Bitfield::full(r.chunk_count())
                } else if r.changed {
                    Bitfield::new(r.chunk_count())
                } else {
                    r.have_bits()
                };
                Arc::new((r, have))
            }),
            Err(e) => {
                tracing::warn!(file = %id, "cannot read store record: {e:#}");
                None
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(
            *id,
            Cached {
                rec: rec.clone(),
                loaded_at: Instant::now(),
            },
        );
        rec
    }

    /// Checks every shared file against its record (length and mtime, as when serving it)
    /// and withdraws those that changed or vanished. Blocking: call it off the async
    /// threads. Returns how many were withdrawn.
    pub fn check_shared_files(&self) -> usize {
        let records = match self.home.records() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("cannot read the store: {e:#}");
                return 0;
            }
        };
        let mut n = 0;
        for rec in records
            .iter()
            .filter(|r| r.kind == Kind::Shared && !r.changed)
        {
            if let Err(why) = check_shared(rec) {
                self.shared_file_changed(rec, why);
                n += 1;
            }
        }
        n
    }

    /// Marks a shared record as changed on disk (once), and withdraws it at the tracker.
    fn shared_file_changed(&self, rec: &StoreRecord, why: &str) {
        let mut cur = match self.home.record(&rec.file_id) {
            Ok(Some(r)) if !r.changed && r.kind == Kind::Shared && r.path == rec.path => r,
            _ => return,
        };
        tracing::warn!(
            file = %rec.file_id,
            path = %rec.path.display(),
            "shared file {why}; no longer serving it (run `peer index` again to share the new content)"
        );
        cur.changed = true;
        cur.complete = false;
        if let Err(e) = self.home.save_record(&cur) {
            tracing::warn!("cannot update store record: {e:#}");
        }
        self.reload(&rec.file_id);
        if let Some(t) = self.tracker.clone() {
            let (peer, id) = (self.peer_id.clone(), rec.file_id);
            tokio::spawn(async move {
                if let Err(e) = t.unindex(&peer, &id).await {
                    tracing::warn!(file = %id, "cannot withdraw changed file at the tracker: {e}");
                }
            });
        }
    }
}

/// Whether a shared file still has the length and mtime it was indexed with; `Err` says
/// what happened to it.
fn check_shared(rec: &StoreRecord) -> Result<(), &'static str> {
    let meta = std::fs::metadata(&rec.path).map_err(|_| "vanished")?;
    if let (Some(len), Some(mtime)) = (rec.file_len, rec.mtime_ns)
        && len_and_mtime(&meta) != (len, mtime)
    {
        return Err("changed on disk");
    }
    Ok(())
}

/// Where the chunks of a record are read from.
enum Data {
    /// One file holding the whole content (shared or downloaded).
    File(File),
    /// A directory of replica chunk files.
    Chunks(PathBuf),
}

impl Data {
    /// Reads exactly `len` bytes of chunk `index`, which starts at `start` in the file.
    /// Chunks of one request are read one after another, so moving the file's cursor is safe.
    fn read(&self, index: u32, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        match self {
            Data::File(f) => read_exact_uninit(f, start, len),
            Data::Chunks(dir) => {
                let f = File::open(dir.join(format!("{index}.chunk")))?;
                if f.metadata()?.len() != len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "replica chunk has the wrong length",
                    ));
                }
                read_exact_uninit(&f, 0, len)
            }
        }
    }
}

/// Reads `len` bytes at `start` into a fresh buffer without zeroing it first (`read_to_end`
/// reads into spare capacity); a zeroed `vec![0; len]` cost the node ~6 % of its time.
fn read_exact_uninit(f: &File, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut r = f;
    r.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(buf)
}

/// Opens the bytes of `rec`; for a shared file, checks it has not changed since indexing.
fn open_data(rec: &StoreRecord) -> Result<File, OpenError> {
    if rec.kind == Kind::Shared {
        check_shared(rec).map_err(OpenError::Changed)?;
        return File::open(&rec.path).map_err(|_| OpenError::Changed("cannot be opened"));
    }
    match File::open(rec.data_path()) {
        Ok(f) => Ok(f),
        // The download may have just finished and renamed its part file.
        Err(_) if !rec.complete => File::open(&rec.path).map_err(OpenError::Io),
        Err(e) => Err(OpenError::Io(e)),
    }
}

enum OpenError {
    Changed(&'static str),
    Io(std::io::Error),
}

/// Decrements the active-upload count when an upload ends, however it ends.
struct UploadGuard(Arc<NodeStats>);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.active_uploads.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PeerService {
    /// The refusal to send when the data cannot be opened (a changed shared file is
    /// withdrawn).
    fn refused(&self, rec: &StoreRecord, id: &FileId, e: OpenError) -> Status {
        match e {
            OpenError::Changed(why) => {
                self.shared_file_changed(rec, why);
                Status::failed_precondition(format!("the shared file {why}"))
            }
            OpenError::Io(e) => {
                tracing::warn!(file = %id, "cannot open data: {e}");
                Status::failed_precondition("data not readable")
            }
        }
    }
}

/// The message for chunk `index` of `len` bytes as read; flips a byte of the chunks that
/// `corrupt` lists.
fn chunk_msg(
    id: &FileId,
    index: u32,
    len: u64,
    read: std::io::Result<Vec<u8>>,
    corrupt: &[u32],
    stats: &NodeStats,
) -> Result<pb::Chunk, Status> {
    match read {
        Ok(mut data) => {
            if corrupt.contains(&index)
                && let Some(b) = data.first_mut()
            {
                *b ^= 0xff;
            }
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

#[tonic::async_trait]
impl Peer for PeerService {
    type GetChunksStream = ReceiverStream<Result<pb::Chunk, Status>>;

    async fn get_chunks(
        &self,
        request: Request<pb::GetChunksRequest>,
    ) -> Result<Response<Self::GetChunksStream>, Status> {
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
        self.check_ticket(req.ticket.as_ref(), &id)?;
        let Some(entry) = self.lookup(&id, &req.indices) else {
            return Err(Status::not_found("this node holds nothing of that file"));
        };
        let (rec, have) = (&entry.0, &entry.1);
        if let Some(&bad) = req.indices.iter().find(|&&i| i >= rec.chunk_count()) {
            return Err(Status::invalid_argument(format!(
                "chunk {bad} is past the end ({} chunks)",
                rec.chunk_count()
            )));
        }
        if rec.changed {
            return Err(Status::failed_precondition(
                "the shared file changed on disk",
            ));
        }
        // `pick` > 0: the indices are candidates; send the held ones sent least (super-seeding).
        let req = if req.pick > 0 {
            let held: Vec<u32> = req
                .indices
                .iter()
                .copied()
                .filter(|&i| have.get(i))
                .collect();
            if held.is_empty() {
                return Err(Status::failed_precondition(
                    "this node holds none of the candidate chunks",
                ));
            }
            let ledger = crate::upload_ledger::ledger();
            let indices = ledger.pick(&id, rec.chunk_count(), &held, req.pick as usize);
            pb::GetChunksRequest { indices, ..req }
        } else {
            req
        };
        if let Some(&lack) = req.indices.iter().find(|&&i| !have.get(i)) {
            return Err(Status::failed_precondition(format!(
                "this node does not hold chunk {lack}"
            )));
        }
        let corrupt: Vec<u32> = req
            .indices
            .iter()
            .copied()
            .filter(|i| self.corrupt.contains(i))
            .collect();
        let (chunk_size, size) = (rec.chunk_size as u64, rec.size);
        let span = move |index: u32| {
            let start = index as u64 * chunk_size;
            (start, (size - start).min(chunk_size))
        };
        let limit = self.upload_limit.clone();
        let mut indices = req.indices.into_iter();
        let first = indices.next();
        if let Some(i) = first {
            crate::ratelimit::acquire(limit.as_deref(), span(i).1).await;
        }
        // One blocking task opens the data and reads the first chunk: getters ask for one
        // chunk per request, so a request costs one thread hop and no task of its own.
        let replica_dir = (rec.kind == Kind::Replica).then(|| self.home.replica_dir(&id));
        let rec_for_open = rec.clone();
        let (data, first) = tokio::task::spawn_blocking(move || {
            let data = match replica_dir {
                Some(dir) => Data::Chunks(dir),
                None => match open_data(&rec_for_open) {
                    Ok(f) => Data::File(f),
                    Err(e) => return (Err(e), None),
                },
            };
            let read = first.map(|i| {
                let (start, len) = span(i);
                (i, len, data.read(i, start, len))
            });
            (Ok(data), read)
        })
        .await
        .map_err(|_| Status::internal("open task failed"))?;
        let data = Arc::new(data.map_err(|e| self.refused(rec, &id, e))?);

        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let stats = self.stats.clone();
        stats.active_uploads.fetch_add(1, Ordering::Relaxed);
        let guard = UploadGuard(stats.clone());
        let active = crate::metrics::metrics().transfer("upload");
        let Some((index, len, read)) = first else {
            return Ok(Response::new(ReceiverStream::new(rx)));
        };
        let msg = chunk_msg(&id, index, len, read, &corrupt, &stats);
        let stop = msg.is_err();
        // The channel is new and holds two messages, so this cannot fail.
        let _ = tx.try_send(msg);
        if stop || indices.len() == 0 {
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        tokio::spawn(async move {
            let (_guard, _active) = (guard, active);
            for index in indices {
                let (start, len) = span(index);
                crate::ratelimit::acquire(limit.as_deref(), len).await;
                let d = data.clone();
                let msg = match tokio::task::spawn_blocking(move || d.read(index, start, len)).await
                {
                    Ok(read) => chunk_msg(&id, index, len, read, &corrupt, &stats),
                    Err(_) => Err(Status::internal("read task failed")),
                };
                let stop = msg.is_err();
                if tx.send(msg).await.is_err() || stop {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let files = self.home.records().map(|r| r.len()).unwrap_or(0) as u32;
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

/// Serves `service` on an already bound `listener` until `shutdown` is cancelled, with the
/// HTTP/2 windows and message limits tuned for bulk transfer; over TLS with `tls` (the
/// node's certificate and key).
///
/// # Errors
/// When the TLS identity is unusable or the server fails (not when it is shut down).
pub async fn run(
    listener: TcpListener,
    service: Arc<PeerService>,
    tls: Option<tonic::transport::Identity>,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let svc = PeerServer::from_arc(service)
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(identity) = tls {
        builder =
            builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))?;
    }
    builder
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests;
