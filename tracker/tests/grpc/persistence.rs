//! A restarted tracker knows what it knew: users, sessions, files, holdings and recently
//! seen peers, including batched writes that were only flushed at shutdown. Runs on SQLite,
//! and on PostgreSQL too when `TRACKER_TEST_DATABASE_URL` is set.

use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tracker::Config;

use crate::common::{
    TempPostgres, TestTracker, announce, authed, heartbeat, locate, manifest, peer_id,
    postgres_admin_url, register, within,
};

/// Everything a restarted tracker must still know, on the database behind `cfg`.
async fn check_restart_keeps_state(cfg: Config) {
    let t = TestTracker::start_with(cfg.clone()).await;
    let mut c = t.grpc().await;
    let alice = register(&mut c, "alice").await;
    let (p1, p2) = (peer_id(1), peer_id(2));
    heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
    heartbeat(&mut c, &alice, &p2, "127.0.0.1:9002").await;
    let f = announce(&mut c, &alice, &p1, manifest("keep.mp4", 4, 7)).await;
    // Batched writes, only flushed at shutdown.
    c.report_chunks(authed(
        pb::ReportChunksRequest {
            peer_id: p2.clone(),
            file_id: f.id.clone(),
            kind: pb::HoldingKind::Downloaded as i32,
            chunks: vec![0, 3],
        },
        &alice,
    ))
    .await
    .unwrap();
    t.stop().await;

    let t = TestTracker::start_with(cfg).await;
    let mut c = t.grpc().await;
    // The old session still works.
    let r = c
        .resolve(authed(
            pb::ResolveRequest {
                term: "keep.mp4".into(),
            },
            &alice,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].id, f.id);
    let l = locate(&mut c, &alice, f.id.clone()).await;
    assert_eq!(
        l.file.unwrap().holders,
        2,
        "peers seen recently are still up"
    );
    let h2 = l.holders.iter().find(|h| h.peer_id == p2).unwrap();
    assert_eq!(h2.have.as_ref(), &[0b1001_0000]);
    assert_eq!(h2.addr, "127.0.0.1:9002");
    c.login(pb::Credentials {
        user: "alice".into(),
        password: "pw-of-alice".into(),
    })
    .await
    .unwrap();
    let peers = c
        .list_peers(authed(pb::ListPeersRequest {}, &alice))
        .await
        .unwrap()
        .into_inner()
        .peers;
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0].storage_quota, 1000);
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_users_sessions_files_and_holdings_across_a_restart() {
    within(async {
        let dir = TempDir::new().unwrap();
        check_restart_keeps_state(Config::ephemeral(dir.path())).await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_state_across_a_restart_on_postgres() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("TRACKER_TEST_DATABASE_URL is not set; skipping the PostgreSQL run");
        return;
    };
    within(async {
        let pg = TempPostgres::create(&admin).await;
        let dir = TempDir::new().unwrap();
        check_restart_keeps_state(Config {
            database_url: pg.url.clone(),
            ..Config::ephemeral(dir.path())
        })
        .await;
        pg.drop_db().await;
    })
    .await
}
