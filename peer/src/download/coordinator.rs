//! The coordinator of one file's download: a state struct that reacts to [`Event`]s from
//! workers and spawned tracker calls and to a periodic tick, and decides what happens next
//! (start workers, re-Locate, report, give up). It owns the source list; the chunk states
//! are the scheduler's (`STATE.md`). [`super::download`] prepares the part file, then runs:
//!
//! ```text
//! while !coordinator.complete() {
//!     select! { event => coordinator.on_event(event)?, tick => coordinator.on_tick().await? }
//! }
//! coordinator.finish().await
//! ```
//!
//! The tracker may go away meanwhile: known sources carry on and Locate is retried with
//! back-off. Each Locate answer carries a fresh ticket; workers present the newest one, so
//! a download that outlasts a ticket keeps going on renewed ones.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{Bitfield, PeerId, Ticket};
use tokio::time::Instant;

use super::error::{DownloadError, NoSource};
use super::files;
use super::job::{Context, Job, Outcome};
use super::record::RecordWriter;
use super::shared::{Event, Fault, Shared, WorkerEnd};
use super::whole::WholeHash;
use super::worker;
use crate::progress::FileProgress;
use crate::tracker_client::{HolderView, Relocated, TrackerError};
use crate::transport::ChunkTransport;
use proto::tracker::v1 as pb;

/// What the coordinator knows of a source.
struct Source {
    /// A worker is fetching from it now.
    running: bool,
    /// It sent bad bytes, or refused chunks it is listed for [`REFUSALS_TO_BAN`] times:
    /// never used again for this file. (A stall is reported, not held against it.)
    banned: bool,
    /// Times it refused a chunk it is listed for.
    refusals: u32,
    /// After a failure, not re-admitted before this.
    retry_at: Instant,
    failures: u32,
}

/// Refusals or stalls on listed chunks after which a source is not used again.
const REFUSALS_TO_BAN: u32 = 2;

/// The coordinator's conversation with the tracker: reports and re-Locates run as spawned
/// calls whose answers come back as events, at most one of each at a time.
struct TrackerLink {
    /// Verified chunks not reported yet.
    pending: Vec<u32>,
    reporting: bool,
    relocating: bool,
    /// The Locate under way, which `finish` lets land before the final report.
    locate_task: Option<tokio::task::JoinHandle<()>>,
    /// Whether the last Locate was answered (an outage is logged once).
    answering: bool,
    backoff: Duration,
    next_locate: Instant,
}

/// The state of one file's download between start and finish.
pub(super) struct Coordinator<T> {
    cx: Arc<Context<T>>,
    job: Job,
    sh: Arc<Shared<T>>,
    progress: Arc<FileProgress>,
    whole: WholeHash,
    records: RecordWriter,
    final_path: PathBuf,
    part: PathBuf,
    started: std::time::Instant,
    /// Chunks found verified in the part file at start.
    reused: u32,
    /// Chunks verified since, and their bytes.
    fetched: u32,
    fetched_bytes: u64,
    sources: HashMap<PeerId, Source>,
    /// Distinct peers that supplied verified chunks.
    suppliers: HashSet<PeerId>,
    /// The store record lags the scheduler.
    dirty: bool,
    tracker: TrackerLink,
    /// When a chunk last arrived or a request was last in flight: the give-up clock.
    last_activity: Instant,
    /// Why the last source was dropped, for the give-up message (e.g. a refused certificate).
    last_gone: Option<String>,
    /// A Locate answered while every known source was banned, with none new: the download
    /// fails at the next tick instead of waiting for the give-up time.
    all_bad: bool,
    /// Reports of failed sources on their way to the tracker; a failing download waits
    /// for them (briefly), so the process does not exit before they are sent.
    complaints: Vec<tokio::task::JoinHandle<()>>,
}

/// What the coordinator starts from.
pub(super) struct Start<T> {
    pub cx: Arc<Context<T>>,
    pub job: Job,
    pub sh: Arc<Shared<T>>,
    pub progress: Arc<FileProgress>,
    pub whole: WholeHash,
    pub records: RecordWriter,
    pub final_path: PathBuf,
    pub part: PathBuf,
    pub started: std::time::Instant,
    /// Chunks verified in the part file at start.
    pub have: Bitfield,
}

