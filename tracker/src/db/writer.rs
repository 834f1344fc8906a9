//! The batch writer: the one task that writes peers, files and holdings.
//!
//! Heartbeats and chunk reports arrive many times a second; writing each would make the
//! database the bottleneck. The domain updates its in-memory state first and then queues a
//! [`WriteOp`] here. The writer coalesces ops for the same row (the last state wins), and
//! writes a [`Batch`] in one transaction every [`FLUSH_INTERVAL`] or once [`MAX_PENDING`] ops
//! are queued. Rare writes that must be durable before the caller hears back (announce,
//! unindex) queue their ops and then wait on [`Writer::flush`].
//!
//! Order: callers [`Writer::queue`] their ops *while still holding the lock* under which
//! they changed memory, so the queue's order is the order of the changes, across callers.
//! (Queueing after the lock is released let a task's "delivered" update overtake the
//! "done" that followed it, and resurrect the task.) Queueing never waits; callers then
//! await [`Writer::ready`] outside the lock, which is the backpressure.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{FileId, PeerId};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Store;
use crate::Error;
use crate::model::{FileRecord, HoldingRecord, PeerRecord, TaskRecord};

/// How long an update may wait before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(200);
/// Queued ops that trigger a write before the interval ends.
pub const MAX_PENDING: usize = 1000;
/// Tries of the last write at shutdown, a second apart.
const FINAL_ATTEMPTS: u32 = 5;
/// Most ops a flush folds in from the queue before it writes (group commit).
const GROUP_LIMIT: usize = 8 * MAX_PENDING;
/// Queued ops beyond which [`Writer::ready`] waits (backpressure) for the database.
const QUEUE_CAPACITY: usize = 16 * 1024;

/// One change to persist.
#[derive(Debug, Clone)]
pub enum WriteOp {
    /// Insert or update a peer (owner and creation time are kept on update).
    Peer(PeerRecord),
    /// Insert a file unless it exists.
    FileUpsert(FileRecord),
    FileDelete(FileId),
    /// Insert or replace one holding.
    Holding(HoldingRecord),
    HoldingDelete(PeerId, FileId),
    /// Delete every holding of a peer (the start of a full sync).
    ClearHoldings(PeerId),
    /// Insert or update a replication task.
    Task(TaskRecord),
    TaskDelete(u64),
}

/// Coalesced changes, written in one transaction in this order: peers, new files, cleared
/// peers' holdings, holding upserts and deletes, deleted files, task upserts and deletes.
#[derive(Debug, Default)]
pub struct Batch {
    pub peers: HashMap<PeerId, PeerRecord>,
    /// `None` deletes the file.
    pub files: HashMap<FileId, Option<FileRecord>>,
    pub cleared: HashSet<PeerId>,
    /// `None` deletes the holding.
    pub holdings: HashMap<(PeerId, FileId), Option<HoldingRecord>>,
    /// `None` deletes the task.
    pub tasks: HashMap<u64, Option<TaskRecord>>,
    ops: usize,
}

