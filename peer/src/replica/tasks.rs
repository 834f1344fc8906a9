//! Replication work: the tracker pushes tasks over `Tasks` (a server stream kept open by
//! [`task_stream`]); each task is carried out by a [`Runner`] and answered with
//! `CompleteTask`.
//!
//! - A fetch is answered ok at once when this node already has the chunk or the file is one
//!   of the user's own; refused with "storage quota full" when the quota cannot take it;
//!   otherwise the chunk is fetched from the task's sources in random order (never from
//!   this node), checked against the task's length and SHA-256 off the async threads, and
//!   kept in the [`ReplicaStore`]. When every source fails, the answer names why.
//! - A drop deletes replica chunks; a file that is not a replica here is left alone and the
//!   answer is ok.
//!
//! The stream reader never waits for work: each task runs in its own tokio task, at most
//! [`MAX_PARALLEL`] at once, and a task id already running is not started twice (the tracker
//! delivers a task again when its lease runs out).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{PeerId, Sha256Digest};
use futures::StreamExt;
use rand::seq::SliceRandom;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Holding, ReplicaStore, Stored};
use crate::tracker_client::{FetchTask, GetTask, Source, Task, TrackerClient, Work};
use crate::transport::{ChunkTransport, FetchError};

/// Tasks carried out at once.
pub const MAX_PARALLEL: usize = 4;
/// Longest wait for one source to deliver a chunk.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Back-off between attempts to open the task stream.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A stream that stayed open this long (or delivered a task) resets the back-off.
const HEALTHY_STREAM: Duration = Duration::from_secs(30);

/// How a task succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// A new replica chunk of this many bytes.
    Fetched(u64),
    /// Nothing to do: the chunk (or the whole file, as the user's own) is already here.
    Held,
    /// Replica chunks deleted, freeing this many bytes.
    Dropped(u64),
}

/// Carries out tasks against one replica store with one chunk transport.
pub struct Runner<T> {
    store: Arc<ReplicaStore>,
    transport: Arc<T>,
    me: PeerId,
    my_addr: String,
    /// Longest wait for one source.
    pub fetch_timeout: Duration,
}

impl<T: ChunkTransport> Runner<T> {
    /// A runner for the node `me`, advertised at `my_addr` (both are skipped as sources).
    pub fn new(store: Arc<ReplicaStore>, transport: Arc<T>, me: PeerId, my_addr: String) -> Self {
        Self {
            store,
            transport,
            me,
            my_addr,
            fetch_timeout: FETCH_TIMEOUT,
        }
    }

    pub fn store(&self) -> &Arc<ReplicaStore> {
        &self.store
    }

    /// Carries out `work`; `Err` is the reason to send with a failed CompleteTask.
    pub async fn run(&self, work: Work) -> Result<Done, String> {
        match work {
            Work::Fetch(f) => self.fetch(f).await,
            Work::Drop(d) => {
                let store = self.store.clone();
                blocking(move || store.drop_chunks(&d.file_id, &d.chunks))
                    .await
                    .map(Done::Dropped)
            }
            Work::Get(_) => Err("a waiting get is not replication work".into()),
            Work::Invalid(why) => Err(format!("bad task: {why}")),
        }
    }

    async fn fetch(&self, f: FetchTask) -> Result<Done, String> {
        let store = self.store.clone();
        let (id, chunk) = (f.file.file_id, f.chunk);
        match blocking(move || store.holding(&id, chunk)).await? {
            Holding::Replica | Holding::OwnFile => return Ok(Done::Held),
            Holding::Nothing => {}
        }
        let Some(res) = self.store.reserve(f.len) else {
            return Err("storage quota full".into());
        };
        let mut sources: Vec<&Source> = f
            .sources
            .iter()
            .filter(|s| s.peer_id != self.me.as_str() && s.addr != self.my_addr)
            .filter(|s| !s.addr.is_empty())
            .collect();
        if sources.is_empty() {
            return Err("no source other than this node".into());
        }
        sources.shuffle(&mut rand::rng());
        let _active = crate::metrics::metrics().transfer("download");
        let mut reasons = Vec::new();
        for s in sources {
            let attempt = tokio::time::timeout(self.fetch_timeout, self.try_source(&f, &s.addr));
            let why = match attempt.await {
                Ok(Ok(data)) => {
                    crate::metrics::metrics().chunk_fetched(f.len);
                    let (store, meta) = (self.store.clone(), f.file.clone());
                    let stored =
                        blocking(move || store.store_chunk(&meta, chunk, &data, res)).await?;
                    return Ok(match stored {
                        Stored::New => Done::Fetched(f.len),
                        Stored::AlreadyHeld | Stored::OwnFile => Done::Held,
                    });
                }
                Ok(Err(why)) => why,
                Err(_) => {
                    self.transport.forget(&s.addr);
                    format!(
                        "no chunk within {}",
                        humantime::format_duration(self.fetch_timeout)
                    )
                }
            };
            tracing::debug!(file = %id, chunk, source = %s.addr, "replica source failed: {why}");
            reasons.push(format!("{}: {why}", common::names::printable(&s.addr, 80)));
        }
        Err(format!("every source failed ({})", reasons.join("; ")))
    }

