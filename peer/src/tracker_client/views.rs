//! The peer's view of what the tracker answers: the domain types commands print and use,
//! the replication tasks it pushes, and their conversion from and to the prost types (which
//! go no further than here). Tickets and manifests convert with the `proto` crate's
//! `From`/`TryFrom` impls, the same ones the tracker uses.
//!
//! The task types live here, not in `replica::tasks`, so that `tracker_client` (which
//! streams them) and `replica::tasks` (which carries them out) both depend on this module
//! and not on each other.

use std::sync::Arc;
use std::time::Duration;

use common::{
    Bitfield, ChunkLayout, FileId, Manifest, ManifestError, PeerId, Sha256Digest, Ticket,
};
use proto::tracker::v1 as pb;
use serde::Serialize;

use super::TrackerError;
use crate::home::Kind;

/// Most chunks a replica record may have (a 16 TiB file at the largest chunk size); a task
/// for a bigger file is refused rather than allocating a huge bitfield.
pub const MAX_REPLICA_CHUNKS: u64 = 1 << 20;

/// What a task says about the file a replica chunk belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    pub file_id: FileId,
    pub name: String,
    /// The file's size and chunk size, checked when the task arrived.
    pub layout: ChunkLayout,
}

/// A file as the tracker lists it; also the JSON `file` object of `index` and `search`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FileView {
    pub id: String,
    pub name: String,
    pub size: u64,
    pub sha256: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub chunks: u32,
    pub chunk_size: u32,
    pub holders: u32,
}

impl From<pb::FileInfo> for FileView {
    fn from(f: pb::FileInfo) -> Self {
        Self {
            id: f.id,
            name: f.name,
            size: f.size,
            sha256: f.sha256,
            kind: f.r#type,
            chunks: f.chunks,
            chunk_size: f.chunk_size,
            holders: f.holders,
        }
    }
}

/// A peer as the tracker lists it.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub id: String,
    pub user: String,
    pub addr: String,
    pub state: String,
    pub last_seen_ms: i64,
}

/// A live holder of a file.
#[derive(Debug, Clone)]
pub struct HolderView {
    pub peer_id: PeerId,
    pub addr: String,
    /// The chunks it holds (every chunk when the tracker sent an empty set).
    pub have: Bitfield,
}

/// A file's manifest (as the tracker sent it: check it against the id before use) and its
/// live holders.
#[derive(Debug, Clone)]
pub struct Located {
    pub file: FileView,
    pub manifest: Manifest,
    pub holders: Vec<HolderView>,
    /// The tracker's permission to fetch chunks of the file from the holders (`None` when
    /// the tracker sent none or a malformed one: holders will refuse).
    pub ticket: Option<Arc<Ticket>>,
}

/// The live holders of a file and a fresh ticket, for a caller that has its manifest.
#[derive(Debug, Clone)]
pub struct Relocated {
    pub holders: Vec<HolderView>,
    pub ticket: Option<Arc<Ticket>>,
}

/// A holding reported by SyncHoldings.
#[derive(Debug, Clone)]
pub struct HoldingIn {
    pub file_id: FileId,
    pub kind: Kind,
    /// `None` for every chunk.
    pub have: Option<Bitfield>,
}

/// A session the tracker granted.
#[derive(Debug, Clone)]
pub struct Granted {
    pub user: String,
    pub token: String,
    pub expires_at_ms: i64,
    /// The tracker's ticket key (empty if it sent none).
    pub ticket_public_key: Vec<u8>,
}

impl From<pb::Session> for Granted {
    fn from(s: pb::Session) -> Self {
        Self {
            user: s.user,
            token: s.token,
            expires_at_ms: s.expires_at_ms,
            ticket_public_key: s.ticket_public_key.to_vec(),
        }
    }
}

/// What a heartbeat answered.
#[derive(Debug, Clone)]
pub struct Beat {
    /// How often the tracker wants heartbeats.
    pub interval: Duration,
    /// The tracker's ticket key (empty if it sent none).
    pub ticket_public_key: Vec<u8>,
}

/// One task from the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: u64,
    pub work: Work,
}

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Fetch(FetchTask),
    Drop(DropTask),
    /// A waiting get (`get --wait`) is due: peers that are up hold this file.
    Get(FileId),
    /// A task that does not add up (answered `!ok` with this reason).
    Invalid(String),
}

/// A due waiting get, handed from the task stream to the node's waiting gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetTask {
    pub id: u64,
    pub file: FileId,
}

