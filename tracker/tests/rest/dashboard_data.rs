//! What the dashboard polls: live transfer numbers in `/api/v1/stats`, bytes per peer in
//! `/api/v1/peers` and copies per file in `/api/v1/files`, with real values.

use common::manifest::MIN_CHUNK_SIZE;
use proto::tracker::v1 as pb;
use serde_json::Value;
use tempfile::TempDir;

use super::get;
use crate::common::{TestTracker, announce, authed, heartbeat, locate, peer_id, register, within};

const CHUNK: u64 = MIN_CHUNK_SIZE as u64;
/// Two full chunks and a short third.
const SIZE: u64 = 2 * CHUNK + 100;

fn three_chunks(name: &str) -> pb::Manifest {
    pb::Manifest {
        name: name.into(),
        size: SIZE,
        sha256: vec![9; 32].into(),
        chunk_size: MIN_CHUNK_SIZE,
        chunk_hashes: (0..96u8).collect::<Vec<u8>>().into(),
    }
}

fn find<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {list}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn should_report_transfers_bytes_per_peer_and_copies_per_file() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (p1, p2) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
        heartbeat(&mut c, &bob, &p2, "127.0.0.1:9002").await;
        let f = announce(&mut c, &alice, &p1, three_chunks("talk.mp3")).await;

        let (_, stats) = get(&t, "/api/v1/stats").await;
        for key in [
            "active_transfers",
            "transfer_bytes_per_sec",
            "bytes_transferred_total",
            "chunks_transferred_total",
        ] {
            assert_eq!(stats[key], 0, "{key} before any transfer");
        }
        let (_, files) = get(&t, "/api/v1/files").await;
        assert_eq!(find(&files, &f.id)["min_copies"], 1);

        // Bob fetches the first and the short last chunk.
        locate(&mut c, &bob, f.id.clone()).await;
        locate(&mut c, &bob, f.id.clone()).await;
        c.report_chunks(authed(
            pb::ReportChunksRequest {
                peer_id: p2.clone(),
                file_id: f.id.clone(),
                kind: 2,
                chunks: vec![0, 2],
            },
            &bob,
        ))
        .await
        .unwrap();

        let (_, stats) = get(&t, "/api/v1/stats").await;
        assert_eq!(
            stats["active_transfers"], 1,
            "two locates of one file by one user"
        );
        assert_eq!(stats["chunks_transferred_total"], 2);
        assert_eq!(stats["bytes_transferred_total"], CHUNK + 100);
        assert_eq!(stats["transfer_bytes_per_sec"], (CHUNK + 100) / 10);

        let (_, peers) = get(&t, "/api/v1/peers").await;
        let sharer = find(&peers, &p1);
        assert_eq!(
            (
                sharer["shared_bytes"].as_u64(),
                sharer["held_bytes"].as_u64()
            ),
            (Some(SIZE), Some(SIZE))
        );
        let getter = find(&peers, &p2);
        assert_eq!(getter["shared_bytes"], 0);
        assert_eq!(getter["held_bytes"], CHUNK + 100);

        let (_, files) = get(&t, "/api/v1/files").await;
        let file = find(&files, &f.id);
        assert_eq!(file["min_copies"], 1, "chunk 1 is on the sharer only");
        assert_eq!(file["holders"], 2, "the sharer and the getter, together");

        // Alice locates it too; bob completes it.
        locate(&mut c, &alice, f.id.clone()).await;
        c.report_chunks(authed(
            pb::ReportChunksRequest {
                peer_id: p2.clone(),
                file_id: f.id.clone(),
                kind: 2,
                chunks: vec![1],
            },
            &bob,
        ))
        .await
        .unwrap();
        let (_, stats) = get(&t, "/api/v1/stats").await;
        assert_eq!(
            stats["active_transfers"], 1,
            "bob has the whole file: only alice's transfer is left"
        );
        assert_eq!(stats["chunks_transferred_total"], 3);
        assert_eq!(stats["bytes_transferred_total"], SIZE);
        let (_, files) = get(&t, "/api/v1/files").await;
        let file = find(&files, &f.id);
        assert_eq!(
            (file["min_copies"].as_u64(), file["holders"].as_u64()),
            (Some(2), Some(2))
        );
        let (_, detail) = get(&t, &format!("/api/v1/files/{}", f.id)).await;
        assert_eq!(detail["min_copies"], 2);
        let (_, peers) = get(&t, "/api/v1/peers").await;
        assert_eq!(find(&peers, &p2)["held_bytes"], SIZE);
        t.stop().await;
    })
    .await
}
