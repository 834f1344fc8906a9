//! What the domain answers: plain structs of `common` types that both adapters (gRPC and
//! REST) render in their own wire format.

use std::sync::Arc;

use common::{Bitfield, FileId, FileType, Manifest, PeerId, Sha256Digest, Ticket};

use crate::model::HoldingKind;

/// A file as search results show it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileView {
    pub id: FileId,
    /// The name this answer shows it under: a search's matching name, the caller's own, or
    /// the one most sharers use (see `names`).
    pub name: String,
    /// Every name its sharers give it, most used first (the last known one when no sharer
    /// is left); empty from Locate, which does not answer with it.
    pub names: Vec<String>,
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

/// Default and largest page of a file's chunk map, and the most holders listed per chunk:
/// an answer's size must not follow what a client can make large (a file's chunks, its
/// holders).
pub const DEFAULT_CHUNK_PAGE: u32 = 256;
pub const MAX_CHUNK_PAGE: u32 = 1024;
pub const MAX_CHUNK_PEERS: usize = 8;

/// Which chunks of a file's chunk map to show: `limit` (at most [`MAX_CHUNK_PAGE`]) from
/// `offset`.
#[derive(Clone, Copy, Debug)]
pub struct ChunkPage {
    pub offset: u32,
    pub limit: u32,
}

impl Default for ChunkPage {
    fn default() -> Self {
        Self {
            offset: 0,
            limit: DEFAULT_CHUNK_PAGE,
        }
    }
}

impl ChunkPage {
    /// The end of the page in a file of `count` chunks.
    pub fn end(self, count: u32) -> u32 {
        let limit = self.limit.min(MAX_CHUNK_PAGE);
        self.offset.saturating_add(limit).min(count)
    }
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
    /// Until when a failed audit keeps it demoted (Unix ms), while it is.
    pub demoted_until_ms: Option<i64>,
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
    /// Peers holding it, with whether each is up and why it holds it: up ones first, at
    /// most `MAX_CHUNK_PEERS`.
    pub peers: Vec<(PeerId, bool, HoldingKind)>,
    /// Every peer holding it, listed or not.
    pub holders: u32,
}

/// A file with one page of its chunk map.
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
    /// The target as far as it can be met now: `replication`, or fewer when fewer serving
    /// peers can hold copies (`Index::copy_capable_peers`).
    pub reachable_replication: u32,
    /// `reachable_replication < replication`: more copies are wanted than peers can hold,
    /// so `under_replicated_chunks` stays above 0 however well replication works.
    pub unreachable_target: bool,
    /// Chunks with fewer live copies than `reachable_replication`: what replication can
    /// still fix.
    pub under_reachable_chunks: u64,
    /// Distinct (user, file) pairs that called `Locate` in the last 10 s and have not
    /// reported the whole file since.
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
    /// A waiting get is due: fetch the whole file for the node's user.
    Get {
        id: u64,
        file: FileId,
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
