//! Session tokens: they expire after `session_ttl` on both adapters (and across a restart),
//! the database keeps only their SHA-256, and they are read only from the `Authorization`
//! header, never from the URL. The login throttle keys on the socket's address, never on a
//! header.

use std::time::Duration;

use proto::tracker::v1 as pb;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tonic::Code;
use tracker::Config;

use crate::common::{TestTracker, authed, backend_url, postgres_backend, register, within};

/// Short enough to wait out, long enough to use the tokens first.
const SESSION_TTL: Duration = Duration::from_secs(2);

fn config(dir: &TempDir) -> Config {
    Config {
        session_ttl: SESSION_TTL,
        ..Config::ephemeral(dir.path())
    }
}

/// A search, the cheapest call that needs a session.
async fn search_as(t: &TestTracker, token: &str) -> Result<(), tonic::Status> {
    t.grpc()
        .await
        .search(authed(pb::SearchRequest::default(), token))
        .await
        .map(drop)
}

/// Logs out over REST with `token` in the header; returns the status and the JSON body.
async fn rest_logout(t: &TestTracker, token: &str) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .delete(t.url("/api/v1/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
    }
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every `token_hash` in the sessions table.
async fn stored_token_hashes(cfg: &Config) -> Vec<String> {
    let db = Database::connect(backend_url(&cfg.database_url).await)
        .await
        .unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT token_hash FROM sessions",
        ))
        .await
        .unwrap();
    db.close().await.unwrap();
    rows.iter()
        .map(|r| r.try_get::<String>("", "token_hash").unwrap())
        .collect()
}

/// A session past its lifetime is refused by gRPC (UNAUTHENTICATED) and REST (401 JSON
/// `{error}`), also by a tracker restarted on the same database.
#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_session_past_its_lifetime_on_both_adapters() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start_with(config(&dir)).await;
        let mut c = t.grpc().await;
        register(&mut c, "alice").await;
        let s = c
            .login(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let rest = reqwest::Client::new()
            .post(t.url("/api/v1/sessions"))
            .json(&json!({"user": "alice", "password": "pw-of-alice"}))
            .send()
            .await
            .unwrap();
        assert_eq!(rest.status(), StatusCode::OK);
        let rest_token = rest.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let now = chrono::Utc::now().timestamp_millis();
        let ttl = s.expires_at_ms - now;
        assert!(
            (0..=SESSION_TTL.as_millis() as i64).contains(&ttl),
            "the session lives session_ttl: {ttl} ms"
        );
        search_as(&t, &s.token).await.expect("valid before expiry");
        search_as(&t, &rest_token)
            .await
            .expect("valid before expiry");

        // Wait until both have expired (the REST one was issued last).
        tokio::time::sleep(SESSION_TTL + Duration::from_millis(300)).await;
        for token in [&s.token, &rest_token] {
            let err = search_as(&t, token).await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{err}");
            let logout = c
                .logout(authed(pb::LogoutRequest {}, token))
                .await
                .unwrap_err();
            assert_eq!(logout.code(), Code::Unauthenticated);
            let (status, body) = rest_logout(&t, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            assert!(body["error"].is_string(), "{body}");
        }
        t.stop().await;

        let t = TestTracker::start_with(config(&dir)).await;
        let err = search_as(&t, &s.token).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unauthenticated,
            "still expired after a restart"
        );
        assert_eq!(
            rest_logout(&t, &rest_token).await.0,
            StatusCode::UNAUTHORIZED
        );
        t.stop().await;
    })
    .await
}

