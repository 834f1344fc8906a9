//! The downloader: fetches one file from several sources at once into
//! `NAME.tessera-part`, checks every chunk before writing it, and moves the file to its
//! final name only when every chunk is verified and the whole file hashes to the listed
//! SHA-256 ([`whole`]). Chunk states are in `STATE.md`.
//!
//! One coordinator per file (this module) owns the source list: it asks the tracker for
//! holders (at start, every second, and when no source is left), starts a
//! [`worker`] per usable source, reports verified chunks to the tracker and writes the
//! store record on a short cadence (so a `serve` in the same home serves what is already
//! here), and gives up only when nothing has moved for a long time. Workers pull chunks
//! from the shared [`scheduler::Scheduler`]. The tracker may go away meanwhile: known
//! sources carry on and Locate is retried with back-off.
//!
//! Each Locate answer carries a fresh ticket (the tracker's signed permission to fetch the
//! file); workers present the newest one with every request, so a download that lasts
//! longer than a ticket keeps going on the renewed ones.

pub mod files;
pub mod scheduler;
mod whole;
mod worker;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context as _, bail};
use common::{Bitfield, FileId, Manifest, PeerId, Ticket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::home::{Home, Kind, StoreRecord, part_path};
use crate::progress::FileProgress;
use crate::ratelimit::RateLimiter;
use crate::tracker_client::{HolderView, Located, Relocated, TrackerClient, TrackerError};
use crate::transport::ChunkTransport;
use scheduler::Scheduler;
use worker::WorkerEnd;

/// Timing knobs of a download.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// A source that sends no chunk for this long is dropped (env `PEER_STALL_TIMEOUT`).
    pub stall_timeout: Duration,
    /// Fail when no chunk arrived and no source was usable for this long
    /// (env `PEER_GIVE_UP_AFTER`).
    pub give_up_after: Duration,
    /// How often to ask the tracker for holders again: often, because other getters can
    /// serve only once this one knows what they hold.
    pub relocate_every: Duration,
    /// How often to report verified chunks and write the store record.
    pub report_every: Duration,
    /// Requests in flight per source.
    pub max_in_flight: usize,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(20),
            give_up_after: Duration::from_secs(120),
            relocate_every: Duration::from_secs(1),
            report_every: Duration::from_millis(250),
            max_in_flight: 4,
        }
    }
}

impl DownloadConfig {
    /// Defaults, overridden by `PEER_STALL_TIMEOUT` / `PEER_GIVE_UP_AFTER` (humantime:
    /// `500ms`, `20s`, `2m`).
    ///
    /// # Errors
    /// When a variable is set but is not a duration.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut c = Self::default();
        let read = |name: &str| -> anyhow::Result<Option<Duration>> {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => humantime::parse_duration(v.trim())
                    .map(Some)
                    .with_context(|| format!("{name}={v:?} is not a duration (e.g. 20s)")),
                _ => Ok(None),
            }
        };
        if let Some(d) = read("PEER_STALL_TIMEOUT")? {
            c.stall_timeout = d;
        }
        if let Some(d) = read("PEER_GIVE_UP_AFTER")? {
            c.give_up_after = d;
        }
        Ok(c)
    }
}

/// What every download of one `peer get` shares.
pub struct Context<T> {
    pub home: Home,
    pub peer_id: PeerId,
    pub tracker: TrackerClient,
    pub transport: Arc<T>,
    pub rate: Option<Arc<RateLimiter>>,
    pub cfg: DownloadConfig,
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub file_id: FileId,
    /// Absolute output directory.
    pub output: PathBuf,
    /// Only sources whose peer id starts with this.
    pub from: Option<String>,
}

/// What a finished download did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: FileId,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
    /// Distinct peers that supplied verified chunks.
    pub sources: usize,
    pub chunks_fetched: u32,
    /// Chunks found verified in an existing part (or final) file.
    pub chunks_reused: u32,
    pub elapsed: Duration,
}

