//! Replication over gRPC with fake nodes: tokio tasks that heartbeat with a storage quota,
//! open their `Tasks` stream and answer with `CompleteTask` (no chunk is really copied: the
//! tracker only sees the reports).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use tracker::Config;

use crate::common::{TestTracker, announce, authed, manifest, node_key, peer_id, register, within};

const GIB: u64 = 1 << 30;

/// A fake node: one peer id of the test user, with its own key.
#[derive(Clone)]
struct Node {
    n: u8,
    id: String,
    key: common::NodeKey,
    token: String,
    client: TrackerClient<Channel>,
}

impl Node {
    fn new(client: &TrackerClient<Channel>, token: &str, n: u8) -> Node {
        Node {
            n,
            id: peer_id(n),
            key: common::NodeKey::generate(),
            token: token.to_string(),
            client: client.clone(),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", 9000 + u16::from(self.n))
    }

    async fn heartbeat(&mut self, quota: u64) {
        let req = pb::HeartbeatRequest {
            peer_id: self.id.clone(),
            addr: self.addr(),
            storage_quota: quota,
            storage_used: 0,
        };
        self.client
            .heartbeat(authed(req, &self.token))
            .await
            .unwrap();
    }

    /// Heartbeats every 100 ms until `stop` is cancelled.
    fn keep_alive(&self, quota: u64, stop: CancellationToken) {
        let mut me = self.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                me.heartbeat(quota).await;
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        });
    }

    async fn tasks(&mut self) -> Streaming<pb::Task> {
        let req = pb::TasksRequest {
            peer_id: self.id.clone(),
            node_key: self.key.public_key().to_vec().into(),
        };
        self.client
            .tasks(authed(req, &self.token))
            .await
            .unwrap()
            .into_inner()
    }

    async fn complete(&mut self, task: u64, ok: bool) -> Result<(), tonic::Status> {
        let req = pb::CompleteTaskRequest {
            peer_id: self.id.clone(),
            task_id: task,
            ok,
            error: if ok {
                String::new()
            } else {
                "disk full".into()
            },
        };
        self.client
            .complete_task(authed(req, &self.token))
            .await
            .map(|_| ())
    }
}

/// The next `n` tasks on a stream.
async fn take(stream: &mut Streaming<pb::Task>, n: usize) -> Vec<pb::Task> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(stream.message().await.unwrap().expect("stream ended"));
    }
    out
}

/// Asserts that nothing more arrives on a stream for a while.
async fn quiet(stream: &mut Streaming<pb::Task>) {
    let next = tokio::time::timeout(Duration::from_millis(400), stream.message()).await;
    assert!(next.is_err(), "unexpected task: {next:?}");
}

fn fetch(t: &pb::Task) -> &pb::FetchReplica {
    match &t.work {
        Some(pb::task::Work::Fetch(f)) => f,
        other => panic!("expected a fetch, got {other:?}"),
    }
}

fn drop_of(t: &pb::Task) -> &pb::DropReplica {
    match &t.work {
        Some(pb::task::Work::Drop(d)) => d,
        other => panic!("expected a drop, got {other:?}"),
    }
}

