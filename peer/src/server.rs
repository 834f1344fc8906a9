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
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Bitfield, FileId, PeerId, TicketError, TicketVerifier};
use proto::peer::v1 as pb;
use proto::peer::v1::peer_server::{Peer, PeerServer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

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

/// The tracker's ticket key as this node knows it: none until learnt, then replaced when
/// the tracker sends another. Cheap to clone; the clones share it.
#[derive(Clone, Default)]
pub struct TrackerKey(Arc<RwLock<Option<TicketVerifier>>>);

impl TrackerKey {
    pub fn get(&self) -> Option<TicketVerifier> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Takes `key` (32 bytes); returns whether it differs from the one held.
    ///
    /// # Errors
    /// When the bytes are not an Ed25519 public key (the held key stays).
    pub fn set(&self, key: &[u8]) -> Result<bool, TicketError> {
        let v = TicketVerifier::from_public(key)?;
        let mut cur = self.0.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_ref() == Some(&v) {
            return Ok(false);
        }
        *cur = Some(v);
        Ok(true)
    }
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
        match key.verify(&ticket, file, crate::now_ms()) {
            Ok(c) => {
                tracing::trace!(file = %file, user = %c.user, "ticket accepted");
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
    File(Arc<File>),
    /// A directory of replica chunk files.
    Chunks(PathBuf),
}

impl Data {
    /// Reads exactly `len` bytes of chunk `index`, which starts at `start` in the file.
    fn read(&self, index: u32, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        match self {
            Data::File(f) => f.read_exact_at(&mut buf, start)?,
            Data::Chunks(dir) => {
                let f = File::open(dir.join(format!("{index}.chunk")))?;
                if f.metadata()?.len() != len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "replica chunk has the wrong length",
                    ));
                }
                f.read_exact_at(&mut buf, 0)?;
            }
        }
        Ok(buf)
    }
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
    /// The opened data file, or the refusal to send (a changed shared file is withdrawn).
    fn opened(
        &self,
        rec: &StoreRecord,
        id: &FileId,
        file: Result<File, OpenError>,
    ) -> Result<Arc<File>, Status> {
        match file {
            Ok(f) => Ok(Arc::new(f)),
            Err(OpenError::Changed(why)) => {
                self.shared_file_changed(rec, why);
                Err(Status::failed_precondition(format!(
                    "the shared file {why}"
                )))
            }
            Err(OpenError::Io(e)) => {
                tracing::warn!(file = %id, "cannot open data: {e}");
                Err(Status::failed_precondition("data not readable"))
            }
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
        if let Some(&lack) = req.indices.iter().find(|&&i| !have.get(i)) {
            return Err(Status::failed_precondition(format!(
                "this node does not hold chunk {lack}"
            )));
        }
        let data = if rec.kind == Kind::Replica {
            Data::Chunks(self.home.replica_dir(&id))
        } else {
            let rec_for_open = rec.clone();
            let file = tokio::task::spawn_blocking(move || open_data(&rec_for_open))
                .await
                .map_err(|_| Status::internal("open task failed"))?;
            Data::File(self.opened(rec, &id, file)?)
        };
        let data = Arc::new(data);

        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let stats = self.stats.clone();
        stats.active_uploads.fetch_add(1, Ordering::Relaxed);
        let guard = UploadGuard(stats.clone());
        let limit = self.upload_limit.clone();
        let (chunk_size, size) = (rec.chunk_size as u64, rec.size);
        let corrupt: Vec<u32> = req
            .indices
            .iter()
            .copied()
            .filter(|i| self.corrupt.contains(i))
            .collect();
        tokio::spawn(async move {
            let _guard = guard;
            let _active = crate::metrics::metrics().transfer("upload");
            for index in req.indices {
                let start = index as u64 * chunk_size;
                let len = (size - start).min(chunk_size);
                crate::ratelimit::acquire(limit.as_deref(), len).await;
                let d = data.clone();
                let read = tokio::task::spawn_blocking(move || d.read(index, start, len)).await;
                let msg = match read {
                    Ok(Ok(mut data)) => {
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
                    Ok(Err(e)) => {
                        if e.kind() == std::io::ErrorKind::NotFound {
                            // A replica chunk dropped since the record was cached.
                            tracing::debug!(file = %id, index, "chunk gone: {e}");
                        } else {
                            tracing::warn!(file = %id, index, "read failed: {e}");
                        }
                        Err(Status::failed_precondition("chunk not readable"))
                    }
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
mod tests {
    use super::*;
    use crate::replica::{FileMeta, ReplicaStore};
    use crate::transport::ticket_to_pb;
    use common::{Manifest, Sha256Digest, TicketClaims, TicketSigner};
    use futures::StreamExt;

    const MIB: u64 = 1 << 20;

    fn tracker_signer() -> TicketSigner {
        TicketSigner::from_secret(&[5; 32])
    }

    fn service(home: &Home) -> PeerService {
        let key = TrackerKey::default();
        key.set(&tracker_signer().public_key()).unwrap();
        PeerService::new(
            home.clone(),
            PeerId::from_random([1; 16]),
            "127.0.0.1:1".into(),
            None,
            None,
            key,
        )
    }

    fn ticket(signer: &TicketSigner, id: &FileId, expires_at_ms: i64) -> pb::Ticket {
        ticket_to_pb(&signer.sign(TicketClaims {
            file_id: *id,
            peer_id: None,
            user: "alice".into(),
            expires_at_ms,
        }))
    }

    async fn fetch(
        svc: &PeerService,
        id: &FileId,
        indices: Vec<u32>,
    ) -> Result<Vec<Bytes>, Status> {
        let t = ticket(&tracker_signer(), id, crate::now_ms() + 60_000);
        fetch_with(svc, id, indices, Some(t)).await
    }

    async fn fetch_with(
        svc: &PeerService,
        id: &FileId,
        indices: Vec<u32>,
        ticket: Option<pb::Ticket>,
    ) -> Result<Vec<Bytes>, Status> {
        let req = pb::GetChunksRequest {
            file_id: id.to_string(),
            indices,
            ticket,
        };
        let mut stream = svc.get_chunks(Request::new(req)).await?.into_inner();
        let mut out = Vec::new();
        while let Some(c) = stream.next().await {
            out.push(c?.data);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn should_serve_only_the_replica_chunks_it_holds() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let store = ReplicaStore::open(home.clone(), 10 * MIB).unwrap();
        let m = FileMeta {
            file_id: FileId(Sha256Digest::of(b"r")),
            name: "r.bin".into(),
            size: 2 * MIB + 5,
            chunk_size: MIB as u32,
        };
        let last = vec![9u8; 5];
        let res = store.reserve(5).unwrap();
        store.store_chunk(&m, 2, &last, res).unwrap();
        let svc = service(&home);
        let got = fetch(&svc, &m.file_id, vec![2]).await.unwrap();
        assert_eq!(got, [Bytes::from(last)]);
        let err = fetch(&svc, &m.file_id, vec![0]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);

        // Dropped meanwhile: refused (not a crash), whatever the cache says.
        store.drop_chunks(&m.file_id, &[2]).unwrap();
        let err = fetch(&svc, &m.file_id, vec![2]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    }

    #[tokio::test]
    async fn should_refuse_requests_without_a_valid_ticket_for_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let store = ReplicaStore::open(home.clone(), 10 * MIB).unwrap();
        let m = FileMeta {
            file_id: FileId(Sha256Digest::of(b"t")),
            name: "t.bin".into(),
            size: 5,
            chunk_size: MIB as u32,
        };
        let res = store.reserve(5).unwrap();
        store.store_chunk(&m, 0, &[1; 5], res).unwrap();
        let id = m.file_id;
        let other = FileId(Sha256Digest::of(b"other"));
        let now = crate::now_ms();
        let good = tracker_signer();
        let forger = TicketSigner::from_secret(&[6; 32]);
        let mut altered = ticket(&good, &id, now + 60_000);
        altered.user = "mallory".into();
        let cases = [
            ("none", None, tonic::Code::Unauthenticated),
            (
                "expired",
                Some(ticket(&good, &id, now - 60_000)),
                tonic::Code::Unauthenticated,
            ),
            (
                "forged",
                Some(ticket(&forger, &id, now + 60_000)),
                tonic::Code::Unauthenticated,
            ),
            ("altered", Some(altered), tonic::Code::Unauthenticated),
            (
                "another file",
                Some(ticket(&good, &other, now + 60_000)),
                tonic::Code::PermissionDenied,
            ),
        ];
        let svc = service(&home);
        for (what, t, code) in cases {
            let err = fetch_with(&svc, &id, vec![0], t).await.unwrap_err();
            assert_eq!(err.code(), code, "{what}: {err:?}");
        }
        // Within the clock skew an expired ticket still passes.
        let late = ticket(&good, &id, now - 10_000);
        assert_eq!(
            fetch_with(&svc, &id, vec![0], Some(late))
                .await
                .unwrap()
                .len(),
            1
        );

        // A node that does not know the key yet is not ready.
        let keyless = PeerService::new(
            home.clone(),
            PeerId::from_random([1; 16]),
            "127.0.0.1:1".into(),
            None,
            None,
            TrackerKey::default(),
        );
        let t = ticket(&good, &id, now + 60_000);
        let err = fetch_with(&keyless, &id, vec![0], Some(t))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn should_withdraw_shared_files_that_changed_on_the_periodic_check() {
        let tmp = tempfile::tempdir().unwrap();
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let path = tmp.path().join("a.txt");
        std::fs::write(&path, b"abc").unwrap();
        let d = Sha256Digest::of(b"abc");
        let m = Manifest::from_parts("a.txt".into(), 3, d, MIB as u32, &d.0).unwrap();
        let mut rec = StoreRecord::new(&m, Kind::Shared, path.clone(), &Bitfield::full(1));
        let (len, mtime) = len_and_mtime(&std::fs::metadata(&path).unwrap());
        (rec.file_len, rec.mtime_ns) = (Some(len), Some(mtime));
        home.save_record(&rec).unwrap();
        let svc = service(&home);
        assert_eq!(svc.check_shared_files(), 0);
        assert!(!home.record(&m.id()).unwrap().unwrap().changed);
        std::fs::write(&path, b"abcd").unwrap();
        assert_eq!(svc.check_shared_files(), 1);
        assert!(home.record(&m.id()).unwrap().unwrap().changed);
        assert_eq!(svc.check_shared_files(), 0, "once");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"abcd",
            "the user's file stays"
        );
    }
}
