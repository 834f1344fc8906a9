//! The tracker's own counters, for `GET /metrics` (Prometheus) and the dashboard's live
//! numbers in `GET /api/v1/stats`.
//!
//! [`Metrics`] holds what only grows or only lives in time: requests by route and status,
//! their latency, chunks and bytes reported by getters and replication, `Locate` calls, and
//! a 10-second window of recent transfers. Levels (peers, files, chunks, tasks) are not
//! kept here: they are read from the service's stats at scrape time, so they cannot drift.
//! Counters live in memory and start from zero with the process.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use common::FileId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How far back "recent" reaches for active transfers and throughput.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One request as counted: the protocol, the route template and the outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `http` or `grpc`.
    protocol: &'static str,
    /// The matched route template (`/api/v1/files/{id}`) or gRPC method path, never the
    /// raw URI, so the number of series stays bounded.
    route: String,
    /// The HTTP status, or for gRPC the `grpc-status` code.
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    protocol: &'static str,
    route: String,
}

/// Where reported chunks come from.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Source {
    /// A getter's `ReportChunks`.
    Report,
    /// A replica fetch confirmed with `CompleteTask`.
    Replication,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuditLabels {
    /// `passed`, `bad_data`, `not_held`, `stalled`, `unreachable` or `busy`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

impl Source {
    fn labels(self) -> SourceLabels {
        SourceLabels {
            source: match self {
                Source::Report => "report",
                Source::Replication => "replication",
            },
        }
    }
}

/// Why the tracker closed a connection itself.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CloseLabels {
    /// `header_timeout`, `idle` or `stalled`.
    reason: &'static str,
}

/// The serving loop's counters; clones share them, so the loop holds one and `/metrics`
/// renders the same.
#[derive(Clone, Default)]
pub struct Connections {
    open: Gauge,
    refused: Counter,
    closed: Family<CloseLabels, Counter>,
}

impl Connections {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "connections_open",
            "Connections being served",
            self.open.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed at once because --max-connections were open",
            self.refused.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections the tracker closed itself, by reason",
            self.closed.clone(),
        );
    }

    pub fn opened(&self) {
        self.open.inc();
    }

    pub fn ended(&self) {
        self.open.dec();
    }

    pub fn refused(&self) {
        self.refused.inc();
    }

    pub fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&CloseLabels { reason }).inc();
    }
}

/// Who located which file lately, and bytes reported per second of the last window.
#[derive(Default)]
struct Activity {
    /// (user, file) → last `Locate`. A getter calls it every few seconds while it runs.
    locates: HashMap<(i32, FileId), Instant>,
    /// (second since `start`, bytes reported in it), oldest first.
    bytes: VecDeque<(u64, u64)>,
}

impl Activity {
    fn prune(&mut self, now: Instant, start: Instant) {
        self.locates
            .retain(|_, at| now.saturating_duration_since(*at) < WINDOW);
        let first = second(now, start).saturating_sub(WINDOW.as_secs() - 1);
        while self.bytes.front().is_some_and(|&(s, _)| s < first) {
            self.bytes.pop_front();
        }
    }
}

fn second(now: Instant, start: Instant) -> u64 {
    now.saturating_duration_since(start).as_secs()
}

/// Counters the service keeps; see the module doc.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    chunks: Family<SourceLabels, Counter>,
    bytes: Family<SourceLabels, Counter>,
    locates: Counter,
    connections: Connections,
    audits: Family<AuditLabels, Counter>,
    start: Instant,
    activity: Mutex<Activity>,
}

/// What is read from the service at scrape time and rendered as gauges (the service's
/// stats implement it, so this module need not know the service).
pub trait Levels {
    /// Name (without the `tessera_` prefix), help and value of each gauge.
    fn gauges(&self) -> Vec<(&'static str, &'static str, u64)>;
}

