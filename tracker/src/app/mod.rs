//! `TrackerService`: the tracker's domain logic, which both adapters (gRPC for peers, REST
//! for people and scripts) call. It owns the in-memory [`index::Index`] (files, holdings,
//! peers) and the session table, and decides what is written to the database and when:
//! what a client waits for (accounts, sessions, announce, unindex, task completion) commits
//! before memory changes and before the answer (`commit`), and background facts
//! (heartbeats, chunk reports, syncs, audits, the planner's tasks) change memory at once and
//! are queued to the batch writer, which retries them.

mod accounts;
pub mod audit;
pub mod auth;
mod certificates;
mod collections;
mod commit;
mod delivery;
mod follow;
mod gets;
mod holdings;
pub mod index;
mod limits;
mod names;
mod queries;
mod replication;
mod search;
mod throttle;
pub mod tickets;
pub mod views;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use common::{PeerId, TicketSigner};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;

use crate::db::Store;
use crate::db::writer::WriteOp;
use crate::db::writer::Writer;
use crate::metrics::{Levels, Metrics};
use crate::model::now_ms;
use crate::replication::TaskTable;
use crate::{Config, Error};
use index::{FileEntry, Holding, Index, PeerEntry};
use throttle::Throttle;
pub use views::*;

/// Longest peer address accepted in a heartbeat.
const MAX_ADDR_LEN: usize = 255;

/// A cloneable handle on the tracker's state.
#[derive(Clone)]
pub struct TrackerService {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    store: Store,
    writer: Writer,
    index: RwLock<Index>,
    /// token hash → session.
    sessions: RwLock<HashMap<String, SessionEntry>>,
    throttle: Mutex<Throttle>,
    /// A real argon2id hash of a random password, verified against for unknown users so a
    /// login takes as long whether or not the user exists. Made on first use, so starting
    /// the tracker does not pay for it.
    dummy_hash: tokio::sync::OnceCell<String>,
    /// The open `Tasks` stream of each node. Lock order: `index`, then this.
    streams: Mutex<HashMap<PeerId, TaskStream>>,
    /// Numbers streams, so a closed one is not mistaken for its replacement.
    next_conn: AtomicU64,
    /// Wakes the replication planner when files become dirty.
    wake: Notify,
    /// Signs tickets (the key is shared through the database, see `tickets`).
    tickets: TicketSigner,
    /// Locate tickets already signed, reused while more than half their life is left.
    located_tickets: tickets::TicketCache,
    /// Whether this tracker holds the planner lease (see `follow`).
    leader: AtomicBool,
    /// The last change-feed id applied (see `follow`).
    feed_pos: AtomicI64,
    /// Request, transfer and locate counters for `/metrics` and the stats.
    metrics: Metrics,
    /// The auditor's queue and memory (see `audit`). Lock order: `index`, then this.
    audits: Mutex<audit::Audits>,
    /// Wakes the auditor when a report arrives.
    audit_wake: Notify,
    /// Wakes writes waiting for a reservation (`commit`) when one is released.
    freed: Notify,
}

/// A node's open task stream.
struct TaskStream {
    conn: u64,
    tx: mpsc::Sender<Assignment>,
    /// The node's public key, as its `Tasks` request gave it: its fetches' tickets name it.
    key: [u8; common::ticket::PUBLIC_KEY_LEN],
}

#[derive(Clone, Debug)]
struct SessionEntry {
    user_id: i32,
    user: String,
    expires_at_ms: i64,
}

