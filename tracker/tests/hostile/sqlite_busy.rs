//! Concurrent writers on a file database: many peers announcing files and reporting chunks
//! at the same moment, each over its own connection, with REST readers beside them. No call
//! may fail and no REST answer may be a 5xx; after the tracker has flushed and restarted on
//! the same database, every announce and every reported chunk is there.
//!
//! The same again while another connection (as a backup tool or an operator's `sqlite3`
//! shell would) holds SQLite's write lock on the file, which makes every write of the
//! tracker meet `SQLITE_BUSY`: for less than the tracker's busy timeout (5 s) nothing may
//! fail; for longer, the writes that must be durable before they answer may fail with
//! UNAVAILABLE, and then have no effect, but no report and no acknowledged announce may be
//! lost once the lock is gone (`outage::sqlite` drives that case with every kind of write).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use ::common::Bitfield;
use futures::future::join_all;
use proto::tracker::v1 as pb;
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sea_orm::sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tonic::Code;
use tracker::error::DB_UNAVAILABLE;

use crate::common::{
    TestTracker, announce, authed, heartbeat, locate, manifest, postgres_backend, register, within,
};

const PEERS: u8 = 40;
/// Chunks of the file every peer reports pieces of.
const SHARED_CHUNKS: u32 = 64;
/// Separate ReportChunks calls per peer (each a write through the batch writer).
const REPORTS: u32 = 4;
/// The tracker's SQLite busy timeout (tracker/src/db/mod.rs).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The chunks peer `i` reports in call `k`: disjoint across calls, overlapping across peers.
fn chunks_of(i: u8, k: u32) -> Vec<u32> {
    (0..3)
        .map(|j| (i as u32 * 7 + k * 13 + j) % SHARED_CHUNKS)
        .collect()
}

/// The peers heartbeat once, before everything else, and Locate lists up holders only: a
/// peer timeout far past the test's bound keeps them up however slowly a loaded machine runs
/// the registrations, the held lock and the restart.
fn config(dir: &TempDir) -> tracker::Config {
    let mut cfg = tracker::Config::ephemeral(dir.path());
    cfg.peer_timeout = Duration::from_secs(3600);
    cfg
}

/// What the concurrent writers saw.
struct Outcome {
    /// Each peer's Announce of its own file.
    announced: Vec<Result<(), tonic::Status>>,
    /// From the moment the lock was taken until every writer had its answer.
    since_locked: Option<Duration>,
}

