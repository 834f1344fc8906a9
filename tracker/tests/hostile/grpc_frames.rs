//! Raw gRPC frames that no generated client would send: bodies that are not protobuf, length
//! prefixes that lie, compression flags without compression. Each is an HTTP/2 POST built by
//! hand (over tonic's channel, so only the body is hostile); each must get a non-zero
//! `grpc-status`, and the tracker must answer normally afterwards.

use std::pin::Pin;

use axum::body::HttpBody;
use prost::Message;
use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tonic::Code;
use tonic::codegen::http;
use tonic::transport::Channel;
use tower::ServiceExt;

use super::still_alive;
use crate::common::{TestTracker, node_key, register, within};

/// A gRPC message frame: compression flag, big-endian length, then `body`, the length
/// claiming `len` bytes (which may be a lie).
fn frame(flag: u8, len: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![flag];
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A well-framed message holding `body`.
fn message(body: &[u8]) -> Vec<u8> {
    frame(0, body.len() as u32, body)
}

/// A `grpc-message` as text (it is percent-encoded on the wire).
fn percent_decoded(s: &str) -> String {
    let mut out = Vec::new();
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        let hex = || -> Option<u8> {
            let pair = [bytes.clone().next()?, bytes.clone().nth(1)?];
            u8::from_str_radix(std::str::from_utf8(&pair).ok()?, 16).ok()
        };
        match (b, hex()) {
            (b'%', Some(v)) => {
                out.push(v);
                bytes.nth(1);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs `bytes` as the request body of `method` and returns the `grpc-status` (from the
/// headers of a trailers-only answer, or from the trailers) and its message.
async fn call_raw(
    channel: &Channel,
    base: &str,
    method: &str,
    token: &str,
    bytes: Vec<u8>,
) -> (Code, String) {
    let req = http::Request::post(format!("{base}/tracker.v1.Tracker/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {token}"))
        .body(tonic::body::Body::new(axum::body::Body::from(bytes)))
        .unwrap();
    let resp = channel
        .clone()
        .oneshot(req)
        .await
        .expect("an HTTP/2 answer");
    assert_eq!(
        resp.status(),
        http::StatusCode::OK,
        "gRPC answers in HTTP 200"
    );
    let status = |h: &http::HeaderMap| {
        h.get("grpc-status").map(|s| {
            let code: i32 = s.to_str().unwrap().parse().unwrap();
            let msg = h
                .get("grpc-message")
                .map(|m| percent_decoded(m.to_str().unwrap()))
                .unwrap_or_default();
            (Code::from_i32(code), msg)
        })
    };
    if let Some(s) = status(resp.headers()) {
        return s;
    }
    let mut body = resp.into_body();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
            .await
            .expect("the answer ends with trailers")
            .expect("the answer body is readable");
        if let Some(s) = frame.trailers_ref().and_then(status) {
            return s;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_undecodable_and_misframed_messages_with_a_status() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let token = register(&mut t.grpc().await, "alice").await;
        let base = t.url("");
        let channel = Channel::from_shared(base.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();

        // The raw path works: a well-formed Locate of an unknown file reaches the handler.
        let locate = pb::LocateRequest {
            file_id: "ab".repeat(32),
            requester_key: node_key(),
            ..Default::default()
        }
        .encode_to_vec();
        let (code, _) = call_raw(&channel, &base, "Locate", &token, message(&locate)).await;
        assert_eq!(code, Code::NotFound, "the control call reaches Locate");

        let mut truncated = message(&locate);
        truncated.truncate(truncated.len() - 3);
        // What tonic answers for each: the protobuf decoder's error, a framing error, or the
        // 16 MiB limit (`tracker::grpc::MAX_MESSAGE`).
        const PROTOBUF: (Code, &str) = (Code::Internal, "failed to decode Protobuf message");
        const EOF: (Code, &str) = (Code::Internal, "Unexpected EOF decoding stream");
        let cases: Vec<(&str, Vec<u8>, (Code, &str))> = vec![
            ("five 0xff bytes", message(&[0xff; 5]), PROTOBUF),
            (
                "a string longer than the message",
                message(&[0x0a, 0x7f, b'a']),
                PROTOBUF,
            ),
            (
                "a string that is not UTF-8",
                message(&[0x0a, 0x02, 0xff, 0xfe]),
                PROTOBUF,
            ),
            ("wire type 7", message(&[0x0f, 0x00]), PROTOBUF),
            ("an unterminated group", message(&[0x0b]), PROTOBUF),
            (
                "a varint of 11 bytes in an unknown field",
                message(&[
                    0x78, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                ]),
                PROTOBUF,
            ),
            ("field number 0", message(&[0x00, 0x01]), PROTOBUF),
            ("a length prefix past the end", truncated, EOF),
            ("a prefix of 3 bytes", vec![0, 0, 0], EOF),
            (
                "a 4 GiB length prefix",
                frame(0, u32::MAX, &[0xff; 5]),
                (Code::OutOfRange, "message length too large"),
            ),
            (
                "compressed without grpc-encoding",
                frame(1, 5, &[0xff; 5]),
                (Code::Internal, "compressed-flag but no grpc-encoding"),
            ),
            (
                "compression flag 2",
                frame(2, 5, &[0xff; 5]),
                (Code::Internal, "invalid compression flag: 2"),
            ),
        ];
        for (what, bytes, (want, says)) in cases {
            for method in ["Locate", "Login", "Announce", "ReportChunks", "Heartbeat"] {
                let (code, msg) = call_raw(&channel, &base, method, &token, bytes.clone()).await;
                assert_eq!(code, want, "{method} with {what}: {msg:?}");
                assert!(msg.contains(says), "{method} with {what}: {msg:?}");
            }
        }
        still_alive(&t).await;
        // The same connection still carries a good call after all of them.
        let (code, _) = call_raw(&channel, &base, "Locate", &token, message(&locate)).await;
        assert_eq!(code, Code::NotFound);
        t.stop().await;
    })
    .await
}
