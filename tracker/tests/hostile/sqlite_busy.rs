//! Concurrent writers on a file database: many peers announcing files and reporting chunks
//! at the same moment, each over its own connection, with REST readers beside them. No call
//! may fail and no REST answer may be a 5xx; after the tracker has flushed and restarted on
//! the same database, every announce and every reported chunk is there.

use std::collections::BTreeSet;

use ::common::Bitfield;
use futures::future::join_all;
use proto::tracker::v1 as pb;
use tempfile::TempDir;

use crate::common::{TestTracker, announce, authed, heartbeat, locate, manifest, register, within};

const PEERS: u8 = 40;
/// Chunks of the file every peer reports pieces of.
const SHARED_CHUNKS: u32 = 64;
/// Separate ReportChunks calls per peer (each a write through the batch writer).
const REPORTS: u32 = 4;

/// The chunks peer `i` reports in call `k`: disjoint across calls, overlapping across peers.
fn chunks_of(i: u8, k: u32) -> Vec<u32> {
    (0..3)
        .map(|j| (i as u32 * 7 + k * 13 + j) % SHARED_CHUNKS)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_lose_no_report_under_concurrent_writers() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let owner = register(&mut c, "owner").await;
        let owner_peer = ::common::PeerId::from_random([200; 16]).to_string();
        heartbeat(&mut c, &owner, &owner_peer, "127.0.0.1:9").await;
        let shared = announce(
            &mut c,
            &owner,
            &owner_peer,
            manifest("shared.bin", SHARED_CHUNKS, 1),
        )
        .await
        .id;

        let mut peers = Vec::new();
        for i in 0..PEERS {
            let mut c = t.grpc().await;
            let token = register(&mut c, &format!("writer{i}")).await;
            let peer = ::common::PeerId::from_random([i; 16]).to_string();
            heartbeat(
                &mut c,
                &token,
                &peer,
                &format!("127.0.0.1:{}", 10_000 + i as u16),
            )
            .await;
            peers.push((i, c, token, peer));
        }

        // Everyone at once: announce an own file, report shared chunks in several calls and
        // heartbeat in between; REST readers poll the shared file meanwhile.
        let writers = peers.iter().map(|(i, c, token, peer)| {
            let (mut c, shared) = (c.clone(), shared.clone());
            async move {
                let own = manifest(&format!("own{i}.bin"), 3, 100 + i);
                c.announce(authed(
                    pb::AnnounceRequest {
                        peer_id: peer.clone(),
                        manifest: Some(own),
                    },
                    token,
                ))
                .await?;
                for k in 0..REPORTS {
                    c.report_chunks(authed(
                        pb::ReportChunksRequest {
                            peer_id: peer.clone(),
                            file_id: shared.clone(),
                            kind: pb::HoldingKind::Downloaded as i32,
                            chunks: chunks_of(*i, k),
                        },
                        token,
                    ))
                    .await?;
                }
                Ok::<_, tonic::Status>(())
            }
        });
        let readers = (0..PEERS).map(|_| {
            let url = t.url(&format!("/api/v1/files/{shared}"));
            async move { reqwest::get(url).await.map(|r| r.status()) }
        });
        let (written, read) = tokio::join!(join_all(writers), join_all(readers));
        for r in written {
            r.expect("every concurrent write succeeds");
        }
        for status in read {
            let status = status.expect("the REST reader got an answer");
            assert!(!status.is_server_error(), "no 5xx: {status}");
        }

        // Flush (stop), reopen the same file, and find every write.
        t.stop().await;
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let reader = register(&mut c, "reader").await;
        let located = locate(&mut c, &reader, shared.clone()).await;
        for (i, _, _, peer) in &peers {
            let h = located
                .holders
                .iter()
                .find(|h| &h.peer_id == peer)
                .unwrap_or_else(|| panic!("writer{i} is a holder after the restart"));
            let have = Bitfield::from_bytes(&h.have, SHARED_CHUNKS).unwrap();
            let held: BTreeSet<u32> = (0..SHARED_CHUNKS).filter(|&n| have.get(n)).collect();
            let reported: BTreeSet<u32> = (0..REPORTS).flat_map(|k| chunks_of(*i, k)).collect();
            assert_eq!(
                held, reported,
                "writer{i}: every reported chunk, nothing else"
            );
        }
        let files = c
            .search(authed(
                pb::SearchRequest {
                    query: "own".into(),
                    limit: 1000,
                    ..Default::default()
                },
                &reader,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(files.total, PEERS as u64, "every announce is stored");
        t.stop().await;
    })
    .await;
}
