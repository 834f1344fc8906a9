//! The REST contract: routes, JSON shapes and status codes of docs/reference.md.

mod dashboard_data;
mod metrics;
mod openapi;
mod paging;
mod reach;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, peer_id, register, within,
};

async fn get(t: &TestTracker, path: &str) -> (StatusCode, Value) {
    let r = reqwest::get(t.url(path)).await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

async fn login(t: &TestTracker, user: &str, password: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(t.url("/api/v1/sessions"))
        .json(&json!({ "user": user, "password": password }))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_health_and_unknown_routes_in_json() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        assert_eq!(
            get(&t, "/healthz").await,
            (StatusCode::OK, json!({"status": "ok"}))
        );
        assert_eq!(
            get(&t, "/no/such/route").await,
            (StatusCode::NOT_FOUND, json!({"error": "not found"}))
        );
        let (status, body) = get(&t, "/api/v1/stats").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["replication"], 3);
        assert_eq!(body["pending_tasks"], 0);
        let put = reqwest::Client::new()
            .put(t.url("/api/v1/files"))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert!(put.json::<Value>().await.unwrap()["error"].is_string());
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_log_in_and_out_and_refuse_bad_credentials_alike() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        register(&mut t.grpc().await, "alice").await;
        let ok = login(&t, "alice", "pw-of-alice").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let body: Value = ok.json().await.unwrap();
        let token = body["token"].as_str().unwrap().to_string();
        assert_eq!(token.len(), 64);
        assert_eq!(body["user"], "alice");
        assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));

        let wrong = login(&t, "alice", "nope").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
        let wrong: Value = wrong.json().await.unwrap();
        let unknown = login(&t, "nobody", "nope").await;
        assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(wrong, unknown.json::<Value>().await.unwrap());
        assert_eq!(wrong, json!({"error": "invalid user or password"}));

        let malformed = reqwest::Client::new()
            .post(t.url("/api/v1/sessions"))
            .header("content-type", "application/json")
            .body("{\"user\":")
            .send()
            .await
            .unwrap();
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        assert!(malformed.json::<Value>().await.unwrap()["error"].is_string());

        let client = reqwest::Client::new();
        let logout = || {
            client
                .delete(t.url("/api/v1/sessions"))
                .bearer_auth(&token)
                .send()
        };
        assert_eq!(logout().await.unwrap().status(), StatusCode::NO_CONTENT);
        let again = logout().await.unwrap();
        assert_eq!(again.status(), StatusCode::UNAUTHORIZED);
        assert!(again.json::<Value>().await.unwrap()["error"].is_string());
        let anonymous = client
            .delete(t.url("/api/v1/sessions"))
            .send()
            .await
            .unwrap();
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_throttle_repeated_failed_logins() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        register(&mut c, "alice").await;
        for _ in 0..5 {
            assert_eq!(
                login(&t, "alice", "nope").await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        let throttled = login(&t, "alice", "pw-of-alice").await;
        assert_eq!(throttled.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = throttled.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
        let msg = throttled.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            msg.starts_with("too many login attempts, retry in "),
            "{msg}"
        );
        // Another name from the same address is heard, until the address has 20 failures.
        for i in 0..15 {
            let name = format!("someone{}", i % 3);
            assert_eq!(
                login(&t, &name, "x").await.status(),
                StatusCode::UNAUTHORIZED
            );
        }
        assert_eq!(
            login(&t, "someone", "x").await.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let grpc = c
            .login(proto::tracker::v1::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(grpc.code(), tonic::Code::ResourceExhausted);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_list_files_peers_and_chunk_maps() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let (p1, p2) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
        let f = announce(&mut c, &alice, &p1, manifest("Big Movie.mkv", 2, 1)).await;
        announce(&mut c, &alice, &p1, manifest("notes.txt", 1, 2)).await;
        // A peer that never heartbeats holds chunk 0: listed, but down and not a copy.
        c.report_chunks(authed(
            proto::tracker::v1::ReportChunksRequest {
                peer_id: p2.clone(),
                file_id: f.id.clone(),
                kind: 2,
                chunks: vec![0],
            },
            &alice,
        ))
        .await
        .unwrap();

        let (status, list) = get(&t, "/api/v1/files?q=movie&type=video").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["total"], 1);
        let item = &list["items"][0];
        assert_eq!(item["id"], f.id.as_str());
        assert_eq!(item["name"], "Big Movie.mkv");
        assert_eq!(item["size"], 2 << 20);
        assert_eq!(item["type"], "video");
        assert_eq!(item["chunks"], 2);
        assert_eq!(item["chunk_size"], 1 << 20);
        assert_eq!(item["holders"], 1);
        assert_eq!(item["sha256"], "01".repeat(32));
        assert!(item["created_at"].as_str().unwrap().contains('T'));
        let (_, page) = get(&t, "/api/v1/files?limit=1&offset=1").await;
        assert_eq!(
            (page["total"].as_u64(), page["items"][0]["name"].as_str()),
            (Some(2), Some("notes.txt"))
        );
        for bad in [
            "/api/v1/files?type=movies",
            "/api/v1/files?limit=5000",
            "/api/v1/files?limit=x",
            "/api/v1/files?offset=-1",
        ] {
            let (status, body) = get(&t, bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["error"].is_string());
        }

        let (status, detail) = get(&t, &format!("/api/v1/files/{}", &f.id[..10])).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(detail["id"], f.id.as_str());
        let map = detail["chunk_map"].as_array().unwrap();
        assert_eq!(map.len(), 2);
        assert_eq!(map[1]["offset"], 1 << 20);
        assert_eq!(map[1]["size"], 1 << 20);
        assert_eq!(map[0]["copies"], 1);
        let peers0 = map[0]["peers"].as_array().unwrap();
        assert_eq!(peers0.len(), 2);
        assert!(peers0.contains(&json!({"id": p2, "state": "down", "kind": "downloaded"})));
        assert!(peers0.contains(&json!({"id": p1, "state": "up", "kind": "shared"})));
        assert_eq!(map[1]["peers"].as_array().unwrap().len(), 1);

        assert_eq!(
            get(&t, "/api/v1/files/not-hex").await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            get(&t, "/api/v1/files/abc").await.0,
            StatusCode::BAD_REQUEST
        );
        let (status, body) = get(&t, &format!("/api/v1/files/{}", "0".repeat(64))).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body["error"].as_str().unwrap().contains("unknown file"));

        let (status, peers) = get(&t, "/api/v1/peers").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(peers["total"], 2);
        let up = peers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == p1.as_str())
            .unwrap();
        assert_eq!(up["state"], "up");
        assert_eq!(up["user"], "alice");
        assert_eq!(up["addr"], "127.0.0.1:9001");
        assert_eq!(up["storage_quota"], 1000);
        assert!(up["last_seen"].is_string());
        let down = peers["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == p2.as_str())
            .unwrap();
        assert_eq!(
            (down["state"].as_str(), down["last_seen"].is_null()),
            (Some("down"), true)
        );

        let (_, stats) = get(&t, "/api/v1/stats").await;
        assert_eq!(stats["users"], 1);
        assert_eq!(stats["peers_up"], 1);
        assert_eq!(stats["peers_down"], 1);
        assert_eq!(stats["files"], 2);
        assert_eq!(stats["chunks"], 3);
        assert_eq!(
            stats["under_replicated_chunks"], 3,
            "one live copy of each, target 3"
        );
        t.stop().await;
    })
    .await
}
