//! A connection flood: a thousand connections that send nothing, half a request or half an
//! HTTP/2 preface are all closed by the header and idle timeouts; past `--max-connections`
//! a new connection is closed at once, an honest client gets answers as soon as slots free,
//! and peers' long-lived `Tasks` streams outlive many idle timeouts.

use std::time::{Duration, Instant};

use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracker::Config;

use crate::common::{TestTracker, authed, node_key, peer_id, register, within};

/// How long a closed connection may take to be seen closed: the timeouts below are 1–2 s,
/// this is for a loaded machine (the test waits only as long as it must).
const SEEN_CLOSED: Duration = Duration::from_secs(30);

/// What half-sent connections send before they stall.
const STALLS: [&[u8]; 4] = [
    b"",
    b"GET /api/v1/stats HTTP/1.1\r\nHost: tracker\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n",
    // A whole request, then silence on the kept-alive connection.
    b"GET /healthz HTTP/1.1\r\nHost: tracker\r\n\r\n",
];

/// The flood's size: 1,000, or less where the open-file limit could not hold both ends.
fn flood_size() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(usize::MAX);
    let n = 1000.min(soft.saturating_sub(300) / 2);
    if n < 1000 {
        eprintln!("open-file limit {soft}: flooding with {n} connections, not 1,000");
    }
    n
}

/// Reads until the server closes `s` (end of stream or reset); false at `deadline`.
async fn closed_by_server(mut s: TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// One sample of `/metrics`, 0 when absent.
async fn metric(t: &TestTracker, series: &str) -> f64 {
    let text = reqwest::get(t.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn should_close_a_thousand_idle_and_half_sent_connections() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.header_timeout = Duration::from_secs(1);
        cfg.idle_timeout = Duration::from_secs(2);
        let t = TestTracker::start_with(cfg).await;
        let n = flood_size();
        let started = Instant::now();
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect(t.addr).await.unwrap();
            s.write_all(STALLS[i % STALLS.len()]).await.unwrap();
            conns.push(s);
        }
        // An honest client is answered in the middle of the flood.
        let ok = reqwest::get(t.url("/healthz")).await.unwrap();
        assert_eq!(ok.status(), reqwest::StatusCode::OK);

        let deadline = Instant::now() + SEEN_CLOSED;
        let waits = conns.into_iter().map(|s| closed_by_server(s, deadline));
        let closed = futures::future::join_all(waits).await;
        let open = closed.iter().filter(|c| !**c).count();
        assert_eq!(open, 0, "{open} of {n} stalled connections still open");
        eprintln!(
            "{n} stalled connections closed by the tracker within {:.1}s",
            started.elapsed().as_secs_f64()
        );
        // The kept-alive ones were served first; the others never sent a whole request.
        let timed_out = metric(
            &t,
            "tessera_connections_closed_total{reason=\"header_timeout\"}",
        )
        .await;
        assert!(timed_out >= (n / 2) as f64, "{timed_out} header timeouts");
        t.stop().await;
    })
    .await
}

type Client = proto::tracker::v1::tracker_client::TrackerClient<tonic::transport::Channel>;

/// A node's task stream on a connection of its own.
struct Node {
    _client: Client,
    tasks: tonic::Streaming<pb::Task>,
}

impl Node {
    async fn open(mut client: Client, token: &str, n: u8) -> Node {
        let req = pb::TasksRequest {
            peer_id: peer_id(n),
            node_key: node_key(),
        };
        let tasks = client.tasks(authed(req, token)).await.unwrap().into_inner();
        Node {
            _client: client,
            tasks,
        }
    }

    /// Whether the stream is still open (no task, no end, no error for a moment).
    async fn alive(&mut self) -> bool {
        let wait = tokio::time::timeout(Duration::from_millis(100), self.tasks.message());
        wait.await.is_err()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_connections_past_the_cap_and_serve_once_slots_free() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.header_timeout = Duration::from_secs(1);
        cfg.idle_timeout = Duration::from_secs(1);
        cfg.max_connections = 20;
        let t = TestTracker::start_with(cfg).await;
        let mut first = t.grpc().await;
        let token = register(&mut first, "nodes").await;
        // Twenty nodes fill every slot with a long-lived stream, and keep it through three
        // idle timeouts: the tracker's pings are answered, so they are not idle.
        let mut nodes = vec![Node::open(first, &token, 0).await];
        for n in 1..20 {
            nodes.push(Node::open(t.grpc().await, &token, n).await);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        for (i, node) in nodes.iter_mut().enumerate() {
            assert!(node.alive().await, "node {i}'s task stream was cut");
        }

        // A twenty-first connection is closed at once, unanswered.
        let mut s = TcpStream::connect(t.addr).await.unwrap();
        let _ = s
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: tracker\r\n\r\n")
            .await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer));
        assert!(read.await.is_ok(), "a connection past the cap is closed");
        assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));

        // Half the nodes leave; an honest client is answered again.
        nodes.truncate(10);
        let deadline = Instant::now() + SEEN_CLOSED;
        loop {
            if let Ok(r) = reqwest::get(t.url("/healthz")).await
                && r.status() == reqwest::StatusCode::OK
            {
                break;
            }
            assert!(Instant::now() < deadline, "no answer once slots were free");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(metric(&t, "tessera_connections_refused_total").await >= 1.0);
        for (i, node) in nodes.iter_mut().enumerate() {
            assert!(node.alive().await, "node {i}'s task stream was cut");
        }
        drop(nodes);
        t.stop().await;
    })
    .await
}