    /// Fetches and checks the chunk from `addr`.
    async fn try_source(&self, f: &FetchTask, addr: &str) -> Result<Bytes, String> {
        let fetched = async {
            let mut stream = self
                .transport
                .fetch(addr, &f.file.file_id, &[f.chunk], f.ticket.as_deref())
                .await?;
            match stream.next().await {
                Some(r) => r.map(Some),
                None => Ok(None),
            }
        };
        let (index, data) = match fetched.await {
            Ok(Some(c)) => c,
            Ok(None) => return Err("sent no chunk".into()),
            Err(e) => {
                if matches!(e, FetchError::Connect(_)) {
                    self.transport.forget(addr);
                }
                return Err(e.to_string());
            }
        };
        if index != f.chunk {
            return Err(format!("sent chunk {index} instead"));
        }
        let (len, sha) = (f.len, f.sha256);
        let data2 = data.clone();
        let good = tokio::task::spawn_blocking(move || {
            data2.len() as u64 == len && Sha256Digest::of(&data2) == sha
        })
        .await
        .map_err(|e| format!("check task failed: {e}"))?;
        if !good {
            crate::metrics::metrics().verification_failures.inc();
            return Err("failed its SHA-256 or length check".into());
        }
        Ok(data)
    }
}

/// Runs a store operation on the blocking pool; errors become a task failure reason.
async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, super::ReplicaError> + Send + 'static,
) -> Result<R, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(format!("local storage error: {e:#}")),
        Err(e) => Err(format!("storage task failed: {e}")),
    }
}

/// Tasks in progress and what the current batch did, for one summary line per batch.
#[derive(Default)]
struct Batch {
    pending: HashSet<u64>,
    fetched: u32,
    fetched_bytes: u64,
    held: u32,
    dropped_bytes: u64,
    drops: u32,
    failed: u32,
}

/// Starts tasks without waiting for them, at most [`MAX_PARALLEL`] running at once.
struct Dispatcher<T> {
    client: TrackerClient,
    peer_id: PeerId,
    runner: Arc<Runner<T>>,
    slots: Arc<Semaphore>,
    batch: Arc<Mutex<Batch>>,
    /// Where due waiting gets go (the node's waiting gets fetch them).
    gets: mpsc::Sender<GetTask>,
    token: CancellationToken,
}

impl<T: ChunkTransport> Dispatcher<T> {
    fn dispatch(&self, task: Task) {
        if let Work::Get(file) = task.work {
            // Full: the tracker delivers it again when its lease runs out.
            let _ = self.gets.try_send(GetTask { id: task.id, file });
            return;
        }
        {
            let mut b = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            if !b.pending.insert(task.id) {
                return;
            }
        }
        let (client, peer_id, runner) = (
            self.client.clone(),
            self.peer_id.clone(),
            self.runner.clone(),
        );
        let (slots, batch, token) = (self.slots.clone(), self.batch.clone(), self.token.clone());
        tokio::spawn(async move {
            let id = task.id;
            let what = describe(&task.work);
            let work = async {
                let _slot = slots.acquire_owned().await;
                let result = runner.run(task.work).await;
                if let Err(why) = &result {
                    tracing::warn!(task = id, "{what} failed: {why}");
                }
                crate::metrics::metrics().task_done(result.is_ok());
                let error = result.as_ref().err().map_or("", String::as_str);
                complete(&client, &peer_id, id, result.is_ok(), error).await;
                result
            };
            let result = tokio::select! {
                r = work => Some(r),
                _ = token.cancelled() => None,
            };
            let mut b = batch.lock().unwrap_or_else(|p| p.into_inner());
            b.pending.remove(&id);
            match result {
                Some(Ok(Done::Fetched(n))) => {
                    b.fetched += 1;
                    b.fetched_bytes += n;
                }
                Some(Ok(Done::Held)) => b.held += 1,
                Some(Ok(Done::Dropped(n))) => {
                    b.drops += 1;
                    b.dropped_bytes += n;
                }
                Some(Err(_)) => b.failed += 1,
                None => return,
            }
            if b.pending.is_empty() {
                let done = std::mem::take(&mut *b);
                tracing::info!(
                    fetched = done.fetched,
                    fetched_bytes = done.fetched_bytes,
                    already_held = done.held,
                    drops = done.drops,
                    freed_bytes = done.dropped_bytes,
                    failed = done.failed,
                    used = runner.store().used(),
                    quota = runner.store().quota(),
                    "replication tasks done"
                );
            }
        });
    }
}

