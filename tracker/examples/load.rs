//! A load client for the tracker: fills a running tracker over gRPC with synthetic users,
//! peers that heartbeat, files (made-up manifests: the tracker never sees content) and
//! holdings, then runs a closed loop with a fixed number of requests in flight against
//! `Locate` or `Search` and prints one JSON line per phase.
//!
//! ```text
//! cargo run --release -p tracker --example load -- --tracker http://127.0.0.1:7070 \
//!     --files 100000 --chunks 1 --hot-files 64 --hot-chunks 1000 --peers 1000 \
//!     --op locate --op search --concurrency 64 --duration 10s
//! ```
//!
//! Every name, peer id and manifest is derived from `--prefix` and an index, so a second
//! run with `--skip-populate` and the same parameters measures the same tracker again.
//! Populating is concurrent (`--populate-concurrency` announces in flight) and each extra
//! holder reports all its chunks of a file in one `ReportChunks`, so large sets (10k peers,
//! 1M chunks) load in minutes, not hours.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use common::manifest::MIN_CHUNK_SIZE;
use common::{FileId, Manifest, PeerId, Sha256Digest};
use futures::StreamExt;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use sha2::{Digest, Sha256};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Words that synthetic file names are made of (and that Search looks for).
const WORDS: &[&str] = &[
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango",
    "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "amber", "basalt", "cobalt", "dune",
    "ember", "fjord", "glacier", "harbor", "island", "jade", "karst", "lagoon", "mesa", "nebula",
    "onyx", "prairie", "quartz", "reef", "savanna", "tundra", "umber", "valley", "willow",
    "yarrow", "zephyr", "aurora", "breeze", "canyon", "delta2", "estuary", "forest", "grove",
    "heath", "inlet", "jungle", "knoll", "lake", "marsh",
];
const EXTS: &[&str] = &["mkv", "mp3", "jpg", "pdf", "zip", "bin"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Op {
    /// `Locate` of a random target file by id (the hot files when there are any), with
    /// the manifest: a getter's first Locate.
    Locate,
    /// The same with `have_manifest`: holders and a ticket only, what a getter sends every
    /// second while it downloads.
    Relocate,
    /// `Search` for one random word of the names.
    Search,
}

/// Populate a tracker with synthetic data, then measure Locate / Search under load.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Tracker URL.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    tracker: String,
    /// Files to announce.
    #[arg(long, default_value_t = 1000)]
    files: u32,
    /// Chunks per file (1 MiB each).
    #[arg(long, default_value_t = 4)]
    chunks: u32,
    /// Extra files with `--hot-chunks` chunks each; when there are any, Locate asks for them.
    #[arg(long, default_value_t = 0)]
    hot_files: u32,
    /// Chunks per hot file.
    #[arg(long, default_value_t = 1000)]
    hot_chunks: u32,
    /// Peers (spread over `--users` accounts), each heartbeating until the end.
    #[arg(long, default_value_t = 100)]
    peers: u32,
    /// Accounts owning the peers (registering costs an argon2 hash each).
    #[arg(long, default_value_t = 8)]
    users: u32,
    /// Peers besides the announcer that report holding about half of each file's chunks.
    #[arg(long, default_value_t = 2)]
    holders: u32,
    /// Requests in flight while populating.
    #[arg(long, default_value_t = 64)]
    populate_concurrency: usize,
    /// Only log in and heartbeat (the data is there from an earlier run, same parameters).
    #[arg(long)]
    skip_populate: bool,
    /// What to measure (repeatable); none: populate only.
    #[arg(long = "op", value_enum)]
    ops: Vec<Op>,
    /// Requests in flight during a measurement.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Length of each measurement.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Run before each measurement and not counted.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seeds every name and id, so different prefixes do not collide on one tracker.
    #[arg(long, default_value = "load")]
    prefix: String,
}

/// A small deterministic generator (splitmix64): fast enough for a million hashes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The synthetic world, derived from the arguments alone.
struct World {
    args: Args,
    seed: u64,
}