/// Takes SQLite's write lock on `db` (`BEGIN IMMEDIATE` on a connection of its own), says so
/// on `taken`, keeps it for `hold`, then rolls back.
async fn hold_write_lock(db: &Path, hold: Duration, taken: oneshot::Sender<Instant>) {
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(BUSY_TIMEOUT)
        .connect()
        .await
        .expect("a second connection to the tracker's database");
    sea_orm::sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("the write lock");
    // A write of our own inside the transaction, as a real competing writer would make.
    sea_orm::sqlx::query("CREATE TABLE IF NOT EXISTS lock_holder (x INTEGER)")
        .execute(&mut conn)
        .await
        .unwrap();
    taken.send(Instant::now()).unwrap();
    tokio::time::sleep(hold).await;
    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// Registers the peers, then runs the writers and the REST readers at once (with the write
/// lock held by another connection for `hold`, if given), restarts the tracker and checks
/// that every report and every announce is stored. Returns what the writers saw.
async fn write_concurrently(hold: Option<Duration>) -> Outcome {
    let dir = TempDir::new().unwrap();
    let t = TestTracker::start_with(config(&dir)).await;
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

    let (taken_tx, taken_rx) = oneshot::channel();
    let holder = hold.map(|hold| {
        let db = dir.path().join("tracker.db");
        tokio::spawn(async move { hold_write_lock(&db, hold, taken_tx).await })
    });
    let locked_at = match holder {
        Some(_) => Some(taken_rx.await.expect("the lock holder took the lock")),
        None => None,
    };

    // Everyone at once: announce an own file, report shared chunks in several calls; REST
    // readers poll the shared file meanwhile.
    let writers = peers.iter().map(|(i, c, token, peer)| {
        let (mut c, shared) = (c.clone(), shared.clone());
        async move {
            let own = manifest(&format!("own{i}.bin"), 3, 100 + i);
            let announced = c
                .announce(authed(
                    pb::AnnounceRequest {
                        peer_id: peer.clone(),
                        manifest: Some(own),
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop);
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
                .await
                .unwrap_or_else(|e| panic!("writer{i}: report {k} failed: {e}"));
            }
            announced
        }
    });
    let readers = (0..PEERS).map(|_| {
        let url = t.url(&format!("/api/v1/files/{shared}"));
        async move { reqwest::get(url).await.map(|r| r.status()) }
    });
    let (announced, read) = tokio::join!(join_all(writers), join_all(readers));
    let since_locked = locked_at.map(|at| at.elapsed());
    for status in read {
        let status = status.expect("the REST reader got an answer");
        assert!(!status.is_server_error(), "no 5xx: {status}");
    }
    if let Some(holder) = holder {
        holder.await.unwrap();
    }

    // Flush (stop), reopen the same file, and find every write.
    t.stop().await;
    let t = TestTracker::start_with(config(&dir)).await;
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
    let stored: BTreeSet<String> = files.items.into_iter().map(|f| f.name).collect();
    let acknowledged: BTreeSet<String> = (announced.iter().enumerate())
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| format!("own{i}.bin"))
        .collect();
    assert_eq!(
        stored, acknowledged,
        "every acknowledged announce is stored, and no refused one"
    );
    t.stop().await;
    Outcome {
        announced,
        since_locked,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_lose_no_report_under_concurrent_writers() {
    within(async {
        let out = write_concurrently(None).await;
        for (i, r) in out.announced.into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("writer{i}: announce failed: {e}"));
        }
    })
    .await;
}

/// Another connection holds the write lock for less than the busy timeout: the tracker's
/// writes wait for it (so the announces cannot answer before it is released), and none
/// fails.
#[tokio::test(flavor = "multi_thread")]
async fn should_wait_out_a_write_lock_held_elsewhere_and_lose_nothing() {
    if postgres_backend().is_some() {
        eprintln!("SKIPPED: SQLite's write lock only exists on SQLite");
        return;
    }
    within(async {
        let hold = Duration::from_millis(1500);
        let out = write_concurrently(Some(hold)).await;
        for (i, r) in out.announced.into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("writer{i}: announce failed under SQLITE_BUSY: {e}"));
        }
        let waited = out.since_locked.unwrap();
        assert!(
            waited >= hold,
            "the announces waited for the lock ({waited:?} < {hold:?}): no SQLITE_BUSY was met"
        );
    })
    .await;
}

/// Another connection holds the write lock for longer than the busy timeout: writes that
/// must be durable before they answer (Announce) may fail with UNAVAILABLE, never anything
/// else, and then are not stored; chunk reports still succeed, and once the lock is gone
/// the batch writer's retries store every report.
#[tokio::test(flavor = "multi_thread")]
async fn should_keep_every_write_when_a_write_lock_outlasts_the_busy_timeout() {
    if postgres_backend().is_some() {
        eprintln!("SKIPPED: SQLite's write lock only exists on SQLite");
        return;
    }
    within(async {
        let hold = BUSY_TIMEOUT + Duration::from_secs(2);
        let out = write_concurrently(Some(hold)).await;
        let failed: Vec<_> = out
            .announced
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
            .collect();
        for (i, e) in &failed {
            assert_eq!(e.code(), Code::Unavailable, "writer{i}: {e}");
            assert_eq!(e.message(), DB_UNAVAILABLE, "writer{i}: no detail leaks");
        }
        eprintln!(
            "{} of {PEERS} announces failed while the lock was held; none is stored",
            failed.len()
        );
        let waited = out.since_locked.unwrap();
        assert!(
            waited >= BUSY_TIMEOUT,
            "the first durable write met SQLITE_BUSY for the whole busy timeout ({waited:?})"
        );
    })
    .await;
}
