//! The REST adapter: JSON over HTTP for people, dashboards and scripts. This file is the
//! route table; handlers live in one module per noun and stay one-liners over
//! [`TrackerService`]. JSON shapes are defined next to their handlers.

mod error;
mod files;
mod health;
mod peers;
mod sessions;

use axum::Router;
use axum::routing::{get, post};

use crate::app::TrackerService;
pub use error::{ApiError, not_found};

/// Every REST route. The caller adds the fallback after merging in the gRPC routes (axum
/// allows one fallback per router).
pub fn router(svc: TrackerService) -> Router {
    Router::new()
        .route("/healthz", get(health::h_health))
        .route("/api/v1/stats", get(health::h_stats))
        .route("/api/v1/files", get(files::h_files_search))
        .route("/api/v1/files/{id}", get(files::h_file_get))
        .route("/api/v1/peers", get(peers::h_peers_list))
        .route(
            "/api/v1/sessions",
            post(sessions::h_session_create).delete(sessions::h_session_delete),
        )
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(svc)
}

/// RFC 3339 (UTC, milliseconds) for a Unix-ms timestamp.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
