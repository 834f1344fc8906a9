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
use common::{FileId, PeerId, Sha256Digest, Ticket};
use futures::StreamExt;
use rand::seq::SliceRandom;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{FileMeta, Holding, ReplicaStore, Stored};
use crate::tracker_client::TrackerClient;
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

/// One task from the tracker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: u64,
    pub work: Work,
}

/// What a task asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Fetch(FetchTask),
    Drop(DropTask),
    /// A task that does not add up (answered `!ok` with this reason).
    Invalid(String),
}

/// Fetch chunk `chunk` of `file` from one of `sources` and keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchTask {
    pub file: FileMeta,
    pub chunk: u32,
    pub sha256: Sha256Digest,
    pub len: u64,
    pub sources: Vec<Source>,
    /// The tracker's permission for this node to fetch the chunk from the sources.
    pub ticket: Option<Arc<Ticket>>,
}

/// A peer that holds the chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub peer_id: String,
    pub addr: String,
}

/// Delete the replica copies of `chunks` of `file_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropTask {
    pub file_id: FileId,
    pub chunks: Vec<u32>,
}

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
    f: impl FnOnce() -> anyhow::Result<R> + Send + 'static,
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
    token: CancellationToken,
}

impl<T: ChunkTransport> Dispatcher<T> {
    fn dispatch(&self, task: Task) {
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
                complete(&client, &peer_id, id, &result).await;
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
        Work::Invalid(_) => "task".into(),
    }
}

