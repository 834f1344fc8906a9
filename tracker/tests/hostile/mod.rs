//! Hostile input: whatever a client sends, the tracker answers with a status (gRPC) or a 4xx
//! JSON `{"error"}` (REST), never a crash and never a 5xx; and a crowd of peers heartbeating
//! at once is never wrongly marked down.

mod sqlite_busy;

use std::time::Duration;

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, peer_id, register, within,
};

/// The tracker's gRPC decode limit (`tracker::grpc::MAX_MESSAGE`, private).
const SERVER_LIMIT: usize = 16 << 20;

/// A client that may send messages of any size (the server's limit is what is tested).
async fn big_client(t: &TestTracker) -> TrackerClient<Channel> {
    t.grpc().await.max_encoding_message_size(64 << 20)
}

/// Asserts the tracker still answers both adapters.
async fn still_alive(t: &TestTracker) {
    let r = reqwest::get(t.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut c = t.grpc().await;
    let r = c
        .login(pb::Credentials {
            user: "nobody".into(),
            password: "x".into(),
        })
        .await;
    assert_eq!(r.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_oversized_grpc_messages_with_a_status() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = big_client(&t).await;
        let token = register(&mut c, "alice").await;
        let me = peer_id(1);
        heartbeat(&mut c, &token, &me, "127.0.0.1:9").await;

        let huge = "x".repeat(SERVER_LIMIT + 1024);
        let r = c
            .search(authed(
                pb::SearchRequest {
                    query: huge.clone(),
                    ..Default::default()
                },
                &token,
            ))
            .await;
        let code = r.unwrap_err().code();
        assert!(
            matches!(code, Code::OutOfRange | Code::ResourceExhausted),
            "oversized search: {code:?}"
        );
        let mut m = manifest("big.bin", 1, 1);
        m.chunk_hashes = vec![0u8; SERVER_LIMIT + 32].into();
        let r = c
            .announce(authed(
                pb::AnnounceRequest {
                    peer_id: me.clone(),
                    manifest: Some(m),
                },
                &token,
            ))
            .await;
        let code = r.unwrap_err().code();
        assert!(
            matches!(code, Code::OutOfRange | Code::ResourceExhausted),
            "oversized announce: {code:?}"
        );
        let r = c
            .register(pb::Credentials {
                user: huge,
                password: "x".into(),
            })
            .await;
        assert!(r.is_err());
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_malformed_and_unknown_ids_with_invalid_argument_or_not_found() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let token = register(&mut c, "alice").await;
        let me = peer_id(1);
        heartbeat(&mut c, &token, &me, "127.0.0.1:9").await;
        let file = announce(&mut c, &token, &me, manifest("a.bin", 3, 1)).await;
        let unknown_file = "ab".repeat(32);
        let bad_ids = [
            "",
            "xyz",
            "ABCDEF",
            &"g".repeat(64),
            &"a".repeat(63),
            &"a".repeat(65),
            "../../etc/passwd",
            "a\0b",
            &"é".repeat(32),
        ];

        for bad in bad_ids {
            let r = c
                .locate(authed(
                    pb::LocateRequest {
                        file_id: bad.into(),
                    },
                    &token,
                ))
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "locate {bad:?}"
            );
            let r = c
                .report_chunks(authed(
                    pb::ReportChunksRequest {
                        peer_id: me.clone(),
                        file_id: bad.into(),
                        kind: 2,
                        chunks: vec![0],
                    },
                    &token,
                ))
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "report {bad:?}"
            );
            let r = c
                .heartbeat(authed(
                    pb::HeartbeatRequest {
                        peer_id: bad.into(),
                        addr: "127.0.0.1:9".into(),
                        ..Default::default()
                    },
                    &token,
                ))
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "heartbeat {bad:?}"
            );
            let r = c
                .unindex(authed(
                    pb::UnindexRequest {
                        peer_id: me.clone(),
                        file_id: bad.into(),
                    },
                    &token,
                ))
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "unindex {bad:?}"
            );
        }

        let r = c
            .locate(authed(
                pb::LocateRequest {
                    file_id: unknown_file.clone(),
                },
                &token,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
        let r = c
            .unindex(authed(
                pb::UnindexRequest {
                    peer_id: me.clone(),
                    file_id: unknown_file.clone(),
                },
                &token,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::NotFound);
        let r = c
            .complete_task(authed(
                pb::CompleteTaskRequest {
                    peer_id: me.clone(),
                    task_id: 999_999,
                    ok: true,
                    error: String::new(),
                },
                &token,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::NotFound);

        // Chunk indices past the end, unknown kinds and ragged bitfields.
        let past = c
            .report_chunks(authed(
                pb::ReportChunksRequest {
                    peer_id: me.clone(),
                    file_id: file.id.clone(),
                    kind: 2,
                    chunks: vec![3, u32::MAX],
                },
                &token,
            ))
            .await;
        assert_eq!(past.unwrap_err().code(), Code::InvalidArgument);
        let kind = c
            .report_chunks(authed(
                pb::ReportChunksRequest {
                    peer_id: me.clone(),
                    file_id: file.id.clone(),
                    kind: 42,
                    chunks: vec![0],
                },
                &token,
            ))
            .await;
        assert_eq!(kind.unwrap_err().code(), Code::InvalidArgument);
        let ragged = c
            .sync_holdings(authed(
                pb::SyncHoldingsRequest {
                    peer_id: me.clone(),
                    holdings: vec![pb::Holding {
                        file_id: file.id.clone(),
                        kind: 1,
                        have: vec![0xff; 9].into(),
                    }],
                },
                &token,
            ))
            .await;
        assert_eq!(ragged.unwrap_err().code(), Code::InvalidArgument);

        // Another user's peer id.
        let bob = register(&mut c, "bob").await;
        let r = c
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    peer_id: me.clone(),
                    addr: "127.0.0.1:10".into(),
                    ..Default::default()
                },
                &bob,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::PermissionDenied);
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_hostile_names_and_maps_that_do_not_add_up() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let token = register(&mut c, "alice").await;
        let me = peer_id(1);
        heartbeat(&mut c, &token, &me, "127.0.0.1:9").await;

        for (name, why) in [
            ("a\0b", "NUL"),
            (&"n".repeat(10_000) as &str, "10 kB"),
            ("", "empty"),
        ] {
            let r = c
                .announce(authed(
                    pb::AnnounceRequest {
                        peer_id: me.clone(),
                        manifest: Some(manifest(name, 1, 2)),
                    },
                    &token,
                ))
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "file name {why}"
            );
            let r = c
                .register(pb::Credentials {
                    user: name.into(),
                    password: "pw".into(),
                })
                .await;
            assert_eq!(
                r.unwrap_err().code(),
                Code::InvalidArgument,
                "user name {why}"
            );
        }
        let r = c
            .register(pb::Credentials {
                user: "eve\x1b[2J\n".into(),
                password: "pw".into(),
            })
            .await;
        assert_eq!(
            r.unwrap_err().code(),
            Code::InvalidArgument,
            "control chars"
        );

        // Names with control characters are data: stored, and served back as JSON text.
        let odd = "bell\x07\x1b[31m\nred\u{202e}.txt";
        let f = announce(&mut c, &token, &me, manifest(odd, 1, 3)).await;
        let body: Value = reqwest::get(t.url(&format!("/api/v1/files/{}", f.id)))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["name"], odd);
        let r = c
            .search(authed(
                pb::SearchRequest {
                    query: "\0\x1b%_'\"; DROP TABLE files; --".repeat(300),
                    ..Default::default()
                },
                &token,
            ))
            .await;
        assert_eq!(r.map(|r| r.into_inner().total).unwrap_or(0), 0);

        // Chunk maps that do not add up.
        let mut maps = Vec::new();
        let mut m = manifest("x.bin", 2, 4);
        m.chunk_hashes = m.chunk_hashes.slice(..32);
        maps.push(("too few hashes", m));
        let mut m = manifest("x.bin", 2, 4);
        m.chunk_hashes = m.chunk_hashes.slice(..63);
        maps.push(("ragged hashes", m));
        let mut m = manifest("x.bin", 2, 4);
        m.chunk_size = 1000;
        maps.push(("chunk size", m));
        let mut m = manifest("x.bin", 2, 4);
        m.chunk_size = 0;
        maps.push(("zero chunk size", m));
        let mut m = manifest("x.bin", 2, 4);
        m.sha256 = vec![1; 31].into();
        maps.push(("short sha256", m));
        let mut m = manifest("x.bin", 2, 4);
        m.size = u64::MAX;
        maps.push(("huge size", m));
        for (why, m) in maps {
            let r = c
                .announce(authed(
                    pb::AnnounceRequest {
                        peer_id: me.clone(),
                        manifest: Some(m),
                    },
                    &token,
                ))
                .await;
            assert_eq!(r.unwrap_err().code(), Code::InvalidArgument, "{why}");
        }
        let r = c
            .announce(authed(
                pb::AnnounceRequest {
                    peer_id: me.clone(),
                    manifest: None,
                },
                &token,
            ))
            .await;
        assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
        still_alive(&t).await;
        t.stop().await;
    })
    .await
}

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

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_a_thousand_heartbeating_peers_up() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = tracker::Config::ephemeral(dir.path());
        cfg.peer_timeout = Duration::from_secs(4);
        let t = TestTracker::start_with(cfg).await;
        const USERS: usize = 10;
        const PER_USER: usize = 100;
        let mut c = t.grpc().await;
        let mut tokens = Vec::new();
        for u in 0..USERS {
            tokens.push(register(&mut c, &format!("crowd{u}")).await);
        }
        // A few channels, as many peers on a few machines would use.
        let mut channels = Vec::new();
        for _ in 0..8 {
            channels.push(t.grpc().await);
        }
        let peers: Vec<(String, String, usize)> = (0..USERS * PER_USER)
            .map(|i| {
                let id = common::PeerId::from_random((i as u128).to_be_bytes()).to_string();
                (id, format!("127.0.0.1:{}", 20_000 + i), i / PER_USER)
            })
            .collect();
        let started = std::time::Instant::now();
        for round in 0..3 {
            let beats = peers.iter().enumerate().map(|(i, (id, addr, u))| {
                let mut ch = channels[i % channels.len()].clone();
                let token = tokens[*u].clone();
                let req = pb::HeartbeatRequest {
                    peer_id: id.clone(),
                    addr: addr.clone(),
                    storage_quota: 0,
                    storage_used: 0,
                };
                async move { ch.heartbeat(authed(req, &token)).await.map(|_| ()) }
            });
            let results = futures::future::join_all(beats).await;
            let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert!(
                failed.is_empty(),
                "round {round}: {} failed: {:?}",
                failed.len(),
                failed.first()
            );

            let body: Value = reqwest::get(t.url("/api/v1/peers"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let items = body["items"].as_array().unwrap();
            assert_eq!(items.len(), USERS * PER_USER, "round {round}");
            let down: Vec<&Value> = items.iter().filter(|p| p["state"] != "up").collect();
            assert!(
                down.is_empty(),
                "round {round}: {} down, e.g. {}",
                down.len(),
                down[0]
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let stats: Value = reqwest::get(t.url("/api/v1/stats"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats["peers_up"], USERS * PER_USER);
        eprintln!(
            "1,000 peers x 3 rounds in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        t.stop().await;
    })
    .await
}