fn describe(w: &Work) -> String {
    match w {
        Work::Fetch(f) => format!("fetch of chunk {} of {}", f.chunk, f.file.file_id.short()),
        Work::Drop(d) => format!(
            "drop of {} chunk(s) of {}",
            d.chunks.len(),
            d.file_id.short()
        ),
        Work::Get(id) => format!("get of {}", id.short()),
        Work::Invalid(_) => "task".into(),
    }
}

/// Sends CompleteTask, retrying briefly; an unanswered task is delivered again by the
/// tracker when its lease runs out, so giving up is safe.
pub(crate) async fn complete(
    client: &TrackerClient,
    peer_id: &PeerId,
    id: u64,
    ok: bool,
    error: &str,
) {
    for attempt in 0..3u32 {
        match client.complete_task(peer_id, id, ok, error).await {
            Ok(()) => return,
            Err(crate::tracker_client::TrackerError::NotFound { .. }) => {
                tracing::debug!(task = id, "task no longer wanted");
                return;
            }
            Err(e) if attempt == 2 => {
                tracing::warn!(task = id, "cannot report the task's outcome: {e}");
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1 << attempt)).await,
        }
    }
}

/// Resolves when the tracker epoch changes (the tracker answered again after an outage);
/// never if the heartbeat loop is gone.
async fn epoch_changed(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Who carries out the tasks of the stream: replication work, and due waiting gets.
pub struct Workers<T> {
    pub runner: Arc<Runner<T>>,
    /// The node's waiting gets (`node::waiting`), which fetch whole files.
    pub gets: mpsc::Sender<GetTask>,
}

/// Keeps the task stream open until `token` is cancelled, carrying out the tasks it
/// delivers. `tracker_up` counts the times the heartbeat loop saw the tracker answer after
/// not answering (first at start): the stream opens after the first, and is reopened at
/// once after each later one. `connected` says whether the stream is open now. `key` is
/// the node's public key, which the tickets of its tasks name.
pub async fn task_stream<T: ChunkTransport>(
    client: TrackerClient,
    peer_id: PeerId,
    key: [u8; 32],
    workers: Workers<T>,
    mut tracker_up: watch::Receiver<u64>,
    connected: Arc<AtomicBool>,
    token: CancellationToken,
) {
    tokio::select! {
        r = tracker_up.wait_for(|e| *e > 0) => if r.is_err() { return },
        _ = token.cancelled() => return,
    }
    tracker_up.borrow_and_update();
    let dispatcher = Dispatcher {
        client: client.clone(),
        peer_id: peer_id.clone(),
        runner: workers.runner,
        slots: Arc::new(Semaphore::new(MAX_PARALLEL)),
        batch: Arc::default(),
        gets: workers.gets,
        token: token.clone(),
    };
    let mut backoff = BACKOFF_MIN;
    let mut was_open = true;
    loop {
        let (why, reopen_now) = match client.tasks(&peer_id, &key).await {
            Ok(mut stream) => {
                connected.store(true, Ordering::Relaxed);
                if !was_open {
                    tracing::info!("task stream open again");
                }
                was_open = true;
                let opened = Instant::now();
                let mut delivered = false;
                let ended = loop {
                    tokio::select! {
                        item = stream.next() => match item {
                            Some(Ok(task)) => {
                                delivered = true;
                                dispatcher.dispatch(task);
                            }
                            Some(Err(e)) => break (e.to_string(), false),
                            None => break ("the tracker ended it".to_string(), false),
                        },
                        _ = epoch_changed(&mut tracker_up) => {
                            break ("the tracker came back after an outage".to_string(), true);
                        }
                        _ = token.cancelled() => {
                            connected.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                };
                connected.store(false, Ordering::Relaxed);
                if delivered || opened.elapsed() >= HEALTHY_STREAM {
                    backoff = BACKOFF_MIN;
                }
                ended
            }
            Err(e) => (e.to_string(), false),
        };
        if reopen_now {
            tracing::debug!("reopening the task stream: {why}");
            backoff = BACKOFF_MIN;
            continue;
        }
        if was_open {
            tracing::warn!("task stream closed ({why}); reopening with back-off");
        } else {
            tracing::debug!("task stream not open: {why}");
        }
        was_open = false;
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(BACKOFF_MAX),
            _ = epoch_changed(&mut tracker_up) => backoff = BACKOFF_MIN,
            _ = token.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests;
