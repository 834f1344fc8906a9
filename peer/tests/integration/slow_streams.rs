//! A node under a flood of slow readers: a real tracker and a real `peer serve`, whose
//! GetChunks is called 1,000 times by one account over several HTTP/2 connections, each
//! stream read for one message and then left unread. The node admits its per-client cap and
//! answers the rest RESOURCE_EXHAUSTED, its memory stays within the bound its limits state
//! (`StreamLimits::memory_bound`), another account's `peer get` meanwhile finishes
//! byte-identical, and the memory comes back once the flood closes.
//!
//! The numbers are measured on the node's process (VmRSS) and printed to stderr.
//!
//! A second test runs a node in this process with short timeouts: a stream that stops
//! reading ends its connection, one that reads slowly does not, and connections that send
//! nothing, half a preface, or come past the per-address cap are closed.

use std::net::IpAddr;
use std::time::Duration;

use crate::common::*;
use anyhow::Context;
use peer::home::Home;
use peer::node::{Node, NodeConfig, StreamLimits};
use proto::peer::v1 as peer_pb;
use proto::peer::v1::peer_client::PeerClient;
use proto::tracker::v1 as tracker_pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Endpoint;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;
const CHUNKS: usize = 8;
const STREAMS: usize = 1000;
/// The flood's connections: 84 streams each, under the node's 88 per connection.
const CONNECTIONS: usize = 12;
/// The flood comes from another loopback address than the honest getter, as it would from
/// another machine (the node counts clients by IP address as well as by account).
const FLOOD_IP: [u8; 4] = [127, 0, 0, 2];
const MIB: u64 = 1 << 20;

/// The resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS line")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb * 1024)
}

/// The pid of the node running on `peer`'s home (from its node.json).
fn node_pid(peer: &TestPeer) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(peer.home.path().join("node.json"))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    let pid = v["pid"].as_u64().context("node.json has no pid")?;
    Ok(u32::try_from(pid)?)
}

/// A ticket the way a getter gets one: Login, then Locate, over the tracker's gRPC API.
async fn login_and_locate(
    tracker: &TestTracker,
    user: &str,
    file: &str,
) -> anyhow::Result<peer_pb::Ticket> {
    let mut c = tracker_pb::tracker_client::TrackerClient::connect(tracker.url()).await?;
    let session = c
        .login(tracker_pb::Credentials {
            user: user.into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner();
    locate_ticket(tracker, &session.token, file).await
}

/// Samples `pid`'s RSS every 20 ms until `stop` turns true; returns the highest.
async fn peak_rss(pid: u32, mut stop: watch::Receiver<bool>) -> u64 {
    let mut peak = 0;
    loop {
        peak = peak.max(rss(pid).unwrap_or(0));
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => return peak.max(rss(pid).unwrap_or(0)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_stay_bounded_under_a_thousand_stalled_streams_and_serve_others()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut seed = TestPeer::register(&tracker, "seed").await?;
        seed.serve(&["--storage-quota", "0"]).await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "f.bin", CHUNKS * CHUNK)?;
        let id = seed.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let alice = TestPeer::register(&tracker, "alice").await?;
        TestPeer::register(&tracker, "mallory").await?;
        let ticket = login_and_locate(&tracker, "mallory", &id).await?;
        let addr = seed.addr.clone().context("node address")?;
        let pid = node_pid(&seed)?;
        // Settled: the index's rescan and the first heartbeats are done.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rss(pid)?;
        let (stop, stopped) = watch::channel(false);
        let sampler = tokio::spawn(peak_rss(pid, stopped));

        // The flood: every stream asks for the whole file, with the HTTP/2 default stream
        // window (64 KiB), so what it does not read stays on the node's side.
        let mut channels = Vec::new();
        for _ in 0..CONNECTIONS {
            let ep = Endpoint::from_shared(format!("http://{addr}"))?
                .local_address(Some(IpAddr::from(FLOOD_IP)))
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(32 << 20);
            channels.push(ep.connect().await?);
        }
        let calls = (0..STREAMS).map(|i| {
            let mut client = PeerClient::new(channels[i % CONNECTIONS].clone());
            let req = peer_pb::GetChunksRequest {
                file_id: id.clone(),
                indices: (0..CHUNKS as u32).collect(),
                ticket: Some(ticket.clone()),
                pick: 0,
                proof: raw_proof(::common::Method::GetChunks, &id),
                certificate: None,
            };
            async move { client.get_chunks(req).await }
        });
        let answers = futures::future::join_all(calls).await;
        let mut streams = Vec::new();
        let mut refused = 0;
        for a in answers {
            match a {
                Ok(r) => streams.push(r.into_inner()),
                Err(s) if s.code() == Code::ResourceExhausted => {
                    assert!(s.message().contains("try again later"), "{s:?}");
                    refused += 1;
                }
                Err(s) => anyhow::bail!("a flood call failed otherwise: {s:?}"),
            }
        }
        let cap = StreamLimits::default().uploads.per_client;
        assert_eq!(streams.len(), cap, "the per-client cap admits {cap}");
        assert_eq!(refused, STREAMS - cap, "the rest are told the node is busy");

        // Each admitted stream reads one message, then stalls: what follows fills the
        // client's share of the node's buffer, and its streams wait for room.
        let firsts = futures::future::join_all(
            streams
                .iter_mut()
                .map(|s| tokio::time::timeout(Duration::from_secs(5), s.message())),
        )
        .await;
        let read_one = firsts
            .iter()
            .filter(|r| matches!(r, Ok(Ok(Some(_)))))
            .count();

        // Meanwhile another account's honest get finishes, byte-identical.
        let out = tempfile::tempdir()?;
        let got = alice.get(&id, out.path(), &[]).await?;
        assert_eq!(got["name"], "f.bin", "{got}");
        assert_eq!(sha256_of(&out.path().join("f.bin"))?, sha);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = stop.send(true);
        let peak = sampler.await?;

        drop(streams);
        drop(channels);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut after = rss(pid)?;
        while after >= before + 16 * MIB && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            after = rss(pid)?;
        }
        let bound = StreamLimits::default().memory_bound();
        eprintln!(
            "slow_streams: {STREAMS} streams, {} admitted ({read_one} read one message), \
             {refused} refused; node RSS before {} MiB, peak {} MiB, after {} MiB; \
             bound: before + {} MiB",
            cap,
            before / MIB,
            peak / MIB,
            after / MIB,
            bound / MIB
        );
        assert!(read_one > 0, "some streams got their first chunk");
        assert!(
            peak < before + bound,
            "peak {} MiB is over the bound ({} + {} MiB)",
            peak / MIB,
            before / MIB,
            bound / MIB
        );
        assert!(
            after < before + 32 * MIB,
            "after the flood {} MiB, before {} MiB",
            after / MIB,
            before / MIB
        );
        Ok(())
    })
    .await
}