async fn get(t: &TestTracker, path: &str) -> Value {
    reqwest::get(t.url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Polls the stats until `ok` holds for them.
async fn wait_stats(t: &TestTracker, ok: impl Fn(&Value) -> bool) -> Value {
    loop {
        let s = get(t, "/api/v1/stats").await;
        if ok(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A tracker, a user, a sharer node (no quota) and `n` storage nodes, all up.
async fn cluster(cfg: Config, n: u8) -> (TestTracker, Node, Vec<Node>) {
    let t = TestTracker::start_with(cfg).await;
    let mut c = t.grpc().await;
    let token = register(&mut c, "alice").await;
    let mut sharer = Node::new(&c, &token, 1);
    sharer.heartbeat(0).await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut node = Node::new(&c, &token, 2 + i);
        node.heartbeat(GIB).await;
        nodes.push(node);
    }
    (t, sharer, nodes)
}

async fn share(sharer: &mut Node, name: &str, chunks: u32, seed: u8) -> pb::FileInfo {
    let id = sharer.id.clone();
    let token = sharer.token.clone();
    announce(
        &mut sharer.client,
        &token,
        &id,
        manifest(name, chunks, seed),
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_place_missing_copies_on_distinct_peers_and_settle() {
    within(async {
        let dir = TempDir::new().unwrap();
        let (t, mut sharer, mut nodes) = cluster(Config::ephemeral(dir.path()), 4).await;
        let mut streams = Vec::new();
        for n in &mut nodes {
            streams.push(n.tasks().await);
        }
        let f = share(&mut sharer, "movie.mkv", 4, 1).await;

        // N = 3: the sharer's copy plus two more of each chunk, spread evenly.
        let mut placed: HashMap<u32, HashSet<String>> = HashMap::new();
        let mut all = Vec::new();
        for (node, stream) in nodes.iter().zip(&mut streams) {
            for task in take(stream, 2).await {
                let fr = fetch(&task);
                assert_eq!(fr.file_id, f.id);
                assert_eq!(fr.chunk_len, 1 << 20);
                assert_eq!(fr.chunk_sha256.len(), 32);
                assert_eq!((fr.name.as_str(), fr.file_size), ("movie.mkv", 4 << 20));
                assert_eq!(fr.sources.len(), 1);
                assert_eq!(fr.sources[0].peer_id, sharer.id);
                assert_eq!(fr.sources[0].addr, sharer.addr());
                let ticket = fr.ticket.as_ref().expect("a fetch carries a ticket");
                assert_eq!(
                    (
                        ticket.file_id.as_str(),
                        ticket.peer_id.as_str(),
                        ticket.user.as_str()
                    ),
                    (f.id.as_str(), node.id.as_str(), "alice"),
                    "the ticket is the target node's"
                );
                assert_eq!(
                    ticket.key.as_ref(),
                    node.key.public_key(),
                    "the ticket names the key the node's stream was opened with"
                );
                assert!(
                    placed.entry(fr.chunk).or_default().insert(node.id.clone()),
                    "two copies of chunk {} on one peer",
                    fr.chunk
                );
                all.push((node.clone(), task.id));
            }
        }
        for stream in &mut streams {
            quiet(stream).await;
        }
        assert_eq!(placed.len(), 4);
        assert!(placed.values().all(|peers| peers.len() == 2));
        let s = get(&t, "/api/v1/stats").await;
        assert_eq!(
            (
                &s["pending_tasks"],
                &s["delivered_tasks"],
                &s["under_replicated_chunks"]
            ),
            (&Value::from(8), &Value::from(8), &Value::from(4))
        );

        // Someone else's peer may not read this node's tasks.
        let mut c = t.grpc().await;
        let bob = register(&mut c, "bob").await;
        let err = c
            .tasks(authed(
                pb::TasksRequest {
                    peer_id: nodes[0].id.clone(),
                    node_key: node_key(),
                },
                &bob,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        // A stream without the node's key is refused: its tickets would name none.
        for bad in [Vec::new(), vec![7; 31]] {
            let err = c
                .tasks(authed(
                    pb::TasksRequest {
                        peer_id: nodes[0].id.clone(),
                        node_key: bad.into(),
                    },
                    &nodes[0].token,
                ))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument);
            assert!(err.message().starts_with("node_key: "), "{}", err.message());
        }

        for (mut node, id) in all.clone() {
            node.complete(id, true).await.unwrap();
        }
        wait_stats(&t, |s| {
            s["under_replicated_chunks"] == 0 && s["pending_tasks"] == 0
        })
        .await;
        let (mut node, id) = all[0].clone();
        assert_eq!(
            node.complete(id, true).await.unwrap_err().code(),
            Code::NotFound
        );

        let detail = get(&t, &format!("/api/v1/files/{}", f.id)).await;
        for chunk in detail["chunk_map"].as_array().unwrap() {
            assert_eq!(chunk["copies"], 3);
            let kinds: Vec<&str> = chunk["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["kind"].as_str().unwrap())
                .collect();
            assert_eq!(kinds.iter().filter(|k| **k == "replica").count(), 2);
            assert_eq!(kinds.iter().filter(|k| **k == "shared").count(), 1);
        }
        let peers = get(&t, "/api/v1/peers").await;
        let node0 = peers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == nodes[0].id.as_str())
            .unwrap();
        assert_eq!(node0["storage_quota"], GIB);
        for stream in &mut streams {
            quiet(stream).await;
        }
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_tasks_for_a_node_until_it_opens_its_stream() {
    within(async {
        let dir = TempDir::new().unwrap();
        let (t, mut sharer, mut nodes) = cluster(Config::ephemeral(dir.path()), 4).await;
        let mut streams = Vec::new();
        for n in &mut nodes[..3] {
            streams.push(n.tasks().await);
        }
        share(&mut sharer, "a.bin", 4, 2).await;
        for stream in &mut streams {
            take(stream, 2).await;
        }
        let s = wait_stats(&t, |s| s["delivered_tasks"] == 6).await;
        assert_eq!(
            s["pending_tasks"], 8,
            "two still queued for the offline node"
        );
        let late = take(&mut nodes[3].tasks().await, 2).await;
        assert!(
            late.iter()
                .all(|task| fetch(task).sources[0].peer_id == sharer.id)
        );
        wait_stats(&t, |s| s["delivered_tasks"] == 8).await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_retry_a_failed_task_after_a_back_off() {
    within(async {
        let dir = TempDir::new().unwrap();
        let cfg = Config {
            replication: 2,
            ..Config::ephemeral(dir.path())
        };
        let (t, mut sharer, mut nodes) = cluster(cfg, 1).await;
        let mut stream = nodes[0].tasks().await;
        share(&mut sharer, "b.bin", 1, 3).await;
        let first = take(&mut stream, 1).await.remove(0);
        nodes[0].complete(first.id, false).await.unwrap();
        let started = tokio::time::Instant::now();
        let again = take(&mut stream, 1).await.remove(0);
        assert_eq!(again.id, first.id, "the same task comes back");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "after a back-off"
        );
        assert_eq!(fetch(&again).chunk, 0);
        nodes[0].complete(again.id, true).await.unwrap();
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_push_queued_tasks_after_a_restart() {
    within(async {
        let dir = TempDir::new().unwrap();
        let (t, mut sharer, _nodes) = cluster(Config::ephemeral(dir.path()), 2).await;
        let f = share(&mut sharer, "c.bin", 2, 4).await;
        // Two nodes, two chunks, each short of two copies: four queued fetches.
        wait_stats(&t, |s| s["pending_tasks"] == 4).await;
        t.stop().await;

        let t = TestTracker::start_with(Config::ephemeral(dir.path())).await;
        let c = t.grpc().await;
        let token = sharer.token.clone();
        let mut chunks = HashSet::new();
        for n in 2..4 {
            let mut node = Node::new(&c, &token, n);
            let mut stream = node.tasks().await;
            for task in take(&mut stream, 2).await {
                assert_eq!(fetch(&task).file_id, f.id);
                chunks.insert((n, fetch(&task).chunk));
                node.complete(task.id, true).await.unwrap();
            }
            quiet(&mut stream).await;
        }
        assert_eq!(chunks.len(), 4);
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_replicas_when_the_sharer_unindexes() {
    within(async {
        let dir = TempDir::new().unwrap();
        let (t, mut sharer, mut nodes) = cluster(Config::ephemeral(dir.path()), 2).await;
        let mut streams = Vec::new();
        for n in &mut nodes {
            streams.push(n.tasks().await);
        }
        let f = share(&mut sharer, "d.bin", 2, 5).await;
        for (node, stream) in nodes.iter_mut().zip(&mut streams) {
            for task in take(stream, 2).await {
                node.complete(task.id, true).await.unwrap();
            }
        }
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;

        let req = pb::UnindexRequest {
            peer_id: sharer.id.clone(),
            file_id: f.id.clone(),
        };
        sharer
            .client
            .unindex(authed(req, &sharer.token))
            .await
            .unwrap();
        let gone = sharer
            .client
            .locate(authed(
                pb::LocateRequest {
                    file_id: f.id.clone(),
                    requester_key: node_key(),
                    ..Default::default()
                },
                &sharer.token,
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        for (node, stream) in nodes.iter_mut().zip(&mut streams) {
            let task = take(stream, 1).await.remove(0);
            let d = drop_of(&task);
            assert_eq!(d.file_id, f.id);
            assert_eq!(d.chunks, vec![0, 1]);
            node.complete(task.id, true).await.unwrap();
        }
        let s = wait_stats(&t, |s| s["pending_tasks"] == 0).await;
        assert_eq!(s["files"], 0);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_repair_when_a_holder_is_gone_past_the_grace() {
    within(async {
        let dir = TempDir::new().unwrap();
        let cfg = Config {
            replication: 2,
            peer_timeout: Duration::from_millis(300),
            repair_grace: Duration::from_millis(200),
            ..Config::ephemeral(dir.path())
        };
        let (t, mut sharer, mut nodes) = cluster(cfg, 3).await;
        let stop_all = CancellationToken::new();
        sharer.keep_alive(0, stop_all.clone());
        let mut stops = Vec::new();
        let mut streams = Vec::new();
        for n in &mut nodes {
            let stop = stop_all.child_token();
            n.keep_alive(GIB, stop.clone());
            stops.push(stop);
            streams.push(n.tasks().await);
        }
        let f = share(&mut sharer, "e.bin", 1, 6).await;
        // One more copy: exactly one node gets it.
        let mut holder = None;
        for (i, stream) in streams.iter_mut().enumerate() {
            if let Ok(Some(task)) =
                tokio::time::timeout(Duration::from_millis(500), stream.message())
                    .await
                    .map(Result::unwrap)
            {
                assert!(holder.is_none(), "one copy is enough");
                nodes[i].complete(task.id, true).await.unwrap();
                holder = Some(i);
            }
        }
        let holder = holder.expect("a copy was placed");
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;

        // The holder dies; once it is gone past timeout + grace, another node is asked.
        stops[holder].cancel();
        let died = tokio::time::Instant::now();
        let others: Vec<usize> = (0..3).filter(|&i| i != holder).collect();
        let mut repaired = None;
        while repaired.is_none() {
            for &i in &others {
                if let Ok(msg) =
                    tokio::time::timeout(Duration::from_millis(100), streams[i].message()).await
                {
                    let task = msg.unwrap().expect("stream ended");
                    assert_eq!(fetch(&task).sources[0].peer_id, sharer.id);
                    repaired = Some((i, task));
                    break;
                }
            }
        }
        assert!(
            died.elapsed() >= Duration::from_millis(350),
            "not before timeout + grace"
        );
        let (i, task) = repaired.unwrap();
        nodes[i].complete(task.id, true).await.unwrap();
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;

        // The lost holder comes back: three up copies, one replica too many is dropped (never
        // the sharer's own copy).
        nodes[holder].keep_alive(GIB, stop_all.child_token());
        let mut dropped = None;
        while dropped.is_none() {
            for j in [holder, i] {
                if let Ok(msg) =
                    tokio::time::timeout(Duration::from_millis(100), streams[j].message()).await
                {
                    let task = msg.unwrap().expect("stream ended");
                    assert_eq!(drop_of(&task).chunks, vec![0]);
                    dropped = Some((j, task.id));
                    break;
                }
            }
        }
        let (j, id) = dropped.unwrap();
        nodes[j].complete(id, true).await.unwrap();
        wait_stats(&t, |s| {
            s["pending_tasks"] == 0 && s["under_replicated_chunks"] == 0
        })
        .await;
        for k in [holder, i] {
            quiet(&mut streams[k]).await;
        }
        let detail = get(&t, &format!("/api/v1/files/{}", f.id)).await;
        assert_eq!(detail["chunk_map"][0]["copies"], 2);
        stop_all.cancel();
        t.stop().await;
    })
    .await
}