impl World {
    fn new(args: Args) -> World {
        let d = Sha256::digest(args.prefix.as_bytes());
        let seed = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
        World { args, seed }
    }
    fn total_files(&self) -> u32 {
        self.args.files + self.args.hot_files
    }
    fn user(&self, k: u32) -> String {
        format!("{}-u{k}", self.args.prefix)
    }
    fn peer(&self, p: u32) -> PeerId {
        let mut r = Rng::new(self.seed ^ 0x5045_4552 ^ u64::from(p) << 20);
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&r.next().to_be_bytes());
        b[8..].copy_from_slice(&r.next().to_be_bytes());
        PeerId::from_random(b)
    }
    /// The owner (announcing peer) of file `i`; peer `p` belongs to user `p % users`.
    fn owner(&self, i: u32) -> u32 {
        i % self.args.peers
    }
    fn manifest(&self, i: u32) -> pb::Manifest {
        let mut r = Rng::new(self.seed ^ (u64::from(i) << 24) ^ 0x46494c45);
        let (name, chunks) = if i < self.args.files {
            let w = |r: &mut Rng| WORDS[r.below(WORDS.len() as u64) as usize];
            let (a, b, c) = (w(&mut r), w(&mut r), w(&mut r));
            let ext = EXTS[r.below(EXTS.len() as u64) as usize];
            (
                format!("{} {a} {b} {c} {i:07}.{ext}", self.args.prefix),
                self.args.chunks,
            )
        } else {
            (
                format!("{} hot {:05}.bin", self.args.prefix, i - self.args.files),
                self.args.hot_chunks,
            )
        };
        let mut hashes = Vec::with_capacity(chunks as usize * 32);
        for _ in 0..chunks * 4 {
            hashes.extend_from_slice(&r.next().to_be_bytes());
        }
        let mut sha = Vec::with_capacity(32);
        for _ in 0..4 {
            sha.extend_from_slice(&r.next().to_be_bytes());
        }
        pb::Manifest {
            name,
            size: u64::from(chunks) * u64::from(MIN_CHUNK_SIZE),
            sha256: sha.into(),
            chunk_size: MIN_CHUNK_SIZE,
            chunk_hashes: hashes.into(),
        }
    }
    fn file_id(&self, m: &pb::Manifest) -> anyhow::Result<FileId> {
        let sha = Sha256Digest::from_slice(&m.sha256).context("sha256 length")?;
        let parsed =
            Manifest::from_parts(m.name.clone(), m.size, sha, m.chunk_size, &m.chunk_hashes)?;
        Ok(parsed.id())
    }
    /// The extra holders of file `i` and, for each, the chunks it reports.
    fn extra_holdings(&self, i: u32, chunks: u32) -> Vec<(u32, Vec<u32>)> {
        let peers = self.args.peers;
        let mut r = Rng::new(self.seed ^ (u64::from(i) << 24) ^ 0x484f4c44);
        let n = self.args.holders.min(peers.saturating_sub(1));
        (0..n)
            .map(|j| {
                let p = (self.owner(i) + 1 + j * (peers / (n + 1)).max(1)) % peers;
                let mut have: Vec<u32> = (0..chunks).filter(|_| r.next() & 1 == 1).collect();
                if have.is_empty() {
                    have.push(r.below(u64::from(chunks)) as u32);
                }
                (p, have)
            })
            .collect()
    }
}

/// A request carrying a session token.
fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    with_auth(msg, &bearer(token))
}

/// The `authorization` value for a token, made once per worker rather than per request.
fn bearer(token: &str) -> AsciiMetadataValue {
    format!("Bearer {token}").parse().expect("ascii token")
}

fn with_auth<T>(msg: T, auth: &AsciiMetadataValue) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", auth.clone());
    req
}

type Client = TrackerClient<Channel>;

async fn connect(url: &str) -> anyhow::Result<Client> {
    let ch = Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .initial_connection_window_size(Some(8 << 20))
        .initial_stream_window_size(Some(4 << 20))
        .connect()
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(TrackerClient::new(ch).max_decoding_message_size(64 << 20))
}

