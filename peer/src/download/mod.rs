//! The downloader: fetches one file from several sources at once into
//! `NAME.tessera-part`, checks every chunk before writing it, and moves the file to its
//! final name only when every chunk is verified and the whole file hashes to the listed
//! SHA-256 ([`whole`]). Chunk states are in `STATE.md`.
//!
//! [`download`] locates the file, checks the chunk map against the id, reuses what an
//! existing part file holds, and hands over to one [`coordinator`] per file, which owns
//! the source list: it asks the tracker for holders (at start, every second, and when no
//! source is left), starts a [`worker`] per usable source, reports verified chunks and
//! writes the store record ([`record`]) on a short cadence (so a `serve` in the same home
//! serves what is already here), and gives up only when nothing has moved for a long time.
//! Workers pull chunks from the shared [`scheduler::Scheduler`], and each follows what its
//! source holds while that grows ([`holdings`]), so other getters' new chunks are asked
//! for without waiting for the next Locate.
//!
//! Module graph (no cycles): `job` ← `shared` ← `holdings` ← `worker` ← `coordinator` ←
//! this module; `error`, `files`, `record`, `scheduler` and `whole` are leaves (`files`
//! uses `error`).

mod coordinator;
mod error;
pub mod files;
mod holdings;
mod job;
mod pace;
mod record;
pub mod scheduler;
mod shared;
mod whole;
mod worker;

use std::sync::{Arc, Mutex};

use common::Bitfield;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::home::part_path;
use crate::progress::FileProgress;
use crate::tracker_client::{Located, TrackerError};
use crate::transport::ChunkTransport;
use coordinator::{Coordinator, Start};
pub use error::{DownloadError, NoSource};
pub use job::{Context, DownloadConfig, Job, Outcome};
use record::RecordWriter;
use scheduler::Scheduler;
use shared::Shared;

/// Fetches one file. Progress goes to `progress`.
///
/// # Errors
/// When the file cannot be located or verified, the output is taken, the disk fails, or no
/// source delivers for `give_up_after`.
pub async fn download<T: ChunkTransport>(
    cx: Arc<Context<T>>,
    job: Job,
    progress: Arc<FileProgress>,
) -> Result<Outcome, DownloadError> {
    let started = std::time::Instant::now();
    let _active = crate::metrics::metrics().transfer("download");
    let located = match cx.tracker.locate(&job.file_id, &cx.key).await {
        Ok(l) => l,
        Err(e @ TrackerError::Unreachable { .. }) => match &cx.offline {
            Some(peers) => {
                tracing::warn!("{e}; looking for {} among peers", job.file_id);
                peers.locate(&job.file_id).await?
            }
            None => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let mut manifest = located
        .manifest
        .clone()
        .verified(&job.file_id)
        .map_err(|source| DownloadError::ChunkMap {
            id: job.file_id,
            source,
        })?;
    if let Some(name) = job
        .name
        .as_ref()
        .filter(|n| common::names::is_valid_file_name(n))
    {
        manifest.name.clone_from(name);
    }
    let manifest = Arc::new(manifest);
    let n = manifest.chunk_count();
    let collection =
        located.file.kind == common::FileType::Collection.as_str() && job.listings.is_some();
    let final_path = match (&job.path, &job.listings) {
        (Some(exact), _) => exact.clone(),
        (None, Some(listings)) if collection => {
            std::fs::create_dir_all(listings)
                .map_err(|e| DownloadError::io("create", listings, e))?;
            listings.join(job.file_id.to_string())
        }
        _ => files::final_path(&job.output, &manifest.name),
    };
    let part = part_path(&final_path);
    progress.start(&manifest.name, manifest.size, part.clone());

    let (fp, m2) = (final_path.clone(), manifest.clone());
    let existing = tokio::task::spawn_blocking(move || files::check_existing(&fp, &m2))
        .await
        .map_err(DownloadError::task("output check"))??;
    if let files::Existing::Same = existing {
        RecordWriter::new(&cx.home, &manifest, &final_path).write(&Bitfield::full(n), true);
        cx.report(&job.file_id, (0..n).collect()).await;
        progress.add_resumed(manifest.size);
        progress.finish(true);
        return Ok(Outcome {
            id: job.file_id,
            name: manifest.name.clone(),
            path: final_path,
            size: manifest.size,
            sha256: manifest.sha256.to_hex(),
            sources: 0,
            chunks_fetched: 0,
            bytes_fetched: 0,
            chunks_reused: n,
            elapsed: started.elapsed(),
            collection,
        });
    }

    // With no live holder for some chunk there is nothing to wait for: say so now instead of
    // after the give-up time, unless a part file from an earlier run may hold those chunks.
    let missing = uncovered(&cx, &job, &located, n);
    if missing > 0 && !part.exists() {
        return Err(DownloadError::NoLiveSource {
            missing,
            total: n,
            name: common::names::printable(&manifest.name, 80),
            why: NoSource::Offline,
        });
    }

    let (p2, size) = (part.clone(), manifest.size);
    let m2 = manifest.clone();
    let (file, have) = tokio::task::spawn_blocking(move || {
        let (file, existing_len) = files::open_part(&p2, size)?;
        let have = files::verified_in_part(&file, existing_len, &m2);
        Ok::<_, DownloadError>((file, have))
    })
    .await
    .map_err(DownloadError::task("part file"))??;
    let mut sched = Scheduler::new(n);
    for i in have.iter_ones() {
        sched.mark_verified(i);
        let r = manifest.chunk_range(i);
        progress.add_resumed(r.end - r.start);
    }
    if have.count() > 0 {
        tracing::info!(file = %job.file_id, reused = have.count(), "resuming from part file");
    }
    let records = RecordWriter::new(&cx.home, &manifest, &final_path);
    records.write(&have, false);

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
        landed: watch::Sender::new(0),
        events: events_tx,
        cancel,
        ticket: Mutex::new(None),
    });
    let whole = whole::WholeHash::start(sh.file.clone(), manifest.clone(), &have)
        .map_err(DownloadError::HashThread)?;
    let mut tick = tokio::time::interval(cx.cfg.report_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    progress.fetching();
    let start = Start {
        cx,
        job,
        sh,
        progress,
        whole,
        records,
        final_path,
        part,
        started,
        have,
    };
    let mut coordinator = Coordinator::new(start, located.holders, located.ticket);
    while !coordinator.complete() {
        tokio::select! {
            Some(ev) = events.recv() => coordinator.on_event(ev)?,
            _ = tick.tick() => coordinator.on_tick().await?,
        }
    }
    let mut outcome = coordinator.finish().await?;
    outcome.collection = collection;
    Ok(outcome)
}

/// How many of the `n` chunks no usable holder in `loc` has.
fn uncovered<T>(cx: &Context<T>, job: &Job, loc: &Located, n: u32) -> u32 {
    let mut union = Bitfield::new(n);
    for h in loc
        .holders
        .iter()
        .filter(|h| job.usable(&cx.peer_id, &h.peer_id))
    {
        if h.have.len() == n {
            union.union_with(&h.have);
        }
    }
    n - union.count()
}
