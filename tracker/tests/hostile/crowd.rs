//! A crowd of a thousand peers heartbeating at once is never wrongly marked down.
//!
//! Nothing here depends on how fast the machine runs the rounds: a peer counts as wrongly
//! down only if its heartbeat was sent less than the peer timeout (minus a second for
//! clock rounding) before the listing came back, and every heartbeat must move the peer's
//! `last_seen` past the previous round's (rounds are a second apart), so a lost heartbeat
//! is caught whatever the timeout.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::tracker::v1 as pb;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::{TestTracker, authed, register, within};

/// Long beside a round (0.6 s idle, seconds on a loaded machine), so every peer is checked
/// unless a round takes nearly this long.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_a_thousand_heartbeating_peers_up() {
    within(async {
        let dir = TempDir::new().unwrap();
        const USERS: usize = 10;
        const PER_USER: usize = 100;
        let mut cfg = tracker::Config::ephemeral(dir.path());
        cfg.peer_timeout = PEER_TIMEOUT;
        // Past the default limit (64): a user running many nodes raises it.
        cfg.max_peers_per_user = PER_USER as u32;
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await;
        let mut tokens = Vec::new();
        for u in 0..USERS {
            tokens.push(register(&mut c, &format!("crowd{u}")).await);
        }
        // A few channels, as many peers on a few machines would use.
        let mut channels = Vec::new();
        for _ in 0..8 {
            channels.push(t.grpc().await);
        }
        let peers: Vec<(String, String, usize)> = (0..USERS * PER_USER)
            .map(|i| {
                let id = common::PeerId::from_random((i as u128).to_be_bytes()).to_string();
                (id, format!("127.0.0.1:{}", 20_000 + i), i / PER_USER)
            })
            .collect();
        let started = Instant::now();
        let mut last_seen: HashMap<String, String> = HashMap::new();
        let mut unchecked = 0;
        let mut oldest_beat = started;
        for round in 0..3 {
            let beats = peers.iter().enumerate().map(|(i, (id, addr, u))| {
                let mut ch = channels[i % channels.len()].clone();
                let token = tokens[*u].clone();
                let req = pb::HeartbeatRequest {
                    peer_id: id.clone(),
                    addr: addr.clone(),
                    storage_quota: 0,
                    storage_used: 0,
                };
                async move {
                    let sent = Instant::now();
                    ch.heartbeat(authed(req, &token)).await.map(|_| sent)
                }
            });
            let results = futures::future::join_all(beats).await;
            let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(
                failed.is_empty(),
                "round {round}: {} failed: {:?}",
                failed.len(),
                failed.first()
            );
            let sent: HashMap<&str, Instant> = peers
                .iter()
                .zip(&results)
                .map(|((id, _, _), r)| (id.as_str(), *r.as_ref().unwrap()))
                .collect();
            oldest_beat = *sent.values().min().unwrap();

            let body: Value = reqwest::get(t.url("/api/v1/peers"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let listed = Instant::now();
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), USERS * PER_USER, "round {round}");
            let mut wrongly_down = Vec::new();
            for p in items {
                let id = p["id"].as_str().unwrap();
                let seen = p["last_seen"].as_str().expect("a heartbeat was recorded");
                // RFC 3339 in UTC with milliseconds: ordered as text.
                if let Some(before) = last_seen.insert(id.to_string(), seen.to_string()) {
                    assert!(
                        seen > before.as_str(),
                        "round {round}: peer {id}'s heartbeat was not recorded ({seen})"
                    );
                }
                let since = listed.duration_since(sent[id]);
                if since + Duration::from_secs(1) > PEER_TIMEOUT {
                    unchecked += 1;
                } else if p["state"] != "up" {
                    wrongly_down.push(p);
                }
            }
            assert!(
                wrongly_down.is_empty(),
                "round {round}: {} down, e.g. {}",
                wrongly_down.len(),
                wrongly_down[0]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats: Value = reqwest::get(t.url("/api/v1/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if oldest_beat.elapsed() + Duration::from_secs(1) <= PEER_TIMEOUT {
            assert_eq!(stats["peers_up"], USERS * PER_USER);
        }
        eprintln!(
            "1,000 peers x 3 rounds in {:.1}s ({unchecked} peer states not checked: their \
             heartbeat was older than the peer timeout when listed)",
            started.elapsed().as_secs_f64()
        );
        t.stop().await;
    })
    .await
}