/// Registers every user (or logs in when it exists already); returns their tokens.
async fn sessions(w: &World, c: &Client) -> anyhow::Result<Vec<String>> {
    let pw = |u: &str| format!("pw-{u}-load");
    let res: Vec<anyhow::Result<String>> = futures::stream::iter(0..w.args.users.max(1))
        .map(|k| {
            let mut c = c.clone();
            let user = w.user(k);
            async move {
                let creds = pb::Credentials {
                    user: user.clone(),
                    password: pw(&user),
                };
                match c.register(creds.clone()).await {
                    Ok(s) => Ok(s.into_inner().token),
                    Err(e) if e.code() == tonic::Code::AlreadyExists => {
                        Ok(c.login(creds).await?.into_inner().token)
                    }
                    Err(e) => Err(e.into()),
                }
            }
        })
        .buffered(8)
        .collect()
        .await;
    res.into_iter().collect()
}

/// One heartbeat from every peer; returns the interval the tracker asks for.
async fn heartbeat_all(w: &World, c: &Client, tokens: &[String]) -> anyhow::Result<Duration> {
    let users = tokens.len() as u32;
    let res: Vec<anyhow::Result<u32>> = futures::stream::iter(0..w.args.peers)
        .map(|p| {
            let mut c = c.clone();
            let token = tokens[(p % users) as usize].clone();
            let peer_id = w.peer(p).to_string();
            async move {
                let req = pb::HeartbeatRequest {
                    peer_id,
                    // Nobody listens there: locate and search never dial holders.
                    addr: format!("127.0.0.1:{}", 20000 + p % 40000),
                    storage_quota: 0,
                    storage_used: 0,
                };
                Ok(c.heartbeat(authed(req, &token))
                    .await?
                    .into_inner()
                    .interval_ms)
            }
        })
        .buffer_unordered(w.args.populate_concurrency.max(1))
        .collect()
        .await;
    let mut interval = 10_000;
    for r in res {
        interval = r?.min(interval);
    }
    Ok(Duration::from_millis(u64::from(interval.max(100))))
}

