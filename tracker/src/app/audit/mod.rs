//! Audits: a holder's claim counts only once the tracker has seen it served.
//!
//! The tracker never stores file bytes, but it knows every chunk's SHA-256, so it checks a
//! claim by fetching one chunk from the claimant with `GetChunks`, as a getter would
//! ([`fetch`]); like a getter's, its ticket names the key it proves the request with, the
//! tracker's own (the ticket signing key). What it audits, in this order:
//! 1. chunks getters reported (`ReportSource`: bad bytes, a refusal, a stall), the reported
//!    chunk itself, under a ticket in the reporter's name;
//! 2. new claims (announce, chunk reports, holdings syncs, replica completions): one chunk
//!    chosen at random among those not yet verified; when it passes, the whole claim as it
//!    stood is marked verified (a liar holding a fraction f of what it claims passes with
//!    probability f, and getters' reports catch the rest);
//! 3. every `--audit-interval`, one verified holding chosen at random, one random verified
//!    chunk of it, so a holder that silently drops data is caught.
//!
//! A failed audit (bad bytes, a refusal, a stall) drops the whole holding and is a strike;
//! bad bytes, or [`STRIKES_TO_DEMOTE`] strikes within [`STRIKE_WINDOW_MS`], demote the peer
//! for [`DEMOTION_MS`] (doubling each time): it is not handed out nor counted and its
//! unverified claims are dropped. A node that cannot be reached or is busy is tried again
//! with back-off; its claims just stay unverified. Reports are believed only through an
//! audit, except that complaints from [`REPORTERS_TO_DEMOTE`] distinct users about a source
//! that passes the audit (it serves the tracker, not getters) also demote it: bad bytes or
//! refusals, not stalls, which load alone causes.
//!
//! Only the tracker holding the planner lease audits; the verified bitfields reach the
//! other trackers through the database like any holding. Demotions live in the auditing
//! tracker's memory (a restart forgets them, the dropped claims stay dropped).

mod fetch;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use common::{Bitfield, FileId, PeerId};
use rand::seq::IteratorRandom;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use fetch::Finding;

use super::index::Index;
use super::replication::{Outcome, withdraw_if_unheld};
use super::{Caller, TrackerService, duration_ms, lock};
use crate::Error;
use crate::db::writer::WriteOp;
use crate::model::now_ms;

/// Audits running at once.
const CONCURRENCY: usize = 4;
/// Audits started per second at most: with 1 MiB chunks, the most audit traffic a tracker
/// downloads is this many MiB/s.
const MAX_PER_SECOND: usize = 8;
/// After a passed audit, the soonest the same holding's new claims are audited again: a
/// getter's holding grows chunk by chunk, and each growth must not cost a chunk.
const CLAIM_AGAIN_MS: i64 = 30_000;
/// How often the auditor looks for work when nothing wakes it.
const TICK: Duration = Duration::from_millis(500);
/// First wait before auditing an unreachable or busy holder again; doubles per try.
const RETRY_MS: i64 = 2_000;
/// Longest wait between tries.
const RETRY_MAX_MS: i64 = 300_000;
/// Failed audits within [`STRIKE_WINDOW_MS`] that demote a peer.
pub const STRIKES_TO_DEMOTE: usize = 3;
pub const STRIKE_WINDOW_MS: i64 = 3_600_000;
/// How long a first demotion lasts; each later one lasts twice the one before, up to a day.
pub const DEMOTION_MS: i64 = 600_000;
const DEMOTION_MAX_MS: i64 = 86_400_000;
/// Distinct users whose complaints demote a source that passes audits.
pub const REPORTERS_TO_DEMOTE: usize = 3;
/// Reports one user may file per minute.
const REPORTS_PER_MINUTE: usize = 120;
/// Reports waiting for an audit; more are refused.
const MAX_PENDING_REPORTS: usize = 1024;
/// The ticket user of audits that no report asked for: not a valid account name, so no
/// account can hold it.
const AUDIT_USER: &str = "@audit";

/// How a source failed a getter, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    BadData,
    NotHeld,
    Stalled,
}

/// The auditor's memory.
#[derive(Default)]
pub(super) struct Audits {
    reports: VecDeque<Report>,
    in_flight: HashSet<(FileId, PeerId)>,
    /// Holdings whose audit could not run (unreachable, busy): tries so far, next try.
    retry: HashMap<(FileId, PeerId), (u32, i64)>,
    strikes: HashMap<PeerId, VecDeque<i64>>,
    /// When the audits of the last second started.
    started: VecDeque<i64>,
    demotions: HashMap<PeerId, u32>,
    /// Source → reporting user → when, for complaints its audits did not confirm.
    complaints: HashMap<PeerId, HashMap<i32, i64>>,
    /// Reporting user → times of their recent reports.
    reporters: HashMap<i32, VecDeque<i64>>,
    last_reaudit_ms: i64,
}

