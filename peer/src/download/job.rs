//! What a download is given and what it gives back: the timing knobs, the context every
//! file of one `peer get` shares, the job for one file and its outcome.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{FileId, PeerId};
use tokio::time::Instant;

use crate::home::Home;
use crate::ratelimit::RateLimiter;
use crate::tracker_client::{TrackerClient, TrackerError};

/// Timing knobs of a download.
#[derive(Debug, Clone)]
pub struct DownloadConfig {
    /// A source that sends no chunk for this long is dropped (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// Fail when no chunk arrived and no source was usable for this long
    /// (`--give-up-after`).
    pub give_up_after: Duration,
    /// How often to ask the tracker for holders again: often, because other getters can
    /// serve only once this one knows what they hold.
    pub relocate_every: Duration,
    /// How often to report verified chunks and write the store record.
    pub report_every: Duration,
    /// Requests kept in flight to a lone source at least; more on long, fat links (`pace`).
    pub min_in_flight: usize,
    /// The same floor while there are several sources: in a swarm they are other getters'
    /// uplinks and a seed that every getter asks, where each request deeper queues every
    /// getter's chunks behind it (six getters four deep kept a 100 Mbit/s seed two seconds
    /// behind, so a chunk reached a getter, and could be passed on, two seconds late).
    pub min_in_flight_among_many: usize,
    /// The most chunk bytes requested from one source at once: the getter's memory bound
    /// per source, and what the HTTP/2 windows are sized above.
    pub max_in_flight_bytes: u64,
}

impl Default for DownloadConfig {
    fn default() -> Self {
        Self {
            stall_timeout: Duration::from_secs(20),
            give_up_after: Duration::from_secs(120),
            relocate_every: Duration::from_secs(1),
            report_every: Duration::from_millis(250),
            min_in_flight: 4,
            min_in_flight_among_many: 2,
            max_in_flight_bytes: crate::transport::MAX_IN_FLIGHT_BYTES,
        }
    }
}

/// What every download of one `peer get` shares.
pub struct Context<T> {
    pub home: Home,
    pub peer_id: PeerId,
    pub tracker: TrackerClient,
    /// This home's public key: Locate tickets name it, and the transport proves it.
    pub key: [u8; 32],
    pub transport: Arc<T>,
    pub rate: Option<Arc<RateLimiter>>,
    pub cfg: DownloadConfig,
    /// Where to find the file when no tracker answers (`None`: nowhere, fail).
    pub offline: Option<crate::flood::origin::PeerLocate>,
}

impl<T> Context<T> {
    /// Reports chunks to the tracker, retrying for a few seconds while it is unreachable
    /// (it may be restarting); after that a running `serve` re-syncs the holding later.
    pub(crate) async fn report(&self, id: &FileId, chunks: Vec<u32>) {
        if chunks.is_empty() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self
                .tracker
                .report_chunks(&self.peer_id, id, chunks.clone())
                .await
            {
                Ok(()) => return,
                Err(TrackerError::Unreachable { .. } | TrackerError::Unavailable { .. })
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::warn!(file = %id, "cannot report chunks to the tracker: {e}");
                    return;
                }
            }
        }
    }
}

/// One file to fetch.
#[derive(Debug, Clone)]
pub struct Job {
    pub file_id: FileId,
    /// Absolute output directory.
    pub output: PathBuf,
    /// Only sources whose peer id starts with this.
    pub from: Option<String>,
    /// The name to save it under when the user asked for it by a name a sharer gives it;
    /// else the tracker's (the id does not cover names, so both are only names).
    pub name: Option<String>,
    /// The exact final path, for a file of a fetched folder (its relative path checked by
    /// `common::collection`, its directories made by `folders::make_dirs`): no name from
    /// the tracker is used then.
    pub path: Option<PathBuf>,
    /// Where the listing goes, named by its id, when the tracker says the file is a
    /// collection (`get` passes the home's `collections/`); `None` fetches it like any file.
    pub listings: Option<PathBuf>,
}

impl Job {
    /// Whether `peer` may be a source: not this peer itself, and matching `--from`.
    pub(crate) fn usable(&self, me: &PeerId, peer: &PeerId) -> bool {
        peer != me
            && self
                .from
                .as_ref()
                .is_none_or(|p| peer.as_str().starts_with(p.as_str()))
    }
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
    /// Bytes of the chunks fetched.
    pub bytes_fetched: u64,
    /// Chunks found verified in an existing part (or final) file.
    pub chunks_reused: u32,
    pub elapsed: Duration,
    /// The tracker called it a collection and its listing went to [`Job::listings`] (the
    /// listing itself is checked by its caller).
    pub collection: bool,
}
