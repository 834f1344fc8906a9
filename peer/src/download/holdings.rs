//! Following what a partial source holds (`Holdings`, BitTorrent's HAVE): next to its
//! requests, a source's worker keeps a stream open on which the source's node says which
//! chunks it gained, and each change goes to the scheduler at once, so a chunk that landed
//! at another getter is asked for within about half a second instead of after the next
//! report and Locate (a second or more). The tracker stays the directory: it is how a
//! getter finds its sources, and what it falls back on for a source that does not follow
//! (an older node, a refused or failed stream).

use std::time::Duration;

use common::PeerId;
use futures::StreamExt;

use super::shared::Shared;
use crate::transport::ChunkTransport;

/// The pause before a stream that ended short of a full holding (its ticket ran out) is
/// opened again with the newest ticket.
const REOPEN_AFTER: Duration = Duration::from_secs(1);

/// Applies what `source` at `addr` says it holds to the scheduler until it holds every
/// chunk (a full holder is not followed: nothing it holds changes) or its stream fails.
/// Runs beside the source's worker and is dropped with it.
pub(super) async fn follow<T: ChunkTransport>(sh: &Shared<T>, source: &PeerId, addr: &str) {
    let n = sh.manifest.chunk_count();
    loop {
        if sh.sched().is_full_holder(source) {
            return;
        }
        let ticket = sh.ticket();
        let opened = sh
            .transport
            .holdings(addr, &sh.file_id, n, ticket.as_deref());
        let mut stream = match opened.await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(peer = %source, "not following holdings: {e}");
                return;
            }
        };
        while let Some(item) = stream.next().await {
            let have = match item {
                Ok(have) => have,
                Err(e) => {
                    tracing::debug!(peer = %source, "holdings stream ended: {e}");
                    return;
                }
            };
            {
                let mut sched = sh.sched();
                if !sched.has_source(source) {
                    return;
                }
                sched.add_source(source.clone(), have);
            }
            sh.wake.send_modify(|g| *g += 1);
        }
        if sh.sched().is_full_holder(source) {
            return;
        }
        tokio::time::sleep(REOPEN_AFTER).await;
    }
}
