//! QueueGet / CancelGet: a waiting get is a task for the getter's node, idempotent, bounded
//! per peer, refused for another user's peer, pushed on the node's Tasks stream only once
//! peers that are up hold the whole file, and gone once completed or cancelled.

use std::time::Duration;

use futures::StreamExt;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

use crate::common::{
    TestTracker, announce, authed, heartbeat, manifest, node_key, peer_id, register, within,
};

pub(crate) async fn queue(
    c: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    file: &str,
) -> Result<u64, tonic::Status> {
    let req = pb::QueueGetRequest {
        peer_id: peer.into(),
        file_id: file.into(),
    };
    c.queue_get(authed(req, token))
        .await
        .map(|r| r.into_inner().task_id)
}

pub(crate) async fn cancel(
    c: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    file: &str,
) -> bool {
    let req = pb::CancelGetRequest {
        peer_id: peer.into(),
        file_id: file.into(),
    };
    c.cancel_get(authed(req, token))
        .await
        .unwrap()
        .into_inner()
        .cancelled
}

fn file_id(n: u8) -> String {
    common::FileId(common::Sha256Digest([n; 32])).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_queue_a_waiting_get_once_for_its_owner_only_and_within_the_bound() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let bob = register(&mut c, "bob").await;
        let mallory = register(&mut c, "mallory").await;
        let node = peer_id(1);
        // Before the node has ever run, the tracker does not know the peer.
        let e = queue(&mut c, &bob, &node, &file_id(1)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        heartbeat(&mut c, &bob, &node, "127.0.0.1:9001").await;

        let first = queue(&mut c, &bob, &node, &file_id(1)).await.unwrap();
        assert_eq!(
            queue(&mut c, &bob, &node, &file_id(1)).await.unwrap(),
            first
        );
        let e = queue(&mut c, &mallory, &node, &file_id(2))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = queue(&mut c, &bob, &node, "not-an-id").await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

        for n in 2..=255u8 {
            queue(&mut c, &bob, &node, &file_id(n)).await.unwrap();
        }
        let other = common::FileId(common::Sha256Digest([0; 32])).to_string();
        queue(&mut c, &bob, &node, &other).await.unwrap();
        let mut extra = file_id(1);
        extra.replace_range(0..2, "ab");
        let e = queue(&mut c, &bob, &node, &extra).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");

        assert!(cancel(&mut c, &bob, &node, &file_id(1)).await);
        assert!(!cancel(&mut c, &bob, &node, &file_id(1)).await);
        queue(&mut c, &bob, &node, &extra).await.unwrap();
        t.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn should_push_a_waiting_get_once_the_whole_file_is_held_by_peers_that_are_up() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (holder, getter) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &bob, &getter, "127.0.0.1:9002").await;
        let m = manifest("f.bin", 3, 7);
        let id = common::Manifest::try_from(m.clone())
            .unwrap()
            .id()
            .to_string();
        let task = queue(&mut c, &bob, &getter, &id).await.unwrap();

        let req = pb::TasksRequest {
            peer_id: getter.clone(),
            node_key: node_key(),
        };
        let mut stream = c.tasks(authed(req, &bob)).await.unwrap().into_inner();
        // Nobody holds it yet: nothing comes.
        let early = tokio::time::timeout(Duration::from_secs(3), stream.next()).await;
        assert!(early.is_err(), "pushed before anyone held it: {early:?}");

        heartbeat(&mut c, &alice, &holder, "127.0.0.1:9001").await;
        announce(&mut c, &alice, &holder, m).await;
        let pushed = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("the get is pushed once the file is held")
            .unwrap()
            .unwrap();
        assert_eq!(pushed.id, task);
        match pushed.work {
            Some(pb::task::Work::Get(g)) => assert_eq!(g.file_id, id),
            other => panic!("not a get: {other:?}"),
        }
        let done = pb::CompleteTaskRequest {
            peer_id: getter.clone(),
            task_id: task,
            ok: true,
            error: String::new(),
        };
        c.complete_task(authed(done.clone(), &bob)).await.unwrap();
        let again = c.complete_task(authed(done, &bob)).await.unwrap_err();
        assert_eq!(again.code(), Code::NotFound, "completed means gone");
        assert!(!cancel(&mut c, &bob, &getter, &id).await);
        t.stop().await;
    })
    .await;
}
