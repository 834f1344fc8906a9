//! Reconciling what the tracker lists for this peer with what the node holds, both ways,
//! run by the heartbeat loop ([`super::heartbeat`]) at start, after an outage and every
//! `--sync-every`:
//! 1. What this node cannot serve is withdrawn with Unindex: a shared file changed or gone
//!    from the disk, a downloaded file gone, and the withdrawals the tracker never
//!    confirmed (`withdrawals/` in the home: an `unindex` or a failed `index` during an
//!    outage). Unindex forgets a file no user holds any more; a sync only drops the
//!    holding, so this comes first.
//! 2. SyncHoldings with every record that can be served replaces what the tracker lists
//!    for this peer: a holding it forgot (a lost write batch, a restore from a backup, a
//!    withdrawal behind the node's back) comes back, one the node no longer has goes.
//! 3. Files the tracker does not know at all: shared ones are announced again, replicas
//!    deleted.
//!
//! The tracker keeps what its audits verified across a sync of the same holding, so a
//! periodic one costs it no audits.

use std::collections::HashSet;
use std::sync::Arc;

use common::{FileId, PeerId};

use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::replica::ReplicaStore;
use crate::tracker_client::{HoldingIn, TrackerClient, TrackerError};

use super::NodeError;

/// One node's side of the reconciliation.
pub(super) struct Reconcile {
    pub client: TrackerClient,
    pub home: Home,
    pub peer_id: PeerId,
    pub replicas: Arc<ReplicaStore>,
    /// Records that cannot be served whose withdrawal the tracker confirmed in this run
    /// (such a record stays until the user indexes again; it is not sent every time).
    pub withdrawn: HashSet<FileId>,
}

impl Reconcile {
    /// One round; returns how many holdings were listed.
    ///
    /// # Errors
    /// When the home cannot be read or the tracker does not answer (try again later).
    pub async fn run(&mut self) -> Result<usize, NodeError> {
        let home = self.home.clone();
        let ((served, unservable), pending) = tokio::task::spawn_blocking(move || {
            let split: (Vec<StoreRecord>, Vec<StoreRecord>) =
                home.records()?.into_iter().partition(on_disk);
            Ok::<_, NodeError>((split, home.withdrawals()?))
        })
        .await
        .map_err(NodeError::Task)??;
        for r in &unservable {
            if !self.withdrawn.contains(&r.file_id) && self.withdraw(&r.file_id).await? {
                self.withdrawn.insert(r.file_id);
            }
        }
        for id in pending {
            // Indexed again since: nothing to withdraw.
            let reshared = self.home.record(&id)?.is_some();
            if reshared || self.withdraw(&id).await? {
                self.home.delete_withdrawal(&id)?;
            }
        }
        let holdings: Vec<HoldingIn> = served
            .iter()
            .map(|r| HoldingIn {
                file_id: r.file_id,
                kind: r.kind,
                have: (!r.complete).then(|| r.have_bits()),
            })
            .collect();
        let unknown = self.client.sync_holdings(&self.peer_id, &holdings).await?;
        for id in unknown {
            if let Some(r) = served.iter().find(|r| r.file_id.to_string() == id) {
                self.unknown(r).await;
            }
        }
        Ok(holdings.len())
    }

    /// Withdraws this peer's holding of `id`; whether the tracker no longer lists it.
    async fn withdraw(&self, id: &FileId) -> Result<bool, NodeError> {
        match self.client.unindex(&self.peer_id, id).await {
            Ok(()) => {
                tracing::info!(file = %id, "withdrew a holding this node does not have");
                Ok(true)
            }
            Err(TrackerError::NotFound { .. }) => Ok(true),
            Err(e) if e.affects_every_call() => Err(e.into()),
            Err(e) => {
                tracing::warn!(file = %id, "cannot withdraw a holding: {e}");
                Ok(true)
            }
        }
    }

    /// A file the tracker does not know: a replica of it is deleted, a shared one announced
    /// again.
    async fn unknown(&self, r: &StoreRecord) {
        if r.kind == Kind::Replica {
            let (store, file) = (self.replicas.clone(), r.file_id);
            match tokio::task::spawn_blocking(move || store.forget(&file)).await {
                Ok(Ok(freed)) => {
                    tracing::info!(file = %file, freed_bytes = freed, "the tracker no longer knows a replicated file; its replica is deleted");
                }
                Ok(Err(e)) => tracing::warn!(file = %file, "cannot delete replica: {e}"),
                Err(e) => {
                    tracing::warn!(file = %file, "cannot delete replica: replica task failed: {e}");
                }
            }
            return;
        }
        if r.kind != Kind::Shared || !r.complete {
            return;
        }
        // Only if it is still shared: a `peer unindex` since the records were read must not
        // be undone.
        let now = self.home.record(&r.file_id).ok().flatten();
        if !now.is_some_and(|now| now.kind == Kind::Shared && now.complete && !now.changed) {
            return;
        }
        // A collection goes with its listing, or the tracker would list it as a plain file.
        let listing = match &r.folder {
            Some(_) => match std::fs::read(&r.path) {
                Ok(b) => Some(bytes::Bytes::from(b)),
                Err(e) => {
                    tracing::warn!(file = %r.file_id, "cannot read a collection's listing: {e}");
                    return;
                }
            },
            None => None,
        };
        match r.manifest() {
            Ok(m) => match self.client.announce(&self.peer_id, &m, listing).await {
                Ok(_) => {
                    tracing::info!(file = %r.file_id, "announced again a file the tracker had forgotten");
                }
                Err(e) => tracing::warn!(file = %r.file_id, "cannot announce again: {e}"),
            },
            Err(e) => tracing::warn!(file = %r.file_id, "bad store record: {e}"),
        }
    }
}

/// Whether a record's bytes are where it says, so the node can serve it: a shared file with
/// the length and mtime it was indexed with (the check before serving it), a download's
/// file, a replica (whose chunk files the replica store's rescan checks).
fn on_disk(r: &StoreRecord) -> bool {
    match r.kind {
        _ if r.changed => false,
        Kind::Shared => std::fs::metadata(&r.path).is_ok_and(|m| {
            r.file_len
                .zip(r.mtime_ns)
                .is_none_or(|indexed| len_and_mtime(&m) == indexed)
        }),
        Kind::Downloaded => r.data_path().exists() || r.path.exists(),
        Kind::Replica => true,
    }
}
