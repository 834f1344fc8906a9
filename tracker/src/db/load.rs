//! Loading the directory at start: peers, files, collections, holdings and replication
//! tasks. Rows that no longer parse are skipped with a warning rather than failing the
//! start. Also the one read that is not made at start: a collection's stored listing.

use common::collection::Collection;
use common::{FileId, Manifest, Sha256Digest};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

use super::Store;
use super::entities::{collections, files, holdings, peers, tasks};
use crate::Error;
use crate::model::{
    FileRecord, HoldingKind, HoldingRecord, PeerRecord, TaskKind, TaskRecord, TaskState,
};

impl Store {
    pub async fn load_peers(&self) -> Result<Vec<PeerRecord>, Error> {
        let rows = peers::Entity::find().all(&self.db).await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let Ok(id) = m.id.parse() else {
                tracing::warn!(peer = %m.id, "skipping a stored peer with a bad id");
                continue;
            };
            out.push(PeerRecord {
                id,
                user_id: m.user_id,
                addr: m.addr,
                storage_quota: m.storage_quota.max(0) as u64,
                storage_used: m.storage_used.max(0) as u64,
                last_seen_ms: m.last_seen,
                created_at_ms: m.created_at,
            });
        }
        Ok(out)
    }

    pub async fn load_files(&self) -> Result<Vec<FileRecord>, Error> {
        let rows = files::Entity::find().all(&self.db).await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            match file_record(m) {
                Ok(f) => out.push(f),
                Err(e) => tracing::warn!(cause = %e, "skipping a stored file"),
            }
        }
        Ok(out)
    }

    /// Every stored collection, parsed; a listing that no longer parses (or a row without a
    /// valid file id) is skipped with a warning, and its file stays a plain file.
    pub async fn load_collections(&self) -> Result<Vec<(FileId, Collection)>, Error> {
        let rows = collections::Entity::find().all(&self.db).await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let Ok(id) = m.file_id.parse::<FileId>() else {
                tracing::warn!(file = %m.file_id, "skipping a stored collection with a bad file id");
                continue;
            };
            match Collection::parse(&m.listing) {
                Ok(c) => out.push((id, c)),
                Err(e) => {
                    tracing::warn!(file = %id, cause = %e, "skipping a stored collection whose listing does not parse")
                }
            }
        }
        Ok(out)
    }

    /// The stored listing of collection `file`, if there is one.
    pub async fn collection_listing(&self, file: &FileId) -> Result<Option<Vec<u8>>, Error> {
        let row = collections::Entity::find_by_id(file.to_string())
            .one(&self.db)
            .await?;
        Ok(row.map(|m| m.listing))
    }

    /// The stored listings of those of `files` that have one (a collection withdrawn since
    /// has none).
    pub async fn collection_listings(
        &self,
        files: &[FileId],
    ) -> Result<Vec<(FileId, Vec<u8>)>, Error> {
        let ids: Vec<String> = files.iter().map(ToString::to_string).collect();
        let mut out = Vec::with_capacity(files.len());
        // A few at a time: each may be 8 MiB.
        for ids in ids.chunks(8) {
            let rows = collections::Entity::find()
                .filter(collections::Column::FileId.is_in(ids.iter().map(String::as_str)))
                .all(&self.db)
                .await?;
            out.extend(
                (rows.into_iter()).filter_map(|m| Some((m.file_id.parse().ok()?, m.listing))),
            );
        }
        Ok(out)
    }

    pub async fn load_holdings(&self) -> Result<Vec<HoldingRecord>, Error> {
        let rows = holdings::Entity::find().all(&self.db).await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let (Ok(peer_id), Ok(file_id), Some(kind)) = (
                m.peer_id.parse(),
                m.file_id.parse(),
                HoldingKind::from_code(m.kind.into()),
            ) else {
                tracing::warn!(peer = %m.peer_id, file = %m.file_id, "skipping a bad holding");
                continue;
            };
            out.push(HoldingRecord {
                peer_id,
                file_id,
                kind,
                have: m.have,
                updated_at_ms: m.updated_at,
                verified: m.verified,
                name: m.name,
            });
        }
        Ok(out)
    }

    /// Every stored replication task, by id.
    pub async fn load_tasks(&self) -> Result<Vec<TaskRecord>, Error> {
        let rows = tasks::Entity::find()
            .order_by_asc(tasks::Column::Id)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for m in rows {
            let chunks: Result<Vec<u32>, _> = m
                .chunks
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::parse)
                .collect();
            let (Ok(peer_id), Ok(file_id), Some(kind), Some(state), Ok(chunks), Ok(id)) = (
                m.peer_id.parse(),
                m.file_id.parse(),
                TaskKind::from_code(m.kind),
                TaskState::from_code(m.state),
                chunks,
                u64::try_from(m.id),
            ) else {
                tracing::warn!(task = m.id, "skipping a bad task");
                continue;
            };
            out.push(TaskRecord {
                id,
                peer_id,
                kind,
                file_id,
                chunks,
                state,
                attempts: u32::try_from(m.attempts).unwrap_or(0),
                next_attempt_at_ms: m.next_attempt_at,
                lease_until_ms: m.lease_until,
                last_error: m.last_error,
                created_at_ms: m.created_at,
            });
        }
        Ok(out)
    }

    /// The largest task id ever stored (0 if none), so new ids never reuse a stored one.
    pub async fn max_task_id(&self) -> Result<u64, Error> {
        let last = tasks::Entity::find()
            .order_by_desc(tasks::Column::Id)
            .one(&self.db)
            .await?;
        Ok(last.map_or(0, |m| u64::try_from(m.id).unwrap_or(0)))
    }
}

fn file_record(m: files::Model) -> Result<FileRecord, String> {
    let sha256: Sha256Digest = m
        .sha256
        .parse()
        .map_err(|_| format!("file {}: bad sha256", m.id))?;
    let manifest = Manifest::from_parts(
        m.name,
        m.size.max(0) as u64,
        sha256,
        m.chunk_size.max(0) as u32,
        &m.chunk_hashes,
    )
    .map_err(|e| format!("file {}: {e}", m.id))?;
    if manifest.id().to_string() != m.id {
        return Err(format!("file {}: manifest does not match its id", m.id));
    }
    Ok(FileRecord {
        manifest,
        created_at_ms: m.created_at,
    })
}