/// The database holds the SHA-256 (hex) of each token and never the token itself: neither
/// in the `sessions` table nor anywhere in the SQLite files.
#[tokio::test(flavor = "multi_thread")]
async fn should_store_only_the_sha256_of_each_token() {
    within(async {
        let dir = TempDir::new().unwrap();
        let cfg = Config::ephemeral(dir.path());
        let t = TestTracker::start_with(cfg.clone()).await;
        let mut c = t.grpc().await;
        let registered = register(&mut c, "alice").await;
        let logged_in = c
            .login(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .token;
        t.stop().await;

        let stored = stored_token_hashes(&cfg).await;
        assert_eq!(stored.len(), 2, "{stored:?}");
        for token in [&registered, &logged_in] {
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            assert!(stored.contains(&hash), "the SHA-256 of {token} is stored");
            assert!(!stored.contains(token), "the token itself is not stored");
        }
        if postgres_backend().is_none() {
            // Every byte SQLite wrote: the database, its WAL and anything beside them. The
            // hashes are found there (so the scan sees where sessions live); the tokens not.
            let contains =
                |bytes: &[u8], text: &str| bytes.windows(text.len()).any(|w| w == text.as_bytes());
            let mut hashes_seen = 0;
            for entry in std::fs::read_dir(dir.path()).unwrap() {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                for token in [&registered, &logged_in] {
                    assert!(
                        !contains(&bytes, token),
                        "{} holds a plaintext token",
                        path.display()
                    );
                    let hash = hex::encode(Sha256::digest(token.as_bytes()));
                    hashes_seen += usize::from(contains(&bytes, &hash));
                }
            }
            assert!(
                hashes_seen >= 2,
                "the stored hashes are in the scanned files"
            );
        }
    })
    .await
}

/// A token in the query string (any of the usual names) is not a session: logout without
/// the header is 401 JSON, and the session is still alive afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_token_passed_in_the_url() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let token = register(&mut t.grpc().await, "alice").await;
        let client = reqwest::Client::new();
        for name in ["token", "access_token", "authorization", "bearer"] {
            let r = client
                .delete(t.url(&format!("/api/v1/sessions?{name}={token}")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "?{name}=");
            let body: Value = r.json().await.unwrap();
            assert!(body["error"].is_string(), "?{name}=: {body}");
        }
        let r = client
            .delete(t.url(&format!("/api/v1/sessions?access_token={token}")))
            .header("authorization", "Bearer ")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an empty Bearer");
        search_as(&t, &token)
            .await
            .expect("the session was not revoked by any of them");
        let (status, _) = rest_logout(&t, &token).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        t.stop().await;
    })
    .await
}

/// The login throttle takes the sender's address from the socket, never from a header:
/// after 20 wrong passwords from 127.0.0.1 (over several names, 5 each) that address is
/// refused whatever `X-Forwarded-For` or `Forwarded` claim (REST 429, gRPC
/// RESOURCE_EXHAUSTED), while 127.0.0.2 logs in as the same users.
#[tokio::test(flavor = "multi_thread")]
async fn should_throttle_the_socket_address_whatever_the_headers_say() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        register(&mut c, "alice").await;
        register(&mut c, "bob").await;
        let first: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let second: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let from = |ip| {
            reqwest::Client::builder()
                .local_address(ip)
                .build()
                .unwrap()
        };
        let (one, two) = (from(first), from(second));
        let login = |client: &reqwest::Client, user: &str, forwarded: Option<&str>| {
            let mut req = client
                .post(t.url("/api/v1/sessions"))
                .json(&json!({"user": user, "password": format!("pw-of-{user}")}));
            if let Some(f) = forwarded {
                req = req
                    .header("x-forwarded-for", f)
                    .header("forwarded", format!("for={f}"));
            }
            req.send()
        };
        for i in 0..20 {
            let r = one
                .post(t.url("/api/v1/sessions"))
                .json(&json!({"user": format!("guess{}", i % 4), "password": "nope"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "failure {i}");
        }

        let r = login(&one, "alice", Some("127.0.0.2")).await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the first address stays throttled whatever X-Forwarded-For says"
        );
        assert!(r.headers().contains_key("retry-after"));
        let mut req = tonic::Request::new(pb::Credentials {
            user: "bob".into(),
            password: "pw-of-bob".into(),
        });
        req.metadata_mut()
            .insert("x-forwarded-for", "127.0.0.2".parse().unwrap());
        let grpc = c.login(req).await.unwrap_err();
        assert_eq!(grpc.code(), Code::ResourceExhausted, "{grpc}");

        let r = login(&two, "alice", None).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "alice from the second address");
        let mut c2 = proto::tracker::v1::tracker_client::TrackerClient::new(
            tonic::transport::Endpoint::from_shared(t.url(""))
                .unwrap()
                .local_address(Some(second))
                .connect()
                .await
                .unwrap(),
        );
        let s = c2
            .login(pb::Credentials {
                user: "bob".into(),
                password: "pw-of-bob".into(),
            })
            .await
            .expect("bob over gRPC from the second address");
        assert_eq!(s.into_inner().user, "bob");
        t.stop().await;
    })
    .await
}
