//! What this process does, as Prometheus metrics: bytes and chunks in both directions,
//! verification failures, transfers in progress, replication task outcomes and replica
//! storage. The counters live in one process-wide [`NodeMetrics`] (see [`metrics`]), so
//! the node's server, the downloader and the replica runner bump them without being handed
//! a registry; `peer serve --metrics-addr` serves them at `GET /metrics` ([`serve`]).
//!
//! A `peer get` runs in its own process: its downloads are counted there and never reach
//! the node's endpoint, which reports what the node itself serves and replicates.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Which way a transfer goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Direction {
    pub direction: &'static str,
}

/// How a replication task ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

/// The counters and gauges of one process. Cheap to update: each is an atomic.
pub struct NodeMetrics {
    registry: Registry,
    /// Chunk bytes sent to other peers.
    pub uploaded_bytes: Counter,
    /// Verified chunk bytes received, by `get` and by replication.
    pub downloaded_bytes: Counter,
    pub chunks_served: Counter,
    /// Chunks received that passed their SHA-256 and length check.
    pub chunks_fetched: Counter,
    /// Chunks received that failed their SHA-256 or length check.
    pub verification_failures: Counter,
    /// Chunk streams being served (`upload`) and downloads or replica fetches in progress
    /// (`download`).
    pub active_transfers: Family<Direction, Gauge>,
    /// Replication tasks answered, `done` or `failed`.
    pub replication_tasks: Family<Outcome, Counter>,
    pub storage_used: Gauge,
    pub storage_quota: Gauge,
    /// Flooded queries, by what this node did: `received` (every Query call admitted),
    /// `duplicate` (dropped as seen), `forwarded` (messages sent on), `answered` (answers
    /// sent to an origin), `relayed` (times it sent a query on: once per query, more only
    /// when the query came again with more TTL left), `limited` (refused past the sender's
    /// rate).
    pub queries: Family<Outcome, Counter>,
}

impl NodeMetrics {
    fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("tessera_peer"),
            uploaded_bytes: Counter::default(),
            downloaded_bytes: Counter::default(),
            chunks_served: Counter::default(),
            chunks_fetched: Counter::default(),
            verification_failures: Counter::default(),
            active_transfers: Family::default(),
            replication_tasks: Family::default(),
            storage_used: Gauge::default(),
            storage_quota: Gauge::default(),
            queries: Family::default(),
        };
        let r = &mut m.registry;
        r.register_with_unit(
            "uploaded",
            "Chunk bytes sent to other peers",
            Unit::Bytes,
            m.uploaded_bytes.clone(),
        );
        r.register_with_unit(
            "downloaded",
            "Verified chunk bytes received (downloads and replication)",
            Unit::Bytes,
            m.downloaded_bytes.clone(),
        );
        r.register(
            "chunks_served",
            "Chunks sent to other peers",
            m.chunks_served.clone(),
        );
        r.register(
            "chunks_fetched",
            "Chunks received and verified",
            m.chunks_fetched.clone(),
        );
        r.register(
            "verification_failures",
            "Chunks received that failed their SHA-256 or length check",
            m.verification_failures.clone(),
        );
        r.register(
            "active_transfers",
            "Chunk streams being served (upload) and downloads in progress (download)",
            m.active_transfers.clone(),
        );
        r.register(
            "replication_tasks",
            "Replication tasks carried out, by outcome",
            m.replication_tasks.clone(),
        );
        r.register_with_unit(
            "storage_used",
            "Replica storage in use",
            Unit::Bytes,
            m.storage_used.clone(),
        );
        r.register_with_unit(
            "storage_quota",
            "Replica storage offered (--storage-quota)",
            Unit::Bytes,
            m.storage_quota.clone(),
        );
        r.register(
            "queries",
            "Flooded queries: received, duplicate, relayed, forwarded (messages), answered, limited",
            m.queries.clone(),
        );
        for outcome in [
            "received",
            "duplicate",
            "relayed",
            "forwarded",
            "answered",
            "limited",
        ] {
            let _ = m.queries.get_or_create(&Outcome { outcome });
        }
        for direction in ["upload", "download"] {
            let _ = m.active_transfers.get_or_create(&Direction { direction });
        }
        for outcome in ["done", "failed"] {
            let _ = m.replication_tasks.get_or_create(&Outcome { outcome });
        }
        m
    }

    /// The metrics in the text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts one flooded query event (see [`NodeMetrics::queries`]).
    pub fn query(&self, outcome: &'static str) {
        self.queries.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one chunk of `len` bytes sent.
    pub fn chunk_served(&self, len: u64) {
        self.chunks_served.inc();
        self.uploaded_bytes.inc_by(len);
    }

    /// Counts one verified chunk of `len` bytes received.
    pub fn chunk_fetched(&self, len: u64) {
        self.chunks_fetched.inc();
        self.downloaded_bytes.inc_by(len);
    }

    /// Counts one replication task answered.
    pub fn task_done(&self, ok: bool) {
        let outcome = if ok { "done" } else { "failed" };
        self.replication_tasks
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// Counts a transfer as active until the guard drops, however it ends.
    pub fn transfer(&self, direction: &'static str) -> TransferGuard {
        let g = self
            .active_transfers
            .get_or_create(&Direction { direction })
            .clone();
        g.inc();
        TransferGuard(g)
    }
}

/// Keeps one transfer counted in `active_transfers` while it lives.
pub struct TransferGuard(Gauge);

impl Drop for TransferGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

static METRICS: LazyLock<NodeMetrics> = LazyLock::new(NodeMetrics::new);

/// This process's metrics.
pub fn metrics() -> &'static NodeMetrics {
    &METRICS
}

