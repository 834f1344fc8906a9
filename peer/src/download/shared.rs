//! What the coordinator and the workers of one file share: the [`Shared`] state (the
//! scheduler, the part file, the newest ticket) and the [`Event`]s workers and spawned
//! tracker calls send back to the coordinator.

use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use common::{FileId, Manifest, PeerId, Ticket};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::files;
use super::job::DownloadConfig;
use super::scheduler::Scheduler;
use crate::ratelimit::RateLimiter;
use crate::tracker_client::{Relocated, TrackerError};

/// State shared by the coordinator and the workers of one file.
pub(crate) struct Shared<T> {
    pub(super) file_id: FileId,
    pub(super) manifest: Arc<Manifest>,
    pub(super) file: Arc<File>,
    pub(super) writeback: files::Writeback,
    pub(super) transport: Arc<T>,
    pub(super) rate: Option<Arc<RateLimiter>>,
    pub(super) cfg: DownloadConfig,
    pub(super) sched: Mutex<Scheduler<PeerId>>,
    /// Bumped when chunks go back to Missing or sources change, to wake idle workers.
    pub(super) wake: watch::Sender<u64>,
    /// Bumped when a chunk is first verified, so a request for it elsewhere gives way.
    pub(super) landed: watch::Sender<u64>,
    pub(super) events: mpsc::UnboundedSender<Event>,
    pub(super) cancel: CancellationToken,
    /// The newest ticket from the tracker, presented with every request.
    pub(super) ticket: Mutex<Option<Arc<Ticket>>>,
}

impl<T> Shared<T> {
    pub(super) fn sched(&self) -> MutexGuard<'_, Scheduler<PeerId>> {
        self.sched.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ticket to present now.
    pub(super) fn ticket(&self) -> Option<Arc<Ticket>> {
        self.ticket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps `t` if it lasts longer than the one held.
    pub(super) fn renew_ticket(&self, t: Option<Arc<Ticket>>) {
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

/// What the coordinator hears about. Every chunk's first verification sends exactly one
/// `Verified`, so the coordinator counts them instead of peeking at the scheduler.
pub(crate) enum Event {
    /// A worker verified and wrote chunk `index` from `source`.
    Verified { index: u32, source: PeerId },
    /// A worker stopped; `end` says whether its source may be used again.
    WorkerEnded {
        source: PeerId,
        addr: String,
        end: WorkerEnd,
    },
    /// Writing the part file failed: the download cannot go on.
    Fatal(std::io::Error),
    /// A re-Locate answered (or failed).
    Relocated(Result<Relocated, TrackerError>),
    /// A chunk report was taken (or failed, with the chunks to report again).
    Reported(Result<(), (Vec<u32>, TrackerError)>),
}

/// How a worker ended.
#[derive(Debug)]
pub enum WorkerEnd {
    /// Nothing left to fetch: the file is complete.
    Done,
    /// The download is being stopped.
    Cancelled,
    /// The source sent bad bytes (of `chunk`, when known): never use it again for this
    /// download.
    Bad { why: String, chunk: Option<u32> },
    /// The source failed, refused or stalled: it may be re-admitted later. `fault` says how
    /// it failed a chunk it is listed for, which is worth telling the tracker.
    Gone {
        why: String,
        fault: Option<(u32, Fault)>,
    },
}

/// How a source failed a chunk it is listed for (besides bad bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// It said it does not hold the chunk.
    NotHeld,
    /// It sent nothing for the stall timeout.
    Stalled,
}
