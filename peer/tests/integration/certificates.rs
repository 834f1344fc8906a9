//! Peer keys and certificates end to end: a real tracker and real `peer` processes. A login
//! leaves a private key and a certificate of it in the home; a node takes a ticket only
//! with a proof of the key it names, and a certificate instead of a ticket only while its
//! tracker does not answer; a get keeps going when every tracker dies.

use std::time::Duration;

use crate::common::*;
use ::common::{Certificate, Method, NodeKey, TicketVerifier};
use anyhow::Context;
use bytes::Bytes;
use proto::peer::v1 as peer_pb;
use proto::peer::v1::peer_client::PeerClient;
use tonic::Code;
use tonic::transport::Channel;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn json_file(peer: &TestPeer, name: &str) -> anyhow::Result<serde_json::Value> {
    let path = peer.home.path().join(name);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    Ok(serde_json::from_str(&text)?)
}

/// The key a login left in `peer`'s home.
fn home_key(peer: &TestPeer) -> anyhow::Result<NodeKey> {
    let v = json_file(peer, "node_key.json")?;
    let secret = hex::decode(v["secret_key"].as_str().context("secret_key")?)?;
    Ok(NodeKey::from_secret(
        &secret.try_into().map_err(|_| anyhow::anyhow!("32 bytes"))?,
    ))
}

