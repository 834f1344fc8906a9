//! Keeping the tracker informed: heartbeats at the interval the tracker asks for, and a
//! full SyncHoldings at start and whenever the tracker answers again after an outage (so a
//! restarted tracker relearns what this peer holds). Failures are logged once per outage
//! and never stop the node.

use std::sync::Arc;
use std::time::Duration;

use common::PeerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::home::{Home, Kind};
use crate::replica::ReplicaStore;
use crate::server::TrackerKey;
use crate::tracker_client::{HoldingIn, TrackerClient};

use super::NodeError;

/// The heartbeat loop of one node and what it reads and updates.
pub struct Heartbeats {
    pub client: TrackerClient,
    pub home: Home,
    pub peer_id: PeerId,
    /// The advertised address, sent with every beat.
    pub addr: String,
    pub replicas: Arc<ReplicaStore>,
    /// Where the tracker's ticket key from each answer goes.
    pub key: TrackerKey,
    /// Bumped on the first answer and each time the tracker answers again after an outage
    /// (the task stream reopens then).
    pub tracker_up: watch::Sender<u64>,
}

impl Heartbeats {
    /// Heartbeats until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let mut healthy: Option<bool> = None;
        let mut need_sync = true;
        let mut interval = Duration::from_secs(10);
        loop {
            let (quota, used) = (self.replicas.quota(), self.replicas.used());
            match self
                .client
                .heartbeat(&self.peer_id, &self.addr, quota, used)
                .await
            {
                Ok(beat) => {
                    self.learn_key(&beat.ticket_public_key);
                    if !beat.interval.is_zero() {
                        interval = beat
                            .interval
                            .clamp(Duration::from_millis(200), Duration::from_secs(60));
                    }
                    if healthy == Some(false) {
                        tracing::info!("tracker answers again");
                        need_sync = true;
                    }
                    if healthy != Some(true) {
                        self.tracker_up.send_modify(|e| *e += 1);
                    }
                    healthy = Some(true);
                    if need_sync {
                        match self.sync().await {
                            Ok(n) => {
                                need_sync = false;
                                tracing::info!(holdings = n, "holdings synced with the tracker");
                            }
                            Err(e) => tracing::warn!("cannot sync holdings (will retry): {e}"),
                        }
                    }
                }
                Err(e) => {
                    if healthy != Some(false) {
                        tracing::warn!(
                            "heartbeat failed (retrying until the tracker answers): {e}"
                        );
                    }
                    healthy = Some(false);
                }
            }
            let wait = if healthy == Some(true) && !need_sync {
                interval
            } else {
                interval.min(Duration::from_secs(2))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = token.cancelled() => return,
            }
        }
    }

    /// Takes the tracker's ticket key from a heartbeat answer; a new one is saved to the home.
    fn learn_key(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.key.set(bytes) {
            Ok(true) => {
                tracing::info!("learnt the tracker's ticket key");
                if let Err(e) = self.home.save_tracker_key(bytes) {
                    tracing::warn!("cannot save the tracker key: {e}");
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("the tracker sent a bad ticket key: {e}"),
        }
    }

    /// Sends every store record to the tracker (replicas as REPLICA); re-announces shared
    /// files it has forgotten and deletes replicas of files it does not know.
    async fn sync(&self) -> Result<usize, NodeError> {
        let records: Vec<_> = self
            .home
            .records()?
            .into_iter()
            .filter(|r| !r.changed)
            .collect();
        let holdings: Vec<HoldingIn> = records
            .iter()
            .map(|r| HoldingIn {
                file_id: r.file_id,
                kind: r.kind,
                have: (!r.complete).then(|| r.have_bits()),
            })
            .collect();
        let unknown = self.client.sync_holdings(&self.peer_id, &holdings).await?;
        for id in unknown {
            let Some(r) = records.iter().find(|r| r.file_id.to_string() == id) else {
                continue;
            };
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
                continue;
            }
            if r.kind != Kind::Shared || !r.complete {
                continue;
            }
            match r.manifest() {
                Ok(m) => {
                    if let Err(e) = self.client.announce(&self.peer_id, &m).await {
                        tracing::warn!(file = %r.file_id, "cannot re-announce: {e}");
                    }
                }
                Err(e) => tracing::warn!(file = %r.file_id, "bad store record: {e}"),
            }
        }
        Ok(holdings.len())
    }
}
