//! The node's side of `get --wait`. A waiting get lives in two places: the home holds where
//! the file goes (`HOME/waiting/`), the tracker's task queue holds the request and decides
//! when it is due (peers that are up hold every chunk, verified). The tracker pushes it on the task
//! stream as a get task; this module fetches the file with the ordinary downloader and
//! completes the task.
//!
//! Every `--waiting-every` the node also walks the home's list: each get is queued at the
//! tracker again (idempotent; this registers gets queued while no tracker answered, or
//! before the node's first heartbeat), and one the tracker cannot take (it does not answer)
//! is tried at once, among peers. A get that still has no live holder stays queued quietly;
//! one that fails otherwise keeps its error, which `peer status` shows.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::FileId;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::auth::TrackerReach;
use crate::download::{self, Context, Job};
use crate::lock;
use crate::progress::FileProgress;
use crate::replica::tasks::complete;
use crate::tracker_client::GetTask;
use crate::transport::GrpcTransport;
use crate::waiting::{Waiting, WaitingGet};

/// Waiting gets fetched at once.
const PARALLEL: usize = 2;

/// Fetches waiting gets: those the tracker pushes (`tasks`) and, every `every`, those it
/// could not be told about. `reach` says whether the tracker answers. Runs until `token`
/// is cancelled.
pub async fn run(
    cx: Arc<Context<GrpcTransport>>,
    every: Duration,
    mut tasks: mpsc::Receiver<GetTask>,
    reach: TrackerReach,
    token: CancellationToken,
) {
    let gets = Arc::new(Gets {
        waiting: Waiting::new(&cx.home),
        cx,
        busy: Mutex::default(),
        registered: Mutex::default(),
        reach,
        slots: Semaphore::new(PARALLEL),
    });
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    // The task stream's end closes the channel; the walks go on until the token says stop.
    let mut open = true;
    loop {
        tokio::select! {
            t = tasks.recv(), if open => match t {
                Some(t) => {
                    let gets = gets.clone();
                    tokio::spawn(async move { gets.pushed(t).await });
                }
                None => open = false,
            },
            _ = tick.tick() => {
                let gets = gets.clone();
                tokio::select! {
                    () = gets.walk() => {}
                    () = token.cancelled() => return,
                }
            }
            () = token.cancelled() => return,
        }
    }
}

/// What a get came to.
enum Outcome {
    /// Fetched, or not wanted here any more: the tracker may forget it.
    Done,
    /// Still no live holder.
    NoHolder,
    Failed(String),
}

struct Gets {
    cx: Arc<Context<GrpcTransport>>,
    waiting: Waiting,
    /// Files being fetched now, whichever way they came.
    busy: Mutex<HashSet<FileId>>,
    /// Gets the tracker has queued (its queue is durable: once is enough).
    registered: Mutex<HashSet<FileId>>,
    reach: TrackerReach,
    slots: Semaphore,
}

impl Gets {
    /// A get task the tracker pushed: fetch, then complete it.
    async fn pushed(&self, t: GetTask) {
        let outcome = match self
            .waiting
            .list()
            .into_iter()
            .find(|w| w.file_id == t.file)
        {
            None => {
                tracing::info!(file = %t.file, "the tracker pushed a waiting get not wanted here (cancelled?): dropping it");
                Outcome::Done
            }
            Some(w) => match self.fetch(w).await {
                Some(o) => o,
                // Being fetched already: the tracker delivers the task again later.
                None => return,
            },
        };
        let (ok, why) = match &outcome {
            Outcome::Done => (true, String::new()),
            Outcome::NoHolder => (false, "no live holder after all".to_string()),
            Outcome::Failed(e) => (false, e.clone()),
        };
        complete(&self.cx.tracker, &self.cx.peer_id, t.id, ok, &why).await;
    }

    /// Registers every waiting get with the tracker, and tries at once those it cannot take.
    async fn walk(&self) {
        for w in self.waiting.list() {
            let id = w.file_id;
            if lock(&self.registered).contains(&id) && !self.reach.unreachable() {
                continue;
            }
            match self.cx.tracker.queue_get(&self.cx.peer_id, &id).await {
                Ok(_) => {
                    lock(&self.registered).insert(id);
                    continue;
                }
                Err(e) => {
                    tracing::debug!(file = %id, "the tracker cannot queue a waiting get ({e}); trying it now")
                }
            }
            if let Some(Outcome::Done) = self.fetch(w).await {
                // Fetched among peers: the tracker's copy of the request is moot.
                let _ = self.cx.tracker.cancel_get(&self.cx.peer_id, &id).await;
            }
        }
    }

    /// Fetches `w` unless it is being fetched already (`None`); dequeues it when fetched.
    async fn fetch(&self, mut w: WaitingGet) -> Option<Outcome> {
        let id = w.file_id;
        if !lock(&self.busy).insert(id) {
            return None;
        }
        let _busy = Busy(&self.busy, id);
        let _slot = self.slots.acquire().await.ok()?;
        let job = Job {
            file_id: id,
            output: w.output.clone(),
            from: None,
            name: None,
            path: None,
            listings: Some(self.cx.home.collections_dir()),
        };
        let progress = FileProgress::new(&id.to_string());
        Some(
            match download::download(self.cx.clone(), job, progress).await {
                Ok(o) => {
                    if let Err(e) = self.waiting.remove(&id) {
                        tracing::warn!(file = %id, "cannot dequeue a fetched waiting get: {e}");
                    }
                    tracing::info!(file = %id, path = %o.path.display(), "fetched a waiting get");
                    if o.collection {
                        tracing::warn!(
                            file = %id,
                            "that waiting get is a folder: its listing is fetched; run `peer get {id}` for its files"
                        );
                    }
                    Outcome::Done
                }
                Err(e) if e.no_holder_now() => {
                    tracing::debug!(file = %id, "waiting get: no live holder yet");
                    Outcome::NoHolder
                }
                Err(e) => {
                    tracing::warn!(file = %id, "waiting get failed (will try again): {e}");
                    w.last_error = Some(e.to_string());
                    // Cancelled meanwhile: stays cancelled.
                    if self.waiting.list().iter().any(|x| x.file_id == id)
                        && let Err(e) = self.waiting.put(&w)
                    {
                        tracing::warn!(file = %id, "cannot record the waiting get's error: {e}");
                    }
                    Outcome::Failed(e.to_string())
                }
            },
        )
    }
}

/// Marks a file no longer busy when dropped.
struct Busy<'a>(&'a Mutex<HashSet<FileId>>, FileId);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        lock(self.0).remove(&self.1);
    }
}
