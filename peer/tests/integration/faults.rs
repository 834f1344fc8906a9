//! Faults: a real tracker, an honest `peer serve`, and a misbehaving source (an in-test gRPC
//! node that registers, heartbeats and announces like a real peer, then stalls, lies, sends
//! too much or too little, or dies). Every `peer get` here must end with the right bytes
//! from the honest source, and write nothing outside `--output` and `--home`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::common::*;
use ::common::{Manifest, PeerId};
use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use proto::peer::v1 as ppb;
use proto::peer::v1::peer_server::{Peer, PeerServer};
use proto::tracker::v1 as tpb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use tracker::testing::authed;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// How the fake source misbehaves when asked for a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Accepts the call, then sends nothing.
    Stall,
    /// The right length, the wrong bytes.
    WrongBytes,
    /// One byte short.
    Short,
    /// The chunk plus 4 KiB.
    Oversized,
    /// A 17 MiB message: more than the getter's decode limit.
    TooBigForTheWire,
    /// The next chunk (right bytes for it) instead of the one asked.
    OtherIndex,
    /// The right chunk, then copies of it forever.
    Endless,
    /// Starts sending the chunk, then the connection breaks 200 KiB in.
    DiesMidStream,
    /// Accepts the call and ends the stream without a chunk.
    EndsEarly,
}

type FakeStream = Pin<Box<dyn Stream<Item = Result<ppb::Chunk, Status>> + Send>>;

struct FakeNode {
    mode: Mode,
    manifest: Arc<Manifest>,
    data: Bytes,
    /// Bytes the node may still write on its connections (`DiesMidStream` arms it).
    budget: Arc<AtomicI64>,
    calls: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
}

impl FakeNode {
    fn chunk(&self, i: u32) -> Bytes {
        let r = self.manifest.chunk_range(i);
        self.data.slice(r.start as usize..r.end as usize)
    }
}

fn one(index: u32, data: Bytes) -> FakeStream {
    futures::stream::once(async move { Ok(ppb::Chunk { index, data }) }).boxed()
}

#[tonic::async_trait]
impl Peer for FakeNode {
    type GetChunksStream = FakeStream;

    async fn get_chunks(
        &self,
        request: Request<ppb::GetChunksRequest>,
    ) -> Result<Response<FakeStream>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let req = request.into_inner();
        let n = self.manifest.chunk_count();
        let i = *req
            .indices
            .first()
            .filter(|i| **i < n)
            .ok_or_else(|| Status::invalid_argument("bad indices"))?;
        let good = self.chunk(i);
        let s = match self.mode {
            Mode::Stall => futures::stream::pending().boxed(),
            Mode::WrongBytes => one(i, good.iter().map(|b| b ^ 0x5a).collect()),
            Mode::Short => one(i, good.slice(..good.len() - 1)),
            Mode::Oversized => {
                let mut v = good.to_vec();
                v.extend_from_slice(&[7u8; 4096]);
                one(i, v.into())
            }
            Mode::TooBigForTheWire => {
                let mut v = good.to_vec();
                v.resize(17 << 20, 0);
                one(i, v.into())
            }
            // A chunk neither asked for nor offered as a candidate (`pick`), else one past the end.
            Mode::OtherIndex => match (0..n).find(|j| !req.indices.contains(j)) {
                Some(j) => one(j, self.chunk(j)),
                None => one(n, good),
            },
            Mode::Endless => {
                let sent = self.sent.clone();
                futures::stream::repeat(good)
                    .map(move |data| {
                        sent.fetch_add(1, Ordering::SeqCst);
                        Ok(ppb::Chunk { index: i, data })
                    })
                    .boxed()
            }
            Mode::DiesMidStream => {
                self.budget.store(200 << 10, Ordering::SeqCst);
                one(i, good)
            }
            Mode::EndsEarly => futures::stream::empty().boxed(),
        };
        Ok(Response::new(s))
    }

    type HoldingsStream = futures::stream::Empty<Result<ppb::HoldingsUpdate, Status>>;

    /// Like a node that predates `Holdings`: getters learn what it holds from Locate alone.
    async fn holdings(
        &self,
        _request: Request<ppb::HoldingsRequest>,
    ) -> Result<Response<Self::HoldingsStream>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn query(
        &self,
        _request: Request<ppb::QueryRequest>,
    ) -> Result<Response<ppb::QueryReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn contacts(
        &self,
        _request: Request<ppb::ContactsRequest>,
    ) -> Result<Response<ppb::ContactsReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn chunk_map(
        &self,
        _request: Request<ppb::ChunkMapRequest>,
    ) -> Result<Response<ppb::ChunkMapReply>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn status(
        &self,
        _request: Request<ppb::StatusRequest>,
    ) -> Result<Response<ppb::StatusResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A TCP connection that breaks (reset) once the shared write budget is spent.