#[derive(Clone, Debug)]
struct Report {
    peer: PeerId,
    file: FileId,
    chunk: u32,
    fault: Fault,
    reporter: i32,
    user: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Claim,
    Reaudit,
    Report { reporter: i32, fault: Fault },
}

/// One audit to run.
struct Job {
    peer: PeerId,
    file: FileId,
    chunk: u32,
    why: Why,
    addr: String,
    expected: common::Sha256Digest,
    /// The claim as it stood when the audit started.
    have: Bitfield,
    ticket: common::Ticket,
}

impl TrackerService {
    /// Runs audits until `stop` (only while this tracker holds the planner lease).
    pub(super) async fn audit(self, stop: CancellationToken) {
        let reach = std::sync::Arc::new(fetch::Reach::new(
            self.inner.cfg.audit_timeout,
            self.inner.cfg.peer_ca.as_deref(),
            common::NodeKey::from(&self.inner.tickets),
        ));
        let mut running: JoinSet<(Job, Finding)> = JoinSet::new();
        loop {
            while running.len() < CONCURRENCY {
                let Some(job) = self.next_audit(now_ms()) else {
                    break;
                };
                let reach = reach.clone();
                running.spawn(async move {
                    let finding = fetch::audit_chunk(
                        &job.addr,
                        job.file,
                        job.chunk,
                        job.expected,
                        &job.ticket,
                        &reach,
                    )
                    .await;
                    (job, finding)
                });
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(done) = running.join_next(), if !running.is_empty() => {
                    match done {
                        Ok((job, finding)) => self.settle(job, finding).await,
                        Err(e) => tracing::error!(cause = %e, "an audit failed to run"),
                    }
                }
                () = self.inner.audit_wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
            }
        }
        running.abort_all();
    }

    /// A getter's complaint about a source: queued for an audit of that chunk.
    ///
    /// # Errors
    /// `PermissionDenied` when `reporter` is another user's peer, `NotFound` for an unknown
    /// file or a source that holds nothing of it, `InvalidArgument` for a chunk past the
    /// end, `LimitReached` past [`REPORTS_PER_MINUTE`] or when the queue is full.
    pub fn report_source(
        &self,
        caller: &Caller,
        reporter: &PeerId,
        file: &FileId,
        source: &PeerId,
        chunk: u32,
        fault: Fault,
    ) -> Result<(), Error> {
        let now = now_ms();
        {
            let ix = self.index();
            // A getter that serves nothing may never have heartbeated: the session is
            // the reporter; the peer id only has to be none of another user's.
            if ix
                .peers
                .get(reporter)
                .is_some_and(|p| p.rec.user_id != caller.user_id)
            {
                return Err(super::holdings::not_yours(reporter));
            }
            let f = ix
                .files
                .get(file)
                .ok_or_else(|| Error::not_found(format!("unknown file {file}")))?;
            if !f.holdings.contains_key(source) {
                return Err(Error::not_found(format!(
                    "peer {source} holds nothing of file {file}"
                )));
            }
            if chunk >= f.manifest.chunk_count() {
                return Err(Error::invalid(format!(
                    "chunk {chunk} is past the end of file {file}"
                )));
            }
        }
        let mut a = lock(&self.inner.audits);
        let recent = a.reporters.entry(caller.user_id).or_default();
        while recent.front().is_some_and(|&t| now - t >= 60_000) {
            recent.pop_front();
        }
        if recent.len() >= REPORTS_PER_MINUTE {
            return Err(Error::LimitReached(format!(
                "at most {REPORTS_PER_MINUTE} source reports a minute per user"
            )));
        }
        recent.push_back(now);
        let dup = a
            .reports
            .iter()
            .any(|r| r.peer == *source && r.file == *file && r.chunk == chunk);
        if dup {
            return Ok(());
        }
        if a.reports.len() >= MAX_PENDING_REPORTS {
            return Err(Error::LimitReached(
                "the tracker has too many source reports to audit; try again later".into(),
            ));
        }
        a.reports.push_back(Report {
            peer: source.clone(),
            file: *file,
            chunk,
            fault,
            reporter: caller.user_id,
            user: caller.user.clone(),
        });
        drop(a);
        tracing::info!(user = %caller.user, source = %source, file = %file, chunk, ?fault, "source reported");
        self.inner.audit_wake.notify_one();
        Ok(())
    }

