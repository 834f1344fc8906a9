//! The harness: start `tracker::run` on `127.0.0.1:0` in-process, talk to it, stop it. What
//! the peer's tests need too (the in-process tracker, bearer requests, throwaway PostgreSQL
//! databases) is in `tracker::testing`; this adds the contract tests' own: the backend
//! switch, the gRPC client and requests with made-up content.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use common::manifest::MIN_CHUNK_SIZE;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tempfile::TempDir;
use tonic::transport::Channel;
use tracker::Config;
use tracker::testing::{InProcessTracker, with_db_name};
pub use tracker::testing::{TempPostgres, authed, postgres_admin_url};

/// Every test finishes within this, or fails.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `f` with the test timeout.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

/// A tracker running in this process.
pub struct TestTracker {
    pub addr: SocketAddr,
    running: InProcessTracker,
}

impl TestTracker {
    /// Starts a tracker with the defaults and its database in `dir`.
    pub async fn start(dir: &TempDir) -> TestTracker {
        Self::start_with(Config::ephemeral(dir.path())).await
    }

    /// Starts a tracker with `cfg`. Under `TRACKER_TEST_BACKEND=postgres` an SQLite URL is
    /// swapped for a PostgreSQL database of its own (see [`backend_url`]).
    ///
    /// These tests drive fake nodes that serve no bytes, so audits are off (a claim counts
    /// at once); audits are tested end to end with real nodes in the peer's suite.
    pub async fn start_with(mut cfg: Config) -> TestTracker {
        cfg.database_url = backend_url(&cfg.database_url).await;
        cfg.audit = false;
        let running = InProcessTracker::start(cfg).await.unwrap();
        TestTracker {
            addr: running.addr,
            running,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A gRPC client (the server is bound already, so this connects at once).
    pub async fn grpc(&self) -> TrackerClient<Channel> {
        TrackerClient::connect(self.url(""))
            .await
            .unwrap()
            .max_decoding_message_size(16 << 20)
    }

    /// Cancels the tracker and waits until it has flushed and stopped.
    pub async fn stop(self) {
        self.running.stop().await.unwrap();
    }
}

/// Registers `user` (password `pw-of-USER`) over gRPC and returns the session token.
pub async fn register(client: &mut TrackerClient<Channel>, user: &str) -> String {
    client
        .register(pb::Credentials {
            user: user.into(),
            password: format!("pw-of-{user}"),
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// A peer id made of one repeated byte.
pub fn peer_id(n: u8) -> String {
    common::PeerId::from_random([n; 16]).to_string()
}

/// A new node's public key, as Locate's `requester_key` and Tasks' `node_key` need one.
pub fn node_key() -> bytes::Bytes {
    common::NodeKey::generate().public_key().to_vec().into()
}

/// 32 bytes that are no Ed25519 public key (no point of the curve has them as its
/// encoding), which the tracker must refuse as a key.
pub fn not_a_key() -> Vec<u8> {
    (0..=u8::MAX)
        .map(|b| vec![b; 32])
        .find(|k| common::TicketVerifier::from_public(k).is_err())
        .expect("some repeated byte is not a point")
}

/// A manifest of `chunks` 1 MiB chunks (the tracker never sees content, so the hashes are
/// made up from `seed`).
pub fn manifest(name: &str, chunks: u32, seed: u8) -> pb::Manifest {
    let hashes: Vec<u8> = (0..chunks * 32)
        .map(|i| seed.wrapping_mul(31) ^ i as u8)
        .collect();
    pb::Manifest {
        name: name.into(),
        size: chunks as u64 * MIN_CHUNK_SIZE as u64,
        sha256: vec![seed; 32].into(),
        chunk_size: MIN_CHUNK_SIZE,
        chunk_hashes: hashes.into(),
    }
}

/// Says peer `peer` is up at `addr`.
pub async fn heartbeat(client: &mut TrackerClient<Channel>, token: &str, peer: &str, addr: &str) {
    client
        .heartbeat(authed(
            pb::HeartbeatRequest {
                peer_id: peer.into(),
                addr: addr.into(),
                storage_quota: 1000,
                storage_used: 10,
            },
            token,
        ))
        .await
        .unwrap();
}

/// Locates `file_id` as the holder of `token`, with a new key; panics on any error status.
pub async fn locate(
    client: &mut TrackerClient<Channel>,
    token: &str,
    file_id: String,
) -> pb::LocateResponse {
    client
        .locate(authed(
            pb::LocateRequest {
                file_id,
                requester_key: node_key(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// Announces a manifest from `peer`; returns the file info.
pub async fn announce(
    client: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    m: pb::Manifest,
) -> pb::FileInfo {
    client
        .announce(authed(
            pb::AnnounceRequest {
                peer_id: peer.into(),
                manifest: Some(m),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap()
        .into_inner()
        .file
        .unwrap()
}

/// Whether every test should run on PostgreSQL (`TRACKER_TEST_BACKEND=postgres`).
///
/// # Panics
/// When PostgreSQL is asked for but `TRACKER_TEST_DATABASE_URL` is not set: a run that
/// claims to test PostgreSQL must not quietly test SQLite.
pub fn postgres_backend() -> Option<String> {
    let wanted = std::env::var("TRACKER_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    if !wanted {
        return None;
    }
    Some(
        postgres_admin_url()
            .expect("TRACKER_TEST_BACKEND=postgres needs TRACKER_TEST_DATABASE_URL"),
    )
}

/// The database a test's tracker uses for `url`: `url` itself, or under
/// `TRACKER_TEST_BACKEND=postgres` and for an SQLite URL, a PostgreSQL database named after
/// that URL (so trackers started on one temp dir, together or one after another, share it),
/// created on first use. Databases of test processes that have ended are dropped first.
pub async fn backend_url(url: &str) -> String {
    let Some(admin) = postgres_backend() else {
        return url.to_string();
    };
    if !url.starts_with("sqlite:") {
        return url.to_string();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    url.hash(&mut h);
    let name = format!("{PG_PREFIX}{}_{:016x}", std::process::id(), h.finish());
    let _guard = PG_SETUP.lock().await;
    drop_stale_databases(&admin).await;
    create_database(&admin, &name).await;
    with_db_name(&admin, &name)
}

/// Names of databases made by [`backend_url`]: the prefix, then the test process's id.
const PG_PREFIX: &str = "tessera_t_";

/// Serialises database creation within this process (PostgreSQL may refuse concurrent
/// `CREATE DATABASE` from one template).
static PG_SETUP: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Creates `name` unless it exists.
async fn create_database(admin: &str, name: &str) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(admin).await.unwrap();
    let exists = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
        ))
        .await
        .unwrap()
        .is_some();
    if !exists {
        db.execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
    }
    db.close().await.unwrap();
}

/// Drops the databases of test processes that are no longer running (a test binary cannot
/// drop its own at exit, so each run cleans up after the earlier ones).
async fn drop_stale_databases(admin: &str) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let db = Database::connect(admin).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{PG_PREFIX}%'"),
        ))
        .await
        .unwrap();
    for row in rows {
        let name: String = row.try_get("", "datname").unwrap();
        // LIKE's `_` matches any character, so other suites' databases (`tessera_test_…`)
        // match too: only this harness's names, with a numeric pid, are ours to drop.
        let Some(rest) = name.strip_prefix(PG_PREFIX) else {
            continue;
        };
        let pid = rest.split('_').next().unwrap_or("");
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        if !alive {
            let _ = db
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }
    db.close().await.unwrap();
}