/// Fetch chunk `chunk` of `file` from one of `sources` and keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTask {
    pub file: FileMeta,
    pub chunk: u32,
    pub sha256: Sha256Digest,
    pub len: u64,
    pub sources: Vec<Source>,
    /// The tracker's permission for this node to fetch the chunk from the sources.
    pub ticket: Option<Arc<Ticket>>,
}

/// A peer that holds the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub peer_id: String,
    pub addr: String,
}

/// Delete the replica copies of `chunks` of `file_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropTask {
    pub file_id: FileId,
    pub chunks: Vec<u32>,
}

/// A ticket from the tracker, or `None` (logged) when it is absent or malformed.
pub(super) fn ticket_in(t: Option<&proto::peer::v1::Ticket>, what: &str) -> Option<Arc<Ticket>> {
    match Ticket::try_from(t?) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            tracing::warn!("the tracker sent a bad ticket with {what}: {e}");
            None
        }
    }
}

pub(super) fn kind_to_pb(k: Kind) -> pb::HoldingKind {
    match k {
        Kind::Shared => pb::HoldingKind::Shared,
        Kind::Downloaded => pb::HoldingKind::Downloaded,
        Kind::Replica => pb::HoldingKind::Replica,
    }
}

pub(super) fn task_from_pb(t: pb::Task) -> Task {
    let work = match t.work {
        Some(pb::task::Work::Fetch(f)) => fetch_from_pb(f).map(Work::Fetch),
        Some(pb::task::Work::Drop(d)) => match d.file_id.parse::<FileId>() {
            Ok(file_id) => Ok(Work::Drop(DropTask {
                file_id,
                chunks: d.chunks,
            })),
            Err(e) => Err(e.to_string()),
        },
        Some(pb::task::Work::Get(g)) => g
            .file_id
            .parse::<FileId>()
            .map(Work::Get)
            .map_err(|e| e.to_string()),
        None => Err("the task carries no work".into()),
    };
    Task {
        id: t.id,
        work: work.unwrap_or_else(Work::Invalid),
    }
}

/// Checks a fetch task: a known layout, a chunk inside it with the length it must have.
fn fetch_from_pb(f: pb::FetchReplica) -> Result<FetchTask, String> {
    let file_id: FileId = f
        .file_id
        .parse()
        .map_err(|e: common::ids::FileIdParseError| e.to_string())?;
    let sha256 = Sha256Digest::from_slice(&f.chunk_sha256)
        .ok_or_else(|| "chunk_sha256 is not 32 bytes".to_string())?;
    let layout = ChunkLayout::new(f.file_size, f.chunk_size)
        .map_err(|_| format!("bad chunk size {}", f.chunk_size))?;
    common::names::check_file_name(&f.name).map_err(|e| e.to_string())?;
    if layout.chunk_count() > MAX_REPLICA_CHUNKS {
        return Err(format!(
            "file too large to replicate ({} chunks)",
            layout.chunk_count()
        ));
    }
    let len = layout
        .chunk_len(f.chunk)
        .ok_or_else(|| format!("chunk {} of {}", f.chunk, layout.chunk_count()))?;
    if len != f.chunk_len as u64 {
        return Err(format!(
            "chunk {} is {len} bytes long, not {}",
            f.chunk, f.chunk_len
        ));
    }
    Ok(FetchTask {
        ticket: ticket_in(f.ticket.as_ref(), "a fetch task"),
        file: FileMeta {
            file_id,
            name: f.name,
            layout,
        },
        chunk: f.chunk,
        sha256,
        len,
        sources: f
            .sources
            .into_iter()
            .map(|h| Source {
                peer_id: h.peer_id,
                addr: h.addr,
            })
            .collect(),
    })
}

/// Builds a manifest from its wire form (not yet checked against an id).
pub(super) fn manifest_from_pb(m: pb::Manifest) -> Result<Manifest, TrackerError> {
    Manifest::try_from(m).map_err(|e| {
        TrackerError::BadAnswer(match e {
            ManifestError::BadSha256(_) => "manifest sha256 is not 32 bytes".into(),
            e => format!("manifest: {e}"),
        })
    })
}

/// The holders of a Locate answer for a file of `n` chunks; holders without an address or
/// with a malformed id or chunk set are left out.
pub(super) fn holders_from_pb(holders: Vec<pb::Holder>, n: u32) -> Vec<HolderView> {
    holders
        .into_iter()
        .filter_map(|h| {
            let peer_id = h.peer_id.parse().ok()?;
            let have = if h.have.is_empty() {
                Bitfield::full(n)
            } else {
                Bitfield::from_bytes(&h.have, n).ok()?
            };
            Some(HolderView {
                peer_id,
                addr: h.addr,
                have,
            })
        })
        .filter(|h| !h.addr.is_empty())
        .collect()
}
