//! Keeping the tracker informed: heartbeats at the interval the tracker asks for, and a
//! full reconciliation of holdings ([`super::sync`]) at start, whenever the tracker answers
//! again after an outage (so a restarted tracker relearns what this peer holds) and every
//! `sync_every` (5 minutes by default, ±10 % so nodes started together spread out), so the
//! tracker's listing of this peer converges with its disk whatever either side lost.
//! Failures are logged once per outage and never stop the node.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::PeerId;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::home::Home;
use crate::replica::ReplicaStore;
use crate::server::TrackerKey;
use crate::tracker_client::TrackerClient;

use super::sync::Reconcile;

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
    /// How often the full holdings are sent even when nothing seemed wrong.
    pub sync_every: Duration,
}

impl Heartbeats {
    /// Heartbeats until `token` is cancelled.
    pub async fn run(self, token: CancellationToken) {
        let mut healthy: Option<bool> = None;
        // A sync is due (at start, after an outage, or when one failed), or the routine one
        // is, at `next_sync`.
        let mut need_sync = true;
        let mut next_sync = Instant::now() + self.sync_every;
        let mut interval = Duration::from_secs(10);
        let mut holdings = Reconcile {
            client: self.client.clone(),
            home: self.home.clone(),
            peer_id: self.peer_id.clone(),
            replicas: self.replicas.clone(),
            withdrawn: HashSet::new(),
        };
        loop {
            let routine = !need_sync && Instant::now() >= next_sync;
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
                    if need_sync || routine {
                        match holdings.run().await {
                            Ok(n) => {
                                if need_sync {
                                    tracing::info!(
                                        holdings = n,
                                        "holdings synced with the tracker"
                                    );
                                } else {
                                    tracing::debug!(holdings = n, "holdings synced again");
                                }
                                need_sync = false;
                                let spread = rand::random_range(0.9..1.1);
                                next_sync = Instant::now() + self.sync_every.mul_f64(spread);
                            }
                            Err(e) => {
                                tracing::warn!("cannot sync holdings (will retry): {e}");
                                need_sync = true;
                            }
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
                interval.min(next_sync.saturating_duration_since(Instant::now()))
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
}
