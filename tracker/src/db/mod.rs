//! Storage: the SeaORM connection and every query the tracker makes. The rest of the crate
//! sees only [`Store`] and the records of `crate::model`; entities stay in here.
//!
//! SQLite (the default) runs in WAL mode with a busy timeout and a small pool, so the batch
//! writer and the rare direct writes (login, announce) do not block readers. Frequent updates
//! (heartbeats, chunk reports) go through [`writer`], which coalesces them into one
//! transaction every few hundred milliseconds.

pub mod changes;
pub mod entities;
pub mod writer;

use std::collections::HashMap;
use std::time::Duration;

use common::{FileType, Manifest, Sha256Digest};
use migrations::{Migrator, MigratorTrait};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection,
    EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, SqlErr, Statement, TransactionTrait,
};

use crate::Error;
use crate::model::{
    FileRecord, HoldingKind, HoldingRecord, PeerRecord, SessionRecord, TaskKind, TaskRecord,
    TaskState, UserRecord,
};
use changes::{BatchChange, Change};
use entities::{files, holdings, peers, sessions, tasks, tracker_keys, users};
use writer::Batch;

/// Rows per multi-row INSERT, well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 200;

/// A handle on the database (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// This process's instance id in the change feed and the leases (random per start).
    origin: String,
}