impl<T: ChunkTransport> Coordinator<T> {
    /// A coordinator with the holders and ticket of the first Locate as its sources.
    pub(super) fn new(s: Start<T>, holders: Vec<HolderView>, ticket: Option<Arc<Ticket>>) -> Self {
        let relocate_every = s.cx.cfg.relocate_every;
        let mut c = Coordinator {
            reused: s.have.count(),
            fetched: 0,
            fetched_bytes: 0,
            sources: HashMap::new(),
            suppliers: HashSet::new(),
            dirty: false,
            tracker: TrackerLink {
                pending: s.have.iter_ones().collect(),
                reporting: false,
                relocating: false,
                locate_task: None,
                answering: true,
                backoff: Duration::from_secs(1),
                next_locate: Instant::now() + relocate_every,
            },
            last_activity: Instant::now(),
            last_gone: None,
            all_bad: false,
            complaints: Vec::new(),
            cx: s.cx,
            job: s.job,
            sh: s.sh,
            progress: s.progress,
            whole: s.whole,
            records: s.records,
            final_path: s.final_path,
            part: s.part,
            started: s.started,
        };
        c.add_holders(holders, ticket);
        c
    }

    fn chunk_count(&self) -> u32 {
        self.sh.manifest.chunk_count()
    }

    /// Whether every chunk is verified.
    pub(super) fn complete(&self) -> bool {
        self.reused + self.fetched >= self.chunk_count()
    }

    /// Takes one event.
    ///
    /// # Errors
    /// When the part file cannot be written.
    pub(super) fn on_event(&mut self, ev: Event) -> Result<(), DownloadError> {
        match ev {
            Event::Verified { index, source } => self.verified(index, source),
            Event::WorkerEnded { source, addr, end } => self.worker_ended(source, &addr, end),
            Event::Fatal(e) => return Err(DownloadError::io("write", &self.part, e)),
            Event::Relocated(r) => self.relocated(r),
            Event::Reported(r) => {
                self.tracker.reporting = false;
                if let Err((mut chunks, e)) = r {
                    tracing::debug!("cannot report chunks (will retry): {e}");
                    self.tracker.pending.append(&mut chunks);
                }
            }
        }
        Ok(())
    }

    fn verified(&mut self, index: u32, source: PeerId) {
        let r = self.sh.manifest.chunk_range(index);
        self.progress.add_done(r.end - r.start);
        self.whole.landed(index);
        self.suppliers.insert(source);
        self.fetched += 1;
        self.fetched_bytes += r.end - r.start;
        self.tracker.pending.push(index);
        self.dirty = true;
        self.last_activity = Instant::now();
    }

    fn worker_ended(&mut self, source: PeerId, addr: &str, end: WorkerEnd) {
        let mut complaint = None;
        if let Some(s) = self.sources.get_mut(&source) {
            s.running = false;
            match end {
                WorkerEnd::Bad { why, chunk } => {
                    s.banned = true;
                    tracing::warn!(peer = %source, "source sent bad data ({why}); not using it again for this file");
                    complaint = chunk.map(|c| (c, pb::SourceFault::BadData));
                    self.last_gone = Some(format!("bad data: {why}"));
                }
                WorkerEnd::Gone { why, fault } => {
                    s.failures += 1;
                    s.retry_at = Instant::now() + Duration::from_secs(1 << s.failures.min(5));
                    self.cx.transport.forget(addr);
                    if let Some((chunk, fault)) = fault {
                        // A stall is reported but never bans: a loaded node or a slow link
                        // stalls honestly, and it is tried again after the back-off.
                        if fault == Fault::NotHeld {
                            s.refusals += 1;
                            s.banned = s.refusals >= REFUSALS_TO_BAN;
                        }
                        complaint = Some((
                            chunk,
                            match fault {
                                Fault::NotHeld => pb::SourceFault::NotHeld,
                                Fault::Stalled => pb::SourceFault::Stalled,
                            },
                        ));
                    }
                    tracing::info!(peer = %source, banned = s.banned, "dropping source: {why}");
                    self.last_gone = Some(why);
                }
                WorkerEnd::Done | WorkerEnd::Cancelled => {}
            }
        }
        if let Some((chunk, fault)) = complaint {
            self.complain(source, chunk, fault);
        }
        if !self.sources.values().any(|s| s.running) {
            let soon = Instant::now() + Duration::from_millis(300);
            self.tracker.next_locate = self.tracker.next_locate.min(soon);
        }
        self.progress.set_sources(self.running());
    }

