//! A replication target more peers than exist would need: `/api/v1/stats` keeps counting
//! under-replicated chunks against the configured target, and says what is reachable now
//! (`reachable_replication`, `unreachable_target`, `under_reachable_chunks`), as do the
//! `/metrics` gauges and the OpenAPI schema.

use proto::tracker::v1 as pb;
use tempfile::TempDir;

use super::get;
use super::metrics::{scrape, value};
use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, peer_id, register, within,
};

#[tokio::test(flavor = "multi_thread")]
async fn should_say_when_fewer_peers_can_hold_copies_than_the_target() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await; // --replication 3
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (p1, p2, p3) = (peer_id(1), peer_id(2), peer_id(3));
        // Two peers offering room for replicas (the helper's quota is 1000 bytes).
        heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
        heartbeat(&mut c, &bob, &p2, "127.0.0.1:9002").await;
        // A third that offers no room and holds nothing: it cannot hold a copy.
        c.heartbeat(authed(
            pb::HeartbeatRequest {
                peer_id: p3.clone(),
                addr: "127.0.0.1:9003".into(),
                storage_quota: 0,
                storage_used: 0,
            },
            &bob,
        ))
        .await
        .unwrap();
        let f = announce(&mut c, &alice, &p1, manifest("talk.mp3", 3, 1)).await;

        let (_, s) = get(&t, "/api/v1/stats").await;
        assert_eq!(s["peers_up"], 3);
        assert_eq!(s["replication"], 3);
        assert_eq!(s["reachable_replication"], 2, "{s}");
        assert_eq!(s["unreachable_target"], true, "{s}");
        assert_eq!(
            s["under_replicated_chunks"], 3,
            "one copy of each, target 3"
        );
        assert_eq!(
            s["under_reachable_chunks"], 3,
            "one copy of each, 2 reachable"
        );

        // Bob's peer gets every chunk: as many copies as two peers can hold. Still short of
        // the target, which is the truth, but nothing is left that replication could fix.
        let report = |peer: &str, chunks: Vec<u32>| pb::ReportChunksRequest {
            peer_id: peer.to_string(),
            file_id: f.id.clone(),
            kind: pb::HoldingKind::Downloaded as i32,
            chunks,
        };
        c.report_chunks(authed(report(&p2, vec![0, 1, 2]), &bob))
            .await
            .unwrap();
        let (_, s) = get(&t, "/api/v1/stats").await;
        assert_eq!(
            (
                s["under_replicated_chunks"].as_u64(),
                s["under_reachable_chunks"].as_u64(),
                s["unreachable_target"].as_bool()
            ),
            (Some(3), Some(0), Some(true)),
            "{s}"
        );
        let m = scrape(&t).await;
        assert_eq!(value(&m, "tessera_replication_target"), 3.0);
        assert_eq!(value(&m, "tessera_replication_reachable"), 2.0);
        assert_eq!(value(&m, "tessera_under_replicated_chunks"), 3.0);
        assert_eq!(value(&m, "tessera_under_reachable_chunks"), 0.0);

        // The third peer, without quota, gets one chunk: a holder can hold a copy, so the
        // target is reachable again and both counts agree.
        c.report_chunks(authed(report(&p3, vec![1]), &bob))
            .await
            .unwrap();
        let (_, s) = get(&t, "/api/v1/stats").await;
        assert_eq!(s["reachable_replication"], 3, "{s}");
        assert_eq!(s["unreachable_target"], false, "{s}");
        assert_eq!(s["under_replicated_chunks"], 2, "chunk 1 has its 3 copies");
        assert_eq!(s["under_reachable_chunks"], 2);

        let (_, doc) = get(&t, "/api/v1/openapi.json").await;
        let props = &doc["components"]["schemas"]["StatsJson"]["properties"];
        for key in [
            "reachable_replication",
            "unreachable_target",
            "under_reachable_chunks",
        ] {
            assert!(
                props[key].is_object(),
                "{key} in the OpenAPI schema: {props}"
            );
        }
        t.stop().await;
    })
    .await
}
