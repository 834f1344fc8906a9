//! Hostile gRPC input: oversized messages, malformed and unknown ids, hostile names and
//! manifests whose sizes do not add up each get a status, and the tracker stays up.

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use serde_json::Value;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

use super::still_alive;
use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, node_key, peer_id, register, within,
};

/// The tracker's gRPC decode limit (`tracker::grpc::MAX_MESSAGE`, private).
const SERVER_LIMIT: usize = 16 << 20;

/// A client that may send messages of any size (the server's limit is what is tested).
async fn big_client(t: &TestTracker) -> TrackerClient<Channel> {
    t.grpc().await.max_encoding_message_size(64 << 20)
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
                    ..Default::default()
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
                        requester_key: node_key(),
                        ..Default::default()
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
                    requester_key: node_key(),
                    ..Default::default()
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

        // Each refusal says its own reason.
        for (name, why, says) in [
            (
                "a\0b",
                "NUL",
                "file name contains a NUL character (at byte 1)",
            ),
            (
                &"n".repeat(10_000) as &str,
                "10 kB",
                "file name is 10000 bytes long, more than the 4096 allowed",
            ),
            ("", "empty", "file name is empty"),
        ] {
            let err = c
                .announce(authed(
                    pb::AnnounceRequest {
                        peer_id: me.clone(),
                        manifest: Some(manifest(name, 1, 2)),
                        ..Default::default()
                    },
                    &token,
                ))
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "file name {why}");
            assert_eq!(err.message(), format!("invalid manifest: {says}"), "{why}");
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
                        ..Default::default()
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
                    ..Default::default()
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