impl TrackerService {
    /// Loads the index, the sessions and the ticket key from the database (creating the
    /// key on first start) and starts the batch writer.
    /// Returns the writer's task, which ends once every handle is dropped.
    ///
    /// # Errors
    /// [`Error::Database`] when loading fails.
    pub async fn start(cfg: Config, store: Store) -> Result<(Self, JoinHandle<()>), Error> {
        let now = now_ms();
        // Read before loading, so changes committed while loading are applied (again:
        // applying a change twice is harmless).
        let feed_pos = store.last_change_id().await?;
        let names = store.user_names().await?;
        let mut index = Index::new(duration_ms(cfg.peer_timeout));
        index.trust_claims = !cfg.audit;
        index.usage.limits = limits::Limits::from(&cfg);
        for rec in store.load_peers().await? {
            let user = names.get(&rec.user_id).cloned().unwrap_or_default();
            index.insert_peer(PeerEntry { rec, user });
        }
        for rec in store.load_files().await? {
            index.insert_file(FileEntry::new(rec));
        }
        for (id, c) in store.load_collections().await? {
            if !index.set_collection(id, Arc::new(search::PathText::new(&c))) {
                tracing::warn!(file = %id, "skipping a stored collection of an unknown file");
            }
        }
        for h in store.load_holdings().await? {
            let Some(f) = index.files.get(&h.file_id) else {
                continue;
            };
            match Holding::from_record(&h, f.manifest.chunk_count()) {
                Some(holding) => {
                    index.set_holding(h.file_id, &h.peer_id, holding);
                }
                None => tracing::warn!(file = %h.file_id, "skipping a holding that does not fit"),
            }
        }
        let hello = store
            .append_change(&crate::db::changes::Change::Hello)
            .await?;
        index.tasks = TaskTable::new(store.max_task_id().await?.max(follow::task_block(hello)));
        let mut stale_tasks = Vec::new();
        for t in store.load_tasks().await? {
            match follow::task_bytes(&index, &t) {
                Some(bytes) => index.tasks.insert(t, bytes, true),
                // A fetch for a file forgotten meanwhile is moot.
                None => stale_tasks.push(t.id),
            }
        }
        let mut sessions = HashMap::new();
        for s in store.load_sessions(now).await? {
            if let Some(user) = names.get(&s.user_id) {
                sessions.insert(
                    s.token_hash,
                    SessionEntry {
                        user_id: s.user_id,
                        user: user.clone(),
                        expires_at_ms: s.expires_at_ms,
                    },
                );
            }
        }
        tracing::info!(
            files = index.files.len(),
            collections = index
                .files
                .values()
                .filter(|f| f.collection.is_some())
                .count(),
            peers = index.peers.len(),
            sessions = sessions.len(),
            tasks = index.tasks.len(),
            "loaded state from the database"
        );
        let tickets = tickets::load_signer(&store).await?;
        let (writer, handle) = Writer::spawn(store.clone());
        writer.queue(stale_tasks.into_iter().map(WriteOp::TaskDelete))?;
        let svc = TrackerService {
            inner: Arc::new(Inner {
                cfg,
                store,
                writer,
                index: RwLock::new(index),
                sessions: RwLock::new(sessions),
                throttle: Mutex::new(Throttle::default()),
                dummy_hash: tokio::sync::OnceCell::new(),
                streams: Mutex::new(HashMap::new()),
                next_conn: AtomicU64::new(0),
                wake: Notify::new(),
                tickets,
                leader: AtomicBool::new(false),
                feed_pos: AtomicI64::new(feed_pos),
                metrics: Metrics::new(),
                located_tickets: tickets::TicketCache::default(),
                audits: Mutex::default(),
                audit_wake: Notify::new(),
                freed: Notify::new(),
            }),
        };
        // A tracker alone on its database plans from the first round.
        svc.renew_lease().await;
        Ok((svc, handle))
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    /// The tracker's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Writes every queued update and waits for the commit.
    ///
    /// # Errors
    /// [`Error::Database`] when the write fails.
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.writer.flush().await
    }

    /// Whether the database answers.
    ///
    /// # Errors
    /// [`Error::Database`] when it does not.
    pub async fn health(&self) -> Result<(), Error> {
        self.inner.store.ping().await
    }

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner
            .index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.inner
            .index
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the replication planner that files became dirty.
    fn wake_planner(&self) {
        self.inner.wake.notify_one();
    }
}

/// The stats that `/metrics` shows as gauges.
impl Levels for Stats {
    fn gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
        vec![
            ("users", "User accounts", self.users),
            (
                "peers_up",
                "Peers whose last heartbeat is recent",
                self.peers_up,
            ),
            ("peers_down", "Known peers that are not up", self.peers_down),
            ("files", "Files in the directory", self.files),
            ("chunks", "Chunks of all files", self.chunks),
            (
                "under_replicated_chunks",
                "Chunks with fewer live copies than the replication target",
                self.under_replicated_chunks,
            ),
            (
                "pending_tasks",
                "Tasks queued or delivered: replication work and waiting gets",
                self.pending_tasks,
            ),
            (
                "replication_target",
                "Live copies wanted of every chunk",
                u64::from(self.replication),
            ),
            (
                "replication_reachable",
                "The replication target as far as serving peers can hold copies now",
                u64::from(self.reachable_replication),
            ),
            (
                "under_reachable_chunks",
                "Chunks with fewer live copies than the reachable target",
                self.under_reachable_chunks,
            ),
            (
                "active_transfers",
                "Distinct (user, file) pairs that called Locate in the last 10 s, not done since",
                self.active_transfers,
            ),
            (
                "transfer_bytes_per_second",
                "Bytes of verified chunks reported in the last 10 s, per second",
                self.transfer_bytes_per_sec,
            ),
        ]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A file as search results and the REST API show it.
/// `name` is the one this answer shows it under (one of its listed names).
fn file_view(ix: &Index, f: &FileEntry, name: &str, now: i64) -> FileView {
    FileView {
        min_copies: Some(ix.min_copies(f, now)),
        names: f.all_names(),
        ..file_view_with(f, name, ix.holders(f, now))
    }
}

/// A file with its `holders` count and without the copy count and other names, which
/// Locate (the hot path) counts itself and does not answer with.
fn file_view_with(f: &FileEntry, name: &str, holders: u32) -> FileView {
    let m = &f.manifest;
    FileView {
        id: f.id,
        name: name.to_string(),
        names: Vec::new(),
        size: m.size,
        sha256: m.sha256,
        file_type: f.file_type(name),
        chunk_size: m.chunk_size,
        chunks: m.chunk_count(),
        holders,
        min_copies: None,
        created_at_ms: f.created_at_ms,
    }
}
