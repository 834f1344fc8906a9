//! `GET /api/v1/openapi.json`: the OpenAPI 3 document of the tracker's HTTP surface,
//! generated from the code. Every route describes itself (`#[utoipa::path]` next to each
//! handler, the dashboard's included, registered through `routes!` in the route table);
//! this module adds what no handler owns: the title, the tags, the error schema and the
//! bearer scheme.

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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    /// What the tracker serves on purpose without describing it here, as (method, path);
    /// `*` is every method. The gRPC service is described by its `.proto` file.
    const NOT_DESCRIBED: &[(&str, &str)] = &[
        ("*", "/tracker.v1.Tracker/{*rest}"),
        ("*", "/grpc.health.v1.Health/{*rest}"),
        ("*", "/grpc.reflection.v1.ServerReflection/{*rest}"),
    ];

    const METHODS: &[&str] = &[
        "get", "head", "delete", "options", "patch", "post", "put", "trace", "connect",
    ];

    /// The (method, path) pairs a router serves, read from its `Debug` form: axum has no
    /// other way to list routes. The matched-path routes come before `fallback_router`; a
    /// method router shows each method as `None` or a handler, a whole service (`Route`)
    /// takes every method. If axum changes that form, this finds nothing and the test fails.
    fn served(router: &axum::Router) -> BTreeSet<(String, String)> {
        let dbg = format!("{router:?}");
        let own = dbg.split("fallback_router:").next().unwrap_or_default();
        let (routes, paths) = own.split_once("node: Node { paths: {").unwrap_or_default();
        let path_of = |id: &str| -> String {
            let key = format!("RouteId({id}): \"");
            let start = paths.find(&key).map(|i| i + key.len());
            let start = start.unwrap_or_else(|| panic!("no path for route {id} in {own}"));
            let len = paths[start..].find('"').expect("a closing quote");
            paths[start..start + len].to_string()
        };
        let mut out = BTreeSet::new();
        for endpoint in routes.split("RouteId(").skip(1) {
            let (id, rest) = endpoint.split_once("): ").expect("RouteId(N): endpoint");
            let path = path_of(id);
            if rest.starts_with("Route(") {
                out.insert(("*".to_string(), path));
                continue;
            }
            for m in METHODS {
                let handled = rest
                    .split_once(&format!(" {m}: "))
                    .is_some_and(|(_, v)| !v.starts_with("None"));
                if handled {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    fn described() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(super::super::openapi()).expect("a document serialises");
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in METHODS {
                if item.get(*m).is_some_and(Value::is_object) {
                    out.insert((m.to_string(), path.clone()));
                }
            }
        }
        out
    }

    /// The router and the document are built from one route table, but a route added with
    /// `.route`, `.merge` or `.nest` anywhere on the way to the listener would be served
    /// undescribed; this reads what the assembled router really serves.
    #[tokio::test]
    async fn should_describe_every_route_the_tracker_serves_and_serve_every_described_one() {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let cfg = crate::Config::ephemeral(dir.path());
        let store = crate::db::Store::connect(&cfg.database_url)
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let (svc, writer) = crate::TrackerService::start(cfg, store.clone())
            .await
            .expect("service");
        let mut served = served(&crate::app(svc, tokio_util::sync::CancellationToken::new()));
        for (m, p) in NOT_DESCRIBED {
            let pair = (m.to_string(), p.to_string());
            assert!(served.remove(&pair), "{m} {p} is listed but not served");
        }
        let described = described();
        let undescribed: Vec<_> = served.difference(&described).collect();
        assert!(
            undescribed.is_empty(),
            "served, not described: {undescribed:?}"
        );
        let unserved: Vec<_> = described.difference(&served).collect();
        assert!(unserved.is_empty(), "described, not served: {unserved:?}");
        assert!(
            served.contains(&("get".to_string(), "/".to_string()))
                && served.contains(&("delete".to_string(), "/api/v1/sessions".to_string())),
            "{served:?}"
        );
        writer.abort();
        store.close().await;
    }
}
