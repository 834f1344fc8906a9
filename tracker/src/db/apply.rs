//! Applying the writer's batches: peers, files, collections, holdings and tasks, upserted or
//! deleted in one transaction together with their change-feed entries.
//!
//! `files.type` says `collection` while the file's `collections` row exists: writing the
//! row sets it, an upsert of the file keeps it, and the file's delete takes both.

use common::FileType;
use common::PeerId;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter,
    TransactionTrait,
};

use super::changes::{self, BatchChange, Change};
use super::entities::{collections, files, holdings, peers, tasks};
use super::writer::Batch;
use super::{INSERT_CHUNK, Store};
use crate::Error;
use crate::model::{FileRecord, HoldingRecord, PeerRecord, TaskRecord};

/// New files per INSERT statement (a 1,000-chunk file's row is 32 KB of hashes).
const FILE_INSERT_CHUNK: usize = 32;

/// What `files.type` says of a collection.
const COLLECTION: &str = "collection";

impl Store {
    /// Writes the background batch `batch` and then the committed ops' rows `committed` in
    /// one transaction, each with its change-feed entry (other trackers apply them in that
    /// order).
    ///
    /// # Errors
    /// [`Error::Database`]; then nothing of either was written.
    pub async fn apply(&self, batch: &Batch, committed: &Batch) -> Result<(), Error> {
        let txn = self.db.begin().await?;
        for b in [batch, committed] {
            let change = BatchChange::of(b);
            if !change.is_empty() {
                write(&txn, b).await?;
                changes::append(&txn, &self.origin, &Change::Batch(change)).await?;
            }
        }
        self.commit(txn).await?;
        Ok(())
    }
}