    /// Tells the tracker (in the background) that `source` failed on `chunk`, so it can
    /// audit the source and stop handing it out.
    fn complain(&mut self, source: PeerId, chunk: u32, fault: pb::SourceFault) {
        let (t, me, id) = (
            self.cx.tracker.clone(),
            self.cx.peer_id.clone(),
            self.job.file_id,
        );
        self.complaints.retain(|h| !h.is_finished());
        self.complaints.push(tokio::spawn(async move {
            if let Err(e) = t.report_source(&me, &id, &source, chunk, fault).await {
                tracing::debug!(peer = %source, "cannot report the source to the tracker: {e}");
            }
        }));
    }

    /// Gives the reports under way a few seconds to reach the tracker.
    async fn send_complaints(&mut self) {
        for h in self.complaints.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), h).await;
        }
    }

    /// Every source known is banned.
    fn all_banned(&self) -> bool {
        !self.sources.is_empty() && self.sources.values().all(|s| s.banned)
    }

    fn relocated(&mut self, r: Result<Relocated, TrackerError>) {
        let t = &mut self.tracker;
        t.relocating = false;
        match r {
            Ok(loc) => {
                if !t.answering {
                    tracing::info!("tracker answers again");
                }
                t.answering = true;
                t.backoff = Duration::from_secs(1);
                t.next_locate = Instant::now() + self.cx.cfg.relocate_every;
                self.add_holders(loc.holders, loc.ticket);
                self.all_bad = self.all_banned();
            }
            Err(e) => {
                if t.answering {
                    tracing::warn!("cannot locate sources (carrying on with known ones): {e}");
                }
                t.answering = false;
                t.next_locate = Instant::now() + t.backoff;
                t.backoff = (t.backoff * 2).min(Duration::from_secs(10));
            }
        }
    }

    fn running(&self) -> usize {
        self.sources.values().filter(|s| s.running).count()
    }

    /// The periodic step: write the store record, report chunks, re-Locate when due, and
    /// give up when nothing has moved for `give_up_after`.
    ///
    /// # Errors
    /// When the download gives up.
    pub(super) async fn on_tick(&mut self) -> Result<(), DownloadError> {
        let now = Instant::now();
        if self.dirty {
            self.dirty = false;
            let bits = self.sh.sched().verified_bits();
            self.records.write_async(bits).await;
        }
        self.report_pending();
        if now >= self.tracker.next_locate && !self.tracker.relocating {
            self.tracker.relocating = true;
            let (t, id, tx, key) = (
                self.cx.tracker.clone(),
                self.job.file_id,
                self.sh.events.clone(),
                self.cx.key,
            );
            let n = self.chunk_count();
            self.tracker.locate_task = Some(tokio::spawn(async move {
                let _ = tx.send(Event::Relocated(t.relocate(&id, n, &key).await));
            }));
        }
        let (in_flight, remaining) = {
            let s = self.sh.sched();
            (s.in_flight_count(), s.remaining())
        };
        if in_flight > 0 {
            self.last_activity = now;
        }
        self.progress.set_sources(self.running());
        if self.all_bad && in_flight == 0 {
            self.send_complaints().await;
            return Err(DownloadError::NoLiveSource {
                missing: remaining,
                total: self.chunk_count(),
                name: common::names::printable(&self.sh.manifest.name, 200),
                why: NoSource::AllBad {
                    sources: self.sources.len(),
                    last_error: self
                        .last_gone
                        .as_deref()
                        .map(|w| common::names::printable(w, 300)),
                },
            });
        }
        if now.duration_since(self.last_activity) > self.cx.cfg.give_up_after {
            self.send_complaints().await;
            let last_error = self
                .last_gone
                .as_deref()
                .map(|w| common::names::printable(w, 300));
            return Err(DownloadError::NoLiveSource {
                missing: remaining,
                total: self.chunk_count(),
                name: common::names::printable(&self.sh.manifest.name, 200),
                why: NoSource::GaveUp { last_error },
            });
        }
        Ok(())
    }

    /// Sends the verified chunks not reported yet, unless a report is under way.
    fn report_pending(&mut self) {
        if self.tracker.pending.is_empty() || self.tracker.reporting {
            return;
        }
        self.tracker.reporting = true;
        let chunks = std::mem::take(&mut self.tracker.pending);
        let (t, me, id, tx) = (
            self.cx.tracker.clone(),
            self.cx.peer_id.clone(),
            self.job.file_id,
            self.sh.events.clone(),
        );
        tokio::spawn(async move {
            let r = t
                .report_chunks(&me, &id, chunks.clone())
                .await
                .map_err(|e| (chunks, e));
            let _ = tx.send(Event::Reported(r));
        });
    }

    /// Adds the holders of a Locate answer as sources (minus this peer, restricted to
    /// `--from`), adds to what known ones hold (never takes away: a source's own holdings
    /// stream may be newer), and starts workers for usable ones.
    fn add_holders(&mut self, holders: Vec<HolderView>, ticket: Option<Arc<Ticket>>) {
        let now = Instant::now();
        let mut changed = false;
        self.sh.renew_ticket(ticket);
        for h in holders {
            if !self.job.usable(&self.cx.peer_id, &h.peer_id) {
                continue;
            }
            let s = self.sources.entry(h.peer_id.clone()).or_insert(Source {
                running: false,
                banned: false,
                refusals: 0,
                retry_at: now,
                failures: 0,
            });
            if s.banned || (!s.running && s.retry_at > now) {
                continue;
            }
            self.sh.sched().merge_source(h.peer_id.clone(), h.have);
            changed = true;
            if !s.running {
                s.running = true;
                tokio::spawn(worker::run(self.sh.clone(), h.peer_id, h.addr));
            }
        }
        if changed {
            self.sh.wake.send_modify(|g| *g += 1);
        }
        self.progress.set_sources(self.running());
    }

    /// Stops the workers, checks the whole file's SHA-256, and gives the file its final
    /// name while reporting every chunk to the tracker.
    ///
    /// # Errors
    /// When the whole-file hash differs from the listed one (nothing is kept), or the file
    /// cannot be flushed or published.
    pub(super) async fn finish(mut self) -> Result<Outcome, DownloadError> {
        self.sh.cancel.cancel();
        let last_chunk = std::time::Instant::now();
        let ms = |t: std::time::Instant| t.elapsed().as_millis();
        // The tracker counts a getter as active from its Locates until its report of the
        // whole file: a Locate landing after that report would count it again for 10 s.
        // The call is bounded by the client's timeouts, as the report is.
        if let Some(h) = self.tracker.locate_task.take() {
            let _ = h.await;
            tracing::debug!(after_ms = ms(last_chunk), "the Locate in flight answered");
        }
        let m = self.sh.manifest.clone();
        let digest = self
            .whole
            .finish()
            .await
            .map_err(|e| DownloadError::io("hash", &self.part, e))?;
        tracing::debug!(file = %self.job.file_id, after_ms = ms(last_chunk), "whole file hashed");
        if digest != m.sha256 {
            // Every chunk matched the id, so these are the bytes the id names: the listed
            // whole-file hash is what is wrong (its sharer announced a bad one). Keep nothing
            // that a later `get` would resume into the same failure.
            let _ = std::fs::remove_file(&self.part);
            self.records.forget(&self.job.file_id);
            return Err(DownloadError::WholeFileHash {
                name: common::names::printable(&m.name, 200),
                got: digest,
                listed: m.sha256,
            });
        }
        // Every chunk is verified and in the part file: tell the tracker while the file is
        // flushed and renamed, so its round trip does not hold up the end.
        let n = m.chunk_count();
        let mut pending = self.tracker.pending;
        pending.extend(0..n);
        pending.sort_unstable();
        pending.dedup();
        let (f, part, fin) = (
            self.sh.file.clone(),
            self.part.clone(),
            self.final_path.clone(),
        );
        let publish = async {
            let p = part.clone();
            tokio::task::spawn_blocking(move || f.sync_all())
                .await
                .map_err(DownloadError::task("flush"))?
                .map_err(|e| DownloadError::io("flush", &p, e))?;
            tokio::task::spawn_blocking(move || files::publish(&part, &fin))
                .await
                .map_err(DownloadError::task("publish"))?
        };
        let report = async {
            self.cx.report(&self.job.file_id, pending).await;
            tracing::debug!(file = %self.job.file_id, after_ms = ms(last_chunk), "reported");
        };
        let publish = async {
            let r = publish.await;
            tracing::debug!(file = %self.job.file_id, after_ms = ms(last_chunk), "flushed and renamed");
            r
        };
        let ((), published) = tokio::join!(report, publish);
        published?;
        self.records.write(&Bitfield::full(n), true);
        self.progress.set_sources(self.suppliers.len());
        self.progress.finish(true);
        Ok(Outcome {
            id: self.job.file_id,
            name: m.name.clone(),
            path: self.final_path,
            size: m.size,
            sha256: m.sha256.to_hex(),
            sources: self.suppliers.len(),
            chunks_fetched: self.fetched,
            bytes_fetched: self.fetched_bytes,
            chunks_reused: self.reused,
            elapsed: self.started.elapsed(),
            collection: false,
        })
    }
}
