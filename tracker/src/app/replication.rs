//! Replication on [`TrackerService`]: the planner that turns missing and surplus copies into
//! tasks, and the withdrawal of a file that no user holds any more. Delivering the tasks to
//! nodes and hearing back from them is in `delivery`.
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
use std::time::{Duration, Instant};

use common::{Bitfield, FileId, PeerId};
use tokio_util::sync::CancellationToken;

use super::index::{Holding, Index};
use super::{TrackerService, duration_ms, lock};
use crate::Error;
use crate::db::writer::{WriteOp, Writer};
use crate::model::{HoldingKind, TaskKind, TaskRecord, now_ms};
use crate::replication::policy::{self, PeerLoad};

/// How often the planner looks at liveness and timers when nothing wakes it.
const TICK: Duration = Duration::from_millis(100);
/// After a wake-up, how long to wait so a burst of events is planned in one round.
const DEBOUNCE: Duration = Duration::from_millis(30);
/// How often every file is planned, whatever changed.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(10);
/// Files planned per hold of the index lock during a full sweep.
const SWEEP_BATCH: usize = 256;

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
    /// Whether this tracker held the planner lease last round.
    was_leader: bool,
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
    /// Queues the writes decided so far; call it before releasing the index lock under
    /// which they were decided (see `db::writer` on order).
    pub(super) fn queue(&mut self, writer: &Writer) -> Result<(), Error> {
        writer.queue(std::mem::take(&mut self.ops))
    }

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
    /// Runs the planner (and the change-feed follower, see `follow`) until `shutdown` is
    /// cancelled, then closes every task stream.
    pub async fn replicate(self, shutdown: CancellationToken) {
        let follower = tokio::spawn(self.clone().follow(shutdown.clone()));
        let auditor = tokio::spawn(self.clone().audit(shutdown.clone()));
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
        if let Err(e) = follower.await {
            tracing::error!(cause = %e, "the change-feed follower failed");
        }
        if let Err(e) = auditor.await {
            tracing::error!(cause = %e, "the auditor failed");
        }
    }

    fn liveness(&self, ix: &Index, peer: &PeerId, now: i64) -> Liveness {
        let Some(p) = ix.peers.get(peer).filter(|_| !ix.is_demoted(peer, now)) else {
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
        // Only the lease holder plans; a new holder starts from a full sweep and fresh
        // liveness, since it has not been watching.
        let leader = self.is_leader();
        if leader && !st.was_leader {
            st.liveness.clear();
            st.last_sweep = None;
        }
        st.was_leader = leader;
        let full = leader && st.last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_INTERVAL);
        let mut out = Outcome::default();
        let sweep: Vec<FileId> = {
            let mut ix = self.index_mut();
            if leader {
                self.check_liveness(&mut ix, st, now, &mut out);
            }
            let (peers, changed) = {
                let streams = lock(&self.inner.streams);
                ix.tasks.fire_timers(now, |p| streams.contains_key(p))
            };
            out.ops.extend(changed.into_iter().map(WriteOp::Task));
            for p in &peers {
                out.push_peer(p);
            }
            let dirty: Vec<FileId> = ix.dirty.drain().collect();
            let sweep = if !leader {
                Vec::new()
            } else if full {
                st.last_sweep = Some(Instant::now());
                ix.files.keys().copied().collect()
            } else {
                let mut loads = Loads::default();
                for id in dirty {
                    self.plan_file(&mut ix, &id, now, &mut loads, &mut out);
                }
                Vec::new()
            };
            out.queue(&self.inner.writer)?;
            sweep
        };
        for batch in sweep.chunks(SWEEP_BATCH) {
            let mut ix = self.index_mut();
            let mut loads = Loads::default();
            for id in batch {
                self.plan_file(&mut ix, id, now, &mut loads, &mut out);
            }
            out.queue(&self.inner.writer)?;
        }
        self.apply(out, Some(st)).await
    }

    /// Commits the outcome's writes (queued already) if it created tasks, then pushes.
    async fn apply(&self, out: Outcome, st: Option<&mut Planner>) -> Result<(), Error> {
        let Outcome {
            ops,
            mut created,
            mut push,
            fetches,
            drops,
            cancelled,
        } = out;
        debug_assert!(
            ops.is_empty(),
            "an outcome's writes are queued under the lock"
        );
        self.inner.writer.ready().await;
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
        {
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
            let ops = self.push_due_all(&mut ix, &push, now);
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
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
            .map(|(p, h)| {
                (
                    p.clone(),
                    h.kind,
                    self.liveness(ix, p, now),
                    h.verified.clone(),
                )
            })
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
                    TaskKind::Get => {}
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
            // Only replica copies are ever dropped: without one, skip building the load
            // table (a full pass over every holding) for a popular file's downloaded copies.
            if keep.len() > n && keep.iter().any(|h| h.1 == HoldingKind::Replica) {
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

/// The rows of withdrawing `file` once `except` (the unindexing peer, whose holding the
/// caller deletes) is gone, computed without changing memory (but for the drop tasks' ids):
/// what [`withdraw`] would do. Returns the drop tasks, for [`withdraw_planned`].
pub(super) fn plan_withdrawal(
    ix: &mut Index,
    file: &FileId,
    except: &PeerId,
    now: i64,
    ops: &mut Vec<WriteOp>,
) -> Vec<TaskRecord> {
    for tid in ix.tasks.of_file(file) {
        if ix
            .tasks
            .get(tid)
            .is_some_and(|t| t.rec.kind == TaskKind::Fetch)
        {
            ops.push(WriteOp::TaskDelete(tid));
        }
    }
    let Some(f) = ix.files.get(file) else {
        return Vec::new();
    };
    let mut holders: Vec<(PeerId, HoldingKind, Vec<u32>)> = (f.holdings.iter())
        .filter(|(p, _)| *p != except)
        .map(|(p, h)| (p.clone(), h.kind, h.have.iter_ones().collect()))
        .collect();
    holders.sort_by(|a, b| a.0.cmp(&b.0));
    let mut drops = Vec::new();
    for (peer, kind, chunks) in holders {
        ops.push(WriteOp::HoldingDelete(peer.clone(), *file));
        if kind == HoldingKind::Replica && !chunks.is_empty() {
            let rec = ix.tasks.draft(&peer, TaskKind::Drop, *file, chunks, now);
            ops.push(WriteOp::Task(rec.clone()));
            drops.push(rec);
        }
    }
    ops.push(WriteOp::FileDelete(*file));
    drops
}

/// Withdraws `file` as [`plan_withdrawal`] planned it, its drop tasks committed already. (A
/// replica holder that appeared in between gets no drop task; its node keeps the chunks.)
pub(super) fn withdraw_planned(
    ix: &mut Index,
    file: &FileId,
    drops: Vec<TaskRecord>,
    out: &mut Outcome,
) {
    cancel_fetches(ix, file, out);
    if let Some(f) = ix.remove_file(file) {
        for peer in f.holdings.keys() {
            out.ops.push(WriteOp::HoldingDelete(peer.clone(), *file));
        }
    }
    for rec in drops {
        out.ops.push(WriteOp::Task(rec.clone()));
        ix.tasks.insert(rec, 0, true);
        out.drops += 1;
    }
    out.ops.push(WriteOp::FileDelete(*file));
    tracing::debug!(file = %file, "file withdrawn: no user holds it");
}