/// Writes one coalesced batch inside `txn`.
async fn write(txn: &DatabaseTransaction, batch: &Batch) -> Result<(), Error> {
    {
        let peer_rows: Vec<peers::ActiveModel> = batch.peers.values().map(peer_model).collect();
        for chunk in peer_rows.chunks(INSERT_CHUNK) {
            peers::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::column(peers::Column::Id)
                        .update_columns([
                            peers::Column::Addr,
                            peers::Column::StorageQuota,
                            peers::Column::StorageUsed,
                            peers::Column::LastSeen,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        // A few rows per statement: each carries 32 bytes per chunk of hashes.
        let file_rows: Vec<files::ActiveModel> =
            batch.files.values().flatten().map(file_model).collect();
        for chunk in file_rows.chunks(FILE_INSERT_CHUNK) {
            files::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    // The domain queues an insert for a file new to it (a row that exists
                    // is a forgotten file coming back: take the new name and time) or to
                    // keep the last known name of a file whose last sharer left.
                    // A collection stays one: its type is not the name's.
                    OnConflict::column(files::Column::Id)
                        .update_columns([files::Column::Name, files::Column::CreatedAt])
                        .value(
                            files::Column::FileType,
                            Expr::cust(format!(
                                "CASE WHEN \"files\".\"type\" = '{COLLECTION}' \
                                 THEN \"files\".\"type\" ELSE \"excluded\".\"type\" END"
                            )),
                        )
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        write_collections(txn, batch).await?;
        let cleared: Vec<&str> = batch.cleared.iter().map(PeerId::as_str).collect();
        for peers in cleared.chunks(INSERT_CHUNK) {
            holdings::Entity::delete_many()
                .filter(holdings::Column::PeerId.is_in(peers.iter().copied()))
                .exec(txn)
                .await?;
        }
        let mut upserts = Vec::new();
        let mut deletes = Vec::new();
        for ((peer, file), h) in &batch.holdings {
            match h {
                Some(h) => upserts.push(holding_model(h)),
                None => deletes.push((peer.as_str(), file.to_string())),
            }
        }
        for pairs in deletes.chunks(INSERT_CHUNK) {
            let any = pairs.iter().fold(Condition::any(), |any, (peer, file)| {
                any.add(
                    Condition::all()
                        .add(holdings::Column::PeerId.eq(*peer))
                        .add(holdings::Column::FileId.eq(file.as_str())),
                )
            });
            holdings::Entity::delete_many()
                .filter(any)
                .exec(txn)
                .await?;
        }
        for chunk in upserts.chunks(INSERT_CHUNK) {
            holdings::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([holdings::Column::PeerId, holdings::Column::FileId])
                        .update_columns([
                            holdings::Column::Kind,
                            holdings::Column::Have,
                            holdings::Column::UpdatedAt,
                            holdings::Column::Verified,
                            holdings::Column::Name,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        let gone: Vec<String> = (batch.files.iter())
            .filter(|(_, f)| f.is_none())
            .map(|(id, _)| id.to_string())
            .collect();
        for ids in gone.chunks(INSERT_CHUNK) {
            collections::Entity::delete_many()
                .filter(collections::Column::FileId.is_in(ids.iter().map(String::as_str)))
                .exec(txn)
                .await?;
            files::Entity::delete_many()
                .filter(files::Column::Id.is_in(ids.iter().map(String::as_str)))
                .exec(txn)
                .await?;
        }
        let mut task_rows = Vec::new();
        let mut task_deletes = Vec::new();
        for (id, t) in &batch.tasks {
            match t {
                Some(t) => task_rows.push(task_model(t)),
                None => task_deletes.push(i64::try_from(*id).unwrap_or(i64::MAX)),
            }
        }
        for chunk in task_rows.chunks(INSERT_CHUNK) {
            tasks::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::column(tasks::Column::Id)
                        .update_columns([
                            tasks::Column::Chunks,
                            tasks::Column::State,
                            tasks::Column::Attempts,
                            tasks::Column::NextAttemptAt,
                            tasks::Column::LeaseUntil,
                            tasks::Column::LastError,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        for ids in task_deletes.chunks(INSERT_CHUNK) {
            tasks::Entity::delete_many()
                .filter(tasks::Column::Id.is_in(ids.iter().copied()))
                .exec(txn)
                .await?;
        }
    }
    Ok(())
}

/// Stores the batch's listings (one a statement: each may be 8 MiB) and marks their files
/// collections. A stored listing is kept: the file id fixes its content.
async fn write_collections(txn: &DatabaseTransaction, batch: &Batch) -> Result<(), Error> {
    if batch.collections.is_empty() {
        return Ok(());
    }
    for c in batch.collections.values() {
        collections::Entity::insert(collections::ActiveModel {
            file_id: Set(c.file_id.to_string()),
            listing: Set(c.listing.to_vec()),
        })
        .on_conflict(
            OnConflict::column(collections::Column::FileId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    }
    let ids: Vec<String> = batch.collections.keys().map(ToString::to_string).collect();
    for ids in ids.chunks(INSERT_CHUNK) {
        files::Entity::update_many()
            .col_expr(files::Column::FileType, Expr::value(COLLECTION))
            .filter(files::Column::Id.is_in(ids.iter().map(String::as_str)))
            .exec(txn)
            .await?;
    }
    Ok(())
}

fn file_model(f: &FileRecord) -> files::ActiveModel {
    let m = &f.manifest;
    files::ActiveModel {
        id: Set(f.id().to_string()),
        name: Set(m.name.clone()),
        size: Set(m.size as i64),
        sha256: Set(m.sha256.to_hex()),
        file_type: Set(FileType::from_name(&m.name).as_str().to_string()),
        chunk_size: Set(m.chunk_size as i32),
        chunk_count: Set(m.chunk_count() as i32),
        chunk_hashes: Set(m.packed_hashes()),
        created_at: Set(f.created_at_ms),
    }
}

fn peer_model(p: &PeerRecord) -> peers::ActiveModel {
    peers::ActiveModel {
        id: Set(p.id.to_string()),
        user_id: Set(p.user_id),
        addr: Set(p.addr.clone()),
        storage_quota: Set(i64::try_from(p.storage_quota).unwrap_or(i64::MAX)),
        storage_used: Set(i64::try_from(p.storage_used).unwrap_or(i64::MAX)),
        last_seen: Set(p.last_seen_ms),
        created_at: Set(p.created_at_ms),
    }
}

fn holding_model(h: &HoldingRecord) -> holdings::ActiveModel {
    holdings::ActiveModel {
        peer_id: Set(h.peer_id.to_string()),
        file_id: Set(h.file_id.to_string()),
        kind: Set(h.kind.code()),
        have: Set(h.have.clone()),
        updated_at: Set(h.updated_at_ms),
        verified: Set(h.verified.clone()),
        name: Set(h.name.clone()),
    }
}

fn task_model(t: &TaskRecord) -> tasks::ActiveModel {
    let chunks: Vec<String> = t.chunks.iter().map(u32::to_string).collect();
    tasks::ActiveModel {
        id: Set(i64::try_from(t.id).unwrap_or(i64::MAX)),
        peer_id: Set(t.peer_id.to_string()),
        kind: Set(t.kind.code()),
        file_id: Set(t.file_id.to_string()),
        chunks: Set(chunks.join(",")),
        state: Set(t.state.code()),
        attempts: Set(i32::try_from(t.attempts).unwrap_or(i32::MAX)),
        next_attempt_at: Set(t.next_attempt_at_ms),
        lease_until: Set(t.lease_until_ms),
        last_error: Set(t.last_error.clone()),
        created_at: Set(t.created_at_ms),
    }
}
