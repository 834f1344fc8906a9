//! The node's side of `get --wait`: every `--waiting-every` it tries each waiting get of
//! its home, one at a time, with the ordinary downloader, and fetches those whose holders
//! are back (through the tracker, or among peers when no tracker answers). A get that still
//! has no live holder stays queued quietly; one that fails otherwise stays queued with its
//! error, which `peer status` shows.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::download::{self, Context, Job};
use crate::progress::FileProgress;
use crate::transport::GrpcTransport;
use crate::waiting::{Waiting, WaitingGet};

/// Tries the waiting gets of `cx.home` every `every` until `token` is cancelled.
pub async fn run(cx: Arc<Context<GrpcTransport>>, every: Duration, token: CancellationToken) {
    let waiting = Waiting::new(&cx.home);
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = token.cancelled() => return,
        }
        for w in waiting.list() {
            tokio::select! {
                () = try_one(&cx, &waiting, w) => {}
                () = token.cancelled() => return,
            }
        }
    }
}

async fn try_one(cx: &Arc<Context<GrpcTransport>>, waiting: &Waiting, mut w: WaitingGet) {
    let id = w.file_id;
    let job = Job {
        file_id: id,
        output: w.output.clone(),
        from: None,
        name: None,
        path: None,
        listings: Some(cx.home.collections_dir()),
    };
    match download::download(cx.clone(), job, FileProgress::new(&id.to_string())).await {
        Ok(o) => {
            if let Err(e) = waiting.remove(&id) {
                tracing::warn!(file = %id, "cannot dequeue a fetched waiting get: {e}");
            }
            tracing::info!(file = %id, path = %o.path.display(), "fetched a waiting get");
            if o.collection {
                tracing::warn!(
                    file = %id,
                    "that waiting get is a folder: its listing is fetched; run `peer get {id}` for its files"
                );
            }
        }
        Err(e) if e.no_holder_now() => {
            tracing::debug!(file = %id, "waiting get: no live holder yet");
        }
        Err(e) => {
            tracing::warn!(file = %id, "waiting get failed (will try again): {e}");
            w.last_error = Some(e.to_string());
            // Cancelled meanwhile: stays cancelled.
            if waiting.list().iter().any(|x| x.file_id == id)
                && let Err(e) = waiting.put(&w)
            {
                tracing::warn!(file = %id, "cannot record the waiting get's error: {e}");
            }
        }
    }
}
