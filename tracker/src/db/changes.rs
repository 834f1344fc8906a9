//! The change feed and the leases: what lets several trackers on one database act as one.
//!
//! Every write that commits (a writer [`Batch`], a session made or revoked, a user removed)
//! appends one `changes` row in the same transaction: the origin tracker's instance id and
//! the row changes as JSON. On PostgreSQL the append first takes a transaction-scoped
//! advisory lock, so rows commit in id order and a follower that has read up to id N never
//! later meets a smaller id committing late; SQLite has one writer at a time anyway.
//! Every tracker follows the rows of other origins (see `app::follow`). Rows older than
//! [`KEEP_CHANGES`] are pruned.
//!
//! A lease (`leases` row) gives one tracker a role, such as planning replication, for a
//! while; it is taken and renewed with one conditional UPDATE on both backends.

use std::time::Duration;

use common::{Manifest, PeerId, Sha256Digest};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement,
};
use serde::{Deserialize, Serialize};

use super::Store;
use super::entities::{changes, leases};
use super::writer::Batch;
use crate::Error;
use crate::model::{
    FileRecord, HoldingKind, HoldingRecord, PeerRecord, TaskKind, TaskRecord, TaskState, now_ms,
};

/// How long change rows are kept: a tracker that stops following for longer must restart.
pub const KEEP_CHANGES: Duration = Duration::from_secs(300);
/// Rows read per poll.
const PAGE: u64 = 500;
/// The advisory lock key that orders appends on PostgreSQL ("tessera" in ASCII, trimmed).
const APPEND_LOCK: i64 = 0x7465_7373_6572;

/// One committed change, as other trackers apply it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A tracker started (the row's id numbers its block of task ids).
    Hello,
    /// A writer batch: peers, files, holdings and tasks.
    Batch(BatchChange),
    SessionAdd {
        token_hash: String,
        user_id: i32,
        user: String,
        expires_at_ms: i64,
    },
    SessionDel {
        token_hash: String,
    },
    /// A user was removed with their sessions, peers, holdings and tasks.
    UserRemoved {
        user_id: i32,
    },
}

