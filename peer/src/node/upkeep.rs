//! The node's periodic housekeeping beside serving: checking shared files and the replica
//! store against the disk, and keeping node.json current for `peer status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::PeerId;

use crate::home::{Home, NodeFile};
use crate::replica::ReplicaStore;
use crate::server::StoreSource;
use crate::tracker_client::TrackerClient;

/// How often node.json is refreshed (when something in it changed).
const NODE_FILE_EVERY: Duration = Duration::from_secs(2);

/// What a rescan needs to bring shared folders up to date.
pub struct Folders {
    pub home: Home,
    pub client: TrackerClient,
    pub peer_id: PeerId,
}

/// Every `every`: withdraws shared files that changed or vanished (the node's own on-read
/// check, run over all of them), reconciles the replica store with the disk, then brings
/// shared folders up to date (`super::folders`).
pub async fn rescans(
    store: Arc<StoreSource>,
    replicas: Arc<ReplicaStore>,
    folders: Folders,
    every: Duration,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = token.cancelled() => return,
        }
        let (store, replicas) = (store.clone(), replicas.clone());
        let checked = tokio::task::spawn_blocking(move || {
            store.check_shared_files();
            replicas.rescan()
        })
        .await;
        match checked {
            Ok(Err(e)) => tracing::warn!("cannot check the replica store: {e}"),
            Ok(Ok(_)) => {}
            Err(e) => tracing::warn!("rescan task failed: {e}"),
        }
        tokio::select! {
            () = super::folders::sync_all(&folders.home, &folders.client, &folders.peer_id) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// Keeps node.json's storage and task stream fields current (written only on change).
pub async fn node_file(
    home: Home,
    mut node: NodeFile,
    replicas: Arc<ReplicaStore>,
    connected: Arc<AtomicBool>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(NODE_FILE_EVERY) => {}
            _ = token.cancelled() => return,
        }
        let now = (
            Some(replicas.used()),
            Some(connected.load(Ordering::Relaxed)),
        );
        if now == (node.storage_used, node.tasks_connected) {
            continue;
        }
        (node.storage_used, node.tasks_connected) = now;
        let (h, n) = (home.clone(), node.clone());
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || h.save_node(&n)).await {
            tracing::debug!("cannot update node.json: {e}");
        }
    }
}
