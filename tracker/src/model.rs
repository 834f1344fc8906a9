//! Plain records that cross the boundary between the domain (`app`) and storage (`db`).
//! They use `common` types, so neither SeaORM entities nor prost messages leak across.

use common::{FileId, Manifest, PeerId};

/// Why a peer holds a file; decides what the system may delete.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash, PartialOrd, Ord)]
pub enum HoldingKind {
    /// The user indexed it: never deleted by the system.
    Shared = 1,
    /// The user fetched it with `get`.
    Downloaded = 2,
    /// Placed by replication.
    Replica = 3,
}

impl HoldingKind {
    pub fn code(self) -> i16 {
        self as i16
    }

    /// How the REST API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldingKind::Shared => "shared",
            HoldingKind::Downloaded => "downloaded",
            HoldingKind::Replica => "replica",
        }
    }

    pub fn from_code(code: i32) -> Option<Self> {
        match code {
            1 => Some(HoldingKind::Shared),
            2 => Some(HoldingKind::Downloaded),
            3 => Some(HoldingKind::Replica),
            _ => None,
        }
    }
}

/// A user account as stored.
#[derive(Clone, Debug)]
pub struct UserRecord {
    pub id: i32,
    pub name: String,
    pub password_hash: String,
    pub created_at_ms: i64,
}

/// A live session: the SHA-256 (hex) of its token and whose it is.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub token_hash: String,
    pub user_id: i32,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A peer node.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerRecord {
    pub id: PeerId,
    pub user_id: i32,
    pub addr: String,
    pub storage_quota: u64,
    pub storage_used: u64,
    /// Unix ms of the last heartbeat; `None` before the first.
    pub last_seen_ms: Option<i64>,
    pub created_at_ms: i64,
}

/// A file: its manifest (which gives its id) and when it was first announced.
#[derive(Clone, Debug, PartialEq)]
pub struct FileRecord {
    pub manifest: Manifest,
    pub created_at_ms: i64,
}

impl FileRecord {
    pub fn id(&self) -> FileId {
        self.manifest.id()
    }
}

/// A collection's listing as stored: the file's whole content (valid UTF-8, at most
/// [`common::collection::MAX_LISTING`] bytes), checked against the file's manifest and
/// parsed before it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionRecord {
    pub file_id: FileId,
    pub listing: bytes::Bytes,
}

/// What one peer holds of one file; `have` is the bitfield's bytes as the peer claims it,
/// `verified` those an audit confirmed (empty = none), `name` the sharer's name for it.
#[derive(Clone, Debug, PartialEq)]
pub struct HoldingRecord {
    pub peer_id: PeerId,
    pub file_id: FileId,
    pub kind: HoldingKind,
    pub have: Vec<u8>,
    pub updated_at_ms: i64,
    pub verified: Vec<u8>,
    pub name: Option<String>,
}

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// What a replication task asks its node to do.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TaskKind {
    /// Copy one chunk from a holder into the node's replica store.
    Fetch = 1,
    /// Delete replica copies of some chunks.
    Drop = 2,
    /// Fetch a whole file for the node's user (`peer get --wait`), once its chunks are held
    /// by peers that are up. No chunks; never given up.
    Get = 3,
}

impl TaskKind {
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(TaskKind::Fetch),
            2 => Some(TaskKind::Drop),
            3 => Some(TaskKind::Get),
            _ => None,
        }
    }
}

/// Where a task is in its life.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum TaskState {
    /// Waiting to be pushed (when its node's stream is open and its back-off has passed).
    Queued = 1,
    /// Pushed on the node's stream; queued again when its lease runs out.
    Delivered = 2,
}

impl TaskState {
    pub fn code(self) -> i16 {
        self as i16
    }

    pub fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(TaskState::Queued),
            2 => Some(TaskState::Delivered),
            _ => None,
        }
    }
}

/// A replication task as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRecord {
    pub id: u64,
    pub peer_id: PeerId,
    pub kind: TaskKind,
    pub file_id: FileId,
    /// One chunk for a fetch; one or more for a drop.
    pub chunks: Vec<u32>,
    pub state: TaskState,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub lease_until_ms: Option<i64>,
    pub last_error: Option<String>,
    pub created_at_ms: i64,
}