    /// The next audit due, if this tracker audits: reports first, then new claims, then a
    /// re-audit when one is due.
    fn next_audit(&self, now: i64) -> Option<Job> {
        if !self.is_leader() {
            return None;
        }
        let ix = self.index();
        let mut a = lock(&self.inner.audits);
        while a.started.front().is_some_and(|&t| now - t >= 1_000) {
            a.started.pop_front();
        }
        if a.started.len() >= MAX_PER_SECOND {
            return None;
        }
        if a.retry.len() > 65_536 {
            a.retry.retain(|_, r| r.1 > now);
        }
        let mut waiting = VecDeque::new();
        let mut found = None;
        while let Some(r) = a.reports.pop_front() {
            if a.in_flight.contains(&(r.file, r.peer.clone())) {
                waiting.push_back(r);
                continue;
            }
            let why = Why::Report {
                reporter: r.reporter,
                fault: r.fault,
            };
            if let Some(job) = self.job(&ix, &r.peer, r.file, Some(r.chunk), why, &r.user, now) {
                found = Some(job);
                break;
            }
        }
        waiting.append(&mut a.reports);
        a.reports = waiting;
        if found.is_none() {
            let due = ix.unverified.iter().find(|(file, peer)| {
                ix.is_serving(peer, now)
                    && !a.in_flight.contains(&(*file, peer.clone()))
                    && a.retry
                        .get(&(*file, peer.clone()))
                        .is_none_or(|r| r.1 <= now)
            });
            if let Some((file, peer)) = due.cloned() {
                found = self.job(&ix, &peer, file, None, Why::Claim, AUDIT_USER, now);
            }
        }
        let every = duration_ms(self.inner.cfg.audit_interval);
        if found.is_none() && every > 0 && now - a.last_reaudit_ms >= every {
            a.last_reaudit_ms = now;
            let mut rng = rand::rng();
            let pick = ix
                .files
                .values()
                .flat_map(|f| f.holdings.iter().map(move |(p, h)| (f.id, p, h)))
                .filter(|(id, p, h)| {
                    h.verified.count() > 0
                        && ix.is_serving(p, now)
                        && !a.in_flight.contains(&(*id, (*p).clone()))
                })
                .choose(&mut rng);
            if let Some((file, peer, _)) = pick {
                found = self.job(&ix, peer, file, None, Why::Reaudit, AUDIT_USER, now);
            }
        }
        let job = found?;
        a.in_flight.insert((job.file, job.peer.clone()));
        a.started.push_back(now);
        Some(job)
    }

    /// An audit of `peer`'s holding of `file`: the given chunk, or one chosen for `why`.
    #[allow(clippy::too_many_arguments)]
    fn job(
        &self,
        ix: &Index,
        peer: &PeerId,
        file: FileId,
        chunk: Option<u32>,
        why: Why,
        user: &str,
        now: i64,
    ) -> Option<Job> {
        if !ix.is_serving(peer, now) {
            return None;
        }
        let f = ix.files.get(&file)?;
        let h = f.holdings.get(peer)?;
        let mut rng = rand::rng();
        let chunk = match (chunk, why) {
            (Some(c), _) => Some(c).filter(|&c| h.have.get(c)),
            (None, Why::Reaudit) => h.verified.iter_ones().choose(&mut rng),
            (None, _) => h
                .have
                .iter_ones()
                .filter(|&c| !h.verified.get(c))
                .choose(&mut rng),
        }?;
        Some(Job {
            peer: peer.clone(),
            file,
            chunk,
            why,
            addr: ix.peers.get(peer)?.rec.addr.clone(),
            expected: *f.manifest.chunk_hashes.get(chunk as usize)?,
            have: h.have.clone(),
            // Named for the tracker's own key, which the audit proves (see `fetch`).
            ticket: self.issue_ticket(file, self.ticket_public_key(), None, user),
        })
    }

    /// Applies what an audit found.
    async fn settle(&self, job: Job, finding: Finding) {
        self.inner.metrics.audited(finding.label());
        let now = now_ms();
        let key = (job.file, job.peer.clone());
        lock(&self.inner.audits).in_flight.remove(&key);
        let mut out = Outcome::default();
        let res = match &finding {
            Finding::Passed => self.passed(&job, now, &mut out),
            Finding::Unreachable(why) => {
                tracing::debug!(peer = %job.peer, file = %job.file, %why, "audit could not run");
                self.retry_later(key, now);
                Ok(())
            }
            Finding::Busy => {
                self.retry_later(key, now);
                Ok(())
            }
            Finding::BadData | Finding::NotHeld(_) | Finding::Stalled => {
                tracing::warn!(
                    peer = %job.peer, file = %job.file, chunk = job.chunk, ?finding,
                    "audit failed: the holder's claim is dropped"
                );
                self.failed(&job, &finding, now, &mut out)
            }
        };
        let res = match res {
            Ok(()) if !out.ops.is_empty() => self.apply_outcome(out).await,
            other => other,
        };
        if let Err(e) = res {
            tracing::warn!(cause = %e, "recording an audit failed");
        }
        self.wake_planner();
    }

