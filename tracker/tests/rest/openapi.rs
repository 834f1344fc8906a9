//! `GET /api/v1/openapi.json`: the document describes every route of docs/reference.md, every
//! route it describes is served (and no other method on its paths), and every 4xx it
//! describes is the `{error}` schema.
//!
//! The other direction, that nothing is served undescribed, is the unit test in
//! `tracker/src/rest/openapi.rs`: it lists the routes of the assembled router itself.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{TestTracker, within};

/// The HTTP surface docs/reference.md documents, plus the dashboard's assets.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/api/v1/files"),
    ("get", "/api/v1/files/{id}"),
    ("get", "/api/v1/files/{id}/listing"),
    ("get", "/api/v1/peers"),
    ("get", "/api/v1/stats"),
    ("post", "/api/v1/sessions"),
    ("delete", "/api/v1/sessions"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/metrics"),
    ("get", "/"),
    ("get", "/dashboard/app.js"),
    ("get", "/dashboard/style.css"),
];

const METHODS: &[&str] = &["get", "post", "put", "delete", "patch"];

async fn spec(t: &TestTracker) -> Value {
    let r = reqwest::get(t.url("/api/v1/openapi.json")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.unwrap()
}

/// Every (method, path) the document describes.
fn operations(spec: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                out.push((m.to_string(), path.clone()));
            }
        }
    }
    out
}

/// Whether a response is the router's answer for a route it does not have.
async fn is_unrouted(r: reqwest::Response) -> bool {
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    (status == StatusCode::NOT_FOUND && body == json!({"error": "not found"}))
        || status == StatusCode::METHOD_NOT_ALLOWED
}

async fn call(t: &TestTracker, method: &str, path: &str) -> reqwest::Response {
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
    // A path parameter that is well formed but names nothing.
    let path = path.replace("{id}", "0123456789abcdef");
    reqwest::Client::new()
        .request(method, t.url(&path))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_describe_every_route_of_the_contract() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let spec = spec(&t).await;
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        let ops = operations(&spec);
        for (m, p) in CONTRACT {
            assert!(
                ops.contains(&(m.to_string(), p.to_string())),
                "{m} {p} is not in the OpenAPI document"
            );
        }

        let search = &spec["paths"]["/api/v1/files"]["get"]["parameters"];
        let names: Vec<&str> = search
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["q", "type", "limit", "offset"]);
        let id = &spec["paths"]["/api/v1/files/{id}"]["get"]["parameters"][0];
        assert_eq!(
            (id["name"].as_str(), id["in"].as_str()),
            (Some("id"), Some("path"))
        );
        let login = &spec["paths"]["/api/v1/sessions"]["post"]["requestBody"];
        assert_eq!(
            login["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Login"
        );
        // The search links to each file's chunk map, by an operation id that exists.
        let link =
            &spec["paths"]["/api/v1/files"]["get"]["responses"]["200"]["links"]["first_file"];
        assert_eq!(
            link["operationId"],
            spec["paths"]["/api/v1/files/{id}"]["get"]["operationId"]
        );
        assert_eq!(link["parameters"]["id"], "$response.body#/items/0/id");
        let metrics = &spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
        assert!(
            metrics.get("application/openmetrics-text").is_some()
                && metrics.get("text/plain").is_some(),
            "{metrics}"
        );
        let listing =
            &spec["paths"]["/api/v1/files/{id}/listing"]["get"]["responses"]["200"]["content"];
        assert!(
            listing.get("text/plain; charset=utf-8").is_some(),
            "{listing}"
        );
        let kinds = &spec["components"]["schemas"]["FileType"]["enum"];
        assert!(
            kinds.as_array().unwrap().contains(&json!("collection")),
            "{kinds}"
        );
        let page = &spec["paths"]["/"]["get"]["responses"]["200"]["content"];
        assert!(page.get("text/html").is_some(), "{page}");

        // Every error answer the document names is `{error}`.
        let error = &spec["components"]["schemas"]["ErrorJson"];
        assert_eq!(error["required"], json!(["error"]));
        let mut errors = 0;
        for (m, p) in &ops {
            for (status, resp) in spec["paths"][p][m]["responses"].as_object().unwrap() {
                if status.starts_with('4') {
                    errors += 1;
                    assert_eq!(
                        resp["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorJson",
                        "{m} {p} {status}"
                    );
                }
            }
        }
        assert!(errors >= 7, "only {errors} error answers described");
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_serve_exactly_the_routes_it_describes() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let spec = spec(&t).await;
        let ops = operations(&spec);
        assert!(ops.len() >= CONTRACT.len());
        for (m, p) in &ops {
            let r = call(&t, m, p).await;
            let status = r.status().as_u16().to_string();
            let documented = spec["paths"][p][m]["responses"].get(&status).is_some();
            assert!(documented, "{m} {p} answered an undocumented {status}");
            assert!(!is_unrouted(r).await, "{m} {p} is described but not served");
        }
        // No other method is served on a described path.
        for p in spec["paths"].as_object().unwrap().keys() {
            for m in METHODS {
                if ops.contains(&(m.to_string(), p.clone())) {
                    continue;
                }
                let r = call(&t, m, p).await;
                assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} {p}");
                let body: Value = r.json().await.unwrap();
                assert!(body["error"].is_string(), "{m} {p}: {body}");
            }
        }
        // Nothing is served next to the described paths.
        for p in [
            "/api",
            "/api/v1",
            "/api/v1/",
            "/api/v1/users",
            "/api/v1/sessions/x",
            "/api/v1/files/0123456789abcdef/chunks",
            "/dashboard",
            "/dashboard/",
            "/openapi.json",
            "/metrics/x",
        ] {
            assert!(
                is_unrouted(call(&t, "get", p).await).await,
                "GET {p} is served"
            );
        }
        t.stop().await;
    })
    .await
}
