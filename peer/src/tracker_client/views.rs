//! The peer's view of what the tracker answers: the domain types commands print and use,
//! and their conversion from and to the prost types (which go no further than here).

use std::sync::Arc;
use std::time::Duration;

use common::{Bitfield, FileId, Manifest, PeerId, Sha256Digest, Ticket};
use proto::tracker::v1 as pb;
use serde::Serialize;

use super::TrackerError;
use crate::home::Kind;
use crate::replica::tasks::{DropTask, FetchTask, Source, Task, Work};
use crate::replica::{FileMeta, MAX_REPLICA_CHUNKS};
use crate::transport::ticket_from_pb;

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

/// What a heartbeat answered.
#[derive(Debug, Clone)]
pub struct Beat {
    /// How often the tracker wants heartbeats.
    pub interval: Duration,
    /// The tracker's ticket key (empty if it sent none).
    pub ticket_public_key: Vec<u8>,
}

/// A ticket from the tracker, or `None` (logged) when it is absent or malformed.
pub(super) fn ticket_in(t: Option<&proto::peer::v1::Ticket>, what: &str) -> Option<Arc<Ticket>> {
    match ticket_from_pb(t?) {
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
        None => Err("the task carries no work".into()),
    };
    Task {
        id: t.id,
        work: work.unwrap_or_else(Work::Invalid),
    }
}

/// Checks a fetch task: a known layout, a chunk inside it with the length it must have.
fn fetch_from_pb(f: pb::FetchReplica) -> Result<FetchTask, String> {
    use common::manifest::{MAX_CHUNK_SIZE, MAX_NAME_LEN, MIN_CHUNK_SIZE};
    let file_id: FileId = f
        .file_id
        .parse()
        .map_err(|e: common::ids::FileIdParseError| e.to_string())?;
    let sha256 = Sha256Digest::from_slice(&f.chunk_sha256)
        .ok_or_else(|| "chunk_sha256 is not 32 bytes".to_string())?;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&f.chunk_size) || !f.chunk_size.is_power_of_two()
    {
        return Err(format!("bad chunk size {}", f.chunk_size));
    }
    if f.name.is_empty() || f.name.len() > MAX_NAME_LEN || f.name.contains('\0') {
        return Err("bad file name".into());
    }
    let file = FileMeta {
        file_id,
        name: f.name,
        size: f.file_size,
        chunk_size: f.chunk_size,
    };
    if file.chunk_count() > MAX_REPLICA_CHUNKS {
        return Err(format!(
            "file too large to replicate ({} chunks)",
            file.chunk_count()
        ));
    }
    let len = file
        .chunk_len(f.chunk)
        .ok_or_else(|| format!("chunk {} of {}", f.chunk, file.chunk_count()))?;
    if len != f.chunk_len as u64 {
        return Err(format!(
            "chunk {} is {len} bytes long, not {}",
            f.chunk, f.chunk_len
        ));
    }
    Ok(FetchTask {
        ticket: ticket_in(f.ticket.as_ref(), "a fetch task"),
        file,
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
    let sha = Sha256Digest::from_slice(&m.sha256)
        .ok_or_else(|| TrackerError::BadAnswer("manifest sha256 is not 32 bytes".into()))?;
    Manifest::from_parts(m.name, m.size, sha, m.chunk_size, &m.chunk_hashes)
        .map_err(|e| TrackerError::BadAnswer(format!("manifest: {e}")))
}

/// The wire form of a manifest.
pub(super) fn manifest_to_pb(m: &Manifest) -> pb::Manifest {
    pb::Manifest {
        name: m.name.clone(),
        size: m.size,
        sha256: m.sha256.0.to_vec().into(),
        chunk_size: m.chunk_size,
        chunk_hashes: m.packed_hashes().into(),
    }
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
