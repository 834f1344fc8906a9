//! Hostile REST input: every malformed, oversized or unknown request gets a JSON 4xx.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;

use super::still_alive;
use crate::common::{TestTracker, announce, heartbeat, manifest, peer_id, register, within};

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_every_bad_rest_request_with_a_json_4xx() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let token = register(&mut c, "alice").await;
        let me = peer_id(1);
        heartbeat(&mut c, &token, &me, "127.0.0.1:9").await;
        announce(&mut c, &token, &me, manifest("a.bin", 2, 1)).await;

        let json = Some("application/json");
        let big = format!(
            "{{\"user\":\"{}\",\"password\":\"x\"}}",
            "u".repeat(3 << 20)
        );
        let long_q = format!("/api/v1/files?q={}", "q".repeat(20_000));
        let unknown = format!("/api/v1/files/{}", "ab".repeat(32));
        // (method, path, content type, body)
        let cases: Vec<(Method, &str, Option<&str>, &str)> = vec![
            (Method::POST, "/api/v1/sessions", json, "{\"user\":"),
            (Method::POST, "/api/v1/sessions", json, "not json"),
            (Method::POST, "/api/v1/sessions", json, ""),
            (Method::POST, "/api/v1/sessions", json, "[]"),
            (
                Method::POST,
                "/api/v1/sessions",
                json,
                "{\"user\":1,\"password\":2}",
            ),
            (Method::POST, "/api/v1/sessions", json, "{\"user\":\"a\"}"),
            (
                Method::POST,
                "/api/v1/sessions",
                json,
                "{\"user\":null,\"password\":\"x\"}",
            ),
            (Method::POST, "/api/v1/sessions", json, "\u{0}\u{1}"),
            (
                Method::POST,
                "/api/v1/sessions",
                Some("text/plain"),
                "{\"user\":\"a\",\"password\":\"b\"}",
            ),
            (
                Method::POST,
                "/api/v1/sessions",
                None,
                "{\"user\":\"a\",\"password\":\"b\"}",
            ),
            (Method::POST, "/api/v1/sessions", json, &big),
            (Method::DELETE, "/api/v1/sessions", None, ""),
            (Method::GET, "/api/v1/files?limit=-1", None, ""),
            (Method::GET, "/api/v1/files?limit=abc", None, ""),
            (Method::GET, "/api/v1/files?limit=0", None, ""),
            (
                Method::GET,
                "/api/v1/files?limit=99999999999999999999",
                None,
                "",
            ),
            (Method::GET, "/api/v1/files?limit=1.5", None, ""),
            (Method::GET, "/api/v1/files?offset=-5", None, ""),
            (Method::GET, "/api/v1/files?offset=1e9", None, ""),
            (Method::GET, "/api/v1/files?type=spreadsheet", None, ""),
            (Method::GET, "/api/v1/files?limit=1&limit=2", None, ""),
            (Method::GET, "/api/v1/files/xyz", None, ""),
            (Method::GET, "/api/v1/files/ABCDEF", None, ""),
            (Method::GET, "/api/v1/files/%FF%FE", None, ""),
            (
                Method::GET,
                "/api/v1/files/..%2F..%2Fetc%2Fpasswd",
                None,
                "",
            ),
            (Method::GET, "/api/v1/files/%00", None, ""),
            (Method::GET, &unknown, None, ""),
            (Method::GET, "/api/v1/nope", None, ""),
            (Method::GET, "/api/v2/files", None, ""),
            (Method::GET, "/api/v1/files/a/b", None, ""),
            (Method::PUT, "/api/v1/files", None, ""),
            (Method::DELETE, "/api/v1/files", None, ""),
            (Method::POST, "/api/v1/peers", json, "{}"),
            (Method::PATCH, "/api/v1/stats", None, ""),
            (Method::GET, "/api/v1/sessions", None, ""),
            (Method::POST, "/healthz", None, ""),
            (Method::DELETE, &unknown, None, ""),
        ];
        // A fresh connection per case: the server may close one after refusing an oversized
        // body, and a pooled client would hand that closed connection to the next case.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let mut failures = Vec::new();
        for (method, path, ctype, body) in &cases {
            let mut req = client
                .request(method.clone(), t.url(path))
                .body(body.to_string());
            if let Some(ct) = ctype {
                req = req.header("content-type", *ct);
            }
            let resp = match req.send().await {
                Ok(resp) => resp,
                // For an oversized body the server may answer 413 and close before the
                // client has finished writing it: a refusal, seen as a broken pipe.
                Err(e) if body.len() > 1 << 20 && e.is_request() => continue,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let error = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string));
            let short = |s: &str| s.chars().take(60).collect::<String>();
            if !status.is_client_error() || error.is_none() {
                failures.push(format!(
                    "{method} {}: {status} {}",
                    short(path),
                    short(&text)
                ));
            }
        }
        // A long query, or one that is not UTF-8, is fine: an answer, not an error.
        for path in [long_q.as_str(), "/api/v1/files?q=%FF%FE"] {
            let r = reqwest::get(t.url(path)).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.json::<Value>().await.unwrap()["total"], 0);
        }
        assert!(
            failures.is_empty(),
            "not a JSON 4xx:\n{}",
            failures.join("\n")
        );
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}
