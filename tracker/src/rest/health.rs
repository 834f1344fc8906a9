//! Operations: `/healthz` (does the database answer?), `/api/v1/stats` (counters for
//! dashboards) and `/metrics` (Prometheus).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::app::TrackerService;

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct HealthJson {
    /// `ok`, or `unavailable` with an `error`.
    #[schema(example = "ok")]
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// Whether the tracker and its database answer.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = HealthJson),
        (status = 503, description = "The database does not answer", body = HealthJson),
    ),
)]
pub async fn h_health(State(svc): State<TrackerService>) -> Response {
    match svc.health().await {
        Ok(()) => Json(HealthJson {
            status: "ok",
            error: None,
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(cause = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(HealthJson {
                    status: "unavailable",
                    error: Some(crate::error::DB_UNAVAILABLE),
                }),
            )
                .into_response()
        }
    }
}

/// `GET /api/v1/stats`.
#[derive(Serialize, ToSchema)]
pub struct StatsJson {
    users: u64,
    /// Peers whose last heartbeat is younger than the peer timeout.
    peers_up: u64,
    peers_down: u64,
    files: u64,
    chunks: u64,
    /// Chunks with fewer live copies than `replication`.
    under_replicated_chunks: u64,
    /// Tasks queued or delivered: replication work and waiting gets (`peer get --wait`).
    pending_tasks: u64,
    /// Of those, delivered and not yet completed.
    delivered_tasks: u64,
    /// Live copies wanted of every chunk.
    replication: u32,
    /// The target as far as it can be met now: `replication`, or the number of serving
    /// peers that can hold copies (holders, and peers with a storage quota) when fewer.
    reachable_replication: u32,
    /// `reachable_replication < replication`: `under_replicated_chunks` cannot reach 0
    /// until more peers can hold copies.
    unreachable_target: bool,
    /// Chunks with fewer live copies than `reachable_replication`: what replication can
    /// still fix (equal to `under_replicated_chunks` when the target is reachable).
    under_reachable_chunks: u64,
    /// Distinct (user, file) pairs that asked where a file's chunks are in the last 10 s
    /// and have not reported holding all of it since.
    active_transfers: u64,
    /// Bytes of verified chunks reported held in the last 10 s, divided by 10.
    transfer_bytes_per_sec: u64,
    /// Bytes of verified chunks reported held (downloads and replication) since the
    /// tracker started.
    bytes_transferred_total: u64,
    chunks_transferred_total: u64,
}

/// Counters over users, peers, files, replication health and transfers.
#[utoipa::path(
    get,
    path = "/api/v1/stats",
    tag = "operations",
    responses((status = 200, description = "The counters", body = StatsJson)),
)]
pub async fn h_stats(State(svc): State<TrackerService>) -> Result<Json<StatsJson>, ApiError> {
    let s = svc.stats().await?;
    Ok(Json(StatsJson {
        users: s.users,
        peers_up: s.peers_up,
        peers_down: s.peers_down,
        files: s.files,
        chunks: s.chunks,
        under_replicated_chunks: s.under_replicated_chunks,
        pending_tasks: s.pending_tasks,
        delivered_tasks: s.delivered_tasks,
        replication: s.replication,
        reachable_replication: s.reachable_replication,
        unreachable_target: s.unreachable_target,
        under_reachable_chunks: s.under_reachable_chunks,
        active_transfers: s.active_transfers,
        transfer_bytes_per_sec: s.transfer_bytes_per_sec,
        bytes_transferred_total: s.bytes_transferred_total,
        chunks_transferred_total: s.chunks_transferred_total,
    }))
}

/// Prometheus metrics: levels (peers, files, chunks, replication) and counters (requests
/// by route and status, latency, reported chunks and bytes, locates).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4; OpenMetrics 1.0 when the \
            `Accept` header prefers `application/openmetrics-text` (as Prometheus's does)",
         content(
             (String = "text/plain"),
             (String = "application/openmetrics-text"),
         )),
    ),
)]
pub async fn h_metrics(
    State(svc): State<TrackerService>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let stats = svc.stats().await?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, body) = common::exposition::negotiate(svc.metrics().render(&stats), accept);
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