/// Announces every file from its owner, then reports the extra holders' chunks.
async fn populate(w: &World, c: &Client, tokens: &[String]) -> anyhow::Result<()> {
    let users = tokens.len() as u32;
    let res: Vec<anyhow::Result<()>> = futures::stream::iter(0..w.total_files())
        .map(|i| {
            let mut c = c.clone();
            let owner = w.owner(i);
            let token = tokens[(owner % users) as usize].clone();
            let m = w.manifest(i);
            async move {
                let chunks = (m.chunk_hashes.len() / 32) as u32;
                let id = w.file_id(&m)?;
                let req = pb::AnnounceRequest {
                    peer_id: w.peer(owner).to_string(),
                    manifest: Some(m),
                    ..Default::default()
                };
                c.announce(authed(req, &token)).await?;
                for (p, have) in w.extra_holdings(i, chunks) {
                    let req = pb::ReportChunksRequest {
                        peer_id: w.peer(p).to_string(),
                        file_id: id.to_string(),
                        kind: pb::HoldingKind::Downloaded as i32,
                        chunks: have,
                    };
                    c.report_chunks(authed(req, &tokens[(p % users) as usize]))
                        .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(w.args.populate_concurrency.max(1))
        .collect()
        .await;
    res.into_iter().collect()
}

/// Latencies of one measurement, and how many requests failed.
#[derive(Default)]
struct Sample {
    micros: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// A closed loop: `concurrency` workers, each sending its next request when the last one
/// answers, for warm-up plus duration; only the requests started after the warm-up count.
/// Ids and the token are formatted before the clock starts: the client shares the cores
/// with the tracker it measures.
async fn measure(w: &World, clients: &[Client], token: &str, targets: &[FileId], op: Op) -> Sample {
    let ids: Arc<Vec<String>> = Arc::new(targets.iter().map(FileId::to_string).collect());
    let auth = bearer(token);
    let start = Instant::now();
    let counted_from = start + w.args.warmup;
    let end = counted_from + w.args.duration;
    let workers = (0..w.args.concurrency.max(1)).map(|k| {
        let mut c = clients[k % clients.len()].clone();
        let auth = auth.clone();
        let targets = ids.clone();
        let seed = w.seed ^ (k as u64) << 32;
        // Each worker is one getter, with its own key (the tracker caches a ticket per key).
        let key = bytes::Bytes::from(common::NodeKey::generate().public_key().to_vec());
        tokio::spawn(async move {
            let mut r = Rng::new(seed);
            let mut s = Sample::default();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let res = match op {
                    Op::Locate | Op::Relocate => {
                        let req = pb::LocateRequest {
                            file_id: targets[r.below(targets.len() as u64) as usize].clone(),
                            have_manifest: op == Op::Relocate,
                            requester_key: key.clone(),
                        };
                        c.locate(with_auth(req, &auth)).await.map(|_| ())
                    }
                    Op::Search => {
                        let q = WORDS[r.below(WORDS.len() as u64) as usize];
                        let req = pb::SearchRequest {
                            query: q.to_string(),
                            ..Default::default()
                        };
                        c.search(with_auth(req, &auth)).await.map(|_| ())
                    }
                };
                if t0 < counted_from {
                    continue;
                }
                match res {
                    Ok(()) => s
                        .micros
                        .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
                    Err(e) => {
                        s.errors += 1;
                        s.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            s
        })
    });
    let mut all = Sample::default();
    for h in futures::future::join_all(workers).await {
        let s = h.expect("worker panicked");
        all.micros.extend(s.micros);
        all.errors += s.errors;
        if all.first_error.is_none() {
            all.first_error = s.first_error;
        }
    }
    all
}

fn percentile_ms(sorted: &[u32], p: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.peers == 0 || (args.files == 0 && args.hot_files == 0) {
        bail!("--peers and --files (or --hot-files) must be at least 1");
    }
    let w = World::new(args);
    let c = connect(&w.args.tracker).await?;
    let t0 = Instant::now();
    let tokens = sessions(&w, &c).await.context("registering users")?;
    let interval = heartbeat_all(&w, &c, &tokens)
        .await
        .context("first heartbeats")?;
    let done = Arc::new(AtomicBool::new(false));
    let beats = {
        let (done, c, tokens, world_args) =
            (done.clone(), c.clone(), tokens.clone(), w.args.clone());
        tokio::spawn(async move {
            let w = World::new(world_args);
            while !done.load(Ordering::Relaxed) {
                tokio::time::sleep(interval).await;
                if let Err(e) = heartbeat_all(&w, &c, &tokens).await {
                    eprintln!("load: heartbeat failed: {e:#}");
                }
            }
        })
    };
    if !w.args.skip_populate {
        populate(&w, &c, &tokens).await.context("populating")?;
    }
    let secs = t0.elapsed().as_secs_f64();
    let files = w.total_files();
    let chunks = u64::from(w.args.files) * u64::from(w.args.chunks)
        + u64::from(w.args.hot_files) * u64::from(w.args.hot_chunks);
    println!(
        "{}",
        serde_json::json!({
            "op": "populate", "files": files, "chunks": chunks, "peers": w.args.peers,
            "users": tokens.len(), "holders_per_file": w.args.holders,
            "seconds": (secs * 100.0).round() / 100.0,
            "files_per_s": (f64::from(files) / secs).round(),
            "skipped": w.args.skip_populate,
        })
    );

    let first = if w.args.hot_files > 0 {
        w.args.files
    } else {
        0
    };
    let targets: Vec<FileId> = (first..w.total_files())
        .take(10_000)
        .map(|i| w.file_id(&w.manifest(i)))
        .collect::<anyhow::Result<_>>()?;
    let mut clients = vec![c.clone()];
    for _ in 1..w.args.connections.max(1) {
        clients.push(connect(&w.args.tracker).await?);
    }
    for op in w.args.ops.clone() {
        let mut s = measure(&w, &clients, &tokens[0], &targets, op).await;
        s.micros.sort_unstable();
        let secs = w.args.duration.as_secs_f64();
        if let Some(e) = &s.first_error {
            eprintln!("load: {op:?}: {} errors, first: {e}", s.errors);
        }
        println!(
            "{}",
            serde_json::json!({
                "op": format!("{op:?}").to_lowercase(),
                "rps": (s.micros.len() as f64 / secs).round(),
                "p50_ms": percentile_ms(&s.micros, 50),
                "p99_ms": percentile_ms(&s.micros, 99),
                "errors": s.errors,
                "requests": s.micros.len(),
                "concurrency": w.args.concurrency,
                "seconds": secs,
            })
        );
    }
    done.store(true, Ordering::Relaxed);
    beats.abort();
    Ok(())
}
