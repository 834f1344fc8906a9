//! Answers whose size a client could make large come in pages: a file's chunk map
//! (`chunk_offset`, `chunk_limit`, at most 1,024 chunks, each listing at most 8 of its
//! holders) and the peers list (`offset`, `limit`, at most 1,000).

use reqwest::StatusCode;
use tempfile::TempDir;
use tracker::Config;

use super::get;
use crate::common::{TestTracker, announce, heartbeat, manifest, register, within};

fn nth_peer(i: u32) -> String {
    common::PeerId::from_random(u128::from(i).to_be_bytes()).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_page_chunk_maps_and_peers() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start_with(Config::ephemeral(dir.path())).await;
        let mut c = t.grpc().await;
        let token = register(&mut c, "alice").await;
        // Twelve peers share one 3,000-chunk file.
        let mut f = None;
        for i in 0..12 {
            let p = nth_peer(i);
            heartbeat(&mut c, &token, &p, &format!("127.0.0.1:{}", 9000 + i)).await;
            f = Some(announce(&mut c, &token, &p, manifest("big.bin", 3000, 1)).await);
        }
        let id = f.unwrap().id;

        let (status, first) = get(&t, &format!("/api/v1/files/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        let map = first["chunk_map"].as_array().unwrap();
        assert_eq!((map.len(), &first["chunk_offset"]), (256, &0.into()));
        assert_eq!(first["next_chunk_offset"], 256);
        assert_eq!(map[0]["peers"].as_array().unwrap().len(), 8);
        assert_eq!(map[0]["peers_total"], 12);

        // Following next_chunk_offset visits every chunk once.
        let (mut offset, mut seen) = (Some(0u64), 0u64);
        while let Some(o) = offset {
            let path = format!("/api/v1/files/{id}?chunk_offset={o}&chunk_limit=1024");
            let (status, page) = get(&t, &path).await;
            assert_eq!(status, StatusCode::OK);
            let map = page["chunk_map"].as_array().unwrap();
            assert_eq!(map[0]["index"], o);
            seen += map.len() as u64;
            offset = page["next_chunk_offset"].as_u64();
        }
        assert_eq!(seen, 3000);
        let (_, past) = get(&t, &format!("/api/v1/files/{id}?chunk_offset=5000")).await;
        assert!(past["chunk_map"].as_array().unwrap().is_empty());
        assert!(past["next_chunk_offset"].is_null());
        for bad in [
            "chunk_limit=0",
            "chunk_limit=1025",
            "chunk_offset=-1",
            "chunk_limit=x",
        ] {
            let (status, body) = get(&t, &format!("/api/v1/files/{id}?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["error"].is_string());
        }

        let (_, peers) = get(&t, "/api/v1/peers?limit=5&offset=10").await;
        assert_eq!(peers["total"], 12);
        assert_eq!(peers["items"].as_array().unwrap().len(), 2);
        for bad in ["limit=0", "limit=1001", "offset=x"] {
            let (status, _) = get(&t, &format!("/api/v1/peers?{bad}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        }
        t.stop().await;
    })
    .await
}