/// A [`Batch`] as it travels: the rows it wrote and deleted, in the order they were written.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BatchChange {
    pub peers: Vec<PeerRow>,
    pub files: Vec<FileRow>,
    /// Files that became collections; their listings (up to 8 MiB each) are read from the
    /// `collections` table, committed with this row, rather than carried here (absent from
    /// rows of older trackers).
    #[serde(default)]
    pub collections: Vec<String>,
    pub cleared: Vec<PeerId>,
    pub holdings: Vec<HoldingRow>,
    pub holding_deletes: Vec<(PeerId, String)>,
    pub file_deletes: Vec<String>,
    pub tasks: Vec<TaskRow>,
    pub task_deletes: Vec<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerRow {
    id: PeerId,
    user_id: i32,
    addr: String,
    storage_quota: u64,
    storage_used: u64,
    last_seen_ms: Option<i64>,
    created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FileRow {
    name: String,
    size: u64,
    sha256: String,
    chunk_size: u32,
    /// The packed chunk hashes, hex.
    chunk_hashes: String,
    created_at_ms: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HoldingRow {
    peer_id: PeerId,
    file_id: String,
    kind: i16,
    /// The bitfield's bytes, hex.
    have: String,
    updated_at_ms: i64,
    /// The audited bitfield's bytes, hex (absent from rows of older trackers: none).
    #[serde(default)]
    verified: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRow {
    id: u64,
    peer_id: PeerId,
    kind: i16,
    file_id: String,
    chunks: Vec<u32>,
    state: i16,
    attempts: u32,
    next_attempt_at_ms: i64,
    lease_until_ms: Option<i64>,
    last_error: Option<String>,
    created_at_ms: i64,
}

impl BatchChange {
    /// What `batch` writes, in the order [`Store::apply`] writes it.
    pub fn of(batch: &Batch) -> Self {
        let mut out = BatchChange::default();
        for p in batch.peers.values() {
            out.peers.push(PeerRow {
                id: p.id.clone(),
                user_id: p.user_id,
                addr: p.addr.clone(),
                storage_quota: p.storage_quota,
                storage_used: p.storage_used,
                last_seen_ms: p.last_seen_ms,
                created_at_ms: p.created_at_ms,
            });
        }
        for (id, f) in &batch.files {
            match f {
                Some(f) => {
                    let m = &f.manifest;
                    out.files.push(FileRow {
                        name: m.name.clone(),
                        size: m.size,
                        sha256: m.sha256.to_hex(),
                        chunk_size: m.chunk_size,
                        chunk_hashes: hex::encode(m.packed_hashes()),
                        created_at_ms: f.created_at_ms,
                    });
                }
                None => out.file_deletes.push(id.to_string()),
            }
        }
        out.collections = batch.collections.keys().map(ToString::to_string).collect();
        out.cleared = batch.cleared.iter().cloned().collect();
        for ((peer, file), h) in &batch.holdings {
            match h {
                Some(h) => out.holdings.push(HoldingRow {
                    peer_id: h.peer_id.clone(),
                    file_id: h.file_id.to_string(),
                    kind: h.kind.code(),
                    have: hex::encode(&h.have),
                    updated_at_ms: h.updated_at_ms,
                    verified: hex::encode(&h.verified),
                    name: h.name.clone(),
                }),
                None => out.holding_deletes.push((peer.clone(), file.to_string())),
            }
        }
        for (id, t) in &batch.tasks {
            match t {
                Some(t) => out.tasks.push(TaskRow {
                    id: t.id,
                    peer_id: t.peer_id.clone(),
                    kind: t.kind.code(),
                    file_id: t.file_id.to_string(),
                    chunks: t.chunks.clone(),
                    state: t.state.code(),
                    attempts: t.attempts,
                    next_attempt_at_ms: t.next_attempt_at_ms,
                    lease_until_ms: t.lease_until_ms,
                    last_error: t.last_error.clone(),
                    created_at_ms: t.created_at_ms,
                }),
                None => out.task_deletes.push(*id),
            }
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
            && self.files.is_empty()
            && self.collections.is_empty()
            && self.cleared.is_empty()
            && self.holdings.is_empty()
            && self.holding_deletes.is_empty()
            && self.file_deletes.is_empty()
            && self.tasks.is_empty()
            && self.task_deletes.is_empty()
    }
}

impl PeerRow {
    pub fn record(&self) -> PeerRecord {
        PeerRecord {
            id: self.id.clone(),
            user_id: self.user_id,
            addr: self.addr.clone(),
            storage_quota: self.storage_quota,
            storage_used: self.storage_used,
            last_seen_ms: self.last_seen_ms,
            created_at_ms: self.created_at_ms,
        }
    }
}

impl FileRow {
    /// The file, or `None` (logged) for a row that does not make a valid manifest.
    pub fn record(&self) -> Option<FileRecord> {
        let sha256: Sha256Digest = self.sha256.parse().ok()?;
        let hashes = hex::decode(&self.chunk_hashes).ok()?;
        match Manifest::from_parts(
            self.name.clone(),
            self.size,
            sha256,
            self.chunk_size,
            &hashes,
        ) {
            Ok(manifest) => Some(FileRecord {
                manifest,
                created_at_ms: self.created_at_ms,
            }),
            Err(e) => {
                tracing::warn!(cause = %e, "skipping a bad file in the change feed");
                None
            }
        }
    }
}

impl HoldingRow {
    pub fn record(&self) -> Option<HoldingRecord> {
        Some(HoldingRecord {
            peer_id: self.peer_id.clone(),
            file_id: self.file_id.parse().ok()?,
            kind: HoldingKind::from_code(self.kind.into())?,
            have: hex::decode(&self.have).ok()?,
            updated_at_ms: self.updated_at_ms,
            verified: hex::decode(&self.verified).ok()?,
            name: self.name.clone(),
        })
    }
}

impl TaskRow {
    pub fn record(&self) -> Option<TaskRecord> {
        Some(TaskRecord {
            id: self.id,
            peer_id: self.peer_id.clone(),
            kind: TaskKind::from_code(self.kind)?,
            file_id: self.file_id.parse().ok()?,
            chunks: self.chunks.clone(),
            state: TaskState::from_code(self.state)?,
            attempts: self.attempts,
            next_attempt_at_ms: self.next_attempt_at_ms,
            lease_until_ms: self.lease_until_ms,
            last_error: self.last_error.clone(),
            created_at_ms: self.created_at_ms,
        })
    }
}

/// One change read back from the feed.
#[derive(Debug)]
pub struct FeedEntry {
    pub id: i64,
    pub origin: String,
    pub change: Change,
}

/// Appends `change` inside the open transaction `conn`; returns the row's id.
pub(super) async fn append<C: ConnectionTrait>(
    conn: &C,
    origin: &str,
    change: &Change,
) -> Result<i64, Error> {
    let payload = serde_json::to_string(change)
        .map_err(|e| Error::Internal(format!("encoding a change: {e}")))?;
    if conn.get_database_backend() == DatabaseBackend::Postgres {
        conn.execute_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            format!("SELECT pg_advisory_xact_lock({APPEND_LOCK})"),
        ))
        .await?;
    }
    let am = changes::ActiveModel {
        origin: Set(origin.to_string()),
        payload: Set(payload),
        at_ms: Set(now_ms()),
        ..Default::default()
    };
    let res = changes::Entity::insert(am).exec(conn).await?;
    Ok(res.last_insert_id)
}

impl Store {
    /// Appends one change on its own (in a transaction of its own); returns its id.
    ///
    /// # Errors
    /// [`Error::Database`].
    pub async fn append_change(&self, change: &Change) -> Result<i64, Error> {
        use sea_orm::TransactionTrait;
        let txn = self.db.begin().await?;
        let id = append(&txn, &self.origin, change).await?;
        self.commit(txn).await?;
        Ok(id)
    }

    /// The newest change id (0 when there is none).
    pub async fn last_change_id(&self) -> Result<i64, Error> {
        Ok(changes::Entity::find()
            .order_by_desc(changes::Column::Id)
            .one(&self.db)
            .await?
            .map_or(0, |m| m.id))
    }

    /// Changes after `after`, oldest first, at most a page; other origins' only (this
    /// tracker's own are already applied) but every id is returned so the caller advances.
    pub async fn changes_after(&self, after: i64) -> Result<Vec<FeedEntry>, Error> {
        let rows = changes::Entity::find()
            .filter(changes::Column::Id.gt(after))
            .order_by_asc(changes::Column::Id)
            .limit(PAGE)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let change = if m.origin == self.origin {
                Change::Hello
            } else {
                match serde_json::from_str(&m.payload) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(change = m.id, cause = %e, "skipping an unreadable change");
                        Change::Hello
                    }
                }
            };
            out.push(FeedEntry {
                id: m.id,
                origin: m.origin,
                change,
            });
        }
        Ok(out)
    }

    /// Deletes changes older than [`KEEP_CHANGES`].
    pub async fn prune_changes(&self) -> Result<u64, Error> {
        let before = now_ms() - i64::try_from(KEEP_CHANGES.as_millis()).unwrap_or(i64::MAX);
        let res = changes::Entity::delete_many()
            .filter(changes::Column::AtMs.lt(before))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected)
    }

    /// Takes or renews the lease `name` for this tracker until `now + ttl`; true when this
    /// tracker holds it afterwards. One conditional UPDATE: it succeeds only when this
    /// tracker holds the lease already or the holder's time ran out.
    pub async fn take_lease(&self, name: &str, ttl: Duration) -> Result<bool, Error> {
        let now = now_ms();
        leases::Entity::insert(leases::ActiveModel {
            name: Set(name.to_string()),
            holder: Set(String::new()),
            expires_at_ms: Set(0),
        })
        .on_conflict(
            OnConflict::column(leases::Column::Name)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&self.db)
        .await?;
        let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let res = leases::Entity::update_many()
            .col_expr(leases::Column::Holder, Expr::value(self.origin.clone()))
            .col_expr(leases::Column::ExpiresAtMs, Expr::value(until))
            .filter(leases::Column::Name.eq(name))
            .filter(
                Condition::any()
                    .add(leases::Column::Holder.eq(self.origin.as_str()))
                    .add(leases::Column::ExpiresAtMs.lt(now)),
            )
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected == 1)
    }

    /// Gives up the lease `name` if this tracker holds it (on a clean shutdown, so another
    /// tracker takes over at once).
    pub async fn release_lease(&self, name: &str) -> Result<(), Error> {
        leases::Entity::update_many()
            .col_expr(leases::Column::ExpiresAtMs, Expr::value(0i64))
            .filter(leases::Column::Name.eq(name))
            .filter(leases::Column::Holder.eq(self.origin.as_str()))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// This tracker's instance id in the feed and the leases.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::writer::WriteOp;
    use crate::model::CollectionRecord;

    #[test]
    fn should_read_batches_of_older_trackers_and_name_new_collections() {
        let old = r#"{"batch":{"peers":[],"files":[],"cleared":[],"holdings":[],
            "holding_deletes":[],"file_deletes":[],"tasks":[],"task_deletes":[]}}"#;
        let Change::Batch(b) = serde_json::from_str(old).unwrap() else {
            panic!("a batch");
        };
        assert!(b.collections.is_empty() && b.is_empty());

        let rec = CollectionRecord {
            file_id: common::FileId(Sha256Digest([3; 32])),
            listing: bytes::Bytes::from_static(b"tessera-collection/1\nd\tholiday\n"),
        };
        let mut batch = Batch::default();
        batch.push(WriteOp::Collection(rec.clone()));
        let change = BatchChange::of(&batch);
        assert!(!change.is_empty());
        let json = serde_json::to_string(&Change::Batch(change)).unwrap();
        assert!(
            !json.contains("holiday"),
            "the listing stays in its table: {json}"
        );
        let Change::Batch(back) = serde_json::from_str(&json).unwrap() else {
            panic!("a batch");
        };
        assert_eq!(back.collections, [rec.file_id.to_string()]);
    }
}
