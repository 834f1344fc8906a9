//! Replication on [`TrackerService`]: the planner that turns missing and surplus copies into
//! tasks, the delivery of tasks over each node's `Tasks` stream, task completion, and the
//! withdrawal of a file that no user holds any more.
//!
//! The planner is one background task. It works on the in-memory index under its write lock
//! (never across an await): files become dirty when their holdings change (see
//! `Index::set_holding`), when a task on them ends, and when a holder's liveness changes
//! (up, down, lost), which it notices on its tick through the per-peer index of held files.
//! A full sweep every [`SWEEP_INTERVAL`] is the backstop. New task rows are committed
//! (through the batch writer, one flush per round) before they are pushed.
//!
//! A holder that is down still counts as a copy until it has been down for longer than
//! `peer_timeout + repair_grace` (then it is lost and its chunks are placed elsewhere), so
//! a restart or a short outage does not move data around.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Bitfield, FileId, PeerId, TicketSigner};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;

use super::holdings::{claim_peer, holding_record, not_yours};
use super::index::{Holding, Index};
use super::{
    Assignment, Caller, FetchAssignment, HolderView, TaskStream, TrackerService, duration_ms, lock,
};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::model::{HoldingKind, TaskKind, TaskState, now_ms};
use crate::replication::policy::{self, PeerLoad};
use crate::replication::tasks::Failed;

/// How often the planner looks at liveness and timers when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);
/// After a wake-up, how long to wait so a burst of events is planned in one round.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// How often every file is planned, whatever changed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Files planned per hold of the index lock during a full sweep.
const SWEEP_BATCH: usize = 256;
/// Tasks a node may have delivered and not completed; more are pushed as it completes.
const MAX_IN_FLIGHT: usize = 32;
/// Capacity of a node's task channel.
const STREAM_CAPACITY: usize = 64;
/// Retry delay for a task that could not be pushed (no source up, channel full).
const PUSH_RETRY: Duration = Duration::from_secs(1);

/// Whether a peer's copies count.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Liveness {
    /// Serving: heartbeat fresh and an address.
    Up,
    /// Not serving, but for less than `peer_timeout + repair_grace`: still a copy.
    Down,
    /// Gone for longer (or never seen): its copies are placed elsewhere.
    Lost,
}

/// The planner's memory between rounds.
#[derive(Default)]
struct Planner {
    liveness: HashMap<PeerId, Liveness>,
    last_sweep: Option<Instant>,
    /// New tasks whose rows are not yet known to be committed.
    unflushed: Vec<u64>,
}

/// What one round (or one request) decided, to apply after the lock is released.
#[derive(Default)]
pub(super) struct Outcome {
    pub(super) ops: Vec<WriteOp>,
    /// New task ids, pushed once durable.
    created: Vec<u64>,
    /// Peers whose due tasks to push now.
    push: Vec<PeerId>,
    fetches: usize,
    drops: usize,
    cancelled: usize,
}

impl Outcome {
    fn push_peer(&mut self, peer: &PeerId) {
        if !self.push.contains(peer) {
            self.push.push(peer.clone());
        }
    }
}

/// Peer loads for the policy, built on first use in a round.
#[derive(Default)]
struct Loads {
    built: bool,
    ids: Vec<PeerId>,
    peers: Vec<PeerLoad>,
    pos: HashMap<PeerId, usize>,
}

impl Loads {
    fn ensure(&mut self, ix: &Index, now: i64) {
        if self.built {
            return;
        }
        self.built = true;
        for (id, p) in &ix.peers {
            let used = p.rec.storage_used.max(replica_bytes(ix, id));
            self.pos.insert(id.clone(), self.ids.len());
            self.ids.push(id.clone());
            self.peers.push(PeerLoad {
                up: ix.is_serving(id, now),
                quota: p.rec.storage_quota,
                assigned: used.saturating_add(ix.tasks.fetch_bytes(id)),
            });
        }
    }
}

