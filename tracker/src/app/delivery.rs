//! Delivery of replication tasks on [`TrackerService`]: each node's `Tasks` stream, the
//! pushing of its due tasks under a lease, and what a node reports back when it is done
//! (committed before it answers, see `commit`).
//! The planner that creates the tasks is in `replication`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::ticket::PUBLIC_KEY_LEN;
use common::{Bitfield, FileId, PeerId, TicketSigner};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::commit::{Change, Plan};
use super::holdings::{claim_peer, holding_record, not_yours};
use super::index::{Holding, Index};
use super::{
    Assignment, Caller, FetchAssignment, HolderView, TaskStream, TrackerService, duration_ms, lock,
};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::model::{HoldingKind, TaskKind, TaskState, now_ms};
use crate::replication::tasks::Failed;

/// Tasks a node may have delivered and not completed; more are pushed as it completes.
const MAX_IN_FLIGHT: usize = 32;
/// Capacity of a node's task channel.
const STREAM_CAPACITY: usize = 64;
/// Retry delay for a task that could not be pushed (no source up, channel full).
const PUSH_RETRY: Duration = Duration::from_secs(1);
/// How often a waiting get whose file is not held by peers that are up is checked again,
/// for a peer with up to [`GETS_PER_RECHECK`] of them; more stretch it, so one node costs
/// at most that many checks each period however many gets it queues.
const GET_RECHECK: Duration = Duration::from_secs(2);
const GETS_PER_RECHECK: usize = 16;

fn get_recheck(ix: &Index, peer: &PeerId) -> Duration {
    let n = ix.tasks.gets_of(peer).count();
    GET_RECHECK * u32::try_from(n.div_ceil(GETS_PER_RECHECK).max(1)).unwrap_or(u32::MAX)
}

