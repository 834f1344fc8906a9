//! Super-seeding end to end: a real tracker and a real `peer serve`, whose GetChunks is
//! called directly with a candidate set (`pick`). The node sends every chunk once before it
//! sends any twice, and always the least-sent candidate it holds.

use std::collections::HashSet;

use crate::common::*;
use ::common::Sha256Digest;
use anyhow::Context;
use proto::peer::v1 as peer_pb;
use proto::peer::v1::peer_client::PeerClient;
use tonic::Code;
use tonic::transport::Channel;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// Asks the node to pick `pick` of `candidates`; the indices that arrived, each checked
/// against the file's bytes.
async fn pick(
    node: &mut PeerClient<Channel>,
    file: &str,
    bytes: &[u8],
    candidates: Vec<u32>,
    pick: u32,
    ticket: &peer_pb::Ticket,
) -> Result<Vec<u32>, tonic::Status> {
    let req = peer_pb::GetChunksRequest {
        file_id: file.into(),
        indices: candidates,
        ticket: Some(ticket.clone()),
        pick,
        proof: raw_proof(::common::Method::GetChunks, file),
        certificate: None,
    };
    let mut stream = node.get_chunks(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.message().await? {
        let start = c.index as usize * CHUNK;
        let want = &bytes[start..(start + CHUNK).min(bytes.len())];
        assert_eq!(
            Sha256Digest::of(&c.data),
            Sha256Digest::of(want),
            "chunk {}",
            c.index
        );
        out.push(c.index);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn should_send_the_least_sent_candidate_first() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let data_dir = tempfile::tempdir()?;
        let (path, _) = random_file(data_dir.path(), "f.bin", 3 * CHUNK + 10)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let bytes = std::fs::read(&path)?;
        let addr = alice.addr.clone().context("node address")?;
        let mut node = PeerClient::connect(format!("http://{addr}")).await?;
        let ticket = locate_ticket(&tracker, &bob.session_token()?, &id).await?;
        let all = vec![0, 1, 2, 3];

        // Four asks for one of all four: every chunk once, none twice.
        let mut seen = HashSet::new();
        for _ in 0..4 {
            let got = pick(&mut node, &id, &bytes, all.clone(), 1, &ticket).await?;
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(
                seen.insert(got[0]),
                "chunk {} sent twice in the first round",
                got[0]
            );
        }
        // Chunk 0 picked twice more (the only candidate), then 1 of {0, 1}: chunk 1.
        for _ in 0..2 {
            assert_eq!(
                pick(&mut node, &id, &bytes, vec![0], 1, &ticket).await?,
                [0]
            );
        }
        assert_eq!(
            pick(&mut node, &id, &bytes, vec![0, 1], 1, &ticket).await?,
            [1]
        );
        // Two of {0, 2, 3}: 2 and 3 (sent once each) before 0 (sent three times).
        let mut two = pick(&mut node, &id, &bytes, vec![0, 2, 3], 2, &ticket).await?;
        two.sort();
        assert_eq!(two, [2, 3]);
        // Candidates past the end are refused like any index past the end.
        let err = pick(&mut node, &id, &bytes, vec![1, 9], 1, &ticket)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        Ok(())
    })
    .await
}
