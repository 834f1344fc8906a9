//! Several trackers on one database acting as one: two in-process trackers share a
//! database (one SQLite file, or one fresh PostgreSQL database under
//! `TRACKER_TEST_BACKEND=postgres`), and what one learns the other knows within the
//! staleness bound of ARCHITECTURE.md: writer flush 200 ms + feed poll 200 ms.

mod handover;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use serde_json::Value;
use tempfile::TempDir;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tracker::Config;

use crate::common::{
    TestTracker, announce, authed, heartbeat, locate, manifest, node_key, peer_id, register, within,
};
use crate::grpc::collections::{announce_collection, listing, photos};

/// The staleness bound for a change that commits before its call returns (announce,
/// sessions), with room for a loaded CI machine.
const BOUND: Duration = Duration::from_secs(1);

async fn get(t: &TestTracker, path: &str) -> Value {
    reqwest::get(t.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls `check` every 20 ms until it holds; returns how long that took.
async fn until<F, Fut>(limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < limit, "not seen within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// Whether `t` accepts `token` (a Locate of an unknown file answers NOT_FOUND to a valid
/// session and UNAUTHENTICATED otherwise; it changes nothing).
async fn whoami_ok(t: &TestTracker, token: &str) -> bool {
    let mut c = t.grpc().await;
    let req = pb::LocateRequest {
        file_id: "ab".repeat(32),
        requester_key: node_key(),
        ..Default::default()
    };
    match c.locate(authed(req, token)).await {
        Ok(_) => true,
        Err(e) => e.code() != tonic::Code::Unauthenticated,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_share_sessions_peers_and_files_between_trackers_within_the_bound() {
    within(async {
        let dir = TempDir::new().unwrap();
        let a = TestTracker::start(&dir).await;
        let b = TestTracker::start(&dir).await;
        let (mut ca, mut cb) = (a.grpc().await, b.grpc().await);

        // A session made on A works on B.
        let token = register(&mut ca, "alice").await;
        let took = until(BOUND, || whoami_ok(&b, &token)).await;
        eprintln!("session visible on B after {took:?}");

        // A peer registered and a file announced through A: found and located through B.
        let peer = peer_id(1);
        heartbeat(&mut ca, &token, &peer, "127.0.0.1:9001").await;
        let file = announce(&mut ca, &token, &peer, manifest("Abbey Road.flac", 3, 7)).await;
        let took = until(BOUND, || async {
            get(&b, "/api/v1/files?q=abbey").await["total"] == 1
        })
        .await;
        eprintln!("announce on A found by a search on B after {took:?}");
        let located = locate(&mut cb, &token, file.id.clone()).await;
        assert_eq!(located.holders.len(), 1);
        assert_eq!(located.holders[0].peer_id, peer);
        assert_eq!(located.holders[0].addr, "127.0.0.1:9001");
        let peers = get(&b, "/api/v1/peers").await;
        let listed = peers["items"].as_array().unwrap();
        assert!(
            listed
                .iter()
                .any(|p| p["id"] == peer.as_str() && p["state"] == "up"),
            "{peers}"
        );

        // Logout on A is refused on B within the bound.
        ca.logout(authed(pb::LogoutRequest {}, &token))
            .await
            .unwrap();
        let took = until(BOUND, || async { !whoami_ok(&b, &token).await }).await;
        eprintln!("logout on A refused on B after {took:?}");
        let err = cb
            .locate(authed(
                pb::LocateRequest {
                    file_id: file.id,
                    requester_key: node_key(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        b.stop().await;
        a.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_show_a_collection_made_on_one_tracker_on_the_other_within_the_bound() {
    within(async {
        let dir = TempDir::new().unwrap();
        let a = TestTracker::start(&dir).await;
        let b = TestTracker::start(&dir).await;
        let mut ca = a.grpc().await;
        let token = register(&mut ca, "alice").await;
        let peer = peer_id(1);
        heartbeat(&mut ca, &token, &peer, "127.0.0.1:9001").await;

        // A new collection, found on B by the paths inside it.
        let bytes = photos();
        let f = announce_collection(&mut ca, &token, &peer, "photos", &bytes)
            .await
            .unwrap();
        let took = until(BOUND, || async {
            let r = get(&b, "/api/v1/files?q=holiday&type=collection").await;
            r["total"] == 1 && r["items"][0]["id"] == f.id.as_str()
        })
        .await;
        eprintln!("collection announced on A found by its paths on B after {took:?}");
        let r = reqwest::get(b.url(&format!("/api/v1/files/{}/listing", f.id)))
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap(), bytes);

        // A file B knows as plain becomes a collection there too.
        let notes = listing(&["notes/todo.txt"], &[]);
        let m = common::manifest::hash_bytes(&notes, "notes".into());
        let plain = announce(&mut ca, &token, &peer, pb::Manifest::from(&m)).await;
        let path = format!("/api/v1/files/{}", plain.id);
        until(BOUND, || async { get(&b, &path).await["type"] == "other" }).await;
        announce_collection(&mut ca, &token, &peer, "notes", &notes)
            .await
            .unwrap();
        until(BOUND, || async {
            get(&b, &path).await["type"] == "collection"
        })
        .await;
        let r = get(&b, "/api/v1/files?q=todo").await;
        assert_eq!(r["items"][0]["id"], plain.id.as_str(), "{r}");
        b.stop().await;
        a.stop().await;
    })
    .await
}

/// A fake node: heartbeats every 100 ms through its tracker, takes its tasks from the
/// stream and completes them, recording every task id it was given.
struct FakeNode {
    stop: CancellationToken,
}

type Seen = Arc<Mutex<Vec<(u64, String)>>>;

/// The (task id, node) pairs delivered so far, asserting that no task id came twice.
fn delivered_once(seen: &Seen) -> Vec<(u64, String)> {
    let tasks = seen.lock().unwrap().clone();
    let ids: HashSet<u64> = tasks.iter().map(|t| t.0).collect();
    assert_eq!(
        ids.len(),
        tasks.len(),
        "a task was delivered twice: {tasks:?}"
    );
    tasks
}

impl FakeNode {
    async fn start(t: &TestTracker, token: &str, n: u8, seen: Seen) -> FakeNode {
        let stop = CancellationToken::new();
        let id = peer_id(n);
        let mut client = t.grpc().await;
        heartbeat_quota(&mut client, token, &id, n).await;
        let mut stream = client
            .tasks(authed(
                pb::TasksRequest {
                    peer_id: id.clone(),
                    node_key: node_key(),
                },
                token,
            ))
            .await
            .unwrap()
            .into_inner();
        let (token, stop2) = (token.to_string(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tokio::select! {
                    () = stop2.cancelled() => return,
                    _ = tick.tick() => heartbeat_quota(&mut client, &token, &id, n).await,
                    msg = stream.message() => {
                        let Ok(Some(task)) = msg else { return };
                        seen.lock().unwrap().push((task.id, id.clone()));
                        let req = pb::CompleteTaskRequest {
                            peer_id: id.clone(),
                            task_id: task.id,
                            ok: true,
                            error: String::new(),
                        };
                        let _ = client.complete_task(authed(req, &token)).await;
                    }
                }
            }
        });
        FakeNode { stop }
    }
}

async fn heartbeat_quota(c: &mut TrackerClient<Channel>, token: &str, id: &str, n: u8) {
    let req = pb::HeartbeatRequest {
        peer_id: id.to_string(),
        addr: format!("127.0.0.1:{}", 9000 + u16::from(n)),
        storage_quota: 1 << 30,
        storage_used: 0,
    };
    let _ = c.heartbeat(authed(req, token)).await;
}

async fn settled(t: &TestTracker) -> bool {
    let s = get(t, "/api/v1/stats").await;
    s["under_replicated_chunks"] == 0 && s["pending_tasks"] == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn should_replicate_once_with_nodes_on_different_trackers_and_repair_once() {
    within(async {
        let dir = TempDir::new().unwrap();
        let cfg = Config {
            replication: 3,
            peer_timeout: Duration::from_secs(1),
            repair_grace: Duration::from_millis(500),
            ..Config::ephemeral(dir.path())
        };
        let a = TestTracker::start_with(cfg.clone()).await;
        let b = TestTracker::start_with(cfg).await;
        let mut ca = a.grpc().await;
        let token = register(&mut ca, "alice").await;
        // B must know the session before nodes connect through it.
        until(BOUND, || whoami_ok(&b, &token)).await;
        let seen: Seen = Arc::default();
        let sharer = FakeNode::start(&a, &token, 1, seen.clone()).await;
        let mut nodes = Vec::new();
        for n in 2..=3 {
            nodes.push(FakeNode::start(&a, &token, n, seen.clone()).await);
        }
        for n in 4..=6 {
            nodes.push(FakeNode::start(&b, &token, n, seen.clone()).await);
        }
        // The nodes on A must be known to B and the other way round before planning.
        until(BOUND, || async {
            get(&a, "/api/v1/stats").await["peers_up"] == 6
                && get(&b, "/api/v1/stats").await["peers_up"] == 6
        })
        .await;
        let chunks = 8u32;
        let file = announce(&mut ca, &token, &peer_id(1), manifest("big.bin", chunks, 3)).await;
        until(Duration::from_secs(20), || async {
            settled(&a).await && settled(&b).await
        })
        .await;
        let tasks = delivered_once(&seen);
        assert_eq!(
            tasks.len(),
            (chunks * 2) as usize,
            "two extra copies of each chunk, each placed once: {tasks:?}"
        );
        let on_b = tasks
            .iter()
            .filter(|t| [peer_id(4), peer_id(5), peer_id(6)].contains(&t.1))
            .count();
        assert!(on_b > 0, "nodes on B got work too: {tasks:?}");
        // Both trackers see the file fully replicated.
        for t in [&a, &b] {
            let f = get(t, &format!("/api/v1/files/{}", file.id)).await;
            assert_eq!(f["id"], file.id.as_str(), "{f}");
        }

        // Node 6 goes away for good: its chunks are placed again, once.
        let held_by_6: usize = tasks.iter().filter(|t| t.1 == peer_id(6)).count();
        nodes.pop().unwrap().stop.cancel();
        let before = tasks.len();
        until(Duration::from_secs(20), || async {
            seen.lock().unwrap().len() >= before + held_by_6
        })
        .await;
        until(Duration::from_secs(20), || async {
            settled(&a).await && settled(&b).await
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = delivered_once(&seen);
        assert_eq!(
            after.len() - before,
            held_by_6,
            "the lost node's chunks were re-placed exactly once: {after:?}"
        );
        for n in &nodes {
            n.stop.cancel();
        }
        sharer.stop.cancel();
        b.stop().await;
        a.stop().await;
    })
    .await
}

/// A waiting get queued through A reaches the getter's node on the stream it keeps with B,
/// once the file is shared through A; completed on B, it is gone on A too.
#[tokio::test(flavor = "multi_thread")]
async fn should_deliver_a_get_queued_on_one_tracker_on_the_others_stream() {
    use crate::grpc::gets::{cancel, queue};
    use futures::StreamExt;
    within(async {
        let dir = TempDir::new().unwrap();
        let a = TestTracker::start(&dir).await;
        let b = TestTracker::start(&dir).await;
        let (mut ca, mut cb) = (a.grpc().await, b.grpc().await);
        let bob = register(&mut ca, "bob").await;
        let alice = register(&mut ca, "alice").await;
        let (getter, holder) = (peer_id(2), peer_id(1));
        heartbeat(&mut ca, &bob, &getter, "127.0.0.1:9002").await;
        let m = manifest("f.bin", 3, 9);
        let id = common::Manifest::try_from(m.clone())
            .unwrap()
            .id()
            .to_string();
        let task = queue(&mut ca, &bob, &getter, &id).await.unwrap();
        assert_eq!(get(&a, "/api/v1/stats").await["pending_tasks"], 1);

        until(Duration::from_secs(20), || whoami_ok(&b, &bob)).await;
        let req = pb::TasksRequest {
            peer_id: getter.clone(),
            node_key: node_key(),
        };
        let mut stream = cb.tasks(authed(req, &bob)).await.unwrap().into_inner();
        heartbeat(&mut ca, &alice, &holder, "127.0.0.1:9001").await;
        announce(&mut ca, &alice, &holder, m).await;
        let pushed = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("B pushes the get once the file is held")
            .unwrap()
            .unwrap();
        assert_eq!(pushed.id, task);
        assert!(
            matches!(&pushed.work, Some(pb::task::Work::Get(g)) if g.file_id == id),
            "{pushed:?}"
        );
        let done = pb::CompleteTaskRequest {
            peer_id: getter.clone(),
            task_id: task,
            ok: true,
            error: String::new(),
        };
        cb.complete_task(authed(done, &bob)).await.unwrap();
        // A learns that the task is gone (its only task: the holders offer no quota).
        until(Duration::from_secs(20), || async {
            get(&a, "/api/v1/stats").await["pending_tasks"] == 0
        })
        .await;
        assert!(!cancel(&mut ca, &bob, &getter, &id).await);
        b.stop().await;
        a.stop().await;
    })
    .await
}
