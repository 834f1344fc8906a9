//! Per-user limits: one user making peer ids without end, or announcing a manifest or a
//! library past the limits, gets RESOURCE_EXHAUSTED naming the option to raise; other
//! users are unaffected, and what was accepted keeps working.

use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tonic::Code;
use tracker::Config;

use super::still_alive;
use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, peer_id, register, within,
};

type Client = pb::tracker_client::TrackerClient<tonic::transport::Channel>;

/// Announces `m` from `peer`, returning the status.
async fn try_announce(
    c: &mut Client,
    token: &str,
    peer: &str,
    m: pb::Manifest,
) -> Result<tonic::Response<pb::AnnounceResponse>, tonic::Status> {
    let req = pb::AnnounceRequest {
        peer_id: peer.into(),
        manifest: Some(m),
        ..Default::default()
    };
    c.announce(authed(req, token)).await
}

/// A peer id from a number (`peer_id` takes one byte).
fn nth_peer(i: u32) -> String {
    common::PeerId::from_random(u128::from(i).to_be_bytes()).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_peer_ids_past_the_limit_per_user() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let mallory = register(&mut c, "mallory").await;
        let max = Config::default().max_peers_per_user;
        assert_eq!(max, 64, "the default");
        for i in 0..max {
            heartbeat(&mut c, &mallory, &nth_peer(i), "127.0.0.1:9").await;
        }
        let beat = |peer: String| pb::HeartbeatRequest {
            peer_id: peer,
            addr: "127.0.0.1:9".into(),
            storage_quota: 0,
            storage_used: 0,
        };
        for i in max..max + 100 {
            let e = c
                .heartbeat(authed(beat(nth_peer(i)), &mallory))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
            assert!(
                e.message().contains("--max-peers-per-user"),
                "{}",
                e.message()
            );
        }
        // Every way of naming a new peer is refused alike.
        let e = try_announce(
            &mut c,
            &mallory,
            &nth_peer(max + 1000),
            manifest("x.bin", 1, 1),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        // Her existing peers keep working; another user is unaffected.
        heartbeat(&mut c, &mallory, &nth_peer(0), "127.0.0.1:9").await;
        announce(&mut c, &mallory, &nth_peer(1), manifest("ok.bin", 1, 2)).await;
        let alice = register(&mut c, "alice").await;
        heartbeat(&mut c, &alice, &nth_peer(max + 2000), "127.0.0.1:10").await;
        let peers: serde_json::Value = reqwest::get(t.url("/api/v1/peers"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(peers["total"], u64::from(max) + 1);
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_manifests_and_libraries_past_the_chunk_and_file_limits() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.max_files_per_user = 3;
        cfg.max_chunks_per_user = 300_000;
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await.max_encoding_message_size(64 << 20);
        let mallory = register(&mut c, "mallory").await;
        let p = peer_id(1);
        heartbeat(&mut c, &mallory, &p, "127.0.0.1:9").await;
        // One chunk past the default per-file limit (262,144): refused, and not stored.
        let per_file = Config::default().max_chunks_per_file;
        let e = try_announce(&mut c, &mallory, &p, manifest("huge.bin", per_file + 1, 1))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("--max-chunks-per-file"),
            "{}",
            e.message()
        );
        let stats: serde_json::Value = reqwest::get(t.url("/api/v1/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["files"], 0);

        // 200,000 chunks fit; another 200,000 would pass the user's 300,000.
        announce(&mut c, &mallory, &p, manifest("big.bin", 200_000, 2)).await;
        let e = try_announce(&mut c, &mallory, &p, manifest("big2.bin", 200_000, 3))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("--max-chunks-per-user"),
            "{}",
            e.message()
        );
        // Re-announcing what she shares passes; a fourth file does not.
        announce(&mut c, &mallory, &p, manifest("big.bin", 200_000, 2)).await;
        announce(&mut c, &mallory, &p, manifest("a.bin", 1, 4)).await;
        announce(&mut c, &mallory, &p, manifest("b.bin", 1, 5)).await;
        let e = try_announce(&mut c, &mallory, &p, manifest("c.bin", 1, 6))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("--max-files-per-user"),
            "{}",
            e.message()
        );

        // Another user shares the same file and one of his own.
        let bob = register(&mut c, "bob").await;
        let q = peer_id(2);
        heartbeat(&mut c, &bob, &q, "127.0.0.1:10").await;
        announce(&mut c, &bob, &q, manifest("c.bin", 1, 6)).await;
        announce(&mut c, &bob, &q, manifest("big.bin", 200_000, 2)).await;
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_list_a_bounded_choice_of_a_files_many_holders() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        // Three accounts' 192 peers: one shares a file, the others each claim one chunk.
        let mut tokens = Vec::new();
        for u in 0..3 {
            tokens.push(register(&mut c, &format!("crowd{u}")).await);
        }
        let owner = nth_peer(0);
        heartbeat(&mut c, &tokens[0], &owner, "127.0.0.1:9000").await;
        let f = announce(&mut c, &tokens[0], &owner, manifest("hot.bin", 1000, 1)).await;
        for i in 1..192u32 {
            let token = &tokens[(i / 64) as usize];
            let p = nth_peer(i);
            heartbeat(&mut c, token, &p, &format!("127.0.0.1:{}", 9000 + i)).await;
            let req = pb::ReportChunksRequest {
                peer_id: p,
                file_id: f.id.clone(),
                chunks: vec![i],
                ..Default::default()
            };
            c.report_chunks(authed(req, token)).await.unwrap();
        }
        let l = crate::common::locate(&mut c, &tokens[1], f.id.clone()).await;
        assert_eq!(l.holders.len(), 128, "a bounded choice");
        assert!(
            l.holders
                .iter()
                .any(|h| h.peer_id == owner && h.have.is_empty()),
            "the complete holder is always listed"
        );
        assert_eq!(l.file.unwrap().holders, 192, "every holder is counted");
        t.stop().await;
    })
    .await
}
