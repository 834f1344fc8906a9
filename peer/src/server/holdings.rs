//! The `Holdings` stream: what this node holds of one file, sent whole at once and then as
//! it grows, so getters learn of chunks that landed here without waiting for the tracker.
//!
//! A `peer get` in this home writes its store record every quarter second, and the source
//! re-reads a record at most every [`RELOAD_EVERY`](super::RELOAD_EVERY) when asked for a
//! chunk it lacks; each stream asks for its first missing chunk every [`POLL_EVERY`] (a
//! cache hit unless a re-read is due), so a chunk reaches the readers about half a second
//! after it landed. Nothing is queued per reader: a stream waits until its reader took the
//! last message, then sends everything that changed since, so a slow reader costs one
//! message and no memory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Bitfield, FileId};
use proto::peer::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::limits::Admission;
use super::source::{ChunkSource, Holding};

/// How often a stream looks at what the node holds. Each open stream costs a task and a
/// look this often, so they are capped like chunk streams (`StreamLimits::holdings`).
pub const POLL_EVERY: Duration = Duration::from_millis(100);

/// Messages of one Holdings stream.
pub type UpdateStream = ReceiverStream<Result<pb::HoldingsUpdate, Status>>;

/// The Holdings streams of one node: their stop signal.
#[derive(Default)]
pub(super) struct Followers {
    /// Cancelled when the node shuts down: the streams end, so the server's graceful
    /// shutdown does not wait for getters that are still downloading.
    pub(super) stop: CancellationToken,
}

impl Followers {
    /// The stream of what `source` holds of `id`, starting from `first`, until the node
    /// holds every chunk (or its shared file changed), `until_ms` (Unix ms: the ticket's
    /// end) passes, the reader goes away or the node stops.
    pub(super) fn follow(
        &self,
        source: Arc<dyn ChunkSource>,
        id: FileId,
        first: Arc<Holding>,
        until_ms: i64,
        slot: Admission,
    ) -> UpdateStream {
        let (tx, rx) = mpsc::channel(1);
        let left = u64::try_from(until_ms.saturating_sub(crate::now_ms())).unwrap_or(0);
        let deadline = Instant::now() + Duration::from_millis(left);
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            tokio::select! {
                () = run(source.as_ref(), &id, first, &tx) => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = stop.cancelled() => {}
            }
        });
        ReceiverStream::new(rx)
    }
}

type Tx = mpsc::Sender<Result<pb::HoldingsUpdate, Status>>;

async fn run(source: &dyn ChunkSource, id: &FileId, mut last: Arc<Holding>, tx: &Tx) {
    let mut sent = last.have.clone();
    if tx.send(Ok(whole(&sent))).await.is_err() || finished(&last) {
        return;
    }
    let mut tick = tokio::time::interval_at(Instant::now() + POLL_EVERY, POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tx.closed() => return,
        }
        let needed: Vec<u32> = first_missing(&sent).into_iter().collect();
        let Some(now) = source.holding(id, &needed) else {
            let gone = Status::not_found("this node no longer holds that file");
            let _ = tx.send(Err(gone)).await;
            return;
        };
        if Arc::ptr_eq(&now, &last) {
            continue;
        }
        last = now;
        if let Some(msg) = change(&sent, &last.have) {
            if tx.send(Ok(msg)).await.is_err() {
                return;
            }
            sent = last.have.clone();
        }
        if finished(&last) {
            return;
        }
    }
}

/// Whether nothing more can come: every chunk is held, or the shared file changed.
fn finished(h: &Holding) -> bool {
    h.changed() || h.have.is_complete()
}

/// The message that states the whole holding `have`.
fn whole(have: &Bitfield) -> pb::HoldingsUpdate {
    pb::HoldingsUpdate {
        have: Bytes::copy_from_slice(have.as_bytes()),
        added: Vec::new(),
    }
}

/// The message that takes a reader from `sent` to `now`: the new chunks, or the whole
/// holding when chunks were dropped or the list would be longer; `None` when equal.
pub(super) fn change(sent: &Bitfield, now: &Bitfield) -> Option<pb::HoldingsUpdate> {
    if sent == now {
        return None;
    }
    let (a, b) = (sent.as_bytes(), now.as_bytes());
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x & !y != 0) {
        return Some(whole(now));
    }
    let mut added = Vec::new();
    for (byte, (x, y)) in (0u32..).zip(a.iter().zip(b)) {
        let mut new = y & !x;
        while new != 0 {
            let bit = new.leading_zeros();
            added.push(byte * 8 + bit);
            new &= !(0x80 >> bit);
        }
    }
    // A packed index takes up to 4 bytes on the wire for the chunk counts files have.
    if added.len() * 4 > b.len() {
        return Some(whole(now));
    }
    Some(pb::HoldingsUpdate {
        have: Bytes::new(),
        added,
    })
}

/// What `source` holds of `id` now: the cached view, looked at again when it lacks chunks
/// and is due for a re-read, so the first message is as fresh as a poll's.
pub(super) fn current(source: &dyn ChunkSource, id: &FileId) -> Option<Arc<Holding>> {
    let cached = source.holding(id, &[])?;
    match first_missing(&cached.have) {
        Some(i) => source.holding(id, &[i]),
        None => Some(cached),
    }
}

/// The first chunk `have` lacks: asking the source for it makes it re-read a stale record.
fn first_missing(have: &Bitfield) -> Option<u32> {
    let (byte, bits) = (0u32..)
        .zip(have.as_bytes())
        .find(|(_, bits)| **bits != 0xff)?;
    let i = byte * 8 + bits.leading_ones();
    (i < have.len()).then_some(i)
}