impl Batch {
    /// Folds `op` in; the last op for a row wins.
    pub fn push(&mut self, op: WriteOp) {
        self.ops += 1;
        match op {
            WriteOp::Peer(p) => {
                self.peers.insert(p.id.clone(), p);
            }
            WriteOp::FileUpsert(f) => {
                self.files.insert(f.id(), Some(f));
            }
            WriteOp::FileDelete(id) => {
                self.files.insert(id, None);
            }
            WriteOp::Holding(h) => {
                self.holdings
                    .insert((h.peer_id.clone(), h.file_id), Some(h));
            }
            WriteOp::HoldingDelete(p, f) => {
                self.holdings.insert((p, f), None);
            }
            WriteOp::ClearHoldings(p) => {
                // Earlier changes to this peer's holdings are superseded by the clear, which
                // runs before the holding changes that follow it.
                self.holdings.retain(|(peer, _), _| *peer != p);
                self.cleared.insert(p);
            }
            WriteOp::Task(t) => {
                self.tasks.insert(t.id, Some(t));
            }
            WriteOp::TaskDelete(id) => {
                self.tasks.insert(id, None);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Ops folded in since the last write.
    pub fn ops(&self) -> usize {
        self.ops
    }
}

enum Msg {
    Op(WriteOp),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The sending side; cheap to clone.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    backlog: Arc<Backlog>,
}

/// Ops queued and not yet taken by the writer task, and a wake-up for [`Writer::ready`].
#[derive(Debug, Default)]
struct Backlog {
    queued: AtomicUsize,
    drained: Notify,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

fn stopped() -> Error {
    Error::Internal("the database writer has stopped".into())
}

impl Writer {
    /// Starts the writer task. It ends, after writing everything queued, once every
    /// [`Writer`] clone is dropped.
    pub fn spawn(store: Store) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let handle = tokio::spawn(run(store, rx, backlog.clone()));
        (Writer { tx, backlog }, handle)
    }

    /// Queues `ops` in order, at once. Call it under the lock that guarded the memory
    /// changes the ops persist (see the module doc), then [`Writer::ready`] after it.
    ///
    /// # Errors
    /// [`Error::Internal`] when the writer has stopped.
    pub fn queue(&self, ops: impl IntoIterator<Item = WriteOp>) -> Result<(), Error> {
        for op in ops {
            self.backlog.queued.fetch_add(1, Ordering::Relaxed);
            self.tx.send(Msg::Op(op)).map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Waits while the writer is more than [`QUEUE_CAPACITY`] ops behind.
    pub async fn ready(&self) {
        loop {
            let drained = self.backlog.drained.notified();
            if self.backlog.queued.load(Ordering::Relaxed) <= QUEUE_CAPACITY {
                return;
            }
            drained.await;
        }
    }

    /// Writes everything queued so far and waits until it is committed.
    ///
    /// # Errors
    /// [`Error::Internal`] when the write failed or the writer has stopped.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).map_err(|_| stopped())?;
        rx.await
            .map_err(|_| stopped())?
            .map_err(|e| Error::Internal(format!("database write failed: {e}")))
    }
}

async fn run(store: Store, mut rx: mpsc::UnboundedReceiver<Msg>, backlog: Arc<Backlog>) {
    let mut batch = Batch::default();
    // After a failed write, retry on the timer only, not on every new op.
    let mut failing = false;
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let take = |batch: &mut Batch, op: WriteOp| {
        if backlog.queued.fetch_sub(1, Ordering::Relaxed) == QUEUE_CAPACITY + 1 {
            backlog.drained.notify_waiters();
        }
        batch.push(op);
    };
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Op(op)) => {
                    take(&mut batch, op);
                    if batch.ops() >= MAX_PENDING && !failing {
                        failing = write(&store, &mut batch).await.is_err();
                    }
                }
                Some(Msg::Flush(done)) => {
                    // Group commit: fold in what is already queued behind this flush (in
                    // queue order, so change order holds), and let one transaction answer
                    // every flush among it. Many concurrent announces then cost a few
                    // commits, not one each (which an fsync per commit makes slow).
                    let mut waiters = vec![done];
                    while batch.ops() < GROUP_LIMIT {
                        match rx.try_recv() {
                            Ok(Msg::Op(op)) => take(&mut batch, op),
                            Ok(Msg::Flush(done)) => waiters.push(done),
                            Err(_) => break,
                        }
                    }
                    let res = write(&store, &mut batch).await;
                    failing = res.is_err();
                    // A caller may have gone away; the write stands either way.
                    for done in waiters {
                        let _ = done.send(res.clone());
                    }
                }
                None => break,
            },
            _ = tick.tick() => {
                failing = write(&store, &mut batch).await.is_err();
            }
        }
    }
    // The last write at shutdown: a database that is briefly locked or unreachable gets a
    // few more chances before what is queued is given up.
    for attempt in 1..=FINAL_ATTEMPTS {
        match write(&store, &mut batch).await {
            Ok(()) => return,
            Err(e) if attempt == FINAL_ATTEMPTS => {
                tracing::error!(cause = %e, "final database write failed; recent updates are lost");
            }
            Err(_) => tokio::time::sleep(FLUSH_INTERVAL * 5).await,
        }
    }
}

