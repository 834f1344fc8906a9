//! Tessera's tracker: the directory of users, peers, files and where every chunk lives.
//! Peers talk to it over gRPC; people and scripts over a JSON REST API on the same port.
//! It stores metadata only, never file bytes.
//!
//! # Layout
//! - [`config`]: the command line ([`config::Cli`]) and the settings, each declared once,
//!   with their precedence (flag > env > file > default).
//! - [`error`]: the one error type, mapped to the wire in `grpc` and `rest::error`.
//! - `app`: `TrackerService`, the domain logic, with the in-memory index and sessions.
//! - `db`: SeaORM entities, the `Store` and the batch writer; nothing else sees SQL.
//! - `replication`: the placement policy and the task table (the planner is in `app`).
//! - `grpc`: the `tracker.v1.Tracker` adapter.
//! - `rest`: the REST adapter (route table, handlers per noun, JSON errors, OpenAPI).
//! - `metrics`: request, transfer and locate counters for `/metrics` and the stats.
//! - `dashboard`: the web page at `GET /`, embedded in the binary.
//! - [`admin`]: what the `tracker migrate` and `tracker user …` commands do.
//! - [`shutdown`]: Ctrl-C / SIGTERM handling.
//! - `serve`: the one port's serving loop, with its connection cap and timeouts.
//! - [`tls`]: optional TLS on the one port (`--tls-cert`/`--tls-key`).
//! - `testing` (feature `testing`): support for the integration tests of the tracker and
//!   the peer.

pub mod admin;
mod app;
pub mod config;
mod dashboard;
mod db;
pub mod error;
mod grpc;
mod metrics;
mod model;
mod replication;
mod rest;
mod serve;
pub mod shutdown;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

pub use app::TrackerService;
pub use config::Config;
pub use error::Error;

/// How long open connections may finish after shutdown starts before they are dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The longest wait between tries of an unavailable database at start.
const START_RETRY_MAX: Duration = Duration::from_secs(10);

/// Runs `attempt` until it succeeds (`Some`), fails for a reason other than an unavailable
/// database (the error), or `shutdown` is cancelled (`None`). While the database is
/// unavailable it logs why, once per try, and tries again after 1 s, doubling up to 10 s:
/// a tracker started before its database, or during an outage, waits for it instead of
/// exiting (so no supervisor's restart limit is spent on an outage), and says so.
///
/// # Errors
/// The first error of `attempt` that is not [`db::is_unavailable`].
pub async fn when_db_up<T, F, Fut>(
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Result<Option<T>, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_secs(1);
    loop {
        match attempt().await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if db::is_unavailable(&e) => {
                tracing::warn!(
                    cause = %e,
                    retry_in_s = delay.as_secs(),
                    "the database is unavailable; the tracker starts once it answers"
                );
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(START_RETRY_MAX);
    }
}

/// Everything the one port serves: gRPC for peers (with the standard health service and
/// server reflection), then every HTTP route from the REST
/// route table (API, operations, dashboard), which is also what the OpenAPI document is
/// generated from. Add routes to that table, not here: a unit test in `rest/openapi.rs`
/// lists the paths this router serves and fails on any the document does not describe.
pub(crate) fn app(svc: TrackerService, shutdown: CancellationToken) -> axum::Router {
    let (reporter, health) = proto::introspect::health();
    tokio::spawn(grpc::report_health(svc.clone(), reporter, shutdown));
    let grpc_routes = tonic::service::Routes::new(grpc::service(svc.clone()))
        .add_service(health)
        .add_service(proto::introspect::reflection(&[grpc::SERVICE]))
        .into_axum_router();
    rest::router(svc.clone())
        .merge(grpc_routes)
        .fallback(rest::not_found)
        // Counts every request, REST and gRPC, under its route template.
        .layer(axum::middleware::from_fn_with_state(
            svc,
            |State(svc): State<TrackerService>, req: Request, next: Next| async move {
                metrics::track(svc.metrics(), req, next).await
            },
        ))
        // Spans name the path only: a query string may carry what a client should never
        // have put there (a token), and logs must not repeat it.
        .layer(TraceLayer::new_for_http().make_span_with(
            |r: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!(
                    "request",
                    method = %r.method(),
                    path = %r.uri().path(),
                    version = ?r.version()
                )
            },
        ))
}

/// Serves gRPC (peers) and HTTP (REST) on the given, already bound listener and runs the
/// replication planner until `shutdown` is cancelled; flushes pending DB writes before
/// returning.
///
/// Connects to the database, applies migrations and loads the state first, waiting (see
/// [`when_db_up`]) while the database is unavailable. With `cfg.tls` set, every
/// connection is TLS.
///
/// # Errors
/// [`Error::Config`] when the TLS files are unusable;
/// [`Error::Database`] when the database cannot be used for a reason waiting does not fix
/// (a bad URL, password or path), or fails to migrate or load;
/// [`Error::Io`] when serving fails.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let tls_config = match &cfg.tls {
        Some(files) => Some(tls::server_config(&files.cert, &files.key)?),
        None => None,
    };
    let started = when_db_up(&shutdown, || async {
        let store = db::Store::connect(&cfg.database_url).await?;
        store.migrate().await?;
        let (svc, writer) = TrackerService::start(cfg.clone(), store.clone()).await?;
        Ok((store, svc, writer))
    })
    .await?;
    let Some((store, svc, writer)) = started else {
        return Ok(());
    };
    // Its own token, so it also stops when serving fails.
    let stop_planner = shutdown.child_token();
    let planner = tokio::spawn(svc.clone().replicate(stop_planner.clone()));
    let app = app(svc.clone(), shutdown.clone());
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound address", e))?;
    tracing::info!(%addr, tls = tls_config.is_some(), "serving gRPC and HTTP");
    let serve = serve::serve(
        listener,
        app,
        tls_config,
        serve::Bounds::from(svc.config()),
        svc.metrics().connections(),
        shutdown.clone(),
    );
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let served = tokio::select! {
        res = serve => res.map_err(|e| Error::io("serving", e)),
        () = grace => {
            tracing::warn!("connections still open after the grace period; closing them");
            Ok(())
        }
    };
    stop_planner.cancel();
    if let Err(e) = planner.await {
        tracing::error!(cause = %e, "the replication planner failed");
    }
    tracing::info!("shutting down: writing pending updates");
    let flushed = svc.flush().await;
    drop(svc);
    // Everything queued is committed; connection tasks that outlived the grace period may
    // still hold a handle, so the writer is stopped rather than awaited.
    writer.abort();
    let _ = writer.await;
    store.close().await;
    served.and(flushed)
}