/// Bytes of the chunks `peer` holds as replicas.
fn replica_bytes(ix: &Index, peer: &PeerId) -> u64 {
    let mut total = 0u64;
    for id in ix.files_of(peer) {
        let Some(f) = ix.files.get(&id) else {
            continue;
        };
        let Some(h) = f
            .holdings
            .get(peer)
            .filter(|h| h.kind == HoldingKind::Replica)
        else {
            continue;
        };
        let m = &f.manifest;
        let n = m.chunk_count();
        let mut bytes = u64::from(h.have.count()) * u64::from(m.chunk_size);
        if n > 0 && h.have.get(n - 1) {
            let last = m.chunk_range(n - 1);
            bytes -= u64::from(m.chunk_size) - (last.end - last.start);
        }
        total = total.saturating_add(bytes);
    }
    total
}

impl TrackerService {
    /// Runs the planner until `shutdown` is cancelled, then closes every task stream.
    pub async fn replicate(self, shutdown: CancellationToken) {
        let mut st = Planner::default();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.wake.notified() => tokio::time::sleep(DEBOUNCE).await,
                () = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = self.plan_round(&mut st).await {
                tracing::warn!(cause = %e, "replication round failed");
            }
        }
        lock(&self.inner.streams).clear();
    }

    fn liveness(&self, ix: &Index, peer: &PeerId, now: i64) -> Liveness {
        let Some(p) = ix.peers.get(peer) else {
            return Liveness::Lost;
        };
        if ix.is_serving(peer, now) {
            return Liveness::Up;
        }
        let grace = ix
            .timeout_ms
            .saturating_add(duration_ms(self.inner.cfg.repair_grace));
        match p.rec.last_seen_ms {
            Some(t) if now.saturating_sub(t) <= grace => Liveness::Down,
            _ => Liveness::Lost,
        }
    }

    async fn plan_round(&self, st: &mut Planner) -> Result<(), Error> {
        let now = now_ms();
        let full = st.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL);
        let mut out = Outcome::default();
        let sweep: Vec<FileId> = {
            let mut ix = self.index_mut();
            self.check_liveness(&mut ix, st, now, &mut out);
            let (peers, changed) = ix.tasks.fire_timers(now);
            out.ops.extend(changed.into_iter().map(WriteOp::Task));
            for p in &peers {
                out.push_peer(p);
            }
            let dirty: Vec<FileId> = ix.dirty.drain().collect();
            if full {
                st.last_sweep = Some(Instant::now());
                ix.files.keys().copied().collect()
            } else {
                let mut loads = Loads::default();
                for id in dirty {
                    self.plan_file(&mut ix, &id, now, &mut loads, &mut out);
                }
                Vec::new()
            }
        };
        for batch in sweep.chunks(SWEEP_BATCH) {
            let mut ix = self.index_mut();
            let mut loads = Loads::default();
            for id in batch {
                self.plan_file(&mut ix, id, now, &mut loads, &mut out);
            }
        }
        self.apply(out, Some(st)).await
    }

    /// Queues the outcome's writes, commits them if it created tasks, then pushes.
    async fn apply(&self, out: Outcome, st: Option<&mut Planner>) -> Result<(), Error> {
        let Outcome {
            ops,
            mut created,
            mut push,
            fetches,
            drops,
            cancelled,
        } = out;
        for op in ops {
            self.inner.writer.send(op).await?;
        }
        if let Some(st) = st {
            st.unflushed.append(&mut created);
            created = std::mem::take(&mut st.unflushed);
            if !created.is_empty()
                && let Err(e) = self.inner.writer.flush().await
            {
                st.unflushed = created;
                return Err(e);
            }
        } else if !created.is_empty() {
            self.inner.writer.flush().await?;
        }
        if fetches + drops + cancelled > 0 {
            tracing::info!(fetches, drops, cancelled, "replication planned");
        }
        let ops = {
            let mut ix = self.index_mut();
            ix.tasks.mark_durable(&created);
            for id in &created {
                if let Some(t) = ix.tasks.get(*id)
                    && !push.contains(&t.rec.peer_id)
                {
                    push.push(t.rec.peer_id.clone());
                }
            }
            let now = now_ms();
            let mut ops = Vec::new();
            for peer in &push {
                ops.extend(self.push_due(&mut ix, peer, now));
            }
            ops
        };
        for op in ops {
            self.inner.writer.send(op).await?;
        }
        Ok(())
    }

    /// Marks the files of peers whose liveness changed dirty; cancels fetches to lost peers.
    fn check_liveness(&self, ix: &mut Index, st: &mut Planner, now: i64, out: &mut Outcome) {
        let mut changed = Vec::new();
        for id in ix.peers.keys() {
            let l = self.liveness(ix, id, now);
            if st.liveness.insert(id.clone(), l) != Some(l) {
                changed.push((id.clone(), l));
            }
        }
        for (peer, l) in changed {
            for f in ix.files_of(&peer) {
                ix.dirty.insert(f);
            }
            if l == Liveness::Lost {
                for tid in ix.tasks.of_peer(&peer) {
                    if ix
                        .tasks
                        .get(tid)
                        .is_some_and(|t| t.rec.kind == TaskKind::Fetch)
                        && let Some(t) = ix.tasks.remove(tid)
                    {
                        ix.dirty.insert(t.rec.file_id);
                        out.ops.push(WriteOp::TaskDelete(tid));
                        out.cancelled += 1;
                    }
                }
            }
        }
    }

    /// Plans one file: fetches for chunks short of N, cancels moot fetches, drops surplus
    /// replicas. (Withdrawal is for `Unindex` only: a file that a sharer's node merely
    /// stopped listing stays available from its replicas.)
    fn plan_file(
        &self,
        ix: &mut Index,
        id: &FileId,
        now: i64,
        loads: &mut Loads,
        out: &mut Outcome,
    ) {
        let n = self.inner.cfg.replication as usize;
        let Some(f) = ix.files.get(id) else {
            // Forgotten: its fetches are moot (drops are still owed).
            cancel_fetches(ix, id, out);
            return;
        };
        let manifest = f.manifest.clone();
        let holders: Vec<(PeerId, HoldingKind, Liveness, Bitfield)> = f
            .holdings
            .iter()
            .map(|(p, h)| (p.clone(), h.kind, self.liveness(ix, p, now), h.have.clone()))
            .collect();
        // Pending work on this file, per chunk.
        let mut fetching: HashMap<u32, Vec<(u64, PeerId)>> = HashMap::new();
        let mut dropping: HashMap<u32, Vec<PeerId>> = HashMap::new();
        for tid in ix.tasks.of_file(id) {
            let Some(t) = ix.tasks.get(tid) else {
                continue;
            };
            for &c in &t.rec.chunks {
                match t.rec.kind {
                    TaskKind::Fetch => fetching
                        .entry(c)
                        .or_default()
                        .push((tid, t.rec.peer_id.clone())),
                    TaskKind::Drop => dropping.entry(c).or_default().push(t.rec.peer_id.clone()),
                }
            }
        }
        let mut drops: BTreeMap<PeerId, Vec<u32>> = BTreeMap::new();
        let mut rng = rand::rng();
        for i in 0..manifest.chunk_count() {
            let held: Vec<&(PeerId, HoldingKind, Liveness, Bitfield)> =
                holders.iter().filter(|h| h.3.get(i)).collect();
            let up = held.iter().filter(|h| h.2 == Liveness::Up).count();
            let live = up + held.iter().filter(|h| h.2 == Liveness::Down).count();
            let mut pending = fetching.remove(&i).unwrap_or_default();
            pending.retain(|(tid, peer)| {
                let moot = live >= n || self.liveness(ix, peer, now) == Liveness::Lost;
                if moot {
                    ix.tasks.remove(*tid);
                    out.ops.push(WriteOp::TaskDelete(*tid));
                    out.cancelled += 1;
                }
                !moot
            });
            let need = n.saturating_sub(live + pending.len());
            let no_drops = Vec::new();
            let dropping_i = dropping.get(&i).unwrap_or(&no_drops);
            if need > 0 && up > 0 {
                loads.ensure(ix, now);
                let len = {
                    let r = manifest.chunk_range(i);
                    r.end - r.start
                };
                let Loads { ids, peers, .. } = &mut *loads;
                let tasks = &ix.tasks;
                let excluded = |k: usize| {
                    let p = &ids[k];
                    held.iter().any(|h| h.0 == *p)
                        || pending.iter().any(|(_, q)| q == p)
                        || dropping_i.contains(p)
                        || tasks.is_avoided(id, i, p, now)
                };
                let chosen = policy::place(peers, excluded, len, need, &mut rng);
                for k in chosen {
                    let peer = loads.ids[k].clone();
                    let rec = ix
                        .tasks
                        .create(&peer, TaskKind::Fetch, *id, vec![i], len, now);
                    out.created.push(rec.id);
                    out.ops.push(WriteOp::Task(rec));
                    out.fetches += 1;
                }
            }
            // Surplus: more up copies than N, not counting those already being dropped.
            let keep: Vec<&&(PeerId, HoldingKind, Liveness, Bitfield)> = held
                .iter()
                .filter(|h| h.2 == Liveness::Up && !dropping_i.contains(&h.0))
                .collect();
            if keep.len() > n {
                loads.ensure(ix, now);
                let candidates: Vec<usize> = keep
                    .iter()
                    .filter(|h| h.1 == HoldingKind::Replica)
                    .filter_map(|h| loads.pos.get(&h.0).copied())
                    .collect();
                for k in policy::surplus(&loads.peers, &candidates, keep.len() - n) {
                    drops.entry(loads.ids[k].clone()).or_default().push(i);
                }
            }
        }
        for (peer, chunks) in drops {
            let rec = ix.tasks.create(&peer, TaskKind::Drop, *id, chunks, 0, now);
            out.created.push(rec.id);
            out.ops.push(WriteOp::Task(rec));
            out.drops += 1;
        }
    }

    /// Pushes `peer`'s due tasks on its stream, if it has one open, up to the in-flight
    /// limit. Returns the rows to persist (delivered, with their lease).
    fn push_due(&self, ix: &mut Index, peer: &PeerId, now: i64) -> Vec<WriteOp> {
        let Some((conn, tx)) = lock(&self.inner.streams)
            .get(peer)
            .map(|s| (s.conn, s.tx.clone()))
        else {
            return Vec::new();
        };
        let lease_until = now.saturating_add(duration_ms(self.inner.cfg.task_lease));
        let ticket_ttl = duration_ms(self.inner.cfg.ticket_ttl);
        let retry_at = now.saturating_add(duration_ms(PUSH_RETRY));
        let ids = ix.tasks.of_peer(peer);
        let mut in_flight = ids
            .iter()
            .filter(|&&id| {
                ix.tasks
                    .get(id)
                    .is_some_and(|t| t.rec.state == TaskState::Delivered)
            })
            .count();
        let mut ops = Vec::new();
        for id in ids {
            if in_flight >= MAX_IN_FLIGHT {
                break;
            }
            if !ix.tasks.is_due(id, now) {
                continue;
            }
            let Some(a) = assignment(ix, id, now, &self.inner.tickets, ticket_ttl) else {
                // No source is up right now: try again later.
                ix.tasks.requeue(id, retry_at);
                continue;
            };
            match tx.try_send(a) {
                Ok(()) => {
                    in_flight += 1;
                    if let Some(rec) = ix.tasks.deliver(id, lease_until) {
                        ops.push(WriteOp::Task(rec));
                    }
                }
                Err(TrySendError::Full(_)) => {
                    ix.tasks.requeue(id, retry_at);
                    break;
                }
                Err(TrySendError::Closed(_)) => {
                    let mut streams = lock(&self.inner.streams);
                    if streams.get(peer).is_some_and(|s| s.conn == conn) {
                        streams.remove(peer);
                    }
                    break;
                }
            }
        }
        ops
    }

    /// Opens `peer`'s task stream (replacing an older one) and pushes its due tasks.
    ///
    /// # Errors
    /// `PermissionDenied` for another user's peer.
    pub async fn open_tasks(
        &self,
        caller: &Caller,
        peer: &PeerId,
    ) -> Result<mpsc::Receiver<Assignment>, Error> {
        let now = now_ms();
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        let ops = {
            let mut ix = self.index_mut();
            let mut ops: Vec<WriteOp> = claim_peer(&mut ix, caller, peer, now)?
                .into_iter()
                .collect();
            let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
            lock(&self.inner.streams).insert(peer.clone(), TaskStream { conn, tx });
            ops.extend(self.push_due(&mut ix, peer, now));
            ops
        };
        for op in ops {
            self.inner.writer.send(op).await?;
        }
        Ok(rx)
    }

    /// Records a task's outcome: a fetched chunk becomes a replica holding, a drop clears
    /// one, a failure is retried with back-off (and given up after five).
    ///
    /// # Errors
    /// `NotFound` for a task unknown to this peer (or cancelled), `PermissionDenied` for
    /// another user's peer.
    pub async fn complete_task(
        &self,
        caller: &Caller,
        peer: &PeerId,
        task: u64,
        ok: bool,
        error: &str,
    ) -> Result<(), Error> {
        let now = now_ms();
        let unknown = || Error::not_found(format!("unknown task {task}"));
        let ops = {
            let mut ix = self.index_mut();
            match ix.peers.get(peer) {
                None => return Err(unknown()),
                Some(p) if p.rec.user_id != caller.user_id => return Err(not_yours(peer)),
                Some(_) => {}
            }
            let t = ix
                .tasks
                .get(task)
                .filter(|t| t.rec.peer_id == *peer)
                .ok_or_else(unknown)?;
            let (kind, file, chunks) = (t.rec.kind, t.rec.file_id, t.rec.chunks.clone());
            let mut ops = Vec::new();
            if ok {
                ix.tasks.remove(task);
                ops.push(WriteOp::TaskDelete(task));
                let held = ix.files.get(&file).map(|f| {
                    let count = f.manifest.chunk_count();
                    let h = f.holdings.get(peer).cloned();
                    (count, h)
                });
                match (kind, held) {
                    (TaskKind::Fetch, Some((count, h))) => {
                        let mut h = h.unwrap_or_else(|| Holding {
                            kind: HoldingKind::Replica,
                            have: Bitfield::new(count),
                            updated_at_ms: now,
                        });
                        for &c in chunks.iter().filter(|&&c| c < count) {
                            h.have.set(c);
                        }
                        h.updated_at_ms = now;
                        ops.push(WriteOp::Holding(holding_record(peer, file, &h)));
                        ix.set_holding(file, peer, h);
                    }
                    (TaskKind::Drop, Some((count, Some(mut h))))
                        if h.kind == HoldingKind::Replica =>
                    {
                        for &c in chunks.iter().filter(|&&c| c < count) {
                            h.have.clear(c);
                        }
                        if h.have.count() == 0 && count > 0 {
                            ix.take_holding(&file, peer);
                            ops.push(WriteOp::HoldingDelete(peer.clone(), file));
                        } else {
                            h.updated_at_ms = now;
                            ops.push(WriteOp::Holding(holding_record(peer, file, &h)));
                            ix.set_holding(file, peer, h);
                        }
                    }
                    _ => {}
                }
            } else {
                let error: String = error.chars().take(1000).collect();
                match ix.tasks.fail(task, error, now) {
                    Some(Failed::Retry(rec)) => ops.push(WriteOp::Task(rec)),
                    Some(Failed::GaveUp(t)) => {
                        tracing::debug!(
                            task,
                            peer = %peer,
                            file = %file,
                            error = t.rec.last_error.as_deref().unwrap_or(""),
                            "task given up"
                        );
                        ops.push(WriteOp::TaskDelete(task));
                        ix.dirty.insert(file);
                    }
                    None => {}
                }
            }
            ops.extend(self.push_due(&mut ix, peer, now));
            ops
        };
        for op in ops {
            self.inner.writer.send(op).await?;
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Applies what a request decided (its own writes first): queues the writes, commits
    /// them, then pushes any tasks it created.
    pub(super) async fn apply_outcome(&self, out: Outcome) -> Result<(), Error> {
        let created = !out.created.is_empty();
        self.apply(out, None).await?;
        if !created {
            self.inner.writer.flush().await?;
        }
        Ok(())
    }
}

/// Withdraws `file` into `out` if no user (shared or downloaded holding) holds it any
/// more; returns whether it did.
pub(super) fn withdraw_if_unheld(
    ix: &mut Index,
    file: &FileId,
    now: i64,
    out: &mut Outcome,
) -> bool {
    let Some(f) = ix.files.get(file) else {
        return false;
    };
    if f.holdings.values().any(|h| h.kind != HoldingKind::Replica) {
        return false;
    }
    withdraw(ix, file, now, out);
    true
}

/// Deletes every fetch task of `file` (moot once the file is forgotten); drops stay, since
/// they are still owed to their peers.
fn cancel_fetches(ix: &mut Index, file: &FileId, out: &mut Outcome) {
    for tid in ix.tasks.of_file(file) {
        if ix
            .tasks
            .get(tid)
            .is_some_and(|t| t.rec.kind == TaskKind::Fetch)
        {
            ix.tasks.remove(tid);
            out.ops.push(WriteOp::TaskDelete(tid));
            out.cancelled += 1;
        }
    }
}

/// Forgets a file no user holds: cancels its fetches, queues a drop for every replica
/// holder (kept until that peer is back), removes the holdings and the file.
fn withdraw(ix: &mut Index, file: &FileId, now: i64, out: &mut Outcome) {
    cancel_fetches(ix, file, out);
    let Some(f) = ix.remove_file(file) else {
        return;
    };
    let mut holders: Vec<(PeerId, Holding)> = f.holdings.into_iter().collect();
    holders.sort_by(|a, b| a.0.cmp(&b.0));
    for (peer, h) in holders {
        out.ops.push(WriteOp::HoldingDelete(peer.clone(), *file));
        let chunks: Vec<u32> = h.have.iter_ones().collect();
        if h.kind == HoldingKind::Replica && !chunks.is_empty() {
            let rec = ix
                .tasks
                .create(&peer, TaskKind::Drop, *file, chunks, 0, now);
            out.created.push(rec.id);
            out.ops.push(WriteOp::Task(rec));
            out.drops += 1;
        }
    }
    out.ops.push(WriteOp::FileDelete(*file));
    tracing::debug!(file = %file, "file withdrawn: no user holds it");
}

/// The message for a task, with a fetch's current sources and a fresh ticket for its node;
/// `None` when a fetch has no source up (or its file is gone).
fn assignment(
    ix: &Index,
    id: u64,
    now: i64,
    tickets: &TicketSigner,
    ticket_ttl: i64,
) -> Option<Assignment> {
    let t = ix.tasks.get(id)?;
    let file = t.rec.file_id;
    if t.rec.kind == TaskKind::Drop {
        return Some(Assignment::Drop {
            id,
            file,
            chunks: t.rec.chunks.clone(),
        });
    }
    let f = ix.files.get(&file)?;
    let chunk = *t.rec.chunks.first()?;
    let m = &f.manifest;
    if chunk >= m.chunk_count() {
        return None;
    }
    let mut sources: Vec<HolderView> = f
        .holdings
        .iter()
        .filter(|(p, h)| **p != t.rec.peer_id && h.have.get(chunk) && ix.is_serving(p, now))
        .filter_map(|(p, _)| {
            Some(HolderView {
                peer_id: p.clone(),
                addr: ix.peers.get(p)?.rec.addr.clone(),
                have: None,
            })
        })
        .collect();
    if sources.is_empty() {
        return None;
    }
    sources.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    let range = m.chunk_range(chunk);
    let node = &t.rec.peer_id;
    let user = ix.peers.get(node).map_or("", |p| p.user.as_str());
    let ticket = super::tickets::issue(tickets, ticket_ttl, file, Some(node.clone()), user);
    Some(Assignment::Fetch(FetchAssignment {
        id,
        file,
        chunk,
        sha256: m.chunk_hashes[chunk as usize],
        len: u32::try_from(range.end - range.start).unwrap_or(u32::MAX),
        name: m.name.clone(),
        file_size: m.size,
        chunk_size: m.chunk_size,
        sources,
        ticket: Box::new(ticket),
    }))
}
