//! Test support shared by the integration tests of the tracker and of the peer, compiled
//! only with the cargo feature `testing` (the two test suites enable it through their
//! dev-dependency on this crate; no build of the binaries does). It owns what both suites
//! need and would otherwise write twice: a tracker served by the test process, test
//! logging, bearer-token requests, throwaway PostgreSQL databases, and the reader of the
//! packaging files. Each suite keeps its own harness on top (`tracker/tests/common` for
//! the contract tests, `peer/tests/integration/common.rs` for the end-to-end tests).
//!
//! # Layout
//! - [`InProcessTracker`]: `run` spawned on a listener the test bound.
//! - [`init_logging`], [`authed`].
//! - [`TempPostgres`], [`postgres_admin_url`]: a fresh database under
//!   `TRACKER_TEST_DATABASE_URL`.
//! - [`packaging`]: the commands `docker-compose.yml` and the systemd units run.

pub mod packaging;

use std::net::SocketAddr;
use std::sync::Once;

use sea_orm::{ConnectionTrait, Database};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, Error};

/// Logs to the test's captured output, filtered by `RUST_LOG` (default `warn`); the first
/// call in a test process sets it up, later ones do nothing.
pub fn init_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init();
    });
}

/// A tracker served by this process: [`crate::run`] spawned on a listener the test bound
/// (`127.0.0.1:0`, or the address of a stopped one to start it again). Dropping it cancels
/// the tracker without waiting, so a failing test leaves nothing serving.
pub struct InProcessTracker {
    /// Where it serves gRPC and HTTP.
    pub addr: SocketAddr,
    token: CancellationToken,
    /// Taken by [`InProcessTracker::stop`].
    handle: Option<JoinHandle<Result<(), Error>>>,
}

impl InProcessTracker {
    /// Serves `cfg` on a fresh port of 127.0.0.1.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(cfg: Config) -> std::io::Result<Self> {
        Self::serve(cfg, TcpListener::bind("127.0.0.1:0").await?)
    }

    /// Serves `cfg` on `listener`. A tracker that fails says why on stderr at once, so the
    /// reason shows even when the test never stops it.
    ///
    /// # Errors
    /// When the listener has no local address.
    pub fn serve(cfg: Config, listener: TcpListener) -> std::io::Result<Self> {
        init_logging();
        let addr = listener.local_addr()?;
        let token = CancellationToken::new();
        let run = crate::run(cfg, listener, token.child_token());
        let handle = tokio::spawn(async move {
            let res = run.await;
            if let Err(e) = &res {
                eprintln!("the tracker stopped: {e:#}");
            }
            res
        });
        Ok(Self {
            addr,
            token,
            handle: Some(handle),
        })
    }

    /// Cancels the tracker and waits until it has flushed its writes and closed its port.
    ///
    /// # Errors
    /// What [`crate::run`] returned.
    ///
    /// # Panics
    /// When the tracker's task panicked.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.token.cancel();
        match self.handle.take() {
            Some(h) => h.await.expect("the tracker task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for InProcessTracker {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A request carrying the session token `token`, as a signed-in client sends it.
///
/// # Panics
/// When `token` cannot be a header value (a token never has such bytes).
pub fn authed<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    let value = format!("Bearer {token}")
        .parse()
        .expect("a token is printable ASCII");
    req.metadata_mut().insert("authorization", value);
    req
}

/// The PostgreSQL server tests may create databases on: `TRACKER_TEST_DATABASE_URL` when it
/// names one. Tests that need PostgreSQL skip without it.
pub fn postgres_admin_url() -> Option<String> {
    std::env::var("TRACKER_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

/// `admin` (a PostgreSQL URL) with its database name replaced by `name`.
pub fn with_db_name(admin: &str, name: &str) -> String {
    let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
    format!("{base}/{name}")
}

/// A freshly created PostgreSQL database, dropped by [`TempPostgres::drop_db`].
pub struct TempPostgres {
    admin_url: String,
    pub name: String,
    /// The URL to give a tracker.
    pub url: String,
}

impl TempPostgres {
    /// Creates a database of its own (named after this process and the time) on the server
    /// of `admin_url`.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn create(admin_url: &str) -> TempPostgres {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos();
        let name = format!("tessera_test_{}_{nanos}", std::process::id());
        admin_execute(admin_url, &format!("CREATE DATABASE {name}")).await;
        TempPostgres {
            admin_url: admin_url.into(),
            url: with_db_name(admin_url, &name),
            name,
        }
    }

    /// Drops the database, closing whatever connections are still open on it.
    ///
    /// # Panics
    /// When the server refuses.
    pub async fn drop_db(self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        admin_execute(&self.admin_url, &sql).await;
    }
}

/// Runs one statement on the server of `admin_url`.
async fn admin_execute(admin_url: &str, sql: &str) {
    let db = Database::connect(admin_url)
        .await
        .expect("connecting to TRACKER_TEST_DATABASE_URL");
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await.expect("closing the admin connection");
}
