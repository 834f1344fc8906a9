//! `/healthz` (does the database answer?) and `/api/v1/stats` (counters for dashboards).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;

use super::ApiError;
use crate::app::TrackerService;

pub async fn h_health(State(svc): State<TrackerService>) -> Response {
    match svc.health().await {
        Ok(()) => Json(json!({ "status": "ok" })).into_response(),
        Err(e) => {
            tracing::warn!(cause = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable", "error": "database unavailable" })),
            )
                .into_response()
        }
    }
}

/// `GET /api/v1/stats`.
#[derive(Serialize)]
pub struct StatsJson {
    users: u64,
    peers_up: u64,
    peers_down: u64,
    files: u64,
    chunks: u64,
    under_replicated_chunks: u64,
    pending_tasks: u64,
    delivered_tasks: u64,
    replication: u32,
}

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
    }))
}
