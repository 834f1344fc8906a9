//! One worker per source: it keeps up to `max_in_flight` requests going to its source,
//! pulling chunks from the scheduler, so faster sources naturally get more of the work.
//! Every chunk is checked (index, length, SHA-256) before it is written at its offset.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use common::PeerId;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::{Event, Shared};
use crate::transport::{ChunkTransport, FetchError};

/// How a worker ended.
#[derive(Debug)]
pub enum WorkerEnd {
    /// Nothing left to fetch: the file is complete.
    Done,
    /// The download is being stopped.
    Cancelled,
    /// The source sent bad bytes: never use it again for this download.
    Bad(String),
    /// The source failed, refused or stalled: it may be re-admitted later.
    Gone(String),
}

/// Why one request failed.
enum Fail {
    Bad(String),
    Gone(String),
    /// Writing to our own disk failed: the whole download fails.
    Local(std::io::Error),
}

impl From<FetchError> for Fail {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Protocol(m) => Fail::Bad(m),
            e @ (FetchError::Connect(_) | FetchError::Refused(_)) => Fail::Gone(e.to_string()),
        }
    }
}

/// Runs the worker for `source` at `addr` until the file is complete, the download is
/// cancelled, or the source is dropped; then tells the coordinator.
pub async fn run<T: ChunkTransport>(sh: Arc<Shared<T>>, source: PeerId, addr: String) {
    let end = work(&sh, &source, &addr).await;
    if matches!(end, WorkerEnd::Bad(_) | WorkerEnd::Gone(_)) {
        let requeued = sh.sched().remove_source(&source);
        if !requeued.is_empty() {
            sh.wake.send_modify(|g| *g += 1);
        }
    }
    let _ = sh.events.send(Event::WorkerEnded { source, addr, end });
}

async fn work<T: ChunkTransport>(sh: &Arc<Shared<T>>, source: &PeerId, addr: &str) -> WorkerEnd {
    let mut wake = sh.wake.subscribe();
    let mut in_flight = FuturesUnordered::new();
    let stall = sh.cfg.stall_timeout;
    let mut last_chunk = Instant::now();
    loop {
        wake.borrow_and_update();
        {
            let mut sched = sh.sched();
            if sched.is_complete() {
                return WorkerEnd::Done;
            }
            if !sched.has_source(source) {
                return WorkerEnd::Gone("dropped".into());
            }
            let mut rng = rand::rng();
            while in_flight.len() < sh.cfg.max_in_flight {
                let Some(i) = sched.next_for(source, in_flight.is_empty(), &mut rng) else {
                    break;
                };
                if in_flight.is_empty() {
                    last_chunk = Instant::now();
                }
                in_flight.push(fetch_one(sh.clone(), addr.to_string(), i));
            }
        }
        if in_flight.is_empty() {
            tokio::select! {
                _ = wake.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = sh.cancel.cancelled() => return WorkerEnd::Cancelled,
            }
            continue;
        }
        tokio::select! {
            Some((i, r)) = in_flight.next() => match r {
                Ok(()) => {
                    last_chunk = Instant::now();
                    if sh.sched().mark_verified(i) {
                        let _ = sh.events.send(Event::Verified { index: i, source: source.clone() });
                    }
                }
                Err(fail) => {
                    sh.sched().release(i, source);
                    return match fail {
                        Fail::Bad(m) => WorkerEnd::Bad(format!("chunk {i}: {m}")),
                        Fail::Gone(m) => WorkerEnd::Gone(m),
                        Fail::Local(e) => {
                            let _ = sh.events.send(Event::Fatal(e));
                            WorkerEnd::Cancelled
                        }
                    };
                }
            },
            _ = tokio::time::sleep_until(last_chunk + stall) => {
                return WorkerEnd::Gone(format!(
                    "stalled: no chunk in {}",
                    humantime::format_duration(stall)
                ));
            }
            _ = sh.cancel.cancelled() => return WorkerEnd::Cancelled,
        }
    }
}

/// Fetches chunk `i`, checks it and writes it at its offset.
async fn fetch_one<T: ChunkTransport>(
    sh: Arc<Shared<T>>,
    addr: String,
    i: u32,
) -> (u32, Result<(), Fail>) {
    (i, fetch_inner(&sh, &addr, i).await)
}

async fn fetch_inner<T: ChunkTransport>(sh: &Shared<T>, addr: &str, i: u32) -> Result<(), Fail> {
    let range = sh.manifest.chunk_range(i);
    crate::ratelimit::acquire(sh.rate.as_deref(), range.end - range.start).await;
    let ticket = sh.ticket();
    let mut stream = sh
        .transport
        .fetch(addr, &sh.file_id, &[i], ticket.as_deref())
        .await?;
    let (index, data) = match stream.next().await {
        Some(r) => r?,
        None => return Err(Fail::Gone(format!("stream ended before chunk {i}"))),
    };
    if index != i {
        return Err(Fail::Bad(format!("sent chunk {index} instead")));
    }
    let (m, f) = (sh.manifest.clone(), sh.file.clone());
    let written = tokio::task::spawn_blocking(move || {
        if !m.check_chunk(i, &data) {
            return Ok(false);
        }
        f.write_all_at(&data, range.start).map(|()| true)
    })
    .await
    .map_err(|e| Fail::Local(std::io::Error::other(e)))?;
    match written {
        Ok(true) => {
            crate::metrics::metrics().chunk_fetched(range.end - range.start);
            Ok(())
        }
        Ok(false) => {
            crate::metrics::metrics().verification_failures.inc();
            Err(Fail::Bad("failed its SHA-256 or length check".into()))
        }
        Err(e) => Err(Fail::Local(e)),
    }
}
