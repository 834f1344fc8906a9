//! `GET /api/v1/openapi.json`: the OpenAPI 3 document of the tracker's HTTP surface,
//! generated from the code. The REST routes describe themselves (`#[utoipa::path]` next to
//! each handler, registered through `routes!` in the route table); this module adds what
//! lives elsewhere: the dashboard's three assets, the error schema and the bearer scheme.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// Every error answer: a 4xx for bad input (a 5xx is a bug).
#[derive(Serialize, ToSchema)]
pub struct ErrorJson {
    /// What went wrong, in one line.
    pub error: String,
}

/// What the route table does not describe by itself.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera tracker",
        description = "The tracker's HTTP surface: the REST API for people and scripts, the \
                       dashboard, health and metrics. Peers use gRPC on the same port.",
        license(name = "MIT OR Apache-2.0"),
    ),
    paths(h_dashboard, h_dashboard_script, h_dashboard_style),
    components(schemas(ErrorJson)),
    modifiers(&BearerScheme),
    tags(
        (name = "files", description = "Search files and read chunk maps"),
        (name = "peers", description = "Peers known to the tracker"),
        (name = "sessions", description = "Log in and out"),
        (name = "operations", description = "Health, stats, metrics and this document"),
        (name = "dashboard", description = "The web page and its assets"),
    ),
)]
pub struct ApiDoc;

/// Declares `Authorization: Bearer TOKEN`, used by `DELETE /api/v1/sessions`.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document, rendered once.
static SPEC: LazyLock<String> = LazyLock::new(|| {
    let mut doc = serde_json::to_value(super::openapi()).expect("a document serialises");
    camel_case_links(&mut doc);
    doc.to_string()
});

/// utoipa 5 writes the fields of a response link in snake case (`operation_id`); OpenAPI
/// spells them in camel case, and tools that follow links (schemathesis) need that.
fn camel_case_links(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(Value::as_object_mut))
        .flat_map(|r| r.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (from, to) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(v) = link.remove(from) {
                    link.insert(to.to_string(), v);
                }
            }
        }
    }
}

/// The OpenAPI document of every HTTP route.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "operations",
    responses((status = 200, description = "An OpenAPI 3 document", content_type = "application/json", body = Object)),
)]
pub async fn h_openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], SPEC.as_str()).into_response()
}

// The dashboard serves these itself; the functions below only describe them.

/// The web dashboard: peers, files, replication health and live transfers.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
    ),
)]
#[allow(dead_code)]
fn h_dashboard() {}

/// The dashboard's script.
#[utoipa::path(
    get,
    path = "/dashboard/app.js",
    tag = "dashboard",
    responses(
        (status = 200, description = "The script", content_type = "text/javascript", body = String),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
    ),
)]
#[allow(dead_code)]
fn h_dashboard_script() {}

/// The dashboard's style sheet.
#[utoipa::path(
    get,
    path = "/dashboard/style.css",
    tag = "dashboard",
    responses(
        (status = 200, description = "The style sheet", content_type = "text/css", body = String),
        (status = 304, description = "The client's copy (If-None-Match) is current"),
    ),
)]
#[allow(dead_code)]
fn h_dashboard_style() {}
