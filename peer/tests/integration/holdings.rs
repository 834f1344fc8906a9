//! Holdings spread peer to peer: a real tracker, a slow seed and two getters, each with its
//! node in its home. Once getter B knows getter A as a source, the tracker goes away, so
//! whatever B learns of A's new chunks afterwards comes from A's node (`Holdings`), not
//! from a Locate.

use std::time::Duration;

use crate::common::*;
use anyhow::Context;
use proto::peer::v1 as peer_pb;
use proto::peer::v1::peer_client::PeerClient;
use tonic::transport::Channel;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;
const CHUNKS: usize = 16;

/// How many chunks the node at `node` has sent (all chunks here are whole).
async fn chunks_sent(node: &mut PeerClient<Channel>) -> anyhow::Result<u64> {
    let s = node.status(peer_pb::StatusRequest {}).await?.into_inner();
    Ok(s.bytes_sent / CHUNK as u64)
}

/// Polls `node` until it has sent more than `n` chunks, for up to `limit`.
async fn until_sent_more_than(
    node: &mut PeerClient<Channel>,
    n: u64,
    limit: Duration,
) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let sent = chunks_sent(node).await?;
        if sent > n {
            return Ok(sent);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the node sent {sent} chunks, not more than {n}, in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fetch_chunks_another_getter_gained_while_the_tracker_is_away() -> anyhow::Result<()>
{
    bounded(async {
        // No audits: they would fetch from A's node too, and this counts what A sends B.
        let mut tracker = TestTracker::start_with(|cfg| cfg.audit = false).await?;
        let mut seed = TestPeer::register(&tracker, "seed").await?;
        seed.serve(&["--storage-quota", "0", "--max-upload-rate", "2M"])
            .await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "f.bin", CHUNKS * CHUNK)?;
        let id = seed.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let mut a = TestPeer::register(&tracker, "a").await?;
        let mut b = TestPeer::register(&tracker, "b").await?;
        a.serve(&["--storage-quota", "0"]).await?;
        b.serve(&["--storage-quota", "0"]).await?;
        let a_addr = a.addr.clone().context("a's node address")?;
        let mut a_node = PeerClient::connect(format!("http://{a_addr}")).await?;
        let (oa, ob) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let get_a = a.spawn_get(&id, oa.path())?;
        let get_b = b.spawn_get(&id, ob.path())?;

        // Only B fetches from A's node: once it has, B knows A from a Locate.
        until_sent_more_than(&mut a_node, 0, Duration::from_secs(60)).await?;
        tracker.stop().await?;
        // What the tracker could have told B of A is at most what A's record held by now.
        let held = u64::from(a.held_chunks(&id));
        assert!(
            held < CHUNKS as u64,
            "A finished before the tracker stopped"
        );
        // A request goes to a source for a chunk that source holds, once per chunk: more
        // chunks than A held when B last heard from the tracker means B heard from A.
        let sent = until_sent_more_than(&mut a_node, held, Duration::from_secs(60)).await?;
        tracing::info!(
            held,
            sent,
            "A's node served chunks it gained after the tracker left"
        );
        tracker.restart_after_stop().await?;

        let done_b = get_b.wait_with_output().await?;
        assert_got(&done_b, &ob.path().join("f.bin"), &sha)?;
        let done_a = get_a.wait_with_output().await?;
        assert_got(&done_a, &oa.path().join("f.bin"), &sha)?;
        let out: serde_json::Value = serde_json::from_slice(&done_b.stdout)?;
        assert_eq!(out[0]["sources"], 2, "B fetched from the seed and A: {out}");

        // A's node, now a full holder, says so (at once, or when it re-reads A's record)
        // and ends the stream.
        let ticket = locate_ticket(&tracker, &b.session_token()?, &id).await?;
        let req = peer_pb::HoldingsRequest {
            file_id: id.clone(),
            ticket: Some(ticket),
            proof: raw_proof(::common::Method::Holdings, &id),
            certificate: None,
        };
        let mut stream = a_node.holdings(req).await?.into_inner();
        let mut have = ::common::Bitfield::new(CHUNKS as u32);
        while let Some(u) = stream.message().await? {
            if !u.have.is_empty() {
                have = ::common::Bitfield::from_bytes(&u.have, CHUNKS as u32)?;
            }
            u.added.iter().for_each(|&i| have.set(i));
        }
        assert!(have.is_complete(), "{have:?}");
        Ok(())
    })
    .await
}
