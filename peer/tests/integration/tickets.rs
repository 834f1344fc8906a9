//! Tickets end to end: a real tracker and a real `peer serve`, whose GetChunks is called
//! directly over gRPC. Only a request with a ticket the tracker signed for that file, not
//! expired, gets chunks; the node decides without asking the tracker.

use std::time::Duration;

use crate::common::*;
use ::common::{Sha256Digest, Ticket, TicketClaims, TicketSigner};
use anyhow::Context;
use bytes::Bytes;
use proto::peer::v1 as peer_pb;
use proto::peer::v1::peer_client::PeerClient;
use rand::RngExt;
use tonic::Code;
use tonic::transport::Channel;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn to_pb(t: &Ticket) -> peer_pb::Ticket {
    let c = &t.claims;
    peer_pb::Ticket {
        file_id: c.file_id.to_string(),
        peer_id: c
            .peer_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        user: c.user.clone(),
        expires_at_ms: c.expires_at_ms,
        signature: Bytes::copy_from_slice(&t.signature),
        key: Bytes::copy_from_slice(&c.key),
    }
}

fn mint(signer: &TicketSigner, file: &str, user: &str, expires_at_ms: i64) -> peer_pb::Ticket {
    to_pb(&signer.sign(TicketClaims {
        file_id: file.parse().expect("file id"),
        key: raw_key().public_key(),
        peer_id: None,
        user: user.into(),
        expires_at_ms,
    }))
}

/// Calls the node's GetChunks; `Ok` with every chunk that arrived, or the refusal.
async fn get_chunks(
    node: &mut PeerClient<Channel>,
    file: &str,
    indices: Vec<u32>,
    ticket: Option<peer_pb::Ticket>,
) -> Result<Vec<(u32, Bytes)>, tonic::Status> {
    let req = peer_pb::GetChunksRequest {
        file_id: file.into(),
        indices,
        ticket,
        pick: 0,
        proof: raw_proof(::common::Method::GetChunks, file),
        certificate: None,
    };
    let mut stream = node.get_chunks(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.message().await? {
        out.push((c.index, c.data));
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn should_serve_chunks_only_with_a_valid_ticket_for_the_file() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let data_dir = tempfile::tempdir()?;
        let (a_path, _) = random_file(data_dir.path(), "a.bin", 2 * CHUNK + 10)?;
        let (b_path, _) = random_file(data_dir.path(), "b.bin", CHUNK)?;
        let a_id = alice.index(&a_path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let b_id = alice.index(&b_path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let a_bytes = std::fs::read(&a_path)?;

        let addr = alice.addr.clone().context("node address")?;
        let mut node = PeerClient::connect(format!("http://{addr}")).await?;
        let bob_token = bob.session_token()?;
        let signer = tracker.ticket_signer().await?;
        let mut forger_secret = [0u8; 32];
        rand::rng().fill(&mut forger_secret);
        let forger = TicketSigner::from_secret(&forger_secret);
        let later = now_ms() + 60_000;

        let mut altered = locate_ticket(&tracker, &bob_token, &a_id).await?;
        altered.expires_at_ms += 3_600_000;
        let refusals = [
            ("no ticket", None, Code::Unauthenticated),
            (
                "expired ticket",
                Some(mint(&signer, &a_id, "bob", now_ms() - 120_000)),
                Code::Unauthenticated,
            ),
            (
                "forged ticket",
                Some(mint(&forger, &a_id, "bob", later)),
                Code::Unauthenticated,
            ),
            ("altered ticket", Some(altered), Code::Unauthenticated),
            (
                "ticket for another file",
                Some(locate_ticket(&tracker, &bob_token, &b_id).await?),
                Code::PermissionDenied,
            ),
        ];
        for (what, ticket, code) in refusals {
            match get_chunks(&mut node, &a_id, vec![0, 1, 2], ticket).await {
                Ok(chunks) => anyhow::bail!("{what}: got {} chunks", chunks.len()),
                Err(s) => {
                    assert_eq!(s.code(), code, "{what}: {s:?}");
                    assert!(!s.message().is_empty(), "{what}: says why");
                }
            }
        }

        // A ticket from Locate: every chunk arrives, byte for byte.
        let ticket = locate_ticket(&tracker, &bob_token, &a_id).await?;
        assert_eq!(
            (ticket.user.as_str(), ticket.file_id.as_str()),
            ("bob", a_id.as_str())
        );
        let chunks = get_chunks(&mut node, &a_id, vec![0, 1, 2], Some(ticket)).await?;
        let got: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.iter().copied()).collect();
        assert_eq!(
            chunks.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(Sha256Digest::of(&got), Sha256Digest::of(&a_bytes));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_the_tracker_key_is_not_ready() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        // Forget the key register saved and stop the tracker: the node cannot learn it.
        std::fs::remove_file(alice.home.path().join("tracker_key.json"))?;
        let mut tracker = tracker;
        tracker.stop().await?;
        alice.serve(&[]).await?;
        let addr = alice.addr.clone().context("node address")?;
        let mut node = PeerClient::connect(format!("http://{addr}")).await?;
        let id = "ab".repeat(32);
        let signer = tracker.ticket_signer().await?;
        let t = mint(&signer, &id, "alice", now_ms() + 60_000);
        let err = get_chunks(&mut node, &id, vec![0], Some(t.clone()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        assert!(err.message().contains("not ready"), "{err:?}");

        // Once the tracker is back the node learns the key from a heartbeat.
        tracker.restart_after_stop().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            match get_chunks(&mut node, &id, vec![0], Some(t.clone())).await {
                Err(s) if s.code() == Code::Unavailable => {}
                Err(s) => {
                    assert_eq!(s.code(), Code::NotFound, "the ticket passed: {s:?}");
                    break;
                }
                Ok(c) => anyhow::bail!("got {} chunks of a file it does not hold", c.len()),
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the node never learnt the tracker key");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })
    .await
}
