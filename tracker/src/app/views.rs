//! What the domain answers: plain structs of `common` types that both adapters (gRPC and
//! REST) render in their own wire format.

use std::sync::Arc;

use common::{Bitfield, FileId, FileType, Manifest, PeerId, Sha256Digest, Ticket};

use crate::model::HoldingKind;

/// A file as search results show it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileView {
    pub id: FileId,
    pub name: String,
    pub size: u64,
    pub sha256: Sha256Digest,
    pub file_type: FileType,
    pub chunk_size: u32,
    pub chunks: u32,
    /// Serving peers that together hold every chunk (0 if they do not).
    pub holders: u32,
    /// The fewest serving holders of any one chunk; `None` where it was not asked for
    /// (Locate).
    pub min_copies: Option<u32>,
    pub created_at_ms: i64,
}

/// A page of search results.
#[derive(Clone, Debug)]
pub struct SearchPage {
    pub items: Vec<FileView>,
    pub total: u64,
}

/// One search as the caller asked it (validated by the domain).
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    pub query: String,
    pub file_type: Option<FileType>,
    /// `None` or 0 for the default (50); at most 1000.
    pub limit: Option<u32>,
    pub offset: u32,
}

/// A peer that can serve chunks of a file right now.
#[derive(Clone, Debug)]
pub struct HolderView {
    pub peer_id: PeerId,
    pub addr: String,
    /// `None` when it holds every chunk.
    pub have: Option<Bitfield>,
}

/// A file's manifest and its live holders.
#[derive(Clone, Debug)]
pub struct Located {
    pub file: FileView,
    pub manifest: Arc<Manifest>,
    /// `manifest`'s chunk hashes packed for the wire (shared, not copied).
    pub packed_hashes: bytes::Bytes,
    pub holders: Vec<HolderView>,
    /// The caller's permission to fetch chunks of the file from the holders.
    pub ticket: Ticket,
}

/// A peer as the peers list shows it.
#[derive(Clone, Debug)]
pub struct PeerView {
    pub id: PeerId,
    pub user: String,
    pub addr: String,
    pub up: bool,
    pub last_seen_ms: Option<i64>,
    pub storage_quota: u64,
    pub storage_used: u64,
    /// Total size of the files it shares.
    pub shared_bytes: u64,
    /// Bytes of every chunk it holds, whatever the kind.
    pub held_bytes: u64,
}

/// One chunk of a file and who holds it.
#[derive(Clone, Debug)]
pub struct ChunkView {
    pub index: u32,
    pub offset: u64,
    pub size: u64,
    pub sha256: Sha256Digest,
    /// Serving peers holding it.
    pub copies: u32,
    /// Every peer holding it, with whether it is up and why it holds it.
    pub peers: Vec<(PeerId, bool, HoldingKind)>,
}

/// A file with its chunk map.
#[derive(Clone, Debug)]
pub struct FileDetail {
    pub file: FileView,
    pub chunks: Vec<ChunkView>,
}

/// Counters for the stats endpoint.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub users: u64,
    pub peers_up: u64,
    pub peers_down: u64,
    pub files: u64,
    pub chunks: u64,
    pub under_replicated_chunks: u64,
    /// Task rows queued or delivered.
    pub pending_tasks: u64,
    /// Of those, delivered and not yet completed.
    pub delivered_tasks: u64,
    pub replication: u32,
    /// Distinct (user, file) pairs that called `Locate` in the last 10 s.
    pub active_transfers: u64,
    /// Bytes of verified chunks reported in the last 10 s, per second.
    pub transfer_bytes_per_sec: u64,
    /// Since this tracker started.
    pub bytes_transferred_total: u64,
    pub chunks_transferred_total: u64,
}

/// A new session.
#[derive(Clone, Debug)]
pub struct SessionView {
    /// Shown once; the tracker keeps only its hash.
    pub token: String,
    pub user: String,
    pub expires_at_ms: i64,
}

/// Who is calling: the user behind a valid session.
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: i32,
    pub user: String,
}

/// One entry of a peer's full holdings list, as sent (the id is not parsed yet, so an
/// unknown or malformed one can be reported back).
#[derive(Clone, Debug)]
pub struct HoldingInput {
    pub file_id: String,
    pub kind: HoldingKind,
    /// Bitfield bytes; empty means every chunk.
    pub have: Vec<u8>,
}

/// One replication task as pushed to its node.
#[derive(Clone, Debug)]
pub enum Assignment {
    Fetch(FetchAssignment),
    Drop {
        id: u64,
        file: FileId,
        chunks: Vec<u32>,
    },
}

/// Fetch one chunk into the node's replica store.
#[derive(Clone, Debug)]
pub struct FetchAssignment {
    pub id: u64,
    pub file: FileId,
    pub chunk: u32,
    pub sha256: Sha256Digest,
    pub len: u32,
    pub name: String,
    pub file_size: u64,
    pub chunk_size: u32,
    /// Up peers that hold the chunk now (`have` is `None`).
    pub sources: Vec<HolderView>,
    /// The node's permission to fetch the chunk from them, signed as the task is pushed
    /// (boxed: it is most of the message).
    pub ticket: Box<Ticket>,
}
