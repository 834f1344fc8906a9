//! Hostile input: whatever a client sends, the tracker answers with a status (gRPC) or a 4xx
//! JSON `{"error"}` (REST), never a crash and never a 5xx; a crowd of peers heartbeating
//! at once is never wrongly marked down; a password guesser cannot lock a user out; and
//! floods of connections, peer ids, chunks and slow readers stay within the limits.

mod crowd;
mod flood;
mod giant;
mod grpc_frames;
mod grpc_input;
mod limits;
mod login_throttle;
mod rest_input;
mod sqlite_busy;

use proto::tracker::v1 as pb;
use reqwest::StatusCode;
use tonic::Code;

use crate::common::TestTracker;

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