impl TrackerService {
    /// [`Self::push_due`] for each of `peers`.
    pub(super) fn push_due_all<'a>(
        &self,
        ix: &mut Index,
        peers: impl IntoIterator<Item = &'a PeerId>,
        now: i64,
    ) -> Vec<WriteOp> {
        peers
            .into_iter()
            .flat_map(|p| self.push_due(ix, p, now))
            .collect()
    }

    /// Pushes `peer`'s due tasks on its stream, if it has one open, up to the in-flight
    /// limit. Returns the rows to persist (delivered, with their lease).
    pub(super) fn push_due(&self, ix: &mut Index, peer: &PeerId, now: i64) -> Vec<WriteOp> {
        let Some((conn, tx, key)) = lock(&self.inner.streams)
            .get(peer)
            .map(|s| (s.conn, s.tx.clone(), s.key))
        else {
            return Vec::new();
        };
        let lease_until = now.saturating_add(duration_ms(self.inner.cfg.task_lease));
        let signing = Signing {
            signer: &self.inner.tickets,
            ttl_ms: duration_ms(self.inner.cfg.ticket_ttl),
            key,
        };
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
            let Some(a) = assignment(ix, id, now, &signing) else {
                // No source is up right now: try again later.
                let get = ix
                    .tasks
                    .get(id)
                    .is_some_and(|t| t.rec.kind == TaskKind::Get);
                let wait = if get {
                    get_recheck(ix, peer)
                } else {
                    PUSH_RETRY
                };
                ix.tasks.requeue(id, now.saturating_add(duration_ms(wait)));
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

    /// Opens `peer`'s task stream (replacing an older one) and pushes its due tasks. The
    /// tickets of its fetches name `key`, the node's own public key, which it proves when
    /// it fetches.
    ///
    /// # Errors
    /// `PermissionDenied` for another user's peer.
    pub async fn open_tasks(
        &self,
        caller: &Caller,
        peer: &PeerId,
        key: [u8; PUBLIC_KEY_LEN],
    ) -> Result<mpsc::Receiver<Assignment>, Error> {
        let now = now_ms();
        let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
        {
            let mut ix = self.index_mut();
            let mut ops: Vec<WriteOp> = claim_peer(&mut ix, caller, peer, now)?
                .into_iter()
                .collect();
            let conn = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
            lock(&self.inner.streams).insert(peer.clone(), TaskStream { conn, tx, key });
            let expired = ix.tasks.expire_leases(peer, now);
            ops.extend(expired.into_iter().map(WriteOp::Task));
            ops.extend(self.push_due(&mut ix, peer, now));
            self.inner.writer.queue(ops)?;
        }
        self.inner.writer.ready().await;
        Ok(rx)
    }

    /// Records a task's outcome: a fetched chunk becomes a replica holding, a drop clears
    /// one, a failure is retried with back-off (and given up after five). Committed before
    /// memory changes and before it returns (see `commit`).
    ///
    /// # Errors
    /// `NotFound` for a task unknown to this peer (or cancelled), `PermissionDenied` for
    /// another user's peer; `Database` when the commit failed (then nothing changed).
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
        let error: String = error.chars().take(1000).collect();
        self.write_through(|ix| {
            match ix.peers.get(peer) {
                None => return Err(unknown()),
                Some(p) if p.rec.user_id != caller.user_id => return Err(not_yours(peer)),
                Some(_) => {}
            }
            let t = (ix.tasks.get(task))
                .filter(|t| t.rec.peer_id == *peer)
                .ok_or_else(unknown)?;
            let (kind, file, chunks) = (t.rec.kind, t.rec.file_id, t.rec.chunks.clone());
            let mut ops = Vec::new();
            if ok {
                ops.push(WriteOp::TaskDelete(task));
                match holding_after(ix, peer, kind, &file, &chunks, now) {
                    Some(Some(h)) => ops.push(WriteOp::Holding(holding_record(peer, file, &h))),
                    Some(None) => ops.push(WriteOp::HoldingDelete(peer.clone(), file)),
                    None => {}
                }
            } else {
                ops.push(match ix.tasks.failed_row(task, error.clone(), now) {
                    Some(rec) => WriteOp::Task(rec),
                    None => WriteOp::TaskDelete(task),
                });
            }
            let (svc, peer, error) = (self.clone(), peer.clone(), error.clone());
            let change: Change<()> = Box::new(move |ix| {
                let done = Done {
                    task,
                    kind,
                    file,
                    chunks,
                };
                (svc.completed(ix, &peer, done, ok, error, now), ())
            });
            Ok(Plan::on_file(caller.user_id, file, ops, change))
        })
        .await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Applies a committed task outcome to memory; returns the rows it changed (and those
    /// of the tasks pushed next).
    fn completed(
        &self,
        ix: &mut Index,
        peer: &PeerId,
        done: Done,
        ok: bool,
        error: String,
        now: i64,
    ) -> Vec<WriteOp> {
        let Done {
            task,
            kind,
            file,
            chunks,
        } = done;
        let mut ops = Vec::new();
        if ok {
            ix.tasks.remove(task);
            ops.push(WriteOp::TaskDelete(task));
            match holding_after(ix, peer, kind, &file, &chunks, now) {
                Some(Some(h)) => {
                    if let Some(f) = ix.files.get(&file) {
                        let old = f.holdings.get(peer).map(|o| &o.have);
                        let empty = Bitfield::new(f.manifest.chunk_count());
                        let fresh: Vec<u32> = (chunks.iter().copied())
                            .filter(|&c| c < f.manifest.chunk_count())
                            .collect();
                        let (n, bytes) = super::holdings::fresh_chunks(
                            &f.manifest,
                            old.unwrap_or(&empty),
                            &fresh,
                        );
                        if kind == TaskKind::Fetch {
                            self.inner.metrics.chunks_reported(
                                crate::metrics::Source::Replication,
                                n,
                                bytes,
                            );
                        }
                    }
                    ops.push(WriteOp::Holding(holding_record(peer, file, &h)));
                    ix.set_holding(file, peer, h);
                }
                Some(None) => {
                    ix.take_holding(&file, peer);
                    ops.push(WriteOp::HoldingDelete(peer.clone(), file));
                }
                None => {}
            }
        } else {
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
        ops.extend(self.push_due(ix, peer, now));
        ops
    }
}

/// The task a completion is about, as it was when the completion was planned.
struct Done {
    task: u64,
    kind: TaskKind,
    file: FileId,
    chunks: Vec<u32>,
}

/// What `peer` holds of `file` once a completed task is applied: `Some(Some(h))` to set,
/// `Some(None)` to remove, `None` for no change (the file is gone, or a drop of a holding
/// that is not a replica).
fn holding_after(
    ix: &Index,
    peer: &PeerId,
    kind: TaskKind,
    file: &FileId,
    chunks: &[u32],
    now: i64,
) -> Option<Option<Holding>> {
    let f = ix.files.get(file)?;
    let count = f.manifest.chunk_count();
    let held = f.holdings.get(peer).cloned();
    let chunks = chunks.iter().copied().filter(|&c| c < count);
    match kind {
        TaskKind::Fetch => {
            let mut h = held.unwrap_or_else(|| {
                Holding::claimed(HoldingKind::Replica, Bitfield::new(count), now)
            });
            for c in chunks {
                h.have.set(c);
            }
            h.updated_at_ms = now;
            Some(Some(h))
        }
        TaskKind::Get => None,
        TaskKind::Drop => {
            let mut h = held.filter(|h| h.kind == HoldingKind::Replica)?;
            for c in chunks {
                h.have.clear(c);
            }
            if h.have.count() == 0 && count > 0 {
                return Some(None);
            }
            h.updated_at_ms = now;
            Some(Some(h))
        }
    }
}

/// How the tickets of one node's fetches are signed: for `--ticket-ttl`, naming the key
/// its stream was opened with.
struct Signing<'a> {
    signer: &'a TicketSigner,
    ttl_ms: i64,
    key: [u8; PUBLIC_KEY_LEN],
}

/// The message for a task, with a fetch's current sources and a fresh ticket for its node;
/// `None` when a fetch has no source up (or its file is gone).
fn assignment(ix: &Index, id: u64, now: i64, signing: &Signing<'_>) -> Option<Assignment> {
    let t = ix.tasks.get(id)?;
    let file = t.rec.file_id;
    match t.rec.kind {
        TaskKind::Drop => {
            return Some(Assignment::Drop {
                id,
                file,
                chunks: t.rec.chunks.clone(),
            });
        }
        TaskKind::Get => {
            // Worth a try once serving peers together hold every chunk, verified (a claim
            // counts once an audit passed, so a lie does not wake the getter).
            let held = ix.files.get(&file).is_some_and(|f| ix.holders(f, now) > 0);
            return held.then_some(Assignment::Get { id, file });
        }
        TaskKind::Fetch => {}
    }
    let f = ix.files.get(&file)?;
    let chunk = *t.rec.chunks.first()?;
    let m = &f.manifest;
    if chunk >= m.chunk_count() {
        return None;
    }
    // Verified copies only: a fetch from a mere claim would fail at the node and retry.
    let mut sources: Vec<HolderView> = f
        .holdings
        .iter()
        .filter(|(p, h)| **p != t.rec.peer_id && h.verified.get(chunk) && ix.is_serving(p, now))
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
    let ticket = super::tickets::issue(
        signing.signer,
        signing.ttl_ms,
        file,
        signing.key,
        Some(node.clone()),
        user,
    );
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