impl Store {
    /// Connects (creating an SQLite file if the URL says `mode=rwc`).
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let mut opts = ConnectOptions::new(url);
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(4).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
            });
        } else {
            opts.max_connections(10);
        }
        let db = Database::connect(opts).await?;
        let origin = format!("{:032x}", rand::random::<u128>());
        Ok(Store { db, origin })
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// [`Error::Database`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        // Trackers starting together on one database race to record the same migration;
        // the loser retries and then finds nothing pending (every step is idempotent).
        let mut tries = 0;
        loop {
            match Migrator::up(&self.db, None).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(cause = %e, "migrating raced another tracker; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A trivial query, for health checks.
    ///
    /// # Errors
    /// [`Error::Database`] when the database does not answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(Statement::from_string(backend, "SELECT 1"))
            .await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        if let Err(e) = self.db.close().await {
            tracing::warn!(cause = %e, "closing the database");
        }
    }

    // Keys.

    /// The secret of the key `name`: the stored one, or `fresh` when none is stored yet.
    /// Insert-if-absent then read back, so trackers starting together on one database all
    /// end up with the first one's key.
    ///
    /// # Errors
    /// [`Error::Database`]; [`Error::Internal`] when the row vanished after the insert.
    pub async fn key_or_insert(&self, name: &str, fresh: &[u8]) -> Result<Vec<u8>, Error> {
        let am = tracker_keys::ActiveModel {
            name: Set(name.to_string()),
            secret: Set(fresh.to_vec()),
            created_at: Set(crate::model::now_ms()),
        };
        tracker_keys::Entity::insert(am)
            .on_conflict(
                OnConflict::column(tracker_keys::Column::Name)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        tracker_keys::Entity::find_by_id(name.to_string())
            .one(&self.db)
            .await?
            .map(|m| m.secret)
            .ok_or_else(|| Error::Internal(format!("the {name} key vanished after its insert")))
    }

    // Users.

    /// Creates a user.
    ///
    /// # Errors
    /// [`Error::AlreadyExists`] when the name is taken.
    pub async fn create_user(&self, name: &str, password_hash: &str) -> Result<UserRecord, Error> {
        let am = users::ActiveModel {
            name: Set(name.to_string()),
            password_hash: Set(password_hash.to_string()),
            created_at: Set(crate::model::now_ms()),
            ..Default::default()
        };
        match users::Entity::insert(am).exec(&self.db).await {
            Ok(res) => self
                .user_by_id(res.last_insert_id)
                .await?
                .ok_or_else(|| Error::Internal("inserted user vanished".into())),
            Err(e) if matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => Err(
                Error::AlreadyExists(format!("user {name:?} already exists")),
            ),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn user_by_name(&self, name: &str) -> Result<Option<UserRecord>, Error> {
        Ok(users::Entity::find()
            .filter(users::Column::Name.eq(name))
            .one(&self.db)
            .await?
            .map(user_record))
    }

    pub async fn user_by_id(&self, id: i32) -> Result<Option<UserRecord>, Error> {
        Ok(users::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(user_record))
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserRecord>, Error> {
        Ok(users::Entity::find()
            .order_by_asc(users::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(user_record)
            .collect())
    }

    pub async fn count_users(&self) -> Result<u64, Error> {
        Ok(users::Entity::find().count(&self.db).await?)
    }

    /// Deletes a user with their sessions, peers and those peers' holdings, then every file
    /// nobody holds any more. Returns false if there was no such user.
    pub async fn remove_user(&self, name: &str) -> Result<bool, Error> {
        let Some(user) = self.user_by_name(name).await? else {
            return Ok(false);
        };
        let txn = self.db.begin().await?;
        let peer_ids: Vec<String> = peers::Entity::find()
            .filter(peers::Column::UserId.eq(user.id))
            .all(&txn)
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        for ids in peer_ids.chunks(INSERT_CHUNK) {
            holdings::Entity::delete_many()
                .filter(holdings::Column::PeerId.is_in(ids.iter().cloned()))
                .exec(&txn)
                .await?;
            tasks::Entity::delete_many()
                .filter(tasks::Column::PeerId.is_in(ids.iter().cloned()))
                .exec(&txn)
                .await?;
        }
        peers::Entity::delete_many()
            .filter(peers::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        sessions::Entity::delete_many()
            .filter(sessions::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        users::Entity::delete_by_id(user.id).exec(&txn).await?;
        let backend = txn.get_database_backend();
        txn.execute_raw(Statement::from_string(
            backend,
            "DELETE FROM files WHERE id NOT IN (SELECT file_id FROM holdings)",
        ))
        .await?;
        let change = Change::UserRemoved { user_id: user.id };
        changes::append(&txn, &self.origin, &change).await?;
        txn.commit().await?;
        Ok(true)
    }

    // Sessions.

    /// Stores a session and tells other trackers about it (`user` is its user's name).
    pub async fn insert_session(&self, s: &SessionRecord, user: &str) -> Result<(), Error> {
        let am = sessions::ActiveModel {
            token_hash: Set(s.token_hash.clone()),
            user_id: Set(s.user_id),
            created_at: Set(s.created_at_ms),
            expires_at: Set(s.expires_at_ms),
        };
        let txn = self.db.begin().await?;
        sessions::Entity::insert(am)
            .exec_without_returning(&txn)
            .await?;
        let change = Change::SessionAdd {
            token_hash: s.token_hash.clone(),
            user_id: s.user_id,
            user: user.to_string(),
            expires_at_ms: s.expires_at_ms,
        };
        changes::append(&txn, &self.origin, &change).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Deletes a session; returns whether it existed.
    pub async fn delete_session(&self, token_hash: &str) -> Result<bool, Error> {
        let txn = self.db.begin().await?;
        let res = sessions::Entity::delete_by_id(token_hash.to_string())
            .exec(&txn)
            .await?;
        let change = Change::SessionDel {
            token_hash: token_hash.to_string(),
        };
        changes::append(&txn, &self.origin, &change).await?;
        txn.commit().await?;
        Ok(res.rows_affected > 0)
    }

    /// Sessions that have not expired at `now_ms` (expired ones are deleted on the way).
    pub async fn load_sessions(&self, now_ms: i64) -> Result<Vec<SessionRecord>, Error> {
        sessions::Entity::delete_many()
            .filter(sessions::Column::ExpiresAt.lte(now_ms))
            .exec(&self.db)
            .await?;
        Ok(sessions::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| SessionRecord {
                token_hash: m.token_hash,
                user_id: m.user_id,
                created_at_ms: m.created_at,
                expires_at_ms: m.expires_at,
            })
            .collect())
    }

    /// user id → name, for everyone.
    pub async fn user_names(&self) -> Result<HashMap<i32, String>, Error> {
        Ok(users::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|u| (u.id, u.name))
            .collect())
    }

    // Peers, files, holdings (loaded once at start; written through the batch writer).

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

fn user_record(m: users::Model) -> UserRecord {
    UserRecord {
        id: m.id,
        name: m.name,
        password_hash: m.password_hash,
        created_at_ms: m.created_at,
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
