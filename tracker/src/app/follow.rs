//! Several trackers on one database, acting as one: the follower that applies other
//! trackers' changes to this one's memory, and the planner lease.
//!
//! Every committed write appends a row to the change feed (`db::changes`). The follower
//! polls the rows after the last one it saw every [`FOLLOW_INTERVAL`] and applies those of
//! other origins: peers and holdings last-writer-wins by their timestamps, files, new
//! collections (their listings read from the database and parsed before the index lock is
//! taken) and sessions as they come, tasks in commit order with tombstones (a task removed here is never brought back
//! by a late update from elsewhere). A change therefore reaches every
//! tracker within the writer's flush interval (200 ms; announce, unindex, accounts and
//! sessions commit before they answer) plus one poll (200 ms) plus the time to apply it.
//! The cluster tests check 1 s end to end (sessions, a search after an announce, a logout,
//! peers seen up through batched heartbeats).
//!
//! Only the holder of the `planner` lease plans replication, sweeps liveness and repairs;
//! the others deliver the tasks of the nodes whose `Tasks` stream they hold, learning new
//! tasks through the feed. Task ids never collide: each tracker numbers its tasks in its
//! own block, the id of its start row in the feed times 2^32.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use common::{FileId, PeerId};
use tokio_util::sync::CancellationToken;

use super::collections::parse_stored;
use super::index::{FileEntry, Holding, Index, PeerEntry};
use super::search::PathText;
use super::{SessionEntry, TrackerService};
use crate::Error;
use crate::db::Store;
use crate::db::changes::{BatchChange, Change, FeedEntry};
use crate::model::{TaskKind, TaskRecord};

/// How often the feed is polled.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// The planner lease's name, length and renewal period.
pub const PLANNER_LEASE: &str = "planner";
pub const LEASE_TTL: Duration = Duration::from_secs(10);
pub const LEASE_RENEW: Duration = Duration::from_secs(2);
/// How often the leader prunes old changes.
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// While the feed cannot be read, how often that is logged again.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The first task id of a tracker whose start row in the feed has id `hello`.
pub(super) fn task_block(hello: i64) -> u64 {
    u64::try_from(hello).unwrap_or(0) << 32
}

/// A task's byte count in the quota (a fetch's chunk length), or `None` for a fetch of a
/// file unknown here.
pub(super) fn task_bytes(ix: &Index, t: &TaskRecord) -> Option<u64> {
    match t.kind {
        TaskKind::Drop | TaskKind::Get => Some(0),
        TaskKind::Fetch => ix.files.get(&t.file_id).and_then(|f| {
            let c = *t.chunks.first()?;
            (c < f.manifest.chunk_count()).then(|| {
                let r = f.manifest.chunk_range(c);
                r.end - r.start
            })
        }),
    }
}

