//! A lying tracker, end to end. The real tracker refuses hostile names and bad chunk maps,
//! so the getter's own defences are otherwise only unit-tested. Here a gRPC proxy sits in
//! front of a real tracker, forwards every call, and rewrites what Locate (and Resolve)
//! answer; a real `peer get` goes through it while the seed talks to the real tracker. The
//! getter must write only a made-safe name directly inside `--output`, refuse a chunk map
//! that does not hash to the id before it writes a byte, and finish from the honest seed
//! whatever holders it is told about; never panic, never echo raw control bytes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::*;
use anyhow::Context;
use bytes::Bytes;
use proto::tracker::v1 as tpb;
use proto::tracker::v1::tracker_client::TrackerClient;
use proto::tracker::v1::tracker_server::{Tracker, TrackerServer};
use tokio::net::TcpListener;
use tokio_util::sync::{CancellationToken, DropGuard};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

const MIB: usize = 1 << 20;
/// The tracker's message limit (`tracker::grpc::MAX_MESSAGE`, which is not public).
const MAX_MESSAGE: usize = 16 << 20;

/// Rewrites a Locate answer; Resolve's file entries go through it too, as `file`.
pub(crate) type Lie = Arc<dyn Fn(&mut tpb::LocateResponse) + Send + Sync>;

/// Forwards every call to the real tracker, passing answers through the current lie.
struct Proxy {
    upstream: TrackerClient<Channel>,
    lie: Arc<Mutex<Lie>>,
}

