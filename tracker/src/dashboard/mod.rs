//! The web dashboard at `GET /`: one HTML page, a script and a style sheet, compiled into
//! the binary so the tracker needs no files, CDN or network to show it. The page reads the
//! public JSON API (`/api/v1/stats`, `/api/v1/peers`, `/api/v1/files`) and polls it; this
//! module only answers for the three assets.
//!
//! Every asset carries a strong `ETag` (a hash of its bytes) and `Cache-Control: no-cache`,
//! so browsers revalidate with a cheap 304 and never show a page older than the binary.
//! The content security policy allows nothing but this origin: the page has no inline
//! script or style, so a hostile file name that slipped into the markup could not run.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file with the headers it is served with.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let hash = common::Sha256Digest::of(body.as_bytes()).to_hex();
        let etag = HeaderValue::from_str(&format!("\"{}\"", &hash[..16]))
            .expect("a quoted hex string is a valid header value");
        Self {
            body,
            content_type,
            etag,
        }
    }

    /// 304 when the client already has these bytes, else 200 with the body.
    fn respond(&self, req: &HeaderMap) -> Response {
        let fresh = req
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
            });
        let mut headers = HeaderMap::new();
        headers.insert(header::ETAG, self.etag.clone());
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if fresh {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        (StatusCode::OK, headers, self.body).into_response()
    }
}

/// Same origin only; `data:` images for the favicon; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("app.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("style.css"), "text/css; charset=utf-8"));

// The handlers describe themselves for the OpenAPI document and are registered with the
// REST routes (`rest::api`), so the dashboard is served from the same list it is described by.

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
pub async fn h_index(h: HeaderMap) -> Response {
    INDEX.respond(&h)
}

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
pub async fn h_script(h: HeaderMap) -> Response {
    SCRIPT.respond(&h)
}

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
pub async fn h_style(h: HeaderMap) -> Response {
    STYLE.respond(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_304_only_for_the_current_etag() {
        let mut h = HeaderMap::new();
        assert_eq!(INDEX.respond(&h).status(), StatusCode::OK);
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"stale\""));
        assert_eq!(INDEX.respond(&h).status(), StatusCode::OK);
        h.insert(header::IF_NONE_MATCH, INDEX.etag.clone());
        assert_eq!(INDEX.respond(&h).status(), StatusCode::NOT_MODIFIED);
    }

    // Other methods on these paths get the REST router's JSON 405, which
    // `tracker/tests/rest/openapi.rs` checks for every described path.
    #[tokio::test]
    async fn serves_each_asset_with_its_type_and_policy() {
        for (resp, content_type) in [
            (h_index(HeaderMap::new()).await, "text/html; charset=utf-8"),
            (
                h_script(HeaderMap::new()).await,
                "text/javascript; charset=utf-8",
            ),
            (h_style(HeaderMap::new()).await, "text/css; charset=utf-8"),
        ] {
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.headers()[header::CONTENT_TYPE], content_type);
            assert!(resp.headers().contains_key(header::CONTENT_SECURITY_POLICY));
            assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-cache");
        }
    }

    #[test]
    fn the_page_loads_only_its_own_assets() {
        let html = INDEX.body;
        assert!(html.contains(r#"src="/dashboard/app.js""#));
        assert!(html.contains(r#"href="/dashboard/style.css""#));
        assert!(!html.contains("http://") && !html.contains("https://"));
        assert!(
            !SCRIPT.body.contains("innerHTML"),
            "data must go in as text"
        );
    }
}
