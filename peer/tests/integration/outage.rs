//! Tracker outages, seen from real `peer` processes: a command waits out an outage (one
//! line on stderr) or fails with the tracker's own words once it lasts past
//! `--tracker-wait`, and afterwards what the peer says and what the tracker lists agree.
//! A node converges its holdings with the tracker both ways within `--sync-every`, and a
//! getter told of a holder that refuses the chunks as not held moves on at once.
//!
//! A database outage is a stand-in on the tracker's own address ([`DbDown`]) that answers
//! every call UNAVAILABLE with the tracker's message for it; a restart is the real tracker
//! stopped (its port refuses connections) and started again on the same database. The
//! real thing, PostgreSQL refusing connections while peers get and index, is `outage_db`.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use anyhow::{Context, bail};
use peer::home::Home;
use peer::node::{Node, NodeConfig};
use peer::server::{ChunkReader, ChunkSource, Holding, Refused};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(crate) const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;
/// What the tracker answers, with UNAVAILABLE, while its database is down.
pub(crate) const DB_DOWN: &str = "the tracker's database is unavailable; try again";
pub(crate) const WAITING: &str = "waiting for the tracker";
/// The `--sync-every` of the nodes in the convergence test.
const SYNC_EVERY: Duration = Duration::from_secs(2);

/// A tracker whose database is down, as its peers see it: every gRPC call on its address
/// answers UNAVAILABLE with [`DB_DOWN`].
struct DbDown {
    stop: CancellationToken,
    served: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl DbDown {
    /// Serves on `addr`, the stopped tracker's address.
    async fn start(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let message = DB_DOWN.replace(' ', "%20").replace('\'', "%27");
        let app = axum::Router::new().fallback(move || {
            let r = axum::http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "14")
                .header("grpc-message", message.as_str())
                .body(axum::body::Body::empty());
            std::future::ready(r.expect("a valid response"))
        });
        let stop = CancellationToken::new();
        let token = stop.clone();
        let served = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        });
        Ok(Self { stop, served })
    }

    /// Stops serving and closes its connections, so clients reconnect to what comes next.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.served)
            .await
            .context("the stand-in did not stop")???;
        Ok(())
    }
}

/// A `peer` command running, its stderr read line by line as it comes.
pub(crate) struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Vec<String>,
}

/// What a finished command printed.
pub(crate) struct Done {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: Vec<String>,
}

impl Done {
    /// The stderr lines that contain `text`.
    pub(crate) fn lines_with(&self, text: &str) -> Vec<&String> {
        self.stderr.iter().filter(|l| l.contains(text)).collect()
    }
}

impl Running {
    pub(crate) fn start(peer: &TestPeer, wait: &str, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = peer.spawn_with(&[("PEER_TRACKER_WAIT", wait)], args)?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut r = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = r.next_line().await {
                let _ = tx.send(l);
            }
        });
        Ok(Self {
            child,
            lines,
            stderr: Vec::new(),
        })
    }

    /// Waits until the command says it is waiting for the tracker.
    pub(crate) async fn until_waiting(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !self.stderr.iter().any(|l| l.contains(WAITING)) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(l)) => self.stderr.push(l),
                Ok(None) => bail!("the command ended without waiting: {:?}", self.stderr),
                Err(_) => bail!("the command did not say it waits: {:?}", self.stderr),
            }
        }
        Ok(())
    }

    pub(crate) async fn finish(mut self) -> anyhow::Result<Done> {
        let out = tokio::time::timeout(Duration::from_secs(120), self.child.wait_with_output())
            .await
            .context("the command did not finish")??;
        while let Some(l) = self.lines.recv().await {
            self.stderr.push(l);
        }
        Ok(Done {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: self.stderr,
        })
    }
}

/// Runs `peer ARGS` to the end with `--tracker-wait` `wait`.
async fn run_waiting(peer: &TestPeer, wait: &str, args: &[&str]) -> anyhow::Result<Done> {
    Running::start(peer, wait, args)?.finish().await
}

