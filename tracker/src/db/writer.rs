//! The batch writer: the one task that writes peers, files (and collections' listings),
//! holdings and tasks.
//!
//! Two kinds of writes go through it (see "Source of truth and cache" in ARCHITECTURE.md):
//!
//! - **Background facts** (heartbeats, chunk reports, holdings syncs, audit results, the
//!   planner's tasks): the domain changes memory first and [`Writer::queue`]s the rows. The
//!   writer coalesces them (the last op per row wins) into a [`Batch`] written in one
//!   transaction every [`FLUSH_INTERVAL`] or once [`MAX_PENDING`] ops are queued; a batch
//!   that fails is kept and retried, newer ops folding in on top.
//! - **Client-waited writes** (announce, unindex, task completion): [`Writer::commit`]
//!   carries the op's rows and the memory change to make once they are committed. The rows
//!   commit with the next transaction or are dropped with it, never retried: the caller is
//!   told which. Memory is changed by the writer itself right after the commit (the op's
//!   [`Apply`]), so nothing can be written between the commit and the change.
//!
//! Group commit: a transaction folds in everything queued so far, and answers every waiting
//! commit and flush among it, so many concurrent announces cost a few commits, not one each.
//! Its background rows are written first and the committed ops' rows last: the op's memory
//! change comes after every background change folded in, so the database sees the same
//! order.
//!
//! Order: callers [`Writer::queue`] their ops *while still holding the lock* under which
//! they changed memory, so the queue's order is the order of the changes, across callers.
//! (Queueing after the lock is released let a task's "delivered" update overtake the
//! "done" that followed it, and resurrect the task.) Queueing never waits; callers then
//! await [`Writer::ready`] outside the lock, which is the backpressure. A background op
//! queued after a committed op's transaction began but before its memory change was
//! computed without that change: its row would overwrite the committed one. So an
//! [`Apply`] calls [`Stale::drain`] under the same lock, which takes those ops out of the
//! queue, and the rows the apply returns (the rows it changed, as memory has them now) are
//! written after them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Store;
pub use super::batch::{Batch, RowKey, WriteOp};
use crate::Error;

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
/// While writes keep failing, how often the failure is logged again.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// A committed op's memory change: called by the writer once the op's rows are committed,
/// it must take the lock under which memory changes, change memory, call
/// [`Stale::drain`] before releasing it, and return the rows it changed as they now are.
pub type Apply = Box<dyn FnOnce(&mut Stale<'_>) -> Vec<WriteOp> + Send>;

/// What a waiter hears: committed, or why not.
type Answer = Result<(), String>;

enum Msg {
    Op(WriteOp),
    Flush(oneshot::Sender<Answer>),
    Commit {
        ops: Vec<WriteOp>,
        apply: Apply,
        done: oneshot::Sender<Answer>,
    },
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

/// A failed write as callers see it: the database's failure (UNAVAILABLE on the wire).
fn failed(cause: String) -> Error {
    Error::Database(sea_orm::DbErr::Custom(format!("write failed: {cause}")))
}

/// A commit on its way: [`Pending::wait`] for its answer.
#[must_use = "a commit's answer says whether it happened"]
pub struct Pending(oneshot::Receiver<Answer>);

impl Pending {
    /// Waits until the op's rows are committed and its memory change made.
    ///
    /// # Errors
    /// [`Error::Database`] when the transaction failed: then nothing of the op was written
    /// and its memory change was not made.
    pub async fn wait(self) -> Result<(), Error> {
        self.0.await.map_err(|_| stopped())?.map_err(failed)
    }
}

impl Writer {
    /// Starts the writer task. It ends, after writing everything queued, once every
    /// [`Writer`] clone is dropped.
    pub fn spawn(store: Store) -> (Writer, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        let task = Task {
            store,
            rx,
            stash: VecDeque::new(),
            backlog: backlog.clone(),
            batch: Batch::default(),
            outage: None,
        };
        let handle = tokio::spawn(task.run());
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

    /// Sends a client-waited op: `ops` commit with the next transaction, or are dropped if
    /// it fails; once committed the writer runs `apply` (see [`Apply`]). Dropping `apply`
    /// unrun is how a failed op ends.
    ///
    /// # Errors
    /// [`Error::Internal`] when the writer has stopped (then `apply` is dropped).
    pub fn commit(&self, ops: Vec<WriteOp>, apply: Apply) -> Result<Pending, Error> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Msg::Commit { ops, apply, done })
            .map_err(|_| stopped())?;
        Ok(Pending(rx))
    }

    /// Writes everything queued so far and waits until it is committed.
    ///
    /// # Errors
    /// [`Error::Database`] when the write failed (the ops stay queued and are retried),
    /// [`Error::Internal`] when the writer has stopped.
    pub async fn flush(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Flush(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?.map_err(failed)
    }
}

/// Handed to an [`Apply`]: takes the ops queued since its transaction was folded (computed
/// without its memory change) out of the queue, so its rows are written after them.
pub struct Stale<'a> {
    rx: &'a mut mpsc::UnboundedReceiver<Msg>,
    stash: &'a mut VecDeque<Msg>,
}

impl Stale<'_> {
    /// Call under the lock that orders queueing, after changing memory.
    pub fn drain(&mut self) {
        while let Ok(msg) = self.rx.try_recv() {
            self.stash.push_back(msg);
        }
    }
}

