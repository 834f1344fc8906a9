//! One `GetChunks` answer as a lazy stream: a chunk is read only when tonic asks for the
//! next message, which hyper does once the previous one got send capacity, so a client that
//! stops reading stops the reads. Before each read the stream takes one of its
//! [`MESSAGES_PER_STREAM`] slots, waits for the upload rate cap, then for its bytes in the
//! node's buffer ([`Budget`]); the slot and the bytes are handed to the request's meter
//! (`super::meter`) with the message, and come back when the socket took it.
//!
//! The first poll opens the data and reads the first chunk in one blocking hop (getters ask
//! for one chunk per request, so a request costs one thread hop); later chunks are read on
//! the opened file.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use common::FileId;
use futures::Stream;
use proto::peer::v1 as pb;
use tokio::sync::Semaphore;
use tonic::Status;

use super::limits::{Admission, MESSAGES_PER_STREAM};
use super::meter::StreamMeter;
use super::source::{ChunkReader, ChunkSource, Holding};
use super::{NodeStats, UploadGuard, chunk_msg, refused};
use crate::ratelimit::RateLimiter;

/// The messages of one GetChunks answer.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::Chunk, Status>> + Send>>;

/// What one answer needs to read and count its chunks.
pub(super) struct Upload {
    pub source: Arc<dyn ChunkSource>,
    pub id: FileId,
    pub holding: Arc<Holding>,
    pub indices: std::vec::IntoIter<u32>,
    pub limit: Option<Arc<RateLimiter>>,
    pub stats: Arc<NodeStats>,
    pub admission: Admission,
    /// The request's meter; `None` outside the node's server (unit tests), where counts are
    /// released as soon as a message is yielded.
    pub meter: Option<Arc<StreamMeter>>,
}

impl Upload {
    /// The answer's stream; it ends after the last chunk or the first error.
    pub(super) fn stream(self) -> ChunkStream {
        self.stats.active_uploads.fetch_add(1, Ordering::Relaxed);
        let state = State {
            _guard: UploadGuard(self.stats.clone()),
            _active: crate::metrics::metrics().transfer("upload"),
            slots: Arc::new(Semaphore::new(MESSAGES_PER_STREAM)),
            reader: None,
            up: self,
        };
        Box::pin(futures::stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            let msg = state.next().await?;
            let go_on = msg.is_ok();
            Some((msg, go_on.then_some(state)))
        }))
    }
}

struct State {
    up: Upload,
    slots: Arc<Semaphore>,
    reader: Option<Arc<dyn ChunkReader>>,
    _guard: UploadGuard,
    _active: crate::metrics::TransferGuard,
}

impl State {
    async fn next(&mut self) -> Option<Result<pb::Chunk, Status>> {
        let up = &mut self.up;
        let index = up.indices.next()?;
        let (start, len) = up.holding.span(index);
        let slot = self.slots.clone().acquire_owned().await.ok()?;
        crate::ratelimit::acquire(up.limit.as_deref(), len).await;
        let held = up.admission.budget.take(len).await;
        let read = match self.reader.clone() {
            Some(r) => tokio::task::spawn_blocking(move || r.read(index, start, len)).await,
            None => {
                let (source, id, h) = (up.source.clone(), up.id, up.holding.clone());
                let opened = tokio::task::spawn_blocking(move || {
                    let reader: Arc<dyn ChunkReader> = Arc::from(source.open(&id, &h)?);
                    let read = reader.read(index, start, len);
                    Ok((reader, read))
                })
                .await;
                match opened {
                    Ok(Ok((reader, read))) => {
                        self.reader = Some(reader);
                        Ok(read)
                    }
                    Ok(Err(e)) => return Some(Err(refused(&up.id, e))),
                    Err(e) => Err(e),
                }
            }
        };
        let msg = match read {
            Ok(read) => chunk_msg(&up.id, index, len, read, &up.stats),
            Err(_) => Err(Status::internal("read task failed")),
        };
        if msg.is_ok()
            && let Some(m) = &up.meter
        {
            m.deposit(slot, held);
        }
        Some(msg)
    }
}