/// The ids `peer --json ARGS` lists.
async fn ids(peer: &TestPeer, args: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let v = peer.run(&all).await?.ok()?.json()?;
    let mut ids: Vec<String> = v
        .as_array()
        .context("a JSON array")?
        .iter()
        .filter_map(|f| f["id"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Whether the tracker lists `peer` as holding (some of) file `id`.
pub(crate) async fn lists(tracker: &TestTracker, id: &str, peer: &str) -> anyhow::Result<bool> {
    holder_state(tracker, id, peer).await.map(|s| s.is_some())
}

/// Whether the tracker lists `peer` as holding (some of) file `id`, and up.
pub(crate) async fn lists_up(tracker: &TestTracker, id: &str, peer: &str) -> anyhow::Result<bool> {
    Ok(holder_state(tracker, id, peer).await?.as_deref() == Some("up"))
}

/// The state ("up", "down") of `peer` as a holder of file `id`, if the tracker lists it.
async fn holder_state(
    tracker: &TestTracker,
    id: &str,
    peer: &str,
) -> anyhow::Result<Option<String>> {
    let Ok(file) = tracker.get_json(&format!("/api/v1/files/{id}")).await else {
        return Ok(None);
    };
    let map = file["chunk_map"].as_array().context("chunk_map")?;
    Ok(map
        .iter()
        .filter_map(|c| c["peers"].as_array())
        .flatten()
        .find(|p| p["id"] == peer)
        .and_then(|p| p["state"].as_str().map(str::to_string)))
}

/// Polls `cond` every 50 ms until it holds; returns how long that took. Fails after `limit`.
pub(crate) async fn time_until<F, Fut>(
    limit: Duration,
    what: &str,
    mut cond: F,
) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while !cond().await? {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(start.elapsed())
}

pub(crate) fn id_of(indexed: &[serde_json::Value]) -> anyhow::Result<String> {
    Ok(indexed
        .first()
        .and_then(|f| f["id"].as_str())
        .context("an indexed file's id")?
        .to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_wait_out_a_tracker_outage_and_agree_with_it_afterwards() -> anyhow::Result<()> {
    bounded(async {
        let mut tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&["--storage-quota", "0"]).await?;
        let src = tempfile::tempdir()?;
        let file = |name| random_file(src.path(), name, 2 * CHUNK).map(|(p, _)| p);
        let (kept, unindexed, failed, dropped) = (
            file("kept.bin")?,
            file("f1.bin")?,
            file("f2.bin")?,
            file("f3.bin")?,
        );
        let kept = id_of(&alice.index(&kept).await?)?;
        let dropped = id_of(&alice.index(&dropped).await?)?;

        // The database goes down while an index and a search run: both wait, say so once,
        // and finish once it is back.
        tracker.stop().await?;
        let down = DbDown::start(tracker.addr).await?;
        let f1 = unindexed.to_str().context("utf-8")?;
        let mut index = Running::start(&alice, "60s", &["--json", "index", f1])?;
        let mut search = Running::start(&alice, "60s", &["--json", "search"])?;
        index.until_waiting().await?;
        search.until_waiting().await?;
        down.stop().await?;
        tracker.restart_after_stop().await?;
        for (what, done) in [
            ("index", index.finish().await?),
            ("search", search.finish().await?),
        ] {
            assert!(done.status.success(), "{what}: {:?}", done.stderr);
            let waiting = done.lines_with(WAITING);
            assert_eq!(
                waiting.len(),
                1,
                "{what} says it waits once: {:?}",
                done.stderr
            );
            assert!(waiting[0].contains(DB_DOWN), "{}", waiting[0]);
        }
        let f1 = ids(&alice, &["search", "f1.bin"]).await?;
        assert_eq!(f1.len(), 1, "the waited-out index took effect");

        // An outage that outlasts --tracker-wait: the command fails with the tracker's
        // words, and what it tried had no effect anywhere.
        tracker.stop().await?;
        let down = DbDown::start(tracker.addr).await?;
        let f2 = failed.to_str().context("utf-8")?;
        let done = run_waiting(&alice, "2s", &["index", f2]).await?;
        assert!(!done.status.success(), "{:?}", done.stderr);
        assert_eq!(done.lines_with(WAITING).len(), 1, "{:?}", done.stderr);
        let errors = done.lines_with("error: ");
        assert_eq!(errors.len(), 1, "{:?}", done.stderr);
        assert!(
            errors[0].contains("cannot serve now") && errors[0].contains(DB_DOWN),
            "{}",
            errors[0]
        );
        assert!(!errors[0].contains("internal error"), "{}", errors[0]);
        let done = run_waiting(&alice, "2s", &["search"]).await?;
        assert!(!done.status.success());
        let error = done.lines_with("error: ").first().map(|l| l.to_string());
        assert!(
            error.is_some_and(|e| e.contains(DB_DOWN)),
            "{:?}",
            done.stderr
        );
        // unindex goes on locally and says the tracker was not told; the node withdraws
        // the holding once the tracker answers again.
        let done = run_waiting(&alice, "2s", &["unindex", &dropped]).await?;
        assert!(done.status.success(), "{:?}", done.stderr);
        assert!(
            done.stdout.contains("the tracker was not told") && done.stdout.contains(DB_DOWN),
            "{}",
            done.stdout
        );
        down.stop().await?;
        tracker.restart_after_stop().await?;

        // A restart (nobody answers for a moment) while an unindex runs.
        tracker.stop().await?;
        let f1 = &f1[0];
        let mut unindex = Running::start(&alice, "60s", &["unindex", f1])?;
        unindex.until_waiting().await?;
        tracker.restart_after_stop().await?;
        let done = unindex.finish().await?;
        assert!(done.status.success(), "{:?}", done.stderr);
        assert_eq!(done.lines_with(WAITING).len(), 1, "{:?}", done.stderr);
        assert!(done.lines_with(WAITING)[0].contains("cannot reach it"));
        assert!(!done.stdout.contains("not told"), "{}", done.stdout);

        // Afterwards the peer and the tracker agree: only `kept` is shared.
        let mine = ids(&alice, &["files"]).await?;
        assert_eq!(mine, [kept]);
        let took = time_until(Duration::from_secs(60), "the tracker to agree", || async {
            Ok(ids(&alice, &["search"]).await? == mine)
        })
        .await?;
        println!("the tracker agreed with the peer {took:?} after the last outage");
        assert!(!lists(&tracker, &dropped, alice.peer_id.as_deref().unwrap_or("")).await?);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_converge_holdings_with_the_tracker_both_ways() -> anyhow::Result<()> {
    bounded(async {
        // No audits: a re-audit of the deleted file would withdraw it too, and this is about
        // the sync.
        let tracker = TestTracker::start_with(|cfg| cfg.audit = false).await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        // Rescans of shared files are off (an hour): here the periodic sync alone withdraws
        // a file gone from the disk.
        let every = format!("{}s", SYNC_EVERY.as_secs());
        alice
            .serve(&[
                "--storage-quota",
                "0",
                "--sync-every",
                &every,
                "--rescan-every",
                "1h",
            ])
            .await?;
        let me = alice.peer_id.clone().context("peer id")?;
        let src = tempfile::tempdir()?;
        let (forgotten, lost) = (
            random_file(src.path(), "forgotten.bin", 2 * CHUNK)?.0,
            random_file(src.path(), "lost.bin", 2 * CHUNK)?.0,
        );
        let forgotten_id = id_of(&alice.index(&forgotten).await?)?;
        let lost_id = id_of(&alice.index(&lost).await?)?;
        // Within one sync period plus a heartbeat interval (PEER_TIMEOUT / 3), plus slack
        // for a loaded machine.
        let bound = SYNC_EVERY.mul_f64(1.1) + PEER_TIMEOUT / 3 + Duration::from_secs(20);

        // The tracker forgets the holding behind the node's back (the user's session
        // withdraws it over gRPC): the node's next sync restores it.
        let mut grpc =
            proto::tracker::v1::tracker_client::TrackerClient::connect(tracker.url()).await?;
        let req = proto::tracker::v1::UnindexRequest {
            peer_id: me.clone(),
            file_id: forgotten_id.clone(),
        };
        grpc.unindex(tracker::testing::authed(req, &alice.session_token()?))
            .await?;
        assert!(!lists(&tracker, &forgotten_id, &me).await?);
        let restored = time_until(bound, "the forgotten holding to come back", || {
            lists(&tracker, &forgotten_id, &me)
        })
        .await?;

        // The node loses a shared file (deleted on disk): its next sync withdraws it.
        std::fs::remove_file(&lost)?;
        let withdrawn = time_until(bound, "the lost file to be withdrawn", || async {
            Ok(!lists(&tracker, &lost_id, &me).await?)
        })
        .await?;
        println!(
            "converged with --sync-every {SYNC_EVERY:?}: a forgotten holding restored in \
             {restored:?}, a deleted file withdrawn in {withdrawn:?}"
        );
        assert_eq!(ids(&alice, &["search"]).await?, [forgotten_id]);
        Ok(())
    })
    .await
}

/// A node's source that holds nothing any more (its file is gone), whatever its records
/// and the tracker say: every request is refused as not held. Counts the requests.
struct Emptied {
    inner: Arc<dyn ChunkSource>,
    asked: Arc<AtomicUsize>,
}

impl ChunkSource for Emptied {
    fn holding(&self, _file: &::common::FileId, _needed: &[u32]) -> Option<Arc<Holding>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        None
    }

    fn open(
        &self,
        file: &::common::FileId,
        holding: &Holding,
    ) -> Result<Box<dyn ChunkReader>, Refused> {
        self.inner.open(file, holding)
    }

    fn file_count(&self) -> u32 {
        self.inner.file_count()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_move_on_at_once_from_a_holder_that_refuses_chunks_as_not_held() -> anyhow::Result<()>
{
    bounded(async {
        // No audits, so the tracker keeps listing the holder that refuses (as it did, in
        // the outage this is about, until reconciled).
        let tracker = TestTracker::start_with(|cfg| cfg.audit = false).await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let mut bob = TestPeer::register(&tracker, "bob").await?;
        let carol = TestPeer::register(&tracker, "carol").await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "data.bin", 16 * CHUNK)?;
        let id = id_of(&alice.index(&path).await?)?;
        bob.index(&path).await?;
        // Bob's node uploads slowly, so carol surely asks alice's too.
        bob.serve(&["--storage-quota", "0", "--max-upload-rate", "4M"])
            .await?;
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = asked.clone();
        let config = NodeConfig {
            source_layer: Some(Box::new(move |inner| {
                Arc::new(Emptied {
                    inner,
                    asked: counter,
                })
            })),
            storage_quota: 0,
            ..NodeConfig::new(
                Home::open(Some(alice.home.path().to_path_buf()))?,
                vec![tracker.url()],
            )
        };
        let node = Node::bind(config, tokio::net::TcpListener::bind("127.0.0.1:0").await?).await?;
        let alice_id = node.peer_id().to_string();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(node.run(shutdown.clone()));
        let bob_id = bob.peer_id.clone().context("bob's id")?;
        time_until(Duration::from_secs(30), "both holders up", || async {
            Ok(lists_up(&tracker, &id, &alice_id).await?
                && lists_up(&tracker, &id, &bob_id).await?)
        })
        .await?;

        // Stalls and give-up far away: only moving on at once gets the file in time.
        let out = tempfile::tempdir()?;
        let started = Instant::now();
        let got = carol
            .get(
                &id,
                out.path(),
                &["--stall-timeout", "10m", "--give-up-after", "10m"],
            )
            .await?;
        let took = started.elapsed();
        assert_eq!(sha256_of(&out.path().join("data.bin"))?, sha);
        assert_eq!(got["sources"], 1, "only bob supplied chunks: {got}");
        let refusals = asked.load(Ordering::SeqCst);
        assert!(refusals >= 1, "alice's node was never asked");
        println!("got the file from bob in {took:?}; alice's node refused {refusals} request(s)");
        shutdown.cancel();
        running.await??;
        Ok(())
    })
    .await
}