impl TrackerService {
    /// Whether this tracker holds the planner lease.
    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::Relaxed)
    }

    /// Takes or renews the planner lease; a database error counts as not holding it.
    pub(super) async fn renew_lease(&self) -> bool {
        let held = match self.inner.store.take_lease(PLANNER_LEASE, LEASE_TTL).await {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(cause = %e, "renewing the planner lease");
                false
            }
        };
        if held != self.inner.leader.swap(held, Ordering::Relaxed) {
            tracing::info!(leader = held, "planner lease changed hands");
        }
        held
    }

    /// Follows the change feed and keeps the planner lease until `shutdown`; then gives
    /// the lease up so another tracker takes over at once.
    pub(super) async fn follow(self, shutdown: CancellationToken) {
        let mut last_lease = Instant::now();
        let mut last_prune = Instant::now();
        // Since when polling has failed, and when that was last logged: one line per
        // LOG_EVERY while the database is down, not one per poll.
        let mut failing: Option<(Instant, Instant)> = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            }
            match self.poll_feed().await {
                Ok(()) => {
                    if let Some((since, _)) = failing.take() {
                        let after_s = since.elapsed().as_secs_f32();
                        tracing::info!(after_s, "following the change feed again");
                    }
                }
                Err(e) => match &mut failing {
                    Some((_, logged)) if logged.elapsed() < LOG_EVERY => {}
                    Some((_, logged)) => {
                        *logged = Instant::now();
                        tracing::warn!(cause = %e, "following the change feed: still failing");
                    }
                    None => {
                        failing = Some((Instant::now(), Instant::now()));
                        tracing::warn!(cause = %e, "following the change feed");
                    }
                },
            }
            if last_lease.elapsed() >= LEASE_RENEW {
                last_lease = Instant::now();
                self.renew_lease().await;
            }
            if self.is_leader() && last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = Instant::now();
                if let Err(e) = self.inner.store.prune_changes().await {
                    tracing::warn!(cause = %e, "pruning the change feed");
                }
            }
        }
        if self.is_leader()
            && let Err(e) = self.inner.store.release_lease(PLANNER_LEASE).await
        {
            tracing::warn!(cause = %e, "releasing the planner lease");
        }
    }

    /// Reads and applies every change committed since the last poll.
    ///
    /// # Errors
    /// [`Error::Database`] when the feed cannot be read.
    pub(super) async fn poll_feed(&self) -> Result<(), Error> {
        loop {
            let after = self.inner.feed_pos.load(Ordering::Relaxed);
            let entries = self.inner.store.changes_after(after).await?;
            let Some(last) = entries.last().map(|e| e.id) else {
                return Ok(());
            };
            let full = entries.len() >= 500;
            self.apply_feed(entries).await?;
            self.inner.feed_pos.store(last, Ordering::Relaxed);
            if !full {
                return Ok(());
            }
        }
    }

    async fn apply_feed(&self, entries: Vec<FeedEntry>) -> Result<(), Error> {
        let origin = self.inner.store.origin().to_string();
        let entries: Vec<Change> = entries
            .into_iter()
            .filter(|e| e.origin != origin)
            .map(|e| e.change)
            .collect();
        if entries.is_empty() {
            return Ok(());
        }
        let listings = read_listings(&self.inner.store, &entries).await?;
        // Owners' names for peers new to this tracker (read before taking the lock).
        let unknown_owner = entries.iter().any(|c| match c {
            Change::Batch(b) => {
                let ix = self.index();
                b.peers
                    .iter()
                    .any(|p| !ix.peers.contains_key(&p.record().id))
            }
            _ => false,
        });
        let names = if unknown_owner {
            self.inner.store.user_names().await?
        } else {
            HashMap::new()
        };
        let mut push: HashSet<PeerId> = HashSet::new();
        {
            let mut ix = self.index_mut();
            for (change, listings) in entries.into_iter().zip(listings) {
                match change {
                    Change::Hello => {}
                    Change::Batch(b) => apply_batch(&mut ix, b, listings, &names, &mut push),
                    Change::SessionAdd {
                        token_hash,
                        user_id,
                        user,
                        expires_at_ms,
                    } => {
                        self.sessions_mut().insert(
                            token_hash,
                            SessionEntry {
                                user_id,
                                user,
                                expires_at_ms,
                            },
                        );
                    }
                    Change::SessionDel { token_hash } => {
                        self.sessions_mut().remove(&token_hash);
                    }
                    Change::UserRemoved { user_id } => {
                        self.sessions_mut().retain(|_, s| s.user_id != user_id);
                        remove_user(&mut ix, user_id);
                    }
                }
            }
            let now = crate::model::now_ms();
            let ops = self.push_due_all(&mut ix, &push, now);
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
        self.wake_planner();
        Ok(())
    }

    fn sessions_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, SessionEntry>> {
        self.inner
            .sessions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The listings of the collections each of `entries` names, in order, read from the
/// database and parsed off the async threads (an 8 MiB listing takes some milliseconds).
/// A collection withdrawn since has no listing; the feed withdraws its file later.
async fn read_listings(
    store: &Store,
    entries: &[Change],
) -> Result<Vec<Vec<(FileId, Arc<PathText>)>>, Error> {
    let named: Vec<Vec<FileId>> = (entries.iter())
        .map(|c| match c {
            Change::Batch(b) => b
                .collections
                .iter()
                .filter_map(|id| id.parse().ok())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    let all: Vec<FileId> = named.iter().flatten().copied().collect();
    if all.is_empty() {
        return Ok(named.into_iter().map(|_| Vec::new()).collect());
    }
    let rows = store.collection_listings(&all).await?;
    let parsed = tokio::task::spawn_blocking(move || parse_stored(rows))
        .await
        .map_err(|e| Error::Internal(format!("parsing collections of the change feed: {e}")))?;
    Ok((named.into_iter())
        .map(|ids| {
            (ids.into_iter())
                .filter_map(|id| Some((id, parsed.get(&id)?.clone())))
                .collect()
        })
        .collect())
}

/// Applies another tracker's batch, in the order it was written, with the `listings` of
/// the collections it names.
fn apply_batch(
    ix: &mut Index,
    b: BatchChange,
    listings: Vec<(FileId, Arc<PathText>)>,
    names: &HashMap<i32, String>,
    push: &mut HashSet<PeerId>,
) {
    for row in &b.peers {
        let rec = row.record();
        match ix.peers.get_mut(&rec.id) {
            // Last writer wins by heartbeat time (`None` < `Some`).
            Some(p) if rec.last_seen_ms >= p.rec.last_seen_ms => p.rec = rec,
            Some(_) => {}
            None => {
                let user = names.get(&rec.user_id).cloned().unwrap_or_default();
                ix.insert_peer(PeerEntry { rec, user });
            }
        }
    }
    for row in &b.files {
        if let Some(rec) = row.record()
            && !ix.files.contains_key(&rec.id())
        {
            ix.insert_file(FileEntry::new(rec));
        }
    }
    for (id, listing) in listings {
        ix.set_collection(id, listing);
    }
    for peer in &b.cleared {
        for id in ix.files_of(peer) {
            ix.take_holding(&id, peer);
        }
    }
    for row in &b.holdings {
        let Some(h) = row.record() else { continue };
        let Some(f) = ix.files.get(&h.file_id) else {
            continue;
        };
        if f.holdings
            .get(&h.peer_id)
            .is_some_and(|mine| mine.updated_at_ms > h.updated_at_ms)
        {
            continue;
        }
        if let Some(holding) = Holding::from_record(&h, f.manifest.chunk_count()) {
            ix.set_holding(h.file_id, &h.peer_id, holding);
        }
    }
    for (peer, file) in &b.holding_deletes {
        if let Ok(file) = file.parse() {
            ix.take_holding(&file, peer);
        }
    }
    for file in &b.file_deletes {
        if let Ok(file) = file.parse() {
            ix.remove_file(&file);
        }
    }
    for row in &b.tasks {
        let Some(rec) = row.record() else { continue };
        let Some(bytes) = task_bytes(ix, &rec) else {
            continue;
        };
        let peer = rec.peer_id.clone();
        let file = rec.file_id;
        if ix.tasks.upsert_remote(rec, bytes) {
            push.insert(peer);
            ix.dirty.insert(file);
        }
    }
    for id in &b.task_deletes {
        if let Some(t) = ix.tasks.remove_remote(*id) {
            ix.dirty.insert(t.rec.file_id);
        }
    }
}

/// Forgets a removed user's peers with their holdings and tasks, then every file nobody
/// holds any more (as the removal did in the database).
fn remove_user(ix: &mut Index, user_id: i32) {
    let peers: Vec<PeerId> = ix
        .peers
        .iter()
        .filter(|(_, p)| p.rec.user_id == user_id)
        .map(|(id, _)| id.clone())
        .collect();
    for peer in &peers {
        for file in ix.files_of(peer) {
            ix.take_holding(&file, peer);
        }
        for id in ix.tasks.of_peer(peer) {
            ix.tasks.remove(id);
        }
        ix.remove_peer(peer);
    }
    let empty: Vec<_> = ix
        .files
        .values()
        .filter(|f| f.holdings.is_empty())
        .map(|f| f.id)
        .collect();
    for id in empty {
        ix.remove_file(&id);
    }
}