/// Live transfer numbers for the stats endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Transfers {
    /// Distinct (user, file) pairs that called `Locate` in the last 10 s and have not
    /// reported the whole file since.
    pub active: u64,
    /// Bytes of verified chunks reported in the last 10 s, divided by 10.
    pub bytes_per_sec: u64,
    pub bytes_total: u64,
    pub chunks_total: u64,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to ~16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let chunks = Family::<SourceLabels, Counter>::default();
        let bytes = Family::<SourceLabels, Counter>::default();
        let locates = Counter::default();
        let connections = Connections::default();
        connections.register(&mut registry);
        let audits = Family::<AuditLabels, Counter>::default();
        registry.register(
            "audits",
            "Audits of holders' claims (one chunk fetched and checked), by outcome",
            audits.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by protocol, route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request (to the response head for streams), by route",
            latency.clone(),
        );
        registry.register(
            "chunks_reported",
            "Verified chunks newly reported held, by getters (report) or replication",
            chunks.clone(),
        );
        registry.register(
            "bytes_reported",
            "Bytes of the chunks counted in tessera_chunks_reported_total",
            bytes.clone(),
        );
        registry.register(
            "locates",
            "Locate calls answered with a chunk map",
            locates.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            chunks,
            bytes,
            locates,
            connections,
            audits,
            start: Instant::now(),
            activity: Mutex::new(Activity::default()),
        }
    }

    fn activity(&self) -> std::sync::MutexGuard<'_, Activity> {
        self.activity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one answered request.
    fn observe_request(
        &self,
        protocol: &'static str,
        route: String,
        status: String,
        took: Duration,
    ) {
        self.latency
            .get_or_create(&RouteLabels {
                protocol,
                route: route.clone(),
            })
            .observe(took.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                protocol,
                route,
                status,
            })
            .inc();
    }

    /// Counts one audit by its outcome.
    pub fn audited(&self, outcome: &'static str) {
        self.audits.get_or_create(&AuditLabels { outcome }).inc();
    }

    /// The serving loop's counters.
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// Counts a `Locate` by `user` of `file`.
    pub fn located(&self, user: i32, file: FileId) {
        self.locates.inc();
        let now = Instant::now();
        let mut a = self.activity();
        a.prune(now, self.start);
        a.locates.insert((user, file), now);
    }

    /// `user` has all of `file` now: it stops counting as an active transfer at once, not
    /// when its last `Locate` leaves the window (a getter re-Locates every second until it
    /// reports the whole file, so a transfer still under way comes back within a second).
    pub fn transfer_ended(&self, user: i32, file: FileId) {
        self.activity().locates.remove(&(user, file));
    }

    /// Counts chunks newly held, with their total size.
    pub fn chunks_reported(&self, source: Source, chunks: u64, bytes: u64) {
        if chunks == 0 {
            return;
        }
        self.chunks.get_or_create(&source.labels()).inc_by(chunks);
        self.bytes.get_or_create(&source.labels()).inc_by(bytes);
        let now = Instant::now();
        let sec = second(now, self.start);
        let mut a = self.activity();
        a.prune(now, self.start);
        match a.bytes.back_mut() {
            Some((s, b)) if *s == sec => *b += bytes,
            _ => a.bytes.push_back((sec, bytes)),
        }
    }

    /// The live numbers of the last [`WINDOW`] and the totals since start.
    pub fn transfers(&self) -> Transfers {
        let sum = |f: &Family<SourceLabels, Counter>| {
            [Source::Report, Source::Replication]
                .iter()
                .map(|s| f.get(&s.labels()).map_or(0, |c| c.get()))
                .sum::<u64>()
        };
        let now = Instant::now();
        let mut a = self.activity();
        a.prune(now, self.start);
        let recent: u64 = a.bytes.iter().map(|&(_, b)| b).sum();
        Transfers {
            active: a.locates.len() as u64,
            bytes_per_sec: recent / WINDOW.as_secs(),
            bytes_total: sum(&self.bytes),
            chunks_total: sum(&self.chunks),
        }
    }

    /// The counters and, as gauges, the `levels`, in the OpenMetrics text format (which
    /// Prometheus scrapes natively).
    pub fn render(&self, levels: &impl Levels) -> String {
        let mut gauges = Registry::with_prefix("tessera");
        for (name, help, value) in levels.gauges() {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(value).unwrap_or(i64::MAX));
            gauges.register(name, help, g);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &gauges);
        let _ = encode_registry(&mut out, &self.registry);
        let _ = encode_eof(&mut out);
        out
    }
}

