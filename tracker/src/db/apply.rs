//! Applying one coalesced [`Batch`] from the writer: peers, files, holdings and tasks,
//! upserted or deleted in one transaction together with its change-feed entry.

use common::FileType;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};

use super::changes::{self, BatchChange, Change};
use super::entities::{files, holdings, peers, tasks};
use super::writer::Batch;
use super::{INSERT_CHUNK, Store};
use crate::Error;
use crate::model::{FileRecord, HoldingRecord, PeerRecord, TaskRecord};

impl Store {
    /// Writes one coalesced batch in one transaction.
    ///
    /// # Errors
    /// [`Error::Database`]; then nothing of the batch was written.
    pub async fn apply(&self, batch: &Batch) -> Result<(), Error> {
        let txn = self.db.begin().await?;
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
                .exec_without_returning(&txn)
                .await?;
        }
        for f in batch.files.values().flatten() {
            files::Entity::insert(file_model(f))
                .on_conflict(
                    // The domain queues an insert only for a file new to it, so a row that
                    // exists is a forgotten file coming back: take the new name and time.
                    OnConflict::column(files::Column::Id)
                        .update_columns([
                            files::Column::Name,
                            files::Column::FileType,
                            files::Column::CreatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        for peer in &batch.cleared {
            holdings::Entity::delete_many()
                .filter(holdings::Column::PeerId.eq(peer.as_str()))
                .exec(&txn)
                .await?;
        }
        let mut upserts = Vec::new();
        for ((peer, file), h) in &batch.holdings {
            match h {
                Some(h) => upserts.push(holding_model(h)),
                None => {
                    holdings::Entity::delete_by_id((peer.to_string(), file.to_string()))
                        .exec(&txn)
                        .await?;
                }
            }
        }
        for chunk in upserts.chunks(INSERT_CHUNK) {
            holdings::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([holdings::Column::PeerId, holdings::Column::FileId])
                        .update_columns([
                            holdings::Column::Kind,
                            holdings::Column::Have,
                            holdings::Column::UpdatedAt,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        for (id, f) in &batch.files {
            if f.is_none() {
                files::Entity::delete_by_id(id.to_string())
                    .exec(&txn)
                    .await?;
            }
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
                .exec_without_returning(&txn)
                .await?;
        }
        for ids in task_deletes.chunks(INSERT_CHUNK) {
            tasks::Entity::delete_many()
                .filter(tasks::Column::Id.is_in(ids.iter().copied()))
                .exec(&txn)
                .await?;
        }
        let change = BatchChange::of(batch);
        if !change.is_empty() {
            changes::append(&txn, &self.origin, &Change::Batch(change)).await?;
        }
        txn.commit().await?;
        Ok(())
    }
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