    fn retry_later(&self, key: (FileId, PeerId), now: i64) {
        let mut a = lock(&self.inner.audits);
        let e = a.retry.entry(key).or_insert((0, now));
        e.0 = e.0.saturating_add(1);
        let wait = RETRY_MS.saturating_mul(1 << e.0.min(8)).min(RETRY_MAX_MS);
        e.1 = now + wait;
    }

    fn passed(&self, job: &Job, now: i64, out: &mut Outcome) -> Result<(), Error> {
        let key = (job.file, job.peer.clone());
        let mut ix = self.index_mut();
        let mut a = lock(&self.inner.audits);
        // New claims of this holding wait a while; the retry map keeps the time.
        a.retry.insert(key, (0, now + CLAIM_AGAIN_MS));
        // It served the tracker what it is said not to serve getters. A stall is no such
        // evidence: a loaded node or a slow link stalls honest getters too, and 50 getters
        // of one file on a busy machine once demoted every honest source that way.
        if let Why::Report { reporter, fault } = job.why
            && fault != Fault::Stalled
        {
            let complaints = a.complaints.entry(job.peer.clone()).or_default();
            complaints.retain(|_, &mut t| now - t < STRIKE_WINDOW_MS);
            complaints.insert(reporter, now);
            if complaints.len() >= REPORTERS_TO_DEMOTE {
                a.complaints.remove(&job.peer);
                tracing::warn!(peer = %job.peer, "demoted: complaints from several users");
                demote(&mut ix, &mut a, &job.peer, now, out);
                return out.queue(&self.inner.writer);
            }
        }
        drop(a);
        let Some(mut h) = ix
            .files
            .get(&job.file)
            .and_then(|f| f.holdings.get(&job.peer))
            .cloned()
        else {
            return Ok(());
        };
        let mut vouched = job.have.clone();
        vouched.intersect_with(&h.have);
        let before = h.verified.clone();
        h.verified.union_with(&vouched);
        if h.verified != before {
            h.updated_at_ms = now;
            out.ops
                .push(WriteOp::Holding(super::holdings::holding_record(
                    &job.peer, job.file, &h,
                )));
            ix.set_holding(job.file, &job.peer, h);
        }
        out.queue(&self.inner.writer)
    }

    fn failed(
        &self,
        job: &Job,
        finding: &Finding,
        now: i64,
        out: &mut Outcome,
    ) -> Result<(), Error> {
        let mut ix = self.index_mut();
        let mut a = lock(&self.inner.audits);
        a.retry.remove(&(job.file, job.peer.clone()));
        drop_holding(&mut ix, &job.peer, &job.file, now, out);
        let strikes = a.strikes.entry(job.peer.clone()).or_default();
        strikes.push_back(now);
        while strikes
            .front()
            .is_some_and(|&t| now - t >= STRIKE_WINDOW_MS)
        {
            strikes.pop_front();
        }
        if *finding == Finding::BadData || strikes.len() >= STRIKES_TO_DEMOTE {
            demote(&mut ix, &mut a, &job.peer, now, out);
        }
        out.queue(&self.inner.writer)
    }
}

/// Removes `peer`'s holding of `file` (withdrawing the file when no user holds it then).
fn drop_holding(ix: &mut Index, peer: &PeerId, file: &FileId, now: i64, out: &mut Outcome) {
    if ix.take_holding(file, peer).is_some() {
        out.ops.push(WriteOp::HoldingDelete(peer.clone(), *file));
        withdraw_if_unheld(ix, file, now, out);
    }
}

/// Demotes `peer` and drops every claim of it no audit verified.
fn demote(ix: &mut Index, a: &mut Audits, peer: &PeerId, now: i64, out: &mut Outcome) {
    let n = a.demotions.entry(peer.clone()).or_insert(0);
    *n = n.saturating_add(1);
    let span = DEMOTION_MS
        .saturating_mul(1 << (*n - 1).min(16))
        .min(DEMOTION_MAX_MS);
    ix.demoted.insert(peer.clone(), now + span);
    a.strikes.remove(peer);
    tracing::warn!(peer = %peer, minutes = span / 60_000, "peer demoted");
    for file in ix.files_of(peer) {
        let Some(h) = ix
            .files
            .get(&file)
            .and_then(|f| f.holdings.get(peer))
            .cloned()
        else {
            continue;
        };
        if h.have.is_subset_of(&h.verified) {
            continue;
        }
        if h.verified.count() == 0 && h.have.count() > 0 {
            drop_holding(ix, peer, &file, now, out);
        } else {
            let mut h = h;
            h.have = h.verified.clone();
            h.updated_at_ms = now;
            out.ops
                .push(WriteOp::Holding(super::holdings::holding_record(
                    peer, file, &h,
                )));
            ix.set_holding(file, peer, h);
        }
    }
}