/// The label for a request's route: the matched template, or for gRPC the method path
/// (tonic routes a whole service under one wildcard). Unknown gRPC methods share one label.
fn route_label(req: &Request, grpc: bool) -> String {
    match req.extensions().get::<MatchedPath>() {
        Some(m) if grpc && m.as_str().ends_with("{*rest}") => req.uri().path().to_string(),
        Some(m) => m.as_str().to_string(),
        None => "unmatched".to_string(),
    }
}

fn grpc_status(headers: &HeaderMap) -> String {
    // Tonic sends errors as trailers-only responses (the status is a header); a success
    // carries it in the trailers, after the body.
    headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string()
}

/// A middleware that counts every request, REST and gRPC alike, and times it. The router
/// passes the service's `metrics`.
pub async fn track(metrics: &Metrics, req: Request, next: Next) -> Response {
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    let mut route = route_label(&req, grpc);
    let started = Instant::now();
    let resp = next.run(req).await;
    let took = started.elapsed();
    let (protocol, status) = if grpc {
        let status = grpc_status(resp.headers());
        // Unknown methods would otherwise make one series each.
        if status == "12" {
            route = "unknown gRPC method".to_string();
        }
        ("grpc", status)
    } else {
        ("http", resp.status().as_u16().to_string())
    };
    metrics.observe_request(protocol, route, status, took);
    resp
}

/// Reads one HTTP request counter, for the unit tests.
#[cfg(test)]
impl Metrics {
    fn requests_of(&self, route: &str, status: &str) -> u64 {
        self.requests
            .get(&RequestLabels {
                protocol: "http",
                route: route.into(),
                status: status.into(),
            })
            .map_or(0, |c| c.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(n: u8) -> FileId {
        FileId(common::Sha256Digest([n; 32]))
    }

    #[test]
    fn counts_distinct_locates_and_bytes_in_the_window() {
        let m = Metrics::new();
        m.located(1, file(1));
        m.located(1, file(1));
        m.located(2, file(1));
        m.located(1, file(2));
        m.chunks_reported(Source::Report, 2, 4 << 20);
        m.chunks_reported(Source::Replication, 1, 1 << 20);
        m.chunks_reported(Source::Report, 0, 0);
        let t = m.transfers();
        assert_eq!(t.active, 3);
        assert_eq!(t.chunks_total, 3);
        assert_eq!(t.bytes_total, 5 << 20);
        assert_eq!(t.bytes_per_sec, (5 << 20) / 10);
    }

    #[test]
    fn a_transfer_ends_when_its_getter_has_the_whole_file() {
        let m = Metrics::new();
        m.located(1, file(1));
        m.located(2, file(1));
        m.transfer_ended(1, file(1));
        assert_eq!(m.transfers().active, 1, "user 2 is still getting it");
        m.transfer_ended(1, file(2));
        assert_eq!(m.transfers().active, 1, "nothing to end");
        m.transfer_ended(2, file(1));
        assert_eq!(m.transfers().active, 0);
    }

    #[test]
    fn forgets_what_is_older_than_the_window() {
        let m = Metrics::new();
        let now = Instant::now();
        let old = now - WINDOW - Duration::from_millis(1);
        {
            let mut a = m.activity();
            a.locates.insert((1, file(1)), old);
            a.bytes.push_back((0, 100));
        }
        let start = now - Duration::from_secs(30);
        let mut a = m.activity();
        a.prune(now, start);
        assert!(a.locates.is_empty());
        assert!(a.bytes.is_empty());
    }

    #[test]
    fn renders_levels_and_counters_as_openmetrics() {
        let m = Metrics::new();
        m.observe_request(
            "http",
            "/api/v1/files/{id}".into(),
            "404".into(),
            Duration::from_millis(3),
        );
        assert_eq!(m.requests_of("/api/v1/files/{id}", "404"), 1);
        struct Up(u64);
        impl Levels for Up {
            fn gauges(&self) -> Vec<(&'static str, &'static str, u64)> {
                vec![("peers_up", "Peers whose last heartbeat is recent", self.0)]
            }
        }
        let text = m.render(&Up(2));
        assert!(text.contains("# TYPE tessera_peers_up gauge\ntessera_peers_up 2\n"));
        assert!(text.contains(
            "tessera_requests_total{protocol=\"http\",route=\"/api/v1/files/{id}\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "tessera_request_duration_seconds_bucket{le=\"0.004\",protocol=\"http\",route=\"/api/v1/files/{id}\"} 1"
        ), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