/// Waits up to `limit` for the node to close `tcp`; returns how long it took.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> anyhow::Result<Duration> {
    let start = tokio::time::Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + limit, tcp.read(&mut buf)).await {
            Err(_) => anyhow::bail!("still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(start.elapsed()),
            // The node's SETTINGS, say: not closed yet.
            Ok(Ok(_)) => {}
        }
    }
}

/// A GetChunks stream of the whole file on its own connection with the HTTP/2 default
/// window, so the node can send little ahead of what is read.
async fn open_stream(
    addr: &str,
    id: &str,
    ticket: &peer_pb::Ticket,
) -> anyhow::Result<tonic::Streaming<peer_pb::Chunk>> {
    let ch = Endpoint::from_shared(format!("http://{addr}"))?
        .initial_stream_window_size(65_535)
        .connect()
        .await?;
    let req = peer_pb::GetChunksRequest {
        file_id: id.into(),
        indices: (0..CHUNKS as u32).collect(),
        ticket: Some(ticket.clone()),
        pick: 0,
        proof: raw_proof(::common::Method::GetChunks, id),
        certificate: None,
    };
    Ok(PeerClient::new(ch).get_chunks(req).await?.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_end_stalled_streams_and_silent_connections_but_not_slow_readers()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let seed = TestPeer::register(&tracker, "seed").await?;
        let src = tempfile::tempdir()?;
        let (path, _) = random_file(src.path(), "f.bin", CHUNKS * CHUNK)?;
        let id = seed.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        TestPeer::register(&tracker, "mallory").await?;
        let stall = Duration::from_secs(2);
        let limits = StreamLimits {
            stall_timeout: stall,
            handshake_timeout: Duration::from_secs(2),
            connections_per_ip: 3,
            ..StreamLimits::default()
        };
        let config = NodeConfig {
            limits,
            ..NodeConfig::new(
                Home::open(Some(seed.home.path().to_path_buf()))?,
                vec![tracker.url()],
            )
        };
        let node = Node::bind(config, TcpListener::bind("127.0.0.1:0").await?).await?;
        let addr = node.local_addr()?.to_string();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(node.run(shutdown.clone()));
        let ticket = login_and_locate(&tracker, "mallory", &id).await?;

        // A reader that stops: its connection is closed within the stall timeout and one
        // sweep. A slow one alongside, reading a chunk every half second (a quarter of the
        // stall timeout) for 4 s, is not cut.
        let mut stalled = open_stream(&addr, &id, &ticket).await?;
        stalled.message().await?.context("a first chunk")?;
        let mut slow = open_stream(&addr, &id, &ticket).await?;
        let started = tokio::time::Instant::now();
        let mut n = 0;
        while let Some(c) = slow.message().await? {
            assert_eq!(c.index, n);
            n += 1;
            tokio::time::sleep(stall / 4).await;
        }
        assert_eq!(n, CHUNKS as u32, "the slow reader got every chunk");
        assert!(started.elapsed() > 2 * stall, "it was slow for long enough");
        let ended = tokio::time::timeout(stall * 4, async {
            loop {
                match stalled.message().await {
                    Ok(Some(_)) => {}
                    other => return other,
                }
            }
        })
        .await
        .context("the stalled stream was not ended")?;
        assert!(
            ended.is_err(),
            "the stalled stream ends in an error: {ended:?}"
        );
        drop((stalled, slow));

        // Silent, and half a preface: closed after the handshake timeout.
        let mut silent = TcpStream::connect(&addr).await?;
        let mut half = TcpStream::connect(&addr).await?;
        half.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12])
            .await?;
        closed_within(&mut silent, Duration::from_secs(10)).await?;
        closed_within(&mut half, Duration::from_secs(10)).await?;

        // Three connections from one address are served; a fourth is closed at once.
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(
                Endpoint::from_shared(format!("http://{addr}"))?
                    .connect()
                    .await?,
            );
        }
        let mut fourth = TcpStream::connect(&addr).await?;
        let took = closed_within(&mut fourth, Duration::from_secs(10)).await?;
        assert!(
            took < Duration::from_secs(1),
            "closed at once, not timed out: {took:?}"
        );
        drop(held);

        shutdown.cancel();
        running.await??;
        Ok(())
    })
    .await
}