impl Proxy {
    fn lie(&self) -> Lie {
        self.lie.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The request's message with its `authorization` metadata, for the real tracker.
fn forward<T>(r: Request<T>) -> Request<T> {
    let auth = r.metadata().get("authorization").cloned();
    let mut out = Request::new(r.into_inner());
    if let Some(a) = auth {
        out.metadata_mut().insert("authorization", a);
    }
    out
}

type Answer<T> = Result<Response<T>, Status>;

/// The whole `impl Tracker` (so `async_trait` sees the expanded unary methods).
macro_rules! proxy_impl {
    ($($method:ident: $req:ident => $resp:ident,)*) => {
        #[tonic::async_trait]
        impl Tracker for Proxy {
            type TasksStream = tonic::codec::Streaming<tpb::Task>;

            $(async fn $method(&self, r: Request<tpb::$req>) -> Answer<tpb::$resp> {
                Ok(Response::new(self.upstream.clone().$method(forward(r)).await?.into_inner()))
            })*

            async fn tasks(&self, r: Request<tpb::TasksRequest>) -> Answer<Self::TasksStream> {
                Ok(Response::new(self.upstream.clone().tasks(forward(r)).await?.into_inner()))
            }

            async fn locate(&self, r: Request<tpb::LocateRequest>) -> Answer<tpb::LocateResponse> {
                let mut answer = self.upstream.clone().locate(forward(r)).await?.into_inner();
                self.lie()(&mut answer);
                Ok(Response::new(answer))
            }

            async fn resolve(
                &self,
                r: Request<tpb::ResolveRequest>,
            ) -> Answer<tpb::ResolveResponse> {
                let mut answer = self.upstream.clone().resolve(forward(r)).await?.into_inner();
                let lie = self.lie();
                for f in &mut answer.files {
                    let file = Some(std::mem::take(f));
                    let mut as_located = tpb::LocateResponse { file, ..Default::default() };
                    lie(&mut as_located);
                    *f = as_located.file.unwrap_or_default();
                }
                Ok(Response::new(answer))
            }
        }
    };
}

proxy_impl! {
    register: Credentials => Session,
    login: Credentials => Session,
    logout: LogoutRequest => LogoutResponse,
    certify: CertifyRequest => CertifyResponse,
    heartbeat: HeartbeatRequest => HeartbeatResponse,
    sync_holdings: SyncHoldingsRequest => SyncHoldingsResponse,
    announce: AnnounceRequest => AnnounceResponse,
    report_chunks: ReportChunksRequest => ReportChunksResponse,
    unindex: UnindexRequest => UnindexResponse,
    search: SearchRequest => SearchResponse,
    list_peers: ListPeersRequest => ListPeersResponse,
    complete_task: CompleteTaskRequest => CompleteTaskResponse,
    queue_get: QueueGetRequest => QueueGetResponse,
    cancel_get: CancelGetRequest => CancelGetResponse,
    report_source: ReportSourceRequest => ReportSourceResponse,
}

/// Serves a proxy for `tracker` on 127.0.0.1 until the guard drops; returns its URL.
pub(crate) async fn start_proxy(
    tracker: &TestTracker,
    lie: Arc<Mutex<Lie>>,
) -> anyhow::Result<(String, DropGuard)> {
    let upstream = TrackerClient::new(Endpoint::from_shared(tracker.url())?.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let svc = TrackerServer::new(Proxy { upstream, lie })
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.clone().cancelled_owned(),
            ),
    );
    Ok((format!("http://{addr}"), stop.drop_guard()))
}

fn honest() -> Lie {
    Arc::new(|_| {})
}

/// Renames the file in every answer (Locate's view and manifest, Resolve's entries).
fn rename(name: &str) -> Lie {
    let name = name.to_string();
    Arc::new(move |r| {
        let names = r.file.iter_mut().map(|f| &mut f.name);
        names
            .chain(r.manifest.iter_mut().map(|m| &mut m.name))
            .for_each(|n| *n = name.clone());
    })
}

/// A change to a manifest.
type Forgery = fn(&mut tpb::Manifest);

/// Rewrites the manifest of a Locate answer (a relocate carries none).
fn forge(f: Forgery) -> Lie {
    Arc::new(move |r| {
        if let Some(m) = r.manifest.as_mut() {
            f(m)
        }
    })
}

/// A real tracker and seed sharing one file, a lying proxy, and a getter behind it whose
/// home, working directory and TMPDIR are all inside `root`, next to the `out-N` dirs.
struct World {
    root: tempfile::TempDir,
    getter: TestPeer,
    lie: Arc<Mutex<Lie>>,
    id: String,
    sha: ::common::Sha256Digest,
    gets: usize,
    _keep: (TestPeer, DropGuard, TestTracker, tempfile::TempDir),
}

impl World {
    async fn start(name: &str, size: usize) -> anyhow::Result<Self> {
        let tracker = TestTracker::start().await?;
        let mut seed = TestPeer::register(&tracker, "alice").await?;
        seed.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), name, size)?;
        let id = seed.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let lie = Arc::new(Mutex::new(honest()));
        let (url, proxy) = start_proxy(&tracker, lie.clone()).await?;
        let root = tempfile::tempdir()?;
        let mut getter = TestPeer::with_tracker_urls(&url, "bob")?;
        getter.home = tempfile::Builder::new()
            .prefix("home")
            .tempdir_in(root.path())?;
        // Registered through the proxy: it forwards.
        getter
            .run_stdin(&["register", "--user", "bob", "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        let _keep = (seed, proxy, tracker, src);
        Ok(Self {
            root,
            getter,
            lie,
            id,
            sha,
            gets: 0,
            _keep,
        })
    }

    /// `peer [--json] get ID` through the proxy telling `lie`, into a fresh `out-N`; checks
    /// what must hold whatever the outcome.
    async fn get(&mut self, lie: Lie, json: bool) -> anyhow::Result<(Out, PathBuf)> {
        *self.lie.lock().unwrap_or_else(|p| p.into_inner()) = lie;
        self.gets += 1;
        let out = self.root.path().join(format!("out-{}", self.gets));
        std::fs::create_dir(&out)?;
        let root = self.root.path().to_str().context("utf-8")?;
        let mut args = vec!["get", &self.id, "--output", out.to_str().context("utf-8")?];
        if json {
            args.insert(0, "--json");
        }
        let opts = RunOpts {
            wrapper: &[],
            envs: &[("TMPDIR", root)],
            cwd: Some(self.root.path()),
        };
        let got = self.getter.run_with(opts, &args).await?;
        let all = format!("{}{}", got.stdout, got.stderr);
        assert!(
            matches!(got.status.code(), Some(0 | 1)),
            "{}: {all}",
            got.status
        );
        assert!(!all.contains("panicked"), "{all}");
        assert!(
            !all.contains(['\u{1b}', '\0']),
            "raw control bytes: {all:?}"
        );
        self.assert_nothing_stray();
        Ok((got, out))
    }

    /// Nothing but the home and the `out-N` dirs in the root, and every output file directly
    /// inside its `out-N`.
    fn assert_nothing_stray(&self) {
        let home = self.getter.home.path().file_name().expect("home name");
        for e in std::fs::read_dir(self.root.path()).expect("root").flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(n.starts_with("home") || n.starts_with("out-"), "{n:?}");
        }
        for f in files_below(self.root.path()) {
            assert!(f.starts_with(home) || f.components().count() == 2, "{f:?}");
        }
    }

