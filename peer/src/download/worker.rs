//! One worker per source: it keeps as many requests going to its source as [`Depth`] says
//! (about twice the source's bandwidth-delay product, at least `min_in_flight` for a lone source, `min_in_flight_among_many` among several), pulling
//! chunks from the scheduler, so faster and farther sources get more of the work.
//! A full holder is asked to pick one chunk of a candidate set reserved for it
//! (super-seeding, see `scheduler::Scheduler::reserve_candidates`); any other source is
//! asked for one chunk. Every chunk is checked (index, length, SHA-256) before it is
//! written at its offset. A request for a chunk that lands from another source first (an
//! endgame duplicate) is dropped at once, which cancels its stream at the source.
//!
//! Beside its requests, the worker of a source that lacks chunks follows what that source
//! holds ([`holdings`]): new chunks there reach the scheduler at once, and a worker with
//! room for more requests wakes to ask for them.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use common::PeerId;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::holdings;
use super::pace::Depth;
use super::scheduler::ChunkState;
use super::shared::{Event, Fault, Shared, WorkerEnd};
use crate::transport::{ChunkTransport, FetchError};

/// Most candidates offered in one request (the node's limit on indices per request).
const MAX_CANDIDATES: usize = 256;

/// One request: a chunk the scheduler marked InFlight from this source, or a candidate set
/// reserved for the source to choose one chunk from.
enum Ask {
    One(u32),
    Pick(Vec<u32>),
}

/// Why one request failed.
enum Fail {
    /// Bad bytes (of the chunk, when known).
    Bad(String, Option<u32>),
    Gone(String),
    /// The source refused a chunk as not held.
    NotHeld(String),
    /// The chunk landed from another source first; nothing is wrong with this one.
    Superseded,
    /// Writing to our own disk failed: the whole download fails.
    Local(std::io::Error),
}

impl From<FetchError> for Fail {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Protocol(m) => Fail::Bad(m, None),
            e @ FetchError::NotHeld(_) => Fail::NotHeld(e.to_string()),
            e @ (FetchError::Connect(_) | FetchError::Refused(_)) => Fail::Gone(e.to_string()),
        }
    }
}

/// Runs the worker for `source` at `addr` until the file is complete, the download is
/// cancelled, or the source is dropped; then tells the coordinator. Meanwhile it follows
/// what the source holds, as long as the source says.
pub async fn run<T: ChunkTransport>(sh: Arc<Shared<T>>, source: PeerId, addr: String) {
    let end = {
        let work = work(&sh, &source, &addr);
        let follow = holdings::follow(&sh, &source, &addr);
        tokio::pin!(work, follow);
        let mut following = true;
        loop {
            tokio::select! {
                end = &mut work => break end,
                () = &mut follow, if following => following = false,
            }
        }
    };
    if matches!(end, WorkerEnd::Bad { .. } | WorkerEnd::Gone { .. }) {
        sh.sched().remove_source(&source);
        // Wake the other workers even when nothing else was in flight here: the chunk that
        // failed went back to Missing when it was released, and a worker idle for lack of
        // work would otherwise ask for it only at its next 1 s look.
        sh.wake.send_modify(|g| *g += 1);
    }
    let _ = sh.events.send(Event::WorkerEnded { source, addr, end });
}

