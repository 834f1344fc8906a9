//! The planner lease changing hands: tracker A, a real process, holds it and plans; it is
//! SIGKILLed (no clean release), and in-process tracker B on the same database takes the
//! lease over once it expires, then plans and repairs alone, each placement once.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;
use tracker::Config;

use super::{BOUND, FakeNode, Seen, delivered_once, settled, until, whoami_ok};
use crate::common::{TestTracker, announce, backend_url, manifest, peer_id, register, within};

/// A `tracker` process, killed when dropped (a failing test leaves nothing running).
struct Proc {
    child: Child,
    /// Its stderr lines, read by a thread.
    log: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn start(cfg: &Config) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracker"))
            .env_remove("TRACKER_LISTEN")
            .env_remove("TRACKER_CONFIG")
            .env("RUST_LOG", "info")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                &cfg.database_url,
            ])
            .args(["--replication", &cfg.replication.to_string()])
            .args(["--peer-timeout", "1s", "--repair-grace", "500ms"])
            // Its fake nodes serve no bytes (see `common::TestTracker::start_with`).
            .args(["--audit", "false"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tracker binary");
        let stderr = child.stderr.take().unwrap();
        let (tx, log) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, log }
    }

    /// Waits for a log line containing `needle`.
    fn wait_for(&self, needle: &str, limit: Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return,
                Ok(_) => {}
                Err(e) => panic!("no log line with {needle:?} within {limit:?}: {e}"),
            }
        }
    }
}

/// Lease validity (10 s) + renewal period (2 s) + a full sweep and planning, with room
/// for a loaded machine.
const TAKEOVER: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn should_hand_the_planner_lease_over_when_its_holder_dies_and_place_once() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config {
            replication: 3,
            peer_timeout: Duration::from_secs(1),
            repair_grace: Duration::from_millis(500),
            ..Config::ephemeral(dir.path())
        };
        // One database for both (a PostgreSQL one under TRACKER_TEST_BACKEND=postgres).
        cfg.database_url = backend_url(&cfg.database_url).await;
        let a = Proc::start(&cfg);
        let t0 = std::time::Instant::now();
        a.wait_for("leader=true", Duration::from_secs(20));
        eprintln!("A leads after {:?}", t0.elapsed());
        let b = TestTracker::start_with(cfg).await;

        let mut cb = b.grpc().await;
        let token = register(&mut cb, "alice").await;
        until(BOUND, || whoami_ok(&b, &token)).await;
        let seen: Seen = Seen::default();
        let mut nodes = Vec::new();
        for n in 1..=5 {
            nodes.push(FakeNode::start(&b, &token, n, seen.clone()).await);
        }
        let chunks = 6u32;
        // Placed by A, the lease holder, and delivered by B, which holds the streams.
        announce(&mut cb, &token, &peer_id(1), manifest("one.bin", chunks, 1)).await;
        let took = until(Duration::from_secs(20), || settled(&b)).await;
        eprintln!("the first file placed in {took:?}");
        assert_eq!(seen.lock().unwrap().len(), (chunks * 2) as usize);

        // A dies without releasing the lease; B must take it over and plan alone.
        a.child_kill();
        announce(&mut cb, &token, &peer_id(1), manifest("two.bin", chunks, 2)).await;
        let took = until(TAKEOVER, || async {
            seen.lock().unwrap().len() >= (chunks * 4) as usize && settled(&b).await
        })
        .await;
        eprintln!("B placed the second file {took:?} after A died");

        // Repair after the takeover: node 5's chunks are placed again, once.
        let before = seen.lock().unwrap().clone();
        let held_by_5 = before.iter().filter(|t| t.1 == peer_id(5)).count();
        nodes.pop().unwrap().stop.cancel();
        until(Duration::from_secs(20), || async {
            seen.lock().unwrap().len() >= before.len() + held_by_5 && settled(&b).await
        })
        .await;
        eprintln!("repaired after {:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = delivered_once(&seen);
        assert_eq!(
            after.len(),
            (chunks * 4) as usize + held_by_5,
            "each file placed once, the lost node's chunks re-placed once: {after:?}"
        );
        for n in &nodes {
            n.stop.cancel();
        }
        b.stop().await;
    })
    .await
}

impl Proc {
    /// SIGKILL: the process gets no chance to release its lease or flush.
    fn child_kill(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-KILL", &pid]).status().unwrap();
        assert!(status.success());
    }
}