/// Prometheus text 0.0.4, or OpenMetrics when the scraper asks for it.
async fn h_metrics(
    State(storage): State<Storage>,
    headers: axum::http::HeaderMap,
) -> impl IntoResponse {
    let m = metrics();
    let (used, quota) = storage();
    m.storage_used.set(i64::try_from(used).unwrap_or(i64::MAX));
    m.storage_quota
        .set(i64::try_from(quota).unwrap_or(i64::MAX));
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = common::exposition::negotiate(m.encode(), accept);
    (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
}

/// Reads replica storage (used, quota) in bytes at scrape time.
pub type Storage = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Serves `GET /metrics` on an already bound `listener` until `shutdown` is cancelled,
/// reading replica storage from `storage` at each scrape.
///
/// # Errors
/// When the server fails (not when it is shut down).
pub async fn serve(
    listener: TcpListener,
    storage: Storage,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(h_metrics))
        .fallback(|| async { StatusCode::NOT_FOUND })
        .with_state(storage);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// The URL a bound metrics listener answers on (loopback for a wildcard address).
pub fn url(bound: SocketAddr) -> String {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    format!("http://{addr}/metrics")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_metric_with_types() {
        let m = NodeMetrics::new();
        m.chunk_served(100);
        m.chunk_fetched(7);
        m.task_done(false);
        {
            let _g = m.transfer("upload");
            assert!(
                m.encode()
                    .contains("tessera_peer_active_transfers{direction=\"upload\"} 1")
            );
        }
        let text = m.encode();
        for line in [
            "# TYPE tessera_peer_uploaded_bytes counter",
            "tessera_peer_uploaded_bytes_total 100",
            "tessera_peer_downloaded_bytes_total 7",
            "tessera_peer_chunks_served_total 1",
            "tessera_peer_chunks_fetched_total 1",
            "tessera_peer_verification_failures_total 0",
            "tessera_peer_active_transfers{direction=\"upload\"} 0",
            "tessera_peer_active_transfers{direction=\"download\"} 0",
            "tessera_peer_replication_tasks_total{outcome=\"failed\"} 1",
            "tessera_peer_replication_tasks_total{outcome=\"done\"} 0",
            "tessera_peer_storage_used_bytes 0",
            "tessera_peer_storage_quota_bytes 0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn wildcard_addresses_are_scraped_on_loopback() {
        assert_eq!(
            url("0.0.0.0:9100".parse().unwrap()),
            "http://127.0.0.1:9100/metrics"
        );
        assert_eq!(
            url("[::]:9100".parse().unwrap()),
            "http://[::1]:9100/metrics"
        );
    }
}
