//! Keeping the tracker informed: heartbeats at the interval the tracker asks for, and a
//! full reconciliation of holdings ([`super::sync`]) at start, whenever the tracker answers
//! again after an outage (so a restarted tracker relearns what this peer holds) and every
//! `sync_every` (5 minutes by default, ±10 % so nodes started together spread out), so the
//! tracker's listing of this peer converges with its disk whatever either side lost.
//! Failures are logged once per outage and never stop the node; each outcome is told to
//! the server ([`TrackerReach`]), which accepts certificates in place of tickets while the
//! tracker does not answer. After a beat the tracker answered, the node's certificate is
//! renewed when half its life has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::PeerId;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::home::Home;
use crate::identity::Identity;
use crate::replica::ReplicaStore;
use crate::server::{TrackerKey, TrackerReach};
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
    /// The node's key, whose certificate is renewed here.
    pub identity: Arc<Identity>,
    /// Told whether each beat was answered.
    pub reach: TrackerReach,
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
                    self.reach.set_answering(true);
                    self.learn_key(&beat.ticket_public_key);
                    self.renew_certificate().await;
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
                    self.reach.set_answering(false);
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

    /// Asks for a new certificate when the one held is missing, half spent, or not from
    /// the tracker's current key. A failure is logged and tried again at the next beat.
    async fn renew_certificate(&self) {
        let key = self.key.get();
        if !self
            .identity
            .wants_certificate(key.as_ref(), crate::now_ms())
        {
            return;
        }
        match self
            .client
            .renew_certificate(&self.identity, &self.peer_id)
            .await
        {
            Ok(c) => tracing::info!(
                expires_at_ms = c.claims.expires_at_ms,
                "the tracker certified this node's key"
            ),
            Err(e) => tracing::warn!("cannot renew this node's certificate: {e}"),
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
