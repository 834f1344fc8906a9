//! A crowd of a thousand peers heartbeating at once is never wrongly marked down.

use std::time::Duration;

use proto::tracker::v1 as pb;
use serde_json::Value;
use tempfile::TempDir;

use crate::common::{TestTracker, authed, register, within};

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_a_thousand_heartbeating_peers_up() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = tracker::Config::ephemeral(dir.path());
        cfg.peer_timeout = Duration::from_secs(4);
        let t = TestTracker::start_with(cfg).await;
        const USERS: usize = 10;
        const PER_USER: usize = 100;
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
        let started = std::time::Instant::now();
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
                async move { ch.heartbeat(authed(req, &token)).await.map(|_| ()) }
            });
            let results = futures::future::join_all(beats).await;
            let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(
                failed.is_empty(),
                "round {round}: {} failed: {:?}",
                failed.len(),
                failed.first()
            );

            let body: Value = reqwest::get(t.url("/api/v1/peers"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), USERS * PER_USER, "round {round}");
            let down: Vec<&Value> = items.iter().filter(|p| p["state"] != "up").collect();
            assert!(
                down.is_empty(),
                "round {round}: {} down, e.g. {}",
                down.len(),
                down[0]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats: Value = reqwest::get(t.url("/api/v1/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["peers_up"], USERS * PER_USER);
        eprintln!(
            "1,000 peers x 3 rounds in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        t.stop().await;
    })
    .await
}