/// The writer task's state.
struct Task {
    store: Store,
    rx: mpsc::UnboundedReceiver<Msg>,
    /// Messages taken from the channel ahead of their turn (see [`Stale`]), in order.
    stash: VecDeque<Msg>,
    backlog: Arc<Backlog>,
    /// Background ops not yet written.
    batch: Batch,
    /// Since when writes have been failing, and when that was last logged.
    outage: Option<(Instant, Instant)>,
}

/// A waiter in a group commit.
enum Waiter {
    Flush(oneshot::Sender<Answer>),
    Commit {
        ops: Vec<WriteOp>,
        apply: Apply,
        done: oneshot::Sender<Answer>,
    },
}

impl Task {
    async fn run(mut self) {
        // After a failed write, background ops are retried on the timer only, not on every
        // new op; commits and flushes always try.
        let mut failing = false;
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let msg = match self.stash.pop_front() {
                Some(msg) => Some(msg),
                // Messages first: a retry of a failing batch can take a busy timeout, and
                // must not keep waiting commits from their answer.
                None => tokio::select! {
                    biased;
                    msg = self.rx.recv() => match msg {
                        Some(msg) => Some(msg),
                        None => break,
                    },
                    _ = tick.tick() => None,
                },
            };
            let Some(msg) = msg else {
                failing = self.write(&Batch::default()).await.is_err();
                continue;
            };
            match msg {
                Msg::Op(op) => {
                    self.take(op);
                    if self.batch.ops() >= MAX_PENDING && !failing {
                        failing = self.write(&Batch::default()).await.is_err();
                    }
                }
                Msg::Flush(done) => failing = self.group(Waiter::Flush(done)).await.is_err(),
                Msg::Commit { ops, apply, done } => {
                    let first = Waiter::Commit { ops, apply, done };
                    failing = self.group(first).await.is_err();
                }
            }
        }
        // The last write at shutdown: a database that is briefly locked or unreachable gets a
        // few more chances before what is queued is given up.
        for attempt in 1..=FINAL_ATTEMPTS {
            match self.write(&Batch::default()).await {
                Ok(()) => return,
                Err(e) if attempt == FINAL_ATTEMPTS => {
                    tracing::error!(cause = %e, "final database write failed; recent updates are lost");
                }
                Err(_) => tokio::time::sleep(FLUSH_INTERVAL * 5).await,
            }
        }
    }

    fn take(&mut self, op: WriteOp) {
        if self.backlog.queued.fetch_sub(1, Ordering::Relaxed) == QUEUE_CAPACITY + 1 {
            self.backlog.drained.notify_waiters();
        }
        self.batch.push(op);
    }

    /// The next message already queued, if any.
    fn next_queued(&mut self) -> Option<Msg> {
        self.stash.pop_front().or_else(|| self.rx.try_recv().ok())
    }

    /// Group commit: folds in what is already queued behind `first` (in queue order, so
    /// change order holds), writes it with every waiting commit's rows in one transaction,
    /// then makes the commits' memory changes and answers every waiter.
    async fn group(&mut self, first: Waiter) -> Answer {
        let mut waiters = vec![first];
        while self.batch.ops() < GROUP_LIMIT {
            match self.next_queued() {
                Some(Msg::Op(op)) => self.take(op),
                Some(Msg::Flush(done)) => waiters.push(Waiter::Flush(done)),
                Some(Msg::Commit { ops, apply, done }) => {
                    waiters.push(Waiter::Commit { ops, apply, done });
                }
                None => break,
            }
        }
        let mut committed = Batch::default();
        for w in &waiters {
            if let Waiter::Commit { ops, .. } = w {
                for op in ops {
                    committed.push(op.clone());
                }
            }
        }
        let res = self.write(&committed).await;
        for w in waiters {
            match w {
                Waiter::Flush(done) => {
                    // A caller may have gone away; the write stands either way.
                    let _ = done.send(res.clone());
                }
                Waiter::Commit { ops, apply, done } => {
                    if res.is_ok() {
                        self.apply(&ops, apply);
                    }
                    // Dropped unrun on failure: nothing of the op happened.
                    let _ = done.send(res.clone());
                }
            }
        }
        res
    }

    /// Runs a committed op's memory change, then queues the rows it returns behind the
    /// stale ops it drained, unless they are what was just committed and no stale op
    /// touches them (an announce's file row is not written twice).
    fn apply(&mut self, ops: &[WriteOp], apply: Apply) {
        let rows = apply(&mut Stale {
            rx: &mut self.rx,
            stash: &mut self.stash,
        });
        let stale: Vec<RowKey> = (self.stash.iter())
            .filter_map(|m| match m {
                Msg::Op(op) => Some(op.key()),
                _ => None,
            })
            .collect();
        for row in rows {
            let key = row.key();
            if ops.contains(&row) && !stale.iter().any(|s| s.overlaps(&key)) {
                continue;
            }
            self.backlog.queued.fetch_add(1, Ordering::Relaxed);
            self.stash.push_back(Msg::Op(row));
        }
    }

    /// Writes the background batch and then `committed` in one transaction. On success
    /// the batch is emptied; on failure it is kept, to be retried with the next write
    /// (newer ops fold in on top), and `committed` is the caller's to drop.
    async fn write(&mut self, committed: &Batch) -> Answer {
        if self.batch.is_empty() && committed.is_empty() {
            return Ok(());
        }
        match self.store.apply(&self.batch, committed).await {
            Ok(()) => {
                self.batch = Batch::default();
                if let Some((since, _)) = self.outage.take() {
                    tracing::info!(
                        after_s = since.elapsed().as_secs_f32(),
                        "database writes resumed"
                    );
                }
                Ok(())
            }
            Err(e) => {
                let now = Instant::now();
                match &mut self.outage {
                    None => {
                        self.outage = Some((now, now));
                        tracing::error!(cause = %e, ops = self.batch.ops(), "database write failed; background updates are kept and retried");
                    }
                    Some((since, logged)) if logged.elapsed() >= LOG_EVERY => {
                        *logged = now;
                        tracing::error!(cause = %e, ops = self.batch.ops(), for_s = since.elapsed().as_secs(), "database writes still failing");
                    }
                    Some(_) => {}
                }
                Err(e.to_string())
            }
        }
    }
}