    /// A get that succeeded: exit 0 and one file directly in `out` with a safe name and the
    /// honest bytes (and, with `--json`, that path and SHA-256); returns the name.
    fn fetched(&self, got: &Out, out: &Path) -> anyhow::Result<String> {
        assert_eq!(got.status.code(), Some(0), "{}", got.stderr);
        let files = files_below(out);
        assert_eq!(files.len(), 1, "one file in --output: {files:?}");
        let name = files[0].to_str().context("utf-8 name")?.to_string();
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(!name.chars().any(char::is_control), "{name:?}");
        assert!(!name.ends_with(".tessera-part"), "{name:?}");
        assert_eq!(sha256_of(&out.join(&name))?, self.sha, "{name:?}");
        if let Ok(v) = got.json() {
            assert_eq!(v[0]["path"], out.join(&name).to_str().context("utf-8")?);
            assert_eq!(v[0]["sha256"], self.sha.to_hex(), "the bytes' SHA-256");
        }
        Ok(name)
    }
}

/// A get that failed: exit 1, one `error:` line, nothing at all in `out`.
fn refused(got: &Out, out: &Path) -> String {
    assert_eq!(got.status.code(), Some(1), "{}{}", got.stdout, got.stderr);
    let line = one_error_line(got);
    let files = files_below(out);
    assert!(files.is_empty(), "written before refusing: {files:?}");
    line
}

