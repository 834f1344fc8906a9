//! Names belong to sharers: the first announcer of some content does not name it for
//! everyone. Each sharer's listing carries its own name, search and resolve find a file
//! under any current sharer's name, a name leaves with its sharer, and the names (and the
//! last known one, once only a download is left) survive a restart. Runs on SQLite, and on
//! PostgreSQL under `TRACKER_TEST_BACKEND=postgres`.

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use serde_json::Value;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{TestTracker, announce, authed, locate, manifest, peer_id, register, within};

const HOSTILE: &str = "../../../tmp/x";

/// The names of the items a search for `query` answers.
async fn search(c: &mut TrackerClient<Channel>, token: &str, query: &str) -> Vec<String> {
    let req = pb::SearchRequest {
        query: query.into(),
        ..Default::default()
    };
    let r = c.search(authed(req, token)).await.unwrap().into_inner();
    assert_eq!(r.total, r.items.len() as u64, "{query}");
    r.items.into_iter().map(|f| f.name).collect()
}

/// The (id, name) pairs Resolve answers for `term`.
async fn resolve(c: &mut TrackerClient<Channel>, token: &str, term: &str) -> Vec<(String, String)> {
    let req = pb::ResolveRequest { term: term.into() };
    let r = c.resolve(authed(req, token)).await.unwrap().into_inner();
    r.files.into_iter().map(|f| (f.id, f.name)).collect()
}

async fn rest(t: &TestTracker, path: &str) -> Value {
    let r = reqwest::get(t.url(path)).await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

async fn unindex(c: &mut TrackerClient<Channel>, token: &str, peer: &str, id: &str) {
    let req = pb::UnindexRequest {
        peer_id: peer.into(),
        file_id: id.into(),
    };
    c.unindex(authed(req, token)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn should_list_a_file_under_each_sharers_own_name() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let hostile = register(&mut c, "hostile").await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let carol = register(&mut c, "carol").await;
        let (ph, pa, pb_, pc) = (peer_id(1), peer_id(2), peer_id(3), peer_id(4));

        // The hostile account announces alice's content first.
        let first = announce(&mut c, &hostile, &ph, manifest(HOSTILE, 3, 9)).await;
        assert_eq!(first.name, HOSTILE);
        let mine = announce(&mut c, &alice, &pa, manifest("holiday.mkv", 3, 9)).await;
        assert_eq!(mine.id, first.id, "the name is not part of the id");
        assert_eq!(
            (mine.name.as_str(), mine.r#type.as_str()),
            ("holiday.mkv", "video")
        );
        let id = mine.id.clone();

        assert_eq!(search(&mut c, &bob, "holiday").await, ["holiday.mkv"]);
        assert_eq!(search(&mut c, &bob, "tmp/x").await, [HOSTILE]);
        assert_eq!(search(&mut c, &bob, "").await.len(), 1, "one row per file");
        assert_eq!(
            resolve(&mut c, &bob, "holiday.mkv").await,
            [(id.clone(), "holiday.mkv".into())]
        );
        // By id: the caller's own name, else the most used (one account each: the older).
        assert_eq!(resolve(&mut c, &alice, &id).await[0].1, "holiday.mkv");
        assert_eq!(resolve(&mut c, &bob, &id[..8]).await[0].1, HOSTILE);
        let l = locate(&mut c, &alice, id.clone()).await;
        assert_eq!(
            l.manifest.unwrap().name,
            "holiday.mkv",
            "the getter saves this name"
        );

        // A second account using alice's name outweighs the first announcer for the rest.
        announce(&mut c, &carol, &pc, manifest("holiday.mkv", 3, 9)).await;
        let l = locate(&mut c, &bob, id.clone()).await;
        assert_eq!(l.file.unwrap().name, "holiday.mkv");
        assert_eq!(l.manifest.unwrap().name, "holiday.mkv");
        assert_eq!(resolve(&mut c, &hostile, &id).await[0].1, HOSTILE);

        // Nobody renames another's listing; a re-announce renames one's own only.
        let stolen = c
            .announce(authed(
                pb::AnnounceRequest {
                    peer_id: pa.clone(),
                    manifest: Some(manifest("evil.mkv", 3, 9)),
                    ..Default::default()
                },
                &hostile,
            ))
            .await
            .unwrap_err();
        assert_eq!(stolen.code(), Code::PermissionDenied);
        let renamed = announce(&mut c, &hostile, &ph, manifest("evil.mkv", 3, 9)).await;
        assert_eq!(renamed.name, "evil.mkv");
        assert!(
            search(&mut c, &bob, "tmp/x").await.is_empty(),
            "no stale name"
        );
        assert_eq!(search(&mut c, &bob, "evil").await, ["evil.mkv"]);
        assert_eq!(search(&mut c, &bob, "holiday").await, ["holiday.mkv"]);

        // A sync carries no names: a shared holding keeps its own, a download has none.
        let sync = |peer: &str, kind: pb::HoldingKind| pb::SyncHoldingsRequest {
            peer_id: peer.into(),
            holdings: vec![pb::Holding {
                file_id: id.clone(),
                kind: kind as i32,
                have: Default::default(),
            }],
        };
        let shared = sync(&pa, pb::HoldingKind::Shared);
        c.sync_holdings(authed(shared, &alice)).await.unwrap();
        let downloaded = sync(&pc, pb::HoldingKind::Downloaded);
        c.sync_holdings(authed(downloaded, &carol)).await.unwrap();
        assert_eq!(resolve(&mut c, &alice, &id).await[0].1, "holiday.mkv");
        assert_eq!(search(&mut c, &bob, "holiday").await, ["holiday.mkv"]);

        let found = rest(&t, "/api/v1/files?q=mkv").await;
        assert_eq!(found["total"], 1);
        assert_eq!(found["items"][0]["name"], "holiday.mkv");
        assert_eq!(
            found["items"][0]["names"],
            serde_json::json!(["holiday.mkv", "evil.mkv"])
        );
        let detail = rest(&t, &format!("/api/v1/files/{id}")).await;
        assert_eq!(detail["name"], "holiday.mkv");
        t.stop().await;

        // The sharers' names come back with their holdings.
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        assert_eq!(search(&mut c, &bob, "evil").await, ["evil.mkv"]);
        assert_eq!(resolve(&mut c, &alice, &id).await[0].1, "holiday.mkv");

        // A name leaves with its sharer; once only bob's download is left, the file keeps
        // the last known name, not the first announcer's.
        unindex(&mut c, &hostile, &ph, &id).await;
        assert!(search(&mut c, &bob, "evil").await.is_empty());
        c.report_chunks(authed(
            pb::ReportChunksRequest {
                peer_id: pb_.clone(),
                file_id: id.clone(),
                kind: pb::HoldingKind::Downloaded as i32,
                chunks: vec![0, 1, 2],
            },
            &bob,
        ))
        .await
        .unwrap();
        unindex(&mut c, &carol, &pc, &id).await;
        unindex(&mut c, &alice, &pa, &id).await;
        t.stop().await;

        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        assert_eq!(resolve(&mut c, &bob, &id).await[0].1, "holiday.mkv");
        assert_eq!(search(&mut c, &bob, "holiday").await, ["holiday.mkv"]);
        assert!(search(&mut c, &bob, "tmp").await.is_empty());
        let detail = rest(&t, &format!("/api/v1/files/{id}")).await;
        assert_eq!(detail["names"], serde_json::json!(["holiday.mkv"]));
        t.stop().await;
    })
    .await
}
