//! The REST adapter: JSON over HTTP for people, dashboards and scripts. This file is the
//! route table; handlers live in one module per noun and stay one-liners over
//! [`TrackerService`]. JSON shapes are defined next to their handlers.
//!
//! Each handler carries its method, path, parameters and answers in `#[utoipa::path]`, and
//! `routes!` registers it from there: the router and the OpenAPI document are built from
//! one list, so a route cannot be served without being described. The dashboard's assets
//! are registered here too. A unit test in `openapi.rs` reads the paths the assembled
//! router (`crate::app`) really serves and fails on any that the document lacks.

mod error;
mod files;
mod health;
mod openapi;
mod peers;
mod sessions;

use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::TrackerService;
use crate::dashboard;
pub use error::{ApiError, not_found};

/// The route table, with the description of every route.
fn api() -> OpenApiRouter<TrackerService> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(health::h_health))
        .routes(routes!(health::h_metrics))
        .routes(routes!(health::h_stats))
        .routes(routes!(openapi::h_openapi))
        .routes(routes!(files::h_files_search))
        .routes(routes!(files::h_file_get))
        .routes(routes!(files::h_file_listing))
        .routes(routes!(peers::h_peers_list))
        .routes(routes!(
            sessions::h_session_create,
            sessions::h_session_delete
        ))
        .routes(routes!(dashboard::h_index))
        .routes(routes!(dashboard::h_script))
        .routes(routes!(dashboard::h_style))
}

/// Every HTTP route but gRPC's: the REST API, operations and the dashboard. The caller
/// adds the fallback after merging in the gRPC routes (axum allows one fallback per router).
pub fn router(svc: TrackerService) -> Router {
    let (router, _) = api().split_for_parts();
    router
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(svc)
}

/// The OpenAPI document of every HTTP route (REST, operations and the dashboard).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().split_for_parts().1
}

/// RFC 3339 (UTC, milliseconds) for a Unix-ms timestamp.
fn rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}