/// The certificate a login left in `peer`'s home.
fn home_certificate(peer: &TestPeer) -> anyhow::Result<Certificate> {
    let v = json_file(peer, "certificate.json")?;
    let hex_field = |k: &str| -> anyhow::Result<Vec<u8>> {
        Ok(hex::decode(v[k].as_str().context("hex field")?)?)
    };
    Certificate::from_parts(
        v["peer_id"].as_str().context("peer_id")?,
        v["user"].as_str().context("user")?.to_string(),
        &hex_field("key")?,
        v["expires_at_ms"].as_i64().context("expiry")?,
        &hex_field("signature")?,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// GetChunks with exactly these credentials; the chunks that arrived, or the refusal.
async fn get_chunks(
    node: &mut PeerClient<Channel>,
    file: &str,
    ticket: Option<peer_pb::Ticket>,
    proof: Option<peer_pb::Proof>,
    certificate: Option<peer_pb::Certificate>,
) -> Result<Vec<Bytes>, tonic::Status> {
    let req = peer_pb::GetChunksRequest {
        file_id: file.into(),
        indices: vec![0, 1],
        ticket,
        pick: 0,
        proof,
        certificate,
    };
    let mut stream = node.get_chunks(req).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.message().await? {
        out.push(c.data);
    }
    Ok(out)
}

fn prove(key: &NodeKey, file: &str) -> Option<peer_pb::Proof> {
    let id = file.parse().expect("file id");
    Some((&key.prove(Method::GetChunks, &id, now_ms())).into())
}

fn refused(r: Result<Vec<Bytes>, tonic::Status>, what: &str, says: &str) {
    match r {
        Ok(c) => panic!("{what}: got {} chunks", c.len()),
        Err(s) => {
            assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
            assert!(s.message().contains(says), "{what}: {s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_copied_tickets_and_certificates_and_take_certificates_only_offline()
-> anyhow::Result<()> {
    bounded(async {
        let mut tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let data = tempfile::tempdir()?;
        let (path, _) = random_file(data.path(), "a.bin", 2 * CHUNK + 10)?;
        let bytes = std::fs::read(&path)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();

        // The login left a private key and a certificate of it, from this tracker.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(bob.home.path().join("node_key.json"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key is private");
        let bob_key = home_key(&bob)?;
        let bob_cert = home_certificate(&bob)?;
        let tracker_key =
            TicketVerifier::from_public(&tracker.ticket_signer().await?.public_key())?;
        let claims = tracker_key.verify_certificate(&bob_cert, now_ms())?;
        assert_eq!(claims.user, "bob");
        assert_eq!(claims.key, bob_key.public_key());
        assert!(
            claims.expires_at_ms > now_ms() + 3_600_000,
            "about a day: {claims:?}"
        );
        let cert = Some(peer_pb::Certificate::from(&bob_cert));

        let addr = alice.addr.clone().context("node address")?;
        let mut node = PeerClient::connect(format!("http://{addr}")).await?;

        // A ticket names the key it was issued for: copied to bob's key it is useless.
        let ticket = locate_ticket(&tracker, &bob.session_token()?, &id).await?;
        refused(
            get_chunks(
                &mut node,
                &id,
                Some(ticket.clone()),
                prove(&bob_key, &id),
                None,
            )
            .await,
            "a ticket proved with another key",
            "another key than the ticket",
        );
        let good = get_chunks(&mut node, &id, Some(ticket), prove(&raw_key(), &id), None).await?;
        assert_eq!(good.len(), 2);

        // While the tracker answers, a certificate is no ticket.
        refused(
            get_chunks(&mut node, &id, None, prove(&bob_key, &id), cert.clone()).await,
            "a certificate while the tracker answers",
            "ticket from the tracker is required",
        );

        // Every tracker gone: once alice's node has seen its heartbeats fail, bob's
        // certificate with a proof of bob's key is enough.
        tracker.stop().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let chunks = loop {
            match get_chunks(&mut node, &id, None, prove(&bob_key, &id), cert.clone()).await {
                Ok(c) => break c,
                Err(s) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => anyhow::bail!("the certificate was never taken: {s:?}"),
            }
        };
        assert_eq!(chunks.len(), 2);
        assert_eq!(&chunks[0][..], &bytes[..CHUNK]);
        assert_eq!(&chunks[1][..], &bytes[CHUNK..2 * CHUNK]);

        // The certificate is public; the key is not.
        let mallory = NodeKey::generate();
        refused(
            get_chunks(&mut node, &id, None, prove(&mallory, &id), cert.clone()).await,
            "bob's certificate proved with mallory's key",
            "another key than the certificate",
        );
        let mut renamed = cert.clone().context("cert")?;
        renamed.user = "mallory".into();
        refused(
            get_chunks(&mut node, &id, None, prove(&bob_key, &id), Some(renamed)).await,
            "an altered certificate",
            "certificate signature is not valid",
        );
        // One proof, one request.
        let once = prove(&bob_key, &id);
        get_chunks(&mut node, &id, None, once.clone(), cert.clone()).await?;
        refused(
            get_chunks(&mut node, &id, None, once, cert.clone()).await,
            "a replayed proof",
            "replayed",
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_finish_a_get_when_every_tracker_dies() -> anyhow::Result<()> {
    let Some(bin) = tracker_bin() else {
        anyhow::bail!("no tracker binary next to the peer binary: run `cargo test --workspace`");
    };
    bounded(async {
        // A tracker process, SIGKILLed mid-get: no flush, no goodbye.
        let db = tempfile::tempdir()?;
        let url = format!("sqlite://{}?mode=rwc", db.path().join("t.db").display());
        let mut tracker = TrackerProcess::start(&bin, &url).await?;
        let mut alice = TestPeer::register_at(&tracker.url, "alice").await?;
        // Slow enough that the tracker dies mid-get: 8 chunks at 2 MiB/s.
        alice.serve(&["--max-upload-rate", "2M"]).await?;
        let bob = TestPeer::register_at(&tracker.url, "bob").await?;
        let data = tempfile::tempdir()?;
        let (path, sha) = random_file(data.path(), "f.bin", 8 * CHUNK)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();

        let out = tempfile::tempdir()?;
        let get = bob.spawn_get(&id, out.path())?;
        wait_until(Duration::from_secs(60), "bob's first chunk", || {
            bob.held_chunks(&id) >= 1
        })
        .await?;
        tracker.child.kill().await?;
        let done = tokio::time::timeout(Duration::from_secs(120), get.wait_with_output())
            .await
            .context("the get did not end")??;
        assert_got(&done, &out.path().join("f.bin"), &sha)?;
        Ok(())
    })
    .await
}