/// Writes `batch` and empties it. On failure the batch is kept, so it is retried with the
/// next write (newer ops fold in on top).
async fn write(store: &Store, batch: &mut Batch) -> Result<(), String> {
    if batch.is_empty() {
        return Ok(());
    }
    match store.apply(batch).await {
        Ok(()) => {
            *batch = Batch::default();
            Ok(())
        }
        Err(e) => {
            tracing::error!(cause = %e, ops = batch.ops(), "database write failed; will retry");
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HoldingKind;

    fn peer(n: u8) -> PeerId {
        PeerId::from_random([n; 16])
    }

    fn file(n: u8) -> FileId {
        FileId(common::Sha256Digest([n; 32]))
    }

    fn holding(p: u8, f: u8, have: u8) -> HoldingRecord {
        HoldingRecord {
            peer_id: peer(p),
            file_id: file(f),
            kind: HoldingKind::Downloaded,
            have: vec![have],
            updated_at_ms: 0,
        }
    }

    fn seen(p: u8, at: i64) -> PeerRecord {
        PeerRecord {
            id: peer(p),
            user_id: 1,
            addr: format!("h:{at}"),
            storage_quota: 0,
            storage_used: 0,
            last_seen_ms: Some(at),
            created_at_ms: 0,
        }
    }

    #[test]
    fn should_keep_only_the_last_update_of_a_row() {
        let mut b = Batch::default();
        for at in 0..10 {
            b.push(WriteOp::Peer(seen(1, at)));
        }
        b.push(WriteOp::Holding(holding(1, 1, 0x80)));
        b.push(WriteOp::Holding(holding(1, 1, 0xc0)));
        b.push(WriteOp::Holding(holding(2, 1, 0x80)));
        assert_eq!(b.ops(), 13);
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.peers[&peer(1)].last_seen_ms, Some(9));
        assert_eq!(b.holdings.len(), 2);
        assert_eq!(
            b.holdings[&(peer(1), file(1))]
                .as_ref()
                .map(|h| h.have.clone()),
            Some(vec![0xc0])
        );
        b.push(WriteOp::HoldingDelete(peer(1), file(1)));
        assert!(b.holdings[&(peer(1), file(1))].is_none());
    }

    #[test]
    fn should_drop_earlier_holdings_of_a_cleared_peer_but_keep_later_ones() {
        let mut b = Batch::default();
        b.push(WriteOp::Holding(holding(1, 1, 0x80)));
        b.push(WriteOp::Holding(holding(2, 1, 0x80)));
        b.push(WriteOp::ClearHoldings(peer(1)));
        b.push(WriteOp::Holding(holding(1, 2, 0x80)));
        assert!(b.cleared.contains(&peer(1)));
        assert!(!b.holdings.contains_key(&(peer(1), file(1))));
        assert!(b.holdings.contains_key(&(peer(1), file(2))));
        assert!(b.holdings.contains_key(&(peer(2), file(1))));
    }

    #[test]
    fn should_let_a_delete_override_an_earlier_file_insert() {
        let m = common::Manifest::from_parts(
            "a".into(),
            1,
            common::Sha256Digest([0; 32]),
            common::manifest::MIN_CHUNK_SIZE,
            &[0; 32],
        )
        .unwrap();
        let f = FileRecord {
            manifest: m,
            created_at_ms: 0,
        };
        let id = f.id();
        let mut b = Batch::default();
        b.push(WriteOp::FileUpsert(f));
        b.push(WriteOp::FileDelete(id));
        assert!(b.files[&id].is_none());
    }
}