async fn work<T: ChunkTransport>(sh: &Arc<Shared<T>>, source: &PeerId, addr: &str) -> WorkerEnd {
    let mut wake = sh.wake.subscribe();
    let mut in_flight = FuturesUnordered::new();
    let stall = sh.cfg.stall_timeout;
    let mut last_chunk = Instant::now();
    let chunk = sh.manifest.chunk_size as u64;
    let deepest = (sh.cfg.max_in_flight_bytes / chunk.max(1)) as usize;
    let mut depth = Depth::new(sh.cfg.min_in_flight, deepest, chunk, Instant::now());
    // The newest chunk asked for: the one named when the source stalls.
    let mut last_asked: Option<u32> = None;
    loop {
        wake.borrow_and_update();
        {
            let mut sched = sh.sched();
            if sched.is_complete() {
                return WorkerEnd::Done;
            }
            if !sched.has_source(source) {
                return WorkerEnd::Gone {
                    why: "dropped".into(),
                    fault: None,
                };
            }
            depth.set_min(if sched.source_count() > 1 {
                sh.cfg.min_in_flight_among_many
            } else {
                sh.cfg.min_in_flight
            });
            let mut rng = rand::rng();
            let full = sched.is_full_holder(source);
            while in_flight.len() < depth.target() {
                let cands = if full {
                    sched.reserve_candidates(source, depth.target(), MAX_CANDIDATES)
                } else {
                    Vec::new()
                };
                let ask = if !cands.is_empty() {
                    Ask::Pick(cands)
                } else if let Some(i) = sched.next_for(source, in_flight.is_empty(), &mut rng) {
                    Ask::One(i)
                } else {
                    break;
                };
                if in_flight.is_empty() {
                    last_chunk = Instant::now();
                }
                last_asked = match &ask {
                    Ask::One(i) => Some(*i),
                    Ask::Pick(c) => c.first().copied(),
                };
                in_flight.push(fetch_one(sh.clone(), addr.to_string(), ask));
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
            Some((reserved, r)) = in_flight.next() => match r {
                Ok((i, latency)) => {
                    let now = Instant::now();
                    last_chunk = now;
                    let r = sh.manifest.chunk_range(i);
                    depth.delivered(r.end - r.start, latency, now);
                    tracing::trace!(peer = %source, chunk = i, latency_ms = latency.as_millis() as u64, depth = depth.target(), "chunk landed");
                    let mut sched = sh.sched();
                    let first = sched.mark_verified(i);
                    for &j in reserved.iter().filter(|&&j| j != i) {
                        sched.release(j, source);
                    }
                    drop(sched);
                    if first {
                        sh.landed.send_modify(|n| *n += 1);
                        let _ = sh.events.send(Event::Verified { index: i, source: source.clone() });
                    }
                    if reserved.len() > 1 {
                        sh.wake.send_modify(|g| *g += 1);
                    }
                }
                Err(Fail::Superseded) => {
                    tracing::debug!(peer = %source, chunks = ?reserved, "landed from another source first; request dropped");
                    last_chunk = Instant::now();
                }
                Err(fail) => {
                    {
                        let mut sched = sh.sched();
                        for &j in &reserved {
                            sched.release(j, source);
                        }
                    }
                    let what = match reserved.as_slice() {
                        [i] => format!("chunk {i}"),
                        _ => "picked chunk".to_string(),
                    };
                    return match fail {
                        Fail::Bad(m, chunk) => WorkerEnd::Bad {
                            why: format!("{what}: {m}"),
                            chunk: chunk.or(reserved.first().copied()),
                        },
                        Fail::Gone(m) => WorkerEnd::Gone { why: m, fault: None },
                        Fail::NotHeld(m) => WorkerEnd::Gone {
                            why: m,
                            fault: reserved.first().map(|&c| (c, Fault::NotHeld)),
                        },
                        Fail::Superseded => WorkerEnd::Cancelled,
                        Fail::Local(e) => {
                            let _ = sh.events.send(Event::Fatal(e));
                            WorkerEnd::Cancelled
                        }
                    };
                }
            },
            // New chunks at the source (or released ones) when there is room for requests.
            _ = wake.changed(), if in_flight.len() < depth.target() => {}
            _ = tokio::time::sleep_until(last_chunk + stall) => {
                return WorkerEnd::Gone {
                    why: format!("stalled: no chunk in {}", humantime::format_duration(stall)),
                    fault: last_asked.map(|c| (c, Fault::Stalled)),
                };
            }
            _ = sh.cancel.cancelled() => return WorkerEnd::Cancelled,
        }
    }
}

/// Fetches the chunk asked for, checks it and writes it at its offset. Returns the chunks
/// the scheduler marked InFlight for this request (to release those not sent), and the
/// chunk that arrived with how long after its request was sent. A request for one chunk
/// gives way as soon as that chunk lands from another source.
async fn fetch_one<T: ChunkTransport>(
    sh: Arc<Shared<T>>,
    addr: String,
    ask: Ask,
) -> (Vec<u32>, Result<(u32, Duration), Fail>) {
    match ask {
        Ask::One(i) => {
            let mut landed = sh.landed.subscribe();
            let fetch = fetch_inner(&sh, &addr, Ask::One(i));
            tokio::pin!(fetch);
            let r = loop {
                tokio::select! {
                    r = &mut fetch => break r,
                    Ok(()) = landed.changed() => {
                        if *sh.sched().state(i) == ChunkState::Verified {
                            break Err(Fail::Superseded);
                        }
                    }
                }
            };
            (vec![i], r)
        }
        Ask::Pick(cands) => {
            let reserved = cands.clone();
            (reserved, fetch_inner(&sh, &addr, Ask::Pick(cands)).await)
        }
    }
}

async fn fetch_inner<T: ChunkTransport>(
    sh: &Shared<T>,
    addr: &str,
    ask: Ask,
) -> Result<(u32, Duration), Fail> {
    let ticket = sh.ticket();
    let sent;
    let (mut stream, expect) = match &ask {
        Ask::One(i) => {
            let r = sh.manifest.chunk_range(*i);
            crate::ratelimit::acquire(sh.rate.as_deref(), r.end - r.start).await;
            sent = Instant::now();
            let one = [*i];
            let s = sh
                .transport
                .fetch(addr, &sh.file_id, &one, ticket.as_deref());
            (s.await?, format!("chunk {i}"))
        }
        Ask::Pick(cands) => {
            crate::ratelimit::acquire(sh.rate.as_deref(), sh.manifest.chunk_size as u64).await;
            sent = Instant::now();
            let s = sh
                .transport
                .fetch_pick(addr, &sh.file_id, cands, 1, ticket.as_deref());
            (s.await?, "a chunk".to_string())
        }
    };
    let (i, data) = match stream.next().await {
        Some(r) => r?,
        None => return Err(Fail::Gone(format!("stream ended before {expect}"))),
    };
    let latency = sent.elapsed();
    // The rest of the stream (an old node sends every candidate) is not wanted.
    drop(stream);
    let asked_for = match &ask {
        Ask::One(want) => *want == i,
        Ask::Pick(cands) => cands.contains(&i),
    };
    if !asked_for {
        return Err(Fail::Bad(
            format!("sent chunk {i}, which was not asked for"),
            None,
        ));
    }
    let range = sh.manifest.chunk_range(i);
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
            sh.writeback.wrote(&sh.file, range.end - range.start);
            crate::metrics::metrics().chunk_fetched(range.end - range.start);
            Ok((i, latency))
        }
        Ok(false) => {
            crate::metrics::metrics().verification_failures.inc();
            Err(Fail::Bad(
                "failed its SHA-256 or length check".into(),
                Some(i),
            ))
        }
        Err(e) => Err(Fail::Local(e)),
    }
}