struct Cut {
    io: TcpStream,
    budget: Arc<AtomicI64>,
}

impl Connected for Cut {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

fn reset() -> io::Error {
    io::Error::from(io::ErrorKind::ConnectionReset)
}

impl AsyncRead for Cut {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.budget.load(Ordering::SeqCst) <= 0 {
            return Poll::Ready(Err(reset()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cut {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let left = self.budget.load(Ordering::SeqCst);
        if left <= 0 {
            return Poll::Ready(Err(reset()));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let r = Pin::new(&mut self.io).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(w)) = &r {
            self.budget.fetch_sub(*w as i64, Ordering::SeqCst);
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The misbehaving source: its node, and its heartbeats to the tracker. Both stop on drop.
struct FakeSource {
    calls: Arc<AtomicUsize>,
    sent: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Drop for FakeSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl FakeSource {
    /// Starts a node in `mode` for the file in `data`, registers a user, heartbeats with the
    /// node's address and announces the file, as a real sharer would.
    async fn start(
        tracker: &TestTracker,
        manifest: Manifest,
        data: Bytes,
        mode: Mode,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let budget = Arc::new(AtomicI64::new(i64::MAX));
        let (calls, sent) = (Arc::default(), Arc::default());
        let stop = CancellationToken::new();
        let node = FakeNode {
            mode,
            manifest: Arc::new(manifest.clone()),
            data,
            budget: budget.clone(),
            calls: Arc::clone(&calls),
            sent: Arc::clone(&sent),
        };
        let incoming = futures::stream::unfold((listener, budget), |(l, budget)| async move {
            let r = l.accept().await.map(|(io, _)| Cut {
                io,
                budget: budget.clone(),
            });
            Some((r, (l, budget)))
        });
        let server = tonic::transport::Server::builder()
            .add_service(
                PeerServer::new(node)
                    .max_decoding_message_size(32 << 20)
                    .max_encoding_message_size(32 << 20),
            )
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        tokio::spawn(server);

        let mut client = TrackerClient::connect(tracker.url()).await?;
        let user = format!("fake{}", rand::random::<u32>());
        let token = client
            .register(tpb::Credentials {
                user,
                password: PASSWORD.into(),
            })
            .await?
            .into_inner()
            .token;
        let peer_id = PeerId::from_random(rand::random()).to_string();
        let beat = tpb::HeartbeatRequest {
            peer_id: peer_id.clone(),
            addr,
            storage_quota: 0,
            storage_used: 0,
        };
        client.heartbeat(authed(beat.clone(), &token)).await?;
        client
            .announce(authed(
                tpb::AnnounceRequest {
                    listing: Default::default(),
                    peer_id: peer_id.clone(),
                    manifest: Some(tpb::Manifest {
                        name: manifest.name.clone(),
                        size: manifest.size,
                        sha256: Bytes::copy_from_slice(&manifest.sha256.0),
                        chunk_size: manifest.chunk_size,
                        chunk_hashes: manifest.packed_hashes().into(),
                    }),
                },
                &token,
            ))
            .await?;
        let (mut c, t, s) = (client.clone(), token.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(700)) => {}
                }
                let _ = c.heartbeat(authed(beat.clone(), &t)).await;
            }
        });
        Ok(Self { calls, sent, stop })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// Polls the tracker until the file is listed with `n` up holders.
async fn wait_for_holders(tracker: &TestTracker, id: &str, n: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let f = tracker.get_json(&format!("/api/v1/files/{id}")).await?;
        if f["holders"].as_u64() == Some(n) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("file never had {n} holders: {f}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A tracker, alice serving `size` random bytes (`serve`: extra flags), and the file's id, path, hash.
struct Scene {
    tracker: TestTracker,
    _alice: TestPeer,
    _src: tempfile::TempDir,
    id: String,
    path: std::path::PathBuf,
    sha: ::common::Sha256Digest,
}

async fn scene(size: usize, serve: &[&str]) -> anyhow::Result<Scene> {
    // The tracker trusts claims here, so the getter meets the misbehaving source (with
    // audits on, the tracker would catch it first: see `audit.rs`).
    let tracker = TestTracker::start_with(|cfg| cfg.audit = false).await?;
    let mut alice = TestPeer::register(&tracker, "alice").await?;
    alice.serve(serve).await?;
    let src = tempfile::tempdir()?;
    let (path, sha) = random_file(src.path(), "data.bin", size)?;
    let file = alice.index(&path).await?.remove(0);
    let id = file["id"].as_str().context("id")?.to_string();
    Ok(Scene {
        tracker,
        _alice: alice,
        _src: src,
        id,
        path,
        sha,
    })
}

/// Output, working directory and TMPDIR of one getter: after it ran, only the file (or its
/// part) may be in the output, and nothing anywhere else but its home.
struct Dirs {
    out: tempfile::TempDir,
    cwd: tempfile::TempDir,
    tmp: tempfile::TempDir,
}

impl Dirs {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            out: tempfile::tempdir()?,
            cwd: tempfile::tempdir()?,
            tmp: tempfile::tempdir()?,
        })
    }

    fn out(&self) -> anyhow::Result<&str> {
        self.out.path().to_str().context("utf-8")
    }

    fn assert_only(&self, names: &[&str]) {
        let want: Vec<std::path::PathBuf> = names.iter().map(Into::into).collect();
        assert_eq!(
            files_below(self.out.path()),
            want,
            "output holds only {names:?}"
        );
        assert!(
            files_below(self.cwd.path()).is_empty(),
            "nothing in the cwd"
        );
        assert!(files_below(self.tmp.path()).is_empty(), "nothing in TMPDIR");
    }
}

async fn get_with(peer: &TestPeer, dirs: &Dirs, wrapper: &[&str], id: &str) -> anyhow::Result<Out> {
    let tmp = dirs.tmp.path().to_str().context("utf-8")?;
    peer.run_with(
        RunOpts {
            wrapper,
            envs: &[("PEER_STALL_TIMEOUT", "2s"), ("TMPDIR", tmp)],
            cwd: Some(dirs.cwd.path()),
        },
        &["--json", "get", id, "--output", dirs.out()?],
    )
    .await
}

fn first(out: &Out) -> anyhow::Result<serde_json::Value> {
    out.json()?
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .context("get --json prints an array")
}

/// One fault: the getter sees alice (rate-limited, so the fake gets work) and the fake.
async fn survive(mode: Mode) -> anyhow::Result<()> {
    bounded(async {
        let s = scene(6 * CHUNK + 1234, &["--max-upload-rate", "4M"]).await?;
        let data = Bytes::from(std::fs::read(&s.path)?);
        let manifest = ::common::manifest::hash_file(&s.path, "data.bin".into())?;
        let fake = FakeSource::start(&s.tracker, manifest, data, mode).await?;
        wait_for_holders(&s.tracker, &s.id, 2).await?;

        let bob = TestPeer::register(&s.tracker, "bob").await?;
        let dirs = Dirs::new()?;
        let started = std::time::Instant::now();
        let out = get_with(&bob, &dirs, &[], &s.id).await?.ok()?;
        let v = first(&out)?;
        let got = dirs.out.path().join("data.bin");
        assert_eq!(
            sha256_of(&got)?,
            s.sha,
            "{mode:?}: the file is byte-identical"
        );
        assert_eq!(v["sha256"], s.sha.to_hex());
        assert!(fake.calls() > 0, "{mode:?}: the fake was asked for chunks");
        if matches!(mode, Mode::Endless | Mode::DiesMidStream) {
            // Endless: its first copy is good, so it may count as a source; the getter takes
            // one message per request and hangs up, so it finishes like the others.
            // DiesMidStream: it dies 200 KiB into its connection, so when it is asked first
            // for the file's 1,234-byte last chunk it delivers that whole (and verified).
            assert!(matches!(v["sources"].as_u64(), Some(1 | 2)), "{v}");
            eprintln!(
                "{mode:?}: the fake's streams were polled for {} messages",
                fake.sent.load(Ordering::SeqCst)
            );
        } else {
            assert_eq!(v["sources"], 1, "{mode:?}: only alice supplied chunks: {v}");
        }
        dirs.assert_only(&["data.bin"]);
        eprintln!(
            "{mode:?}: ok in {:.1}s, fake asked {} times",
            started.elapsed().as_secs_f64(),
            fake.calls()
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_a_source_that_stalls() -> anyhow::Result<()> {
    survive(Mode::Stall).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_a_source_that_sends_wrong_bytes() -> anyhow::Result<()> {
    survive(Mode::WrongBytes).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_a_source_that_sends_a_short_chunk() -> anyhow::Result<()> {
    survive(Mode::Short).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_a_source_that_sends_an_oversized_chunk() -> anyhow::Result<()> {
    survive(Mode::Oversized).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_a_source_that_sends_a_message_past_the_limit() -> anyhow::Result<()> {
    survive(Mode::TooBigForTheWire).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_a_source_that_sends_another_chunk() -> anyhow::Result<()> {
    survive(Mode::OtherIndex).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_hang_up_on_an_endless_stream() -> anyhow::Result<()> {
    survive(Mode::Endless).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_a_source_that_dies_mid_stream() -> anyhow::Result<()> {
    survive(Mode::DiesMidStream).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_drop_a_source_that_ends_its_stream_early() -> anyhow::Result<()> {
    survive(Mode::EndsEarly).await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_clearly_when_the_output_is_full_and_resume_later() -> anyhow::Result<()> {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: prlimit (util-linux) is not installed");
        return Ok(());
    }
    bounded(async {
        let s = scene(8 * CHUNK, &[]).await?;
        let manifest = ::common::manifest::hash_file(&s.path, "data.bin".into())?;
        let bob = TestPeer::register(&s.tracker, "bob").await?;
        let dirs = Dirs::new()?;
        let part = dirs.out.path().join("data.bin.tessera-part");
        // Files may not grow past 7.5 chunks: the last chunk can never be written. Chunks
        // arrive in random order, so try until a failed run has kept some good chunks.
        let limit = format!("--fsize={}", 7 * CHUNK + CHUNK / 2);
        let mut kept = 0;
        for _ in 0..6 {
            let out = get_with(&bob, &dirs, &["prlimit", &limit, "--"], &s.id).await?;
            assert_eq!(out.status.code(), Some(1), "exit 1: {}", out.stderr);
            let errors: Vec<&str> = out.stderr.lines().collect();
            assert_eq!(errors.len(), 1, "one line on stderr: {}", out.stderr);
            assert!(
                errors[0].starts_with("error: ") && errors[0].contains("tessera-part"),
                "a clear error naming the part file: {}",
                errors[0]
            );
            assert!(out.stdout.trim().is_empty() || out.stdout.trim() == "[]");
            assert!(part.is_file(), "the part file is kept");
            dirs.assert_only(&["data.bin.tessera-part"]);
            kept = good_chunks(&part, &manifest)?;
            eprintln!("disk full: {}; {kept} good chunks kept", errors[0]);
            if kept > 0 {
                break;
            }
        }
        assert!(kept > 0, "some chunk was written before the disk filled");

        let out = get_with(&bob, &dirs, &[], &s.id).await?.ok()?;
        let v = first(&out)?;
        assert_eq!(sha256_of(&dirs.out.path().join("data.bin"))?, s.sha);
        assert_eq!(v["chunks_reused"].as_u64(), Some(kept as u64), "{v}");
        dirs.assert_only(&["data.bin"]);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_serve_fifty_concurrent_getters_from_three_sources() -> anyhow::Result<()> {
    const GETTERS: usize = 50;
    bounded(async {
        let s = scene(3 * CHUNK + 777, &[]).await?;
        let mut others = Vec::new();
        for name in ["bob", "carol"] {
            let mut p = TestPeer::register(&s.tracker, name).await?;
            p.serve(&[]).await?;
            let dir = tempfile::tempdir()?;
            let copy = dir.path().join("data.bin");
            std::fs::copy(&s.path, &copy)?;
            let f = p.index(&copy).await?.remove(0);
            assert_eq!(f["id"].as_str(), Some(s.id.as_str()));
            others.push((p, dir));
        }
        wait_for_holders(&s.tracker, &s.id, 3).await?;

        let getters = futures::future::try_join_all((0..GETTERS).map(|i| {
            let tracker = &s.tracker;
            async move { TestPeer::register(tracker, &format!("getter{i}")).await }
        }))
        .await?;
        let started = std::time::Instant::now();
        let id = s.id.as_str();
        let runs = getters.iter().map(|g| async move {
            let dirs = Dirs::new()?;
            let out = get_with(g, &dirs, &[], id).await?.ok()?;
            let v = first(&out)?;
            anyhow::Ok((dirs, v))
        });
        let results = futures::future::try_join_all(runs).await?;
        let mut suppliers = 0;
        for (dirs, v) in &results {
            assert_eq!(sha256_of(&dirs.out.path().join("data.bin"))?, s.sha);
            dirs.assert_only(&["data.bin"]);
            suppliers += v["sources"].as_u64().unwrap_or(0);
        }
        eprintln!(
            "{GETTERS} getters done in {:.1}s, {suppliers} source slots used",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
    .await
}
