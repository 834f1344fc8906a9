//! A node run in the test process through the library (`peer::node`), with a fault
//! injected by wrapping its chunk source: the way tests make a node lie, instead of a
//! switch in release code. The getter is the real `peer` binary.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{TestPeer, TestTracker, bounded, random_file, sha256_of};
use anyhow::Context as _;
use peer::home::Home;
use peer::node::{Node, NodeConfig};
use peer::server::{ChunkReader, ChunkSource, Holding, Refused};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves what `inner` serves, with the first byte of every chunk flipped.
struct Corrupting {
    inner: Arc<dyn ChunkSource>,
}

struct CorruptReader(Box<dyn ChunkReader>);

impl ChunkReader for CorruptReader {
    fn read(&self, index: u32, start: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut data = self.0.read(index, start, len)?;
        if let Some(b) = data.first_mut() {
            *b ^= 0xff;
        }
        Ok(data)
    }
}

impl ChunkSource for Corrupting {
    fn holding(&self, file: &::common::FileId, needed: &[u32]) -> Option<Arc<Holding>> {
        self.inner.holding(file, needed)
    }

    fn open(
        &self,
        file: &::common::FileId,
        holding: &Holding,
    ) -> Result<Box<dyn ChunkReader>, Refused> {
        Ok(Box::new(CorruptReader(self.inner.open(file, holding)?)))
    }

    fn file_count(&self) -> u32 {
        self.inner.file_count()
    }
}

/// Waits until the tracker lists `peer_id` as up.
async fn until_up(tracker: &TestTracker, peer_id: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let peers = tracker.get_json("/api/v1/peers").await?;
        let up = peers["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["id"].as_str() == Some(peer_id) && p["state"].as_str() == Some("up"));
        if up {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{peer_id} never came up: {peers}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_ban_an_in_process_node_that_corrupts_chunks_and_finish_from_an_honest_one()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let mut bob = TestPeer::register(&tracker, "bob").await?;
        let carol = TestPeer::register(&tracker, "carol").await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "data.bin", 3 << 20 | 12345)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("file id")?
            .to_string();
        bob.index(&path).await?;
        bob.serve(&[]).await?;

        // Alice's node, in this process, behind a corrupting source.
        let config = NodeConfig {
            source_layer: Some(Box::new(|inner| Arc::new(Corrupting { inner }))),
            ..NodeConfig::new(
                Home::open(Some(alice.home.path().to_path_buf()))?,
                vec![tracker.url()],
            )
        };
        let node = Node::bind(config, TcpListener::bind("127.0.0.1:0").await?).await?;
        let alice_id = node.peer_id().to_string();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(node.run(shutdown.clone()));
        until_up(&tracker, &alice_id).await?;
        until_up(&tracker, bob.peer_id.as_deref().context("bob's id")?).await?;

        // From the liar alone: every chunk fails its check, so the get fails and keeps no file.
        let out_dir = tempfile::tempdir()?;
        let out = out_dir.path().to_str().context("utf-8")?;
        let only_alice = carol
            .run(&[
                "get",
                &id,
                "--output",
                out,
                "--from",
                &alice_id,
                "--give-up-after",
                "3s",
            ])
            .await?;
        assert!(
            !only_alice.status.success(),
            "a get from a liar alone must fail"
        );
        assert!(!out_dir.path().join("data.bin").exists());

        // From both: the liar is banned at its first chunk, the honest node supplies all.
        let got = carol.get(&id, out_dir.path(), &[]).await?;
        assert_eq!(sha256_of(&out_dir.path().join("data.bin"))?, sha);
        assert_eq!(
            got["sources"], 1,
            "only the honest node supplied chunks: {got}"
        );

        shutdown.cancel();
        running.await??;
        assert!(
            !alice.home.path().join("node.json").exists(),
            "a node that stops removes node.json"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_grpc_health_checks_and_reflection_on_the_node_port() -> anyhow::Result<()> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let config = NodeConfig::new(
            Home::open(Some(alice.home.path().to_path_buf()))?,
            vec![tracker.url()],
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let node = Node::bind(config, listener).await?;
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(node.run(shutdown.clone()));
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect()
            .await?;
        let mut health = HealthClient::new(channel.clone());
        for service in ["", "peer.v1.Peer"] {
            let status = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await?
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
        }
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::iter([request]))
            .await?
            .into_inner();
        let answer = answers.message().await?.context("one answer")?;
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            anyhow::bail!("not a service list: {answer:?}");
        };
        let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "peer.v1.Peer"
            ]
        );
        shutdown.cancel();
        running.await??;
        Ok(())
    })
    .await
}