/// State shared by the coordinator and the workers of one file.
pub(crate) struct Shared<T> {
    file_id: FileId,
    manifest: Arc<Manifest>,
    file: Arc<File>,
    writeback: files::Writeback,
    transport: Arc<T>,
    rate: Option<Arc<RateLimiter>>,
    cfg: DownloadConfig,
    sched: Mutex<Scheduler<PeerId>>,
    /// Bumped when chunks go back to Missing or sources change, to wake idle workers.
    wake: watch::Sender<u64>,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
    /// The newest ticket from the tracker, presented with every request.
    ticket: Mutex<Option<Arc<Ticket>>>,
}

impl<T> Shared<T> {
    fn sched(&self) -> MutexGuard<'_, Scheduler<PeerId>> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ticket to present now.
    fn ticket(&self) -> Option<Arc<Ticket>> {
        self.ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `t` if it lasts longer than the one held.
    fn renew_ticket(&self, t: Option<Arc<Ticket>>) {
        let Some(t) = t else { return };
        let mut cur = self.ticket.lock().unwrap_or_else(|p| p.into_inner());
        if cur
            .as_ref()
            .is_none_or(|c| c.claims.expires_at_ms <= t.claims.expires_at_ms)
        {
            *cur = Some(t);
        }
    }
}

/// What the coordinator hears about.
pub(crate) enum Event {
    Verified {
        index: u32,
        source: PeerId,
    },
    WorkerEnded {
        source: PeerId,
        addr: String,
        end: WorkerEnd,
    },
    Fatal(std::io::Error),
    Relocated(Result<Relocated, TrackerError>),
    Reported(Result<(), (Vec<u32>, TrackerError)>),
}

/// What the coordinator knows of a source.
struct Source {
    running: bool,
    banned: bool,
    retry_at: Instant,
    failures: u32,
}

/// Fetches one file. Progress goes to `progress`.
///
/// # Errors
/// When the file cannot be located or verified, the output is taken, the disk fails, or no
/// source delivers for `give_up_after`.
pub async fn download<T: ChunkTransport>(
    cx: Arc<Context<T>>,
    job: Job,
    progress: Arc<FileProgress>,
) -> anyhow::Result<Outcome> {
    let started = std::time::Instant::now();
    let _active = crate::metrics::metrics().transfer("download");
    let located = cx.tracker.locate(&job.file_id).await?;
    let manifest = located
        .manifest
        .clone()
        .verified(&job.file_id)
        .with_context(|| {
            format!(
                "the tracker's chunk map does not match file id {}; refusing it",
                job.file_id
            )
        })?;
    let manifest = Arc::new(manifest);
    let n = manifest.chunk_count();
    progress.start(&manifest.name, manifest.size);
    let final_path = files::final_path(&job.output, &manifest.name);
    let part = part_path(&final_path);
    let outcome = |sources, fetched, reused| Outcome {
        id: job.file_id,
        name: manifest.name.clone(),
        path: final_path.clone(),
        size: manifest.size,
        sha256: manifest.sha256.to_hex(),
        sources,
        chunks_fetched: fetched,
        chunks_reused: reused,
        elapsed: started.elapsed(),
    };

    let (fp, m2) = (final_path.clone(), manifest.clone());
    let existing = tokio::task::spawn_blocking(move || files::check_existing(&fp, &m2)).await??;
    if let files::Existing::Same = existing {
        let rec_writer = RecordWriter::new(&cx.home, &manifest, &final_path);
        rec_writer.write(&Bitfield::full(n), true);
        report(&cx, &job.file_id, (0..n).collect()).await;
        progress.add_done(manifest.size);
        progress.finish(true);
        return Ok(outcome(0, 0, n));
    }

    // With no live holder for some chunk there is nothing to wait for: say so now instead of
    // after the give-up time, unless a part file from an earlier run may hold those chunks.
    let missing = uncovered(&cx, &job, &located, n);
    if missing > 0 && !part.exists() {
        bail!(
            "no live source for {missing} of {n} chunks of {}: every holder of them is offline",
            common::names::printable(&manifest.name, 80)
        );
    }

    let (p2, size) = (part.clone(), manifest.size);
    let m2 = manifest.clone();
    let (file, have) = tokio::task::spawn_blocking(move || {
        let (file, existing_len) = files::open_part(&p2, size)?;
        let have = files::verified_in_part(&file, existing_len, &m2);
        anyhow::Ok((file, have))
    })
    .await??;
    let reused = have.count();
    let mut sched = Scheduler::new(n);
    for i in have.iter_ones() {
        sched.mark_verified(i);
        let r = manifest.chunk_range(i);
        progress.add_done(r.end - r.start);
    }
    if reused > 0 {
        tracing::info!(file = %job.file_id, reused, "resuming from part file");
    }
    let rec_writer = RecordWriter::new(&cx.home, &manifest, &final_path);
    rec_writer.write(&have, false);

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let _stop_workers = cancel.clone().drop_guard();
    let sh = Arc::new(Shared {
        file_id: job.file_id,
        manifest: manifest.clone(),
        file: Arc::new(file),
        writeback: files::Writeback::default(),
        transport: cx.transport.clone(),
        rate: cx.rate.clone(),
        cfg: cx.cfg.clone(),
        sched: Mutex::new(sched),
        wake: watch::Sender::new(0),
        events: events_tx.clone(),
        cancel: cancel.clone(),
        ticket: Mutex::new(None),
    });

    let mut whole = whole::WholeHash::start(sh.file.clone(), manifest.clone(), &have)
        .context("cannot start hashing the file")?;
    let mut sources: HashMap<PeerId, Source> = HashMap::new();
    let mut suppliers: HashSet<PeerId> = HashSet::new();
    let mut fetched = 0u32;
    let mut pending: Vec<u32> = have.iter_ones().collect();
    let mut reporting = false;
    let mut dirty = false;
    let mut relocating = false;
    let mut tracker_ok = true;
    let mut locate_backoff = Duration::from_secs(1);
    let mut next_locate = Instant::now() + cx.cfg.relocate_every;
    let mut last_activity = Instant::now();
    // Why the last source was dropped, for the give-up message (e.g. a refused certificate).
    let mut last_gone: Option<String> = None;
    let mut tick = tokio::time::interval(cx.cfg.report_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    add_holders(
        &cx,
        &job,
        &sh,
        &mut sources,
        located.holders,
        located.ticket,
    );

    // Every first verification sends exactly one Verified event, so counting them (not
    // peeking at the scheduler) keeps `fetched`, `suppliers` and `pending` exact.
    while reused + fetched < n {
        tokio::select! {
            Some(ev) = events.recv() => match ev {
                Event::Verified { index, source } => {
                    let r = manifest.chunk_range(index);
                    progress.add_done(r.end - r.start);
                    whole.landed(index);
                    suppliers.insert(source);
                    fetched += 1;
                    pending.push(index);
                    dirty = true;
                    last_activity = Instant::now();
                }
                Event::WorkerEnded { source, addr, end } => {
                    let s = sources.get_mut(&source);
                    if let Some(s) = s {
                        s.running = false;
                        match &end {
                            WorkerEnd::Bad(why) => {
                                s.banned = true;
                                tracing::warn!(peer = %source, "source sent bad data ({why}); not using it again for this file");
                            }
                            WorkerEnd::Gone(why) => {
                                s.failures += 1;
                                let backoff = Duration::from_secs(1 << s.failures.min(5));
                                s.retry_at = Instant::now() + backoff;
                                cx.transport.forget(&addr);
                                tracing::info!(peer = %source, "dropping source: {why}");
                                last_gone = Some(why.clone());
                            }
                            WorkerEnd::Done | WorkerEnd::Cancelled => {}
                        }
                    }
                    if !sources.values().any(|s| s.running) {
                        next_locate = next_locate.min(Instant::now() + Duration::from_millis(300));
                    }
                    progress.set_sources(sources.values().filter(|s| s.running).count());
                }
                Event::Fatal(e) => {
                    return Err(e).with_context(|| format!("cannot write {}", part.display()));
                }
                Event::Relocated(r) => {
                    relocating = false;
                    match r {
                        Ok(loc) => {
                            if !tracker_ok {
                                tracing::info!("tracker answers again");
                            }
                            tracker_ok = true;
                            locate_backoff = Duration::from_secs(1);
                            next_locate = Instant::now() + cx.cfg.relocate_every;
                            add_holders(&cx, &job, &sh, &mut sources, loc.holders, loc.ticket);
                        }
                        Err(e) => {
                            if tracker_ok {
                                tracing::warn!("cannot locate sources (carrying on with known ones): {e}");
                            }
                            tracker_ok = false;
                            next_locate = Instant::now() + locate_backoff;
                            locate_backoff = (locate_backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                Event::Reported(r) => {
                    reporting = false;
                    if let Err((mut chunks, e)) = r {
                        tracing::debug!("cannot report chunks (will retry): {e}");
                        pending.append(&mut chunks);
                    }
                }
            },
            _ = tick.tick() => {
                let now = Instant::now();
                if dirty {
                    dirty = false;
                    let bits = sh.sched().verified_bits();
                    rec_writer.write_async(bits).await;
                }
                if !pending.is_empty() && !reporting {
                    reporting = true;
                    let chunks = std::mem::take(&mut pending);
                    let (t, me, id, tx) = (cx.tracker.clone(), cx.peer_id.clone(), job.file_id, events_tx.clone());
                    tokio::spawn(async move {
                        let r = t.report_chunks(&me, &id, chunks.clone()).await.map_err(|e| (chunks, e));
                        let _ = tx.send(Event::Reported(r));
                    });
                }
                if now >= next_locate && !relocating {
                    relocating = true;
                    let (t, id, tx) = (cx.tracker.clone(), job.file_id, events_tx.clone());
                    tokio::spawn(async move {
                        let _ = tx.send(Event::Relocated(t.relocate(&id, n).await));
                    });
                }
                let (in_flight, remaining) = {
                    let s = sh.sched();
                    (s.in_flight_count(), s.remaining())
                };
                if in_flight > 0 {
                    last_activity = now;
                }
                progress.set_sources(sources.values().filter(|s| s.running).count());
                if now.duration_since(last_activity) > cx.cfg.give_up_after {
                    let why = last_gone
                        .as_deref()
                        .map(|w| format!(" (last source error: {})", common::names::printable(w, 300)))
                        .unwrap_or_default();
                    bail!(
                        "no live source for {remaining} of {n} chunks of {}{why}",
                        common::names::printable(&manifest.name, 200)
                    );
                }
            }
        }
    }
    cancel.cancel();

    let digest = whole
        .finish()
        .await
        .with_context(|| format!("cannot hash {}", part.display()))?;
    if digest != manifest.sha256 {
        // Every chunk matched the id, so these are the bytes the id names: the listed
        // whole-file hash is what is wrong (its sharer announced a bad one). Keep nothing
        // that a later `get` would resume into the same failure.
        let _ = std::fs::remove_file(&part);
        rec_writer.forget(&job.file_id);
        bail!(
            "{}: the downloaded bytes match every chunk hash but their SHA-256 is {digest}, \
             not the {} the tracker lists; the file's listing is wrong, nothing was saved",
            common::names::printable(&manifest.name, 200),
            manifest.sha256
        );
    }
    let f = sh.file.clone();
    tokio::task::spawn_blocking(move || f.sync_all())
        .await?
        .with_context(|| format!("cannot flush {}", part.display()))?;
    let (p2, f2) = (part.clone(), final_path.clone());
    tokio::task::spawn_blocking(move || files::publish(&p2, &f2)).await??;
    rec_writer.write(&Bitfield::full(n), true);
    pending.extend(0..n);
    pending.sort_unstable();
    pending.dedup();
    report(&cx, &job.file_id, pending).await;
    progress.finish(true);
    Ok(outcome(suppliers.len(), fetched, reused))
}

/// Whether `peer` may be a source of this job: not this peer itself, and matching `--from`.
fn usable<T>(cx: &Context<T>, job: &Job, peer: &PeerId) -> bool {
    *peer != cx.peer_id
        && job
            .from
            .as_ref()
            .is_none_or(|p| peer.as_str().starts_with(p.as_str()))
}

/// How many of the `n` chunks no usable holder in `loc` has.
fn uncovered<T>(cx: &Context<T>, job: &Job, loc: &Located, n: u32) -> u32 {
    let mut union = Bitfield::new(n);
    for h in loc.holders.iter().filter(|h| usable(cx, job, &h.peer_id)) {
        if h.have.len() == n {
            union.union_with(&h.have);
        }
    }
    n - union.count()
}

/// Adds the holders of a Locate answer as sources (minus this peer, restricted to
/// `--from`), refreshes what known ones hold, and starts workers for usable ones.
fn add_holders<T: ChunkTransport>(
    cx: &Context<T>,
    job: &Job,
    sh: &Arc<Shared<T>>,
    sources: &mut HashMap<PeerId, Source>,
    holders: Vec<HolderView>,
    ticket: Option<Arc<Ticket>>,
) {
    let now = Instant::now();
    let mut changed = false;
    sh.renew_ticket(ticket);
    for h in holders {
        if !usable(cx, job, &h.peer_id) {
            continue;
        }
        let s = sources.entry(h.peer_id.clone()).or_insert(Source {
            running: false,
            banned: false,
            retry_at: now,
            failures: 0,
        });
        if s.banned {
            continue;
        }
        if s.running {
            sh.sched().add_source(h.peer_id, h.have);
            changed = true;
            continue;
        }
        if s.retry_at > now {
            continue;
        }
        s.running = true;
        sh.sched().add_source(h.peer_id.clone(), h.have);
        changed = true;
        tokio::spawn(worker::run(sh.clone(), h.peer_id, h.addr));
    }
    if changed {
        sh.wake.send_modify(|g| *g += 1);
    }
}

/// Reports chunks to the tracker, retrying for a few seconds while it is unreachable (it
/// may be restarting); after that a running `serve` re-syncs the holding later.
async fn report<T>(cx: &Context<T>, id: &FileId, chunks: Vec<u32>) {
    if chunks.is_empty() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cx
            .tracker
            .report_chunks(&cx.peer_id, id, chunks.clone())
            .await
        {
            Ok(()) => return,
            Err(TrackerError::Unreachable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::warn!(file = %id, "cannot report chunks to the tracker: {e}");
                return;
            }
        }
    }
}

/// Writes the `downloaded` store record, unless this home already shares the file.
struct RecordWriter {
    home: Home,
    base: Option<StoreRecord>,
}

impl RecordWriter {
    fn new(home: &Home, m: &Manifest, final_path: &std::path::Path) -> Self {
        let shared = matches!(
            home.record(&m.id()),
            Ok(Some(r)) if r.kind == Kind::Shared && r.complete && !r.changed
        );
        let base = (!shared).then(|| {
            StoreRecord::new(
                m,
                Kind::Downloaded,
                final_path.to_path_buf(),
                &Bitfield::new(m.chunk_count()),
            )
        });
        Self {
            home: home.clone(),
            base,
        }
    }

    /// Drops the record this download wrote (never a record of a file this home shares).
    fn forget(&self, id: &FileId) {
        if self.base.is_some()
            && let Err(e) = self.home.delete_record(id)
        {
            tracing::warn!("cannot remove store record: {e:#}");
        }
    }

    fn record(&self, have: &Bitfield, complete: bool) -> Option<StoreRecord> {
        let mut r = self.base.clone()?;
        r.have = hex::encode(have.as_bytes());
        r.complete = complete;
        Some(r)
    }

    fn write(&self, have: &Bitfield, complete: bool) {
        if let Some(r) = self.record(have, complete)
            && let Err(e) = self.home.save_record(&r)
        {
            tracing::warn!("cannot write store record: {e:#}");
        }
    }

    async fn write_async(&self, have: Bitfield) {
        let Some(r) = self.record(&have, false) else {
            return;
        };
        let home = self.home.clone();
        let res = tokio::task::spawn_blocking(move || home.save_record(&r)).await;
        if let Ok(Err(e)) = res {
            tracing::warn!("cannot write store record: {e:#}");
        }
    }
}