/// Sends CompleteTask, retrying briefly; an unanswered task is delivered again by the
/// tracker when its lease runs out, so giving up is safe.
async fn complete(
    client: &TrackerClient,
    peer_id: &PeerId,
    id: u64,
    result: &Result<Done, String>,
) {
    let (ok, error) = match result {
        Ok(_) => (true, String::new()),
        Err(e) => (false, e.clone()),
    };
    for attempt in 0..3u32 {
        match client.complete_task(peer_id, id, ok, &error).await {
            Ok(()) => return,
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {
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

/// Keeps the task stream open until `token` is cancelled, carrying out the tasks it
/// delivers. `tracker_up` counts the times the heartbeat loop saw the tracker answer after
/// not answering (first at start): the stream opens after the first, and is reopened at
/// once after each later one. `connected` says whether the stream is open now.
pub async fn task_stream<T: ChunkTransport>(
    client: TrackerClient,
    peer_id: PeerId,
    runner: Arc<Runner<T>>,
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
        runner,
        slots: Arc::new(Semaphore::new(MAX_PARALLEL)),
        batch: Arc::default(),
        token: token.clone(),
    };
    let mut backoff = BACKOFF_MIN;
    let mut was_open = true;
    loop {
        let (why, reopen_now) = match client.tasks(&peer_id).await {
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
mod tests {
    use super::super::tests::{MIB, chunk, meta};
    use super::*;
    use crate::home::{Home, Kind};
    use crate::transport::ChunkStream;
    use std::collections::HashMap;

    /// A transport serving canned answers per address, counting calls.
    #[derive(Default)]
    struct Fake {
        answers: HashMap<String, Result<Vec<u8>, String>>,
        calls: Mutex<Vec<String>>,
    }

    impl ChunkTransport for Fake {
        async fn fetch(
            &self,
            addr: &str,
            _file_id: &FileId,
            indices: &[u32],
            _ticket: Option<&Ticket>,
        ) -> Result<ChunkStream, FetchError> {
            self.calls.lock().unwrap().push(addr.to_string());
            match self.answers.get(addr) {
                Some(Ok(d)) => {
                    let item = Ok((indices[0], Bytes::from(d.clone())));
                    Ok(Box::pin(futures::stream::iter([item])))
                }
                Some(Err(e)) => Err(FetchError::Refused(e.clone())),
                None => Err(FetchError::Connect("connection refused".into())),
            }
        }

        fn forget(&self, _addr: &str) {}
    }

    fn me() -> PeerId {
        PeerId::from_random([7; 16])
    }

    fn fetch_task(i: u32, addrs: &[&str]) -> FetchTask {
        let m = meta(b"file");
        let data = chunk(&m, i);
        FetchTask {
            chunk: i,
            sha256: Sha256Digest::of(&data),
            len: data.len() as u64,
            file: m,
            sources: addrs
                .iter()
                .map(|a| Source {
                    peer_id: format!("peer-{a}"),
                    addr: a.to_string(),
                })
                .collect(),
            ticket: None,
        }
    }

    fn runner(
        tmp: &tempfile::TempDir,
        quota: u64,
        answers: &[(&str, Result<Vec<u8>, String>)],
    ) -> (Runner<Fake>, Arc<Fake>, Home) {
        let home = Home::open(Some(tmp.path().join("h"))).unwrap();
        let store = ReplicaStore::open(home.clone(), quota).unwrap();
        let fake = Arc::new(Fake {
            answers: answers
                .iter()
                .map(|(a, r)| (a.to_string(), r.clone()))
                .collect(),
            calls: Mutex::default(),
        });
        let r = Runner::new(store, fake.clone(), me(), "me:1".into());
        (r, fake, home)
    }

    #[tokio::test]
    async fn should_try_the_next_source_after_a_bad_hash() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let mut bad = chunk(&m, 1);
        bad[0] ^= 0xff;
        let (r, fake, home) = runner(
            &tmp,
            10 * MIB as u64,
            &[("bad:1", Ok(bad)), ("good:1", Ok(chunk(&m, 1)))],
        );
        let t = fetch_task(1, &["bad:1", "good:1"]);
        assert_eq!(
            r.run(Work::Fetch(t.clone())).await,
            Ok(Done::Fetched(MIB as u64))
        );
        assert_eq!(r.store().used(), MIB as u64);
        assert_eq!(r.store().reserved(), 0);
        let on_disk = std::fs::read(home.replica_chunk_path(&m.file_id, 1)).unwrap();
        assert_eq!(on_disk, chunk(&m, 1));
        let rec = home.record(&m.file_id).unwrap().unwrap();
        assert_eq!((rec.kind, rec.name.as_str()), (Kind::Replica, "movie.mkv"));
        assert!(rec.have_bits().get(1));

        // Asked again: answered from the store, no source is contacted.
        let calls = fake.calls.lock().unwrap().len();
        assert_eq!(r.run(Work::Fetch(t)).await, Ok(Done::Held));
        assert_eq!(fake.calls.lock().unwrap().len(), calls);
    }

    #[tokio::test]
    async fn should_fail_with_the_reasons_when_every_source_fails() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let (r, fake, home) = runner(
            &tmp,
            10 * MIB as u64,
            &[
                ("short:1", Ok(vec![1; 10])),
                ("refuses:1", Err("no such chunk".into())),
            ],
        );
        let mut t = fetch_task(0, &["short:1", "refuses:1", "down:1", "me:1"]);
        t.sources.push(Source {
            peer_id: me().to_string(),
            addr: "elsewhere:1".into(),
        });
        let err = r.run(Work::Fetch(t)).await.unwrap_err();
        assert!(err.contains("every source failed"), "{err}");
        assert!(err.contains("SHA-256 or length"), "{err}");
        assert!(err.contains("no such chunk"), "{err}");
        assert!(err.contains("connection refused"), "{err}");
        let mut calls = fake.calls.lock().unwrap().clone();
        calls.sort();
        assert_eq!(calls, ["down:1", "refuses:1", "short:1"], "never itself");
        assert_eq!((r.store().used(), r.store().reserved()), (0, 0));
        assert!(home.record(&m.file_id).unwrap().is_none());

        let only_me = fetch_task(0, &["me:1"]);
        let err = r.run(Work::Fetch(only_me)).await.unwrap_err();
        assert!(err.contains("no source"), "{err}");
    }

    #[tokio::test]
    async fn should_refuse_when_the_quota_is_full() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let (r, fake, _home) = runner(
            &tmp,
            MIB as u64 + 10,
            &[("a:1", Ok(chunk(&m, 0))), ("b:1", Ok(chunk(&m, 1)))],
        );
        assert!(r.run(Work::Fetch(fetch_task(0, &["a:1"]))).await.is_ok());
        let err = r
            .run(Work::Fetch(fetch_task(1, &["b:1"])))
            .await
            .unwrap_err();
        assert_eq!(err, "storage quota full");
        assert_eq!(fake.calls.lock().unwrap().as_slice(), ["a:1"]);
        assert_eq!(r.store().used(), MIB as u64);

        let tmp0 = tempfile::tempdir().unwrap();
        let (none, _, _) = runner(&tmp0, 0, &[("a:1", Ok(chunk(&m, 0)))]);
        let err = none.run(Work::Fetch(fetch_task(0, &["a:1"]))).await;
        assert_eq!(err, Err("storage quota full".into()));
    }

    #[tokio::test]
    async fn should_keep_concurrent_fetches_within_the_quota() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let (r, _, _) = runner(
            &tmp,
            2 * MIB as u64,
            &[
                ("a:1", Ok(chunk(&m, 0))),
                ("b:1", Ok(chunk(&m, 1))),
                ("c:1", Ok(chunk(&m, 2))),
            ],
        );
        let r = Arc::new(r);
        let mut set = tokio::task::JoinSet::new();
        for (i, a) in [(0, "a:1"), (1, "b:1"), (2, "c:1")] {
            let r = r.clone();
            set.spawn(async move { r.run(Work::Fetch(fetch_task(i, &[a]))).await });
        }
        let results = set.join_all().await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        // Whatever the order, two of the three fit and the third does not.
        assert_eq!(ok, 2, "{results:?}");
        assert!(r.store().used() <= 2 * MIB as u64);
        assert_eq!(r.store().reserved(), 0);
    }

    #[tokio::test]
    async fn should_answer_ok_for_the_users_own_files_and_never_touch_them() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let (r, fake, home) = runner(&tmp, 10 * MIB as u64, &[("a:1", Ok(chunk(&m, 0)))]);
        let own = tmp.path().join("movie.mkv");
        std::fs::write(&own, b"the user's bytes").unwrap();
        let mut rec = crate::home::StoreRecord {
            file_id: m.file_id,
            name: m.name.clone(),
            size: m.size,
            sha256: String::new(),
            chunk_size: m.chunk_size,
            chunk_hashes: vec![String::new(); 3],
            kind: Kind::Shared,
            path: own.clone(),
            complete: true,
            have: hex::encode(common::Bitfield::full(3).as_bytes()),
            file_len: None,
            mtime_ns: None,
            changed: false,
        };
        for kind in [Kind::Shared, Kind::Downloaded] {
            rec.kind = kind;
            home.save_record(&rec).unwrap();
            let fetch = Work::Fetch(fetch_task(0, &["a:1"]));
            assert_eq!(r.run(fetch).await, Ok(Done::Held));
            let drop = Work::Drop(DropTask {
                file_id: m.file_id,
                chunks: vec![0, 1, 2],
            });
            assert_eq!(r.run(drop).await, Ok(Done::Dropped(0)));
            assert_eq!(home.record(&m.file_id).unwrap(), Some(rec.clone()));
        }
        assert_eq!(std::fs::read(&own).unwrap(), b"the user's bytes");
        assert!(fake.calls.lock().unwrap().is_empty());
        assert!(!home.replica_dir(&m.file_id).exists());
    }

    #[tokio::test]
    async fn should_drop_replica_chunks_and_refuse_invalid_tasks() {
        let tmp = tempfile::tempdir().unwrap();
        let m = meta(b"file");
        let (r, _, home) = runner(&tmp, 10 * MIB as u64, &[("a:1", Ok(chunk(&m, 2)))]);
        r.run(Work::Fetch(fetch_task(2, &["a:1"]))).await.unwrap();
        let drop = Work::Drop(DropTask {
            file_id: m.file_id,
            chunks: vec![2],
        });
        assert_eq!(r.run(drop).await, Ok(Done::Dropped(MIB as u64 / 2)));
        assert_eq!(r.store().used(), 0);
        assert!(home.record(&m.file_id).unwrap().is_none());
        let err = r.run(Work::Invalid("chunk 9 of 3".into())).await;
        assert_eq!(err, Err("bad task: chunk 9 of 3".into()));
    }
}
