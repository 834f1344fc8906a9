//! Claims are verified before they count: hostile accounts speaking our gRPC (a fake node
//! serving `peer.v1.Peer`, a tracker client sending heartbeats, claims and task
//! completions) beside honest `peer` nodes and a real tracker. Fake replicas never count,
//! claims made without the data are dropped by audits, a holder that lies to getters but
//! not to the tracker is caught through getters' reports, a holder that loses a replica
//! after its audit is caught by re-audits, and a getter whose every source lies fails at
//! once with one clear line.

use std::pin::Pin;
use std::time::Duration;

use anyhow::{Context, bail};
use futures::Stream;
use proto::peer::v1 as peer_pb;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracker::testing::authed;

use crate::common::*;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// How a fake node answers `GetChunks`.
#[derive(Clone)]
enum Lie {
    /// Bytes that match no hash.
    Garbage,
    /// NOT_FOUND, whatever it claimed.
    NotHeld,
    /// The real chunks to the tracker's own audits (ticket user `@audit`), garbage to
    /// everyone else: it holds the data but serves it only when it thinks it is watched.
    OnlyToAuditor(std::sync::Arc<Vec<u8>>),
}

struct FakeNode {
    lie: Lie,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<peer_pb::Chunk, Status>> + Send>>;
type HoldingsStream = Pin<Box<dyn Stream<Item = Result<peer_pb::HoldingsUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl peer_pb::peer_server::Peer for FakeNode {
    type GetChunksStream = ChunkStream;
    type HoldingsStream = HoldingsStream;

    async fn get_chunks(
        &self,
        req: Request<peer_pb::GetChunksRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let r = req.into_inner();
        let user = r
            .ticket
            .as_ref()
            .map(|t| t.user.clone())
            .unwrap_or_default();
        let chunks: Vec<Result<peer_pb::Chunk, Status>> = match &self.lie {
            Lie::NotHeld => return Err(Status::not_found("this node holds nothing of that file")),
            Lie::Garbage => r
                .indices
                .iter()
                .map(|&i| {
                    Ok(peer_pb::Chunk {
                        index: i,
                        data: vec![0x5a; CHUNK].into(),
                    })
                })
                .collect(),
            Lie::OnlyToAuditor(data) => r
                .indices
                .iter()
                .map(|&i| {
                    let start = (i as usize * CHUNK).min(data.len());
                    let end = (start + CHUNK).min(data.len());
                    let bytes = if user == "@audit" {
                        data[start..end].to_vec()
                    } else {
                        vec![0xa5; end - start]
                    };
                    Ok(peer_pb::Chunk {
                        index: i,
                        data: bytes.into(),
                    })
                })
                .collect(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn holdings(
        &self,
        _req: Request<peer_pb::HoldingsRequest>,
    ) -> Result<Response<HoldingsStream>, Status> {
        Err(Status::unimplemented("no holdings stream"))
    }

    async fn query(
        &self,
        _request: Request<peer_pb::QueryRequest>,
    ) -> Result<Response<peer_pb::QueryReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn contacts(
        &self,
        _request: Request<peer_pb::ContactsRequest>,
    ) -> Result<Response<peer_pb::ContactsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn chunk_map(
        &self,
        _request: Request<peer_pb::ChunkMapRequest>,
    ) -> Result<Response<peer_pb::ChunkMapReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(
        &self,
        _req: Request<peer_pb::StatusRequest>,
    ) -> Result<Response<peer_pb::StatusResponse>, Status> {
        Err(Status::unimplemented("no status"))
    }
}

/// A hostile account with a fake node that heartbeats like a real one.
struct Liar {
    /// When its first fake task completion was accepted.
    first_fake: std::sync::Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    token: String,
    peer_id: String,
    client: TrackerClient<Channel>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Liar {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Liar {
    async fn start(tracker: &TestTracker, name: &str, lie: Lie) -> anyhow::Result<Self> {
        let mut client = TrackerClient::connect(tracker.url()).await?;
        let session = client
            .register(pb::Credentials {
                user: name.into(),
                password: PASSWORD.into(),
            })
            .await?
            .into_inner();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(peer_pb::peer_server::PeerServer::new(FakeNode { lie }))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        let peer_id = format!("{:032x}", rand::random::<u128>());
        let (mut c, token, id) = (client.clone(), session.token.clone(), peer_id.clone());
        let heartbeat = tokio::spawn(async move {
            loop {
                let req = pb::HeartbeatRequest {
                    peer_id: id.clone(),
                    addr: addr.clone(),
                    storage_quota: 1 << 40,
                    storage_used: 0,
                };
                let _ = c.heartbeat(authed(req, &token)).await;
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        let liar = Self {
            first_fake: Default::default(),
            token: session.token,
            peer_id,
            client,
            tasks: vec![server, heartbeat],
        };
        // The first heartbeat creates the peer.
        liar.wait_known(tracker).await?;
        Ok(liar)
    }

    async fn wait_known(&self, tracker: &TestTracker) -> anyhow::Result<()> {
        for _ in 0..200 {
            let peers = tracker.get_json("/api/v1/peers").await?;
            let listed = peers["items"]
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["id"] == self.peer_id.as_str()));
            if listed {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the liar's heartbeat never registered its peer")
    }

    /// Completes every replication task pushed to it as done, fetching nothing.
    async fn fake_replicas(&mut self) -> anyhow::Result<()> {
        let mut c = self.client.clone();
        let req = pb::TasksRequest {
            peer_id: self.peer_id.clone(),
            node_key: raw_key().public_key().to_vec().into(),
        };
        let mut stream = c.tasks(authed(req, &self.token)).await?.into_inner();
        let (token, me) = (self.token.clone(), self.peer_id.clone());
        let first = self.first_fake.clone();
        self.tasks.push(tokio::spawn(async move {
            while let Ok(Some(task)) = stream.message().await {
                let done = pb::CompleteTaskRequest {
                    peer_id: me.clone(),
                    task_id: task.id,
                    ok: true,
                    error: String::new(),
                };
                if c.complete_task(authed(done, &token)).await.is_ok() {
                    let mut f = first.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert_with(std::time::Instant::now);
                }
            }
        }));
        Ok(())
    }

    /// The manifest of a file, as any user may read it with Locate.
    async fn manifest(&mut self, id: &str) -> anyhow::Result<pb::Manifest> {
        let req = pb::LocateRequest {
            file_id: id.into(),
            have_manifest: false,
            requester_key: raw_key().public_key().to_vec().into(),
        };
        self.client
            .locate(authed(req, &self.token))
            .await?
            .into_inner()
            .manifest
            .context("locate carries the manifest")
    }

    async fn announce(&mut self, manifest: pb::Manifest) -> anyhow::Result<()> {
        let req = pb::AnnounceRequest {
            listing: Default::default(),
            peer_id: self.peer_id.clone(),
            manifest: Some(manifest),
        };
        self.client.announce(authed(req, &self.token)).await?;
        Ok(())
    }

    async fn report_all(&mut self, id: &str, chunks: u32) -> anyhow::Result<()> {
        let req = pb::ReportChunksRequest {
            peer_id: self.peer_id.clone(),
            file_id: id.into(),
            kind: pb::HoldingKind::Shared as i32,
            chunks: (0..chunks).collect(),
        };
        self.client.report_chunks(authed(req, &self.token)).await?;
        Ok(())
    }

    async fn sync_all(&mut self, id: &str) -> anyhow::Result<()> {
        let req = pb::SyncHoldingsRequest {
            peer_id: self.peer_id.clone(),
            holdings: vec![pb::Holding {
                file_id: id.into(),
                kind: pb::HoldingKind::Shared as i32,
                have: Default::default(),
            }],
        };
        self.client.sync_holdings(authed(req, &self.token)).await?;
        Ok(())
    }

    /// Whether the tracker hands this peer out for `id` (asked as `getter`).
    async fn is_handed_out(&self, tracker: &TestTracker, id: &str) -> anyhow::Result<bool> {
        let mut c = TrackerClient::connect(tracker.url()).await?;
        let req = pb::LocateRequest {
            file_id: id.into(),
            have_manifest: true,
            requester_key: raw_key().public_key().to_vec().into(),
        };
        match c.locate(authed(req, &self.token)).await {
            Ok(r) => Ok(r
                .into_inner()
                .holders
                .iter()
                .any(|h| h.peer_id == self.peer_id)),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(s.into()),
        }
    }
}

fn auditing(cfg: &mut tracker::Config) {
    cfg.replication = 3;
    cfg.repair_grace = Duration::from_secs(1);
    cfg.task_lease = Duration::from_secs(10);
    cfg.audit_interval = Duration::from_millis(200);
    cfg.audit_timeout = Duration::from_secs(10);
}

/// Indexes a random file of `size` bytes from `p`: (dir, path, id, sha).
async fn share(
    p: &TestPeer,
    name: &str,
    size: usize,
) -> anyhow::Result<(
    tempfile::TempDir,
    std::path::PathBuf,
    String,
    ::common::Sha256Digest,
)> {
    let dir = tempfile::tempdir()?;
    let (path, sha) = random_file(dir.path(), name, size)?;
    let files = p.index(&path).await?;
    let id = files[0]["id"].as_str().context("id")?.to_string();
    Ok((dir, path, id, sha))
}

/// Verified copies per chunk (the chunk map's `copies`).
async fn copies(tracker: &TestTracker, id: &str) -> anyhow::Result<Vec<u64>> {
    let file = tracker.get_json(&format!("/api/v1/files/{id}")).await?;
    let map = file["chunk_map"].as_array().context("chunk_map")?;
    Ok(map
        .iter()
        .map(|c| c["copies"].as_u64().unwrap_or(0))
        .collect())
}

/// The count of audits with `outcome` in `/metrics`.
async fn audits(tracker: &TestTracker, outcome: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{}/metrics", tracker.url()))
        .await?
        .text()
        .await?;
    let key = format!("tessera_audits_total{{outcome=\"{outcome}\"}} ");
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64))
}

async fn wait_for<F, Fut>(what: &str, mut cond: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !cond().await? {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_not_count_fake_replicas_and_replicate_on_honest_nodes() -> anyhow::Result<()> {
    bounded(async { fake_replicas(TestTracker::start_with(auditing).await?).await }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_not_count_fake_replicas_on_postgres() -> anyhow::Result<()> {
    bounded(async {
        let Some((tracker, pg)) = TestTracker::start_on_postgres(auditing).await? else {
            return Ok(());
        };
        let res = fake_replicas(tracker).await;
        pg.drop_db().await;
        res
    })
    .await
}

/// Fake storage nodes complete replica tasks without fetching: none of it counts, and
/// honest nodes get the copies.
async fn fake_replicas(tracker: TestTracker) -> anyhow::Result<()> {
    {
        let mut sharer = TestPeer::register(&tracker, "sharer").await?;
        sharer.serve(&["--storage-quota", "0"]).await?;
        let (_dir, _path, id, sha) = share(&sharer, "precious.bin", 4 * CHUNK + 99).await?;

        // Three fake storage nodes take every replica task and complete it untouched.
        let mut liars = Vec::new();
        for (i, lie) in [Lie::NotHeld, Lie::Garbage, Lie::NotHeld]
            .into_iter()
            .enumerate()
        {
            let mut l = Liar::start(&tracker, &format!("mallory{i}"), lie).await?;
            l.fake_replicas().await?;
            liars.push(l);
        }
        // Their completions are audited and fail; meanwhile no fake copy ever counts.
        wait_for("failed audits of the fake replicas", || async {
            let c = copies(&tracker, &id).await?;
            // The sharer's own claim counts once its audit passed: 0 before, 1 after.
            assert!(c.iter().all(|&k| k <= 1), "a fake copy counted: {c:?}");
            let file = tracker.get_json(&format!("/api/v1/files/{id}")).await?;
            assert!(file["min_copies"].as_u64() <= Some(1), "{file}");
            Ok(
                audits(&tracker, "not_held").await? >= 2
                    && audits(&tracker, "bad_data").await? >= 1,
            )
        })
        .await?;
        let caught = std::time::Instant::now();
        for (i, l) in liars.iter().enumerate() {
            let first = *l.first_fake.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = first {
                eprintln!(
                    "fake replica of mallory{i} caught within {:?} of its completion",
                    caught.duration_since(t)
                );
            }
        }
        let stats = tracker.get_json("/api/v1/stats").await?;
        assert_eq!(stats["under_replicated_chunks"], 5, "{stats}");

        // Honest storage nodes arrive: the file reaches three verified copies on them.
        let mut hosts = Vec::new();
        for i in 0..2 {
            let mut h = TestPeer::register(&tracker, &format!("host{i}")).await?;
            h.serve(&[]).await?;
            hosts.push(h);
        }
        wait_for("three verified copies", || async {
            Ok(copies(&tracker, &id).await?.iter().all(|&k| k >= 3))
        })
        .await?;
        // A liar's fresh fake completion is handed out until its audit (a getter would
        // check and report it); once the copies are placed, no liar is left listed.
        for l in &liars {
            wait_for("no liar handed out", || async {
                Ok(!l.is_handed_out(&tracker, &id).await?)
            })
            .await?;
        }
        // The one that served garbage is demoted at once (the others after three strikes),
        // and the peers list shows it.
        let peers = tracker.get_json("/api/v1/peers").await?;
        let garbage = peers["items"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["id"] == liars[1].peer_id.as_str()));
        assert!(
            garbage.is_some_and(|p| p["demoted_until"].is_string()),
            "the liar that served garbage is shown demoted: {peers}"
        );
        // The sharer leaves; the file comes back whole from the honest replicas.
        sharer.kill_node().await?;
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        getter.get(&id, out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("precious.bin"))?, sha);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_claims_made_without_the_data_by_every_rpc() -> anyhow::Result<()> {
    bounded(async { poisoned_claims(TestTracker::start_with(auditing).await?).await }).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_claims_made_without_the_data_on_postgres() -> anyhow::Result<()> {
    bounded(async {
        let Some((tracker, pg)) = TestTracker::start_on_postgres(auditing).await? else {
            return Ok(());
        };
        let res = poisoned_claims(tracker).await;
        pg.drop_db().await;
        res
    })
    .await
}

/// Liars claim alice's file by announce, chunk report and holdings sync without its data:
/// audits drop every claim, and nothing keeps the file listed once alice unindexes.
async fn poisoned_claims(tracker: TestTracker) -> anyhow::Result<()> {
    {
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&["--storage-quota", "0"]).await?;
        let (_dir, _path, id, _) = share(&alice, "alice.bin", 3 * CHUNK).await?;

        let mut by_announce = Liar::start(&tracker, "mallory-a", Lie::Garbage).await?;
        let mut by_report = Liar::start(&tracker, "mallory-r", Lie::NotHeld).await?;
        let mut by_sync = Liar::start(&tracker, "mallory-s", Lie::Garbage).await?;
        let manifest = by_announce.manifest(&id).await?;
        by_announce.announce(manifest).await?;
        by_report.report_all(&id, 3).await?;
        by_sync.sync_all(&id).await?;
        // Every claim is audited and dropped: none of them is handed out any more.
        for l in [&by_announce, &by_report, &by_sync] {
            wait_for("the claim to be dropped", || async {
                Ok(!l.is_handed_out(&tracker, &id).await?)
            })
            .await?;
        }
        wait_for("alice's copy alone to count", || async {
            let c = copies(&tracker, &id).await?;
            assert!(
                c.iter().all(|&k| k <= 1),
                "a claim without data counted: {c:?}"
            );
            Ok(c == [1, 1, 1])
        })
        .await?;

        // Once alice unindexes, nothing keeps her file listed.
        alice.run(&["unindex", &id]).await?.ok()?;
        let found = alice.run(&["search", "alice.bin", "--json"]).await?.ok()?;
        assert!(
            !found.stdout.contains(&id),
            "unindexed file still listed: {}",
            found.stdout
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_fast_when_the_only_source_lies_to_getters() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start_with(auditing).await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&["--storage-quota", "0"]).await?;
        let (_dir, path, id, _) = share(&alice, "alice.bin", 3 * CHUNK + 5).await?;
        // A liar that holds the bytes serves them to the tracker's audits only.
        let data = std::sync::Arc::new(std::fs::read(&path)?);
        let mut liar = Liar::start(&tracker, "mallory", Lie::OnlyToAuditor(data)).await?;
        let manifest = liar.manifest(&id).await?;
        liar.announce(manifest).await?;
        wait_for("the liar's claim to pass its audit", || async {
            Ok(copies(&tracker, &id).await?.iter().all(|&k| k == 2))
        })
        .await?;
        alice.kill_node().await?;
        wait_for("alice to be down", || async {
            Ok(copies(&tracker, &id).await?.iter().all(|&k| k == 1))
        })
        .await?;

        // The getter's only source sends bad bytes: it reports it and fails at once, with
        // one line, long before its give-up time.
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let o = out.path().to_str().context("utf-8")?;
        let res = getter
            .run(&["get", &id, "--output", o, "--give-up-after", "10m"])
            .await?;
        assert!(!res.status.success(), "the get succeeded from a liar");
        let errors: Vec<&str> = res
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {}", res.stderr);
        assert!(errors[0].contains("sent bad data"), "{}", errors[0]);
        assert!(!out.path().join("alice.bin").exists());
        // The report made the tracker audit in the getter's name: the liar failed and is
        // no longer handed out.
        wait_for("the liar to be demoted", || async {
            Ok(!liar.is_handed_out(&tracker, &id).await?)
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_catch_a_holder_that_drops_a_replica_after_its_audit() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start_with(|cfg| {
            auditing(cfg);
            cfg.replication = 2;
        })
        .await?;
        let mut sharer = TestPeer::register(&tracker, "sharer").await?;
        sharer.serve(&["--storage-quota", "0"]).await?;
        let mut host = TestPeer::register(&tracker, "host").await?;
        host.serve(&[]).await?;
        let (_dir, _path, id, _) = share(&sharer, "kept.bin", 2 * CHUNK).await?;
        wait_for("two verified copies", || async {
            Ok(copies(&tracker, &id).await?.iter().all(|&k| k >= 2))
        })
        .await?;
        // The host silently loses its replicas.
        std::fs::remove_dir_all(host.home.path().join("replicas"))?;
        let lost = std::time::Instant::now();
        // A re-audit finds out and drops the host's holding.
        wait_for("the lost replica to be caught", || async {
            Ok(audits(&tracker, "not_held").await? >= 1)
        })
        .await?;
        eprintln!(
            "a lost replica was caught {:?} after it was lost (re-audit every 200 ms, 3 holdings)",
            lost.elapsed()
        );
        // A new host restores the count.
        let mut other = TestPeer::register(&tracker, "other").await?;
        other.serve(&[]).await?;
        wait_for("two verified copies again", || async {
            Ok(copies(&tracker, &id).await?.iter().all(|&k| k >= 2))
        })
        .await?;
        Ok(())
    })
    .await
}