/// The lie that says a holder with every chunk listens on `addr`, ahead of the real ones.
fn phantom_holder(addr: String) -> Lie {
    Arc::new(move |r| {
        let peer_id = ::common::PeerId::from_random([7; 16]).to_string();
        let (addr, have) = (addr.clone(), Bytes::new());
        r.holders.insert(
            0,
            tpb::Holder {
                peer_id,
                addr,
                have,
            },
        );
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn should_make_hostile_names_safe_inside_the_output() -> anyhow::Result<()> {
    bounded(async {
        let mut w = World::start("honest.bin", 100_000).await?;
        // (name, must it be fetched?) A name a manifest cannot carry (NUL, empty, over 4096
        // bytes) may be refused instead; every other must end as a safe name.
        let names: Vec<(String, bool)> = vec![
            ("a\0b.txt".into(), false),
            ("x".repeat(10_000), false),
            (String::new(), false),
            (format!("{}.bin", "é".repeat(2000)), true),
            ("CON".into(), true),
            ("nul.txt".into(), true),
            ("..".into(), true),
            (".".into(), true),
            ("/etc/passwd".into(), true),
            ("..\\..\\x".into(), true),
            ("\u{1b}[2J\u{1b}]0;pwned\u{7}\r\n\u{1b}[31m".into(), true),
            ("\u{1b}\u{7}\u{8}\r\n\t\u{7f}".into(), true),
        ];
        let mut seen = Vec::new();
        for (name, must_fetch) in &names {
            let (got, out) = w.get(rename(name), false).await?;
            let short = ::common::names::printable(name, 24);
            if got.status.success() || *must_fetch {
                let safe = w.fetched(&got, &out)?;
                assert!(!["CON", "NUL.TXT"].contains(&safe.to_ascii_uppercase().as_str()));
                assert_eq!(got.stdout.lines().count(), 1, "one summary: {}", got.stdout);
                seen.push(format!("{short:?} -> {safe:?}"));
            } else {
                let line = refused(&got, &out);
                if name.contains('\0') {
                    assert!(
                        line.contains("file name contains a NUL character"),
                        "{line}"
                    );
                }
                seen.push(format!("{short:?} refused: {line}"));
            }
        }
        eprintln!("{}", seen.join("\n"));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_chunk_map_that_does_not_add_up_before_writing() -> anyhow::Result<()> {
    bounded(async {
        let mut w = World::start("honest.bin", 3 * MIB + 5).await?;
        let lies: [(&str, Forgery); 4] = [
            ("size", |m| m.size += 1),
            ("chunk size", |m| m.chunk_size *= 2),
            ("a chunk hash flipped", |m| {
                let mut h = m.chunk_hashes.to_vec();
                h[40] ^= 1;
                m.chunk_hashes = h.into();
            }),
            ("a chunk hash dropped", |m| {
                m.chunk_hashes = m.chunk_hashes.slice(32..)
            }),
        ];
        let record = w.getter.home.path().join(format!("store/{}.json", w.id));
        for (what, lie) in lies {
            let (got, out) = w.get(forge(lie), true).await?;
            let line = refused(&got, &out);
            assert!(line.contains("manifest"), "{what}: {line}");
            assert_eq!(got.json()?, serde_json::json!([]), "{what}");
            assert!(!record.exists(), "{what}: a store record for a refused map");
        }
        // The same get told the truth works: the lies were the only problem.
        let (got, out) = w.get(honest(), true).await?;
        w.fetched(&got, &out)?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_finish_from_the_seed_when_a_listed_holder_is_a_closed_port() -> anyhow::Result<()> {
    bounded(async {
        let mut w = World::start("honest.bin", 3 * MIB + 5).await?;
        let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let (got, out) = w.get(phantom_holder(closed.to_string()), true).await?;
        w.fetched(&got, &out)?;
        assert_eq!(got.json()?[0]["sources"], 1, "only the seed served");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fetch_a_file_whose_name_is_near_the_255_byte_limit() -> anyhow::Result<()> {
    bounded(async {
        // A name that a Linux file system holds and the real tracker stores: no lie at all.
        let mut w = World::start(&format!("{}.bin", "y".repeat(246)), 100_000).await?;
        let (got, out) = w.get(honest(), true).await?;
        w.fetched(&got, &out)?;
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_file_whose_bytes_do_not_have_the_listed_sha256() -> anyhow::Result<()> {
    bounded(async {
        // The id does not commit to the whole-file hash (the sharer announces it), so every
        // chunk passes; the getter must still not call the file finished.
        let mut w = World::start("honest.bin", 3 * MIB + 5).await?;
        let lie = forge(|m| m.sha256 = Bytes::from(vec![0xab; 32]));
        let (got, out) = w.get(lie, true).await?;
        let line = refused(&got, &out);
        assert!(
            line.contains("SHA-256") && line.contains(&"ab".repeat(32)),
            "{line}"
        );
        assert!(
            !w.getter
                .home
                .path()
                .join(format!("store/{}.json", w.id))
                .exists(),
            "no store record left to resume into the same failure"
        );
        let (got, out) = w.get(honest(), true).await?;
        w.fetched(&got, &out)?;
        Ok(())
    })
    .await
}
