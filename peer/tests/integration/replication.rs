//! Replication end to end: a real tracker with `--replication 3` and real `peer serve`
//! nodes offering storage. Copies are placed, survive the sharer, are repaired when a
//! holder dies, wait in the queue for a node that is offline, resume after a tracker
//! restart, stay within quotas, and disappear on unindex.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use anyhow::{Context, bail};

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;
const N: usize = 3;

fn replicating(cfg: &mut tracker::Config) {
    cfg.replication = N as u32;
    cfg.repair_grace = Duration::from_secs(1);
    cfg.task_lease = Duration::from_secs(10);
}

/// Starts `n` serving peers named `{prefix}{i}`, each with `serve_args`.
async fn nodes(
    tracker: &TestTracker,
    prefix: &str,
    n: usize,
    serve_args: &[&str],
) -> anyhow::Result<Vec<TestPeer>> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut p = TestPeer::register(tracker, &format!("{prefix}{i}")).await?;
        p.serve(serve_args).await?;
        out.push(p);
    }
    Ok(out)
}

/// Live copies per chunk, failing if any chunk lists one peer twice.
async fn copies(tracker: &TestTracker, id: &str) -> anyhow::Result<Vec<usize>> {
    let file = tracker.get_json(&format!("/api/v1/files/{id}")).await?;
    let map = file["chunk_map"].as_array().context("chunk_map")?;
    let mut out = Vec::new();
    for chunk in map {
        let peers = chunk["peers"].as_array().context("peers")?;
        let ids: HashSet<&str> = peers.iter().filter_map(|p| p["id"].as_str()).collect();
        if ids.len() != peers.len() {
            bail!(
                "two copies of chunk {} on one peer: {peers:?}",
                chunk["index"]
            );
        }
        let up = peers.iter().filter(|p| p["state"] == "up").count();
        out.push(up);
    }
    Ok(out)
}

/// Waits until every chunk has at least `n` live copies and no task is pending.
async fn wait_replicated(tracker: &TestTracker, id: &str, n: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let c = copies(tracker, id).await?;
        let stats = tracker.get_json("/api/v1/stats").await?;
        if c.iter().all(|&k| k >= n) && stats["pending_tasks"] == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not replicated to {n}: copies {c:?}, stats {stats}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes of replica chunks in a peer's home.
fn replica_bytes(p: &TestPeer) -> u64 {
    let dir = p.home.path().join("replicas");
    files_below(&dir)
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Indexes a random file of `size` bytes from `p` and returns (dir, id, sha).
async fn share(
    p: &TestPeer,
    size: usize,
) -> anyhow::Result<(tempfile::TempDir, String, ::common::Sha256Digest)> {
    let dir = tempfile::tempdir()?;
    let (path, sha) = random_file(dir.path(), "precious.bin", size)?;
    let files = p.index(&path).await?;
    let id = files[0]["id"].as_str().context("id")?.to_string();
    Ok((dir, id, sha))
}

#[tokio::test(flavor = "multi_thread")]
async fn should_replicate_survive_the_sharer_and_repair_within_quotas() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start_with(replicating).await?;
        let mut sharer = TestPeer::register(&tracker, "sharer").await?;
        sharer.serve(&["--storage-quota", "0"]).await?;
        let mut hosts = nodes(&tracker, "host", 4, &[]).await?;
        // A fifth host with room for at most 4 chunks.
        let mut small = TestPeer::register(&tracker, "small").await?;
        small.serve(&["--storage-quota", "5M"]).await?;

        let (_src, id, sha) = share(&sharer, 16 * CHUNK + 77).await?;
        wait_replicated(&tracker, &id, N).await?;

        // The sharer leaves: the file still downloads, byte-identical, from replicas.
        sharer.kill_node().await?;
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let got = getter.get(&id, out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("precious.bin"))?, sha);
        assert!(got["sources"].as_u64() >= Some(1), "{got}");

        // Once the sharer is down past timeout + grace, its copies are replaced.
        wait_replicated(&tracker, &id, N).await?;

        // A replica holder dies: repair brings every chunk back to N on the others (host1..3
        // have room for everything; `small` for a few chunks at most).
        hosts[0].kill_node().await?;
        tokio::time::sleep(PEER_TIMEOUT).await;
        wait_replicated(&tracker, &id, N).await?;

        assert!(
            replica_bytes(&small) <= 5_000_000,
            "quota kept: {}",
            replica_bytes(&small)
        );
        let peers = tracker.get_json("/api/v1/peers").await?;
        for p in peers["items"].as_array().context("items")? {
            let (used, quota) = (p["storage_used"].as_u64(), p["storage_quota"].as_u64());
            assert!(used <= quota, "peer over quota: {p}");
        }
        assert_eq!(replica_bytes(&sharer), 0, "quota 0 hosts nothing");

        let files = hosts[1].run(&["--json", "files"]).await?.ok()?.json()?;
        let kinds: Vec<&str> = files
            .as_array()
            .context("array")?
            .iter()
            .filter_map(|f| f["kind"].as_str())
            .collect();
        assert_eq!(kinds, ["replica"], "replicas are listed as such");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_queue_work_for_an_offline_peer_and_unindex_every_copy() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start_with(replicating).await?;
        let mut sharer = TestPeer::register(&tracker, "sharer").await?;
        sharer.serve(&["--storage-quota", "0"]).await?;
        let mut hosts = nodes(&tracker, "host", 2, &[]).await?;
        let (src, id, _sha) = share(&sharer, 6 * CHUNK).await?;
        wait_replicated(&tracker, &id, N).await?;
        assert!(replica_bytes(&hosts[0]) > 0 && replica_bytes(&hosts[1]) > 0);

        // host0 goes offline; meanwhile the sharer withdraws the file.
        hosts[0].kill_node().await?;
        sharer.run(&["unindex", &id]).await?.ok()?;
        wait_until(Duration::from_secs(30), "host1 dropped its copies", || {
            replica_bytes(&hosts[1]) == 0
        })
        .await?;
        let stats = tracker.get_json("/api/v1/stats").await?;
        assert!(
            stats["pending_tasks"].as_u64() >= Some(1),
            "host0's drop waits: {stats}"
        );
        assert!(replica_bytes(&hosts[0]) > 0);

        // host0 comes back and receives the work queued for it.
        hosts[0].serve(&[]).await?;
        wait_until(Duration::from_secs(30), "host0 dropped its copies", || {
            replica_bytes(&hosts[0]) == 0
        })
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tracker.get_json("/api/v1/stats").await?["pending_tasks"] != 0 {
            if tokio::time::Instant::now() > deadline {
                bail!("queue not drained");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            src.path().join("precious.bin").exists(),
            "the user's own file stays"
        );
        let search = hosts[1]
            .run(&["--json", "search", "precious"])
            .await?
            .ok()?
            .json()?;
        assert_eq!(search.as_array().map(Vec::len), Some(0));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_resume_replication_after_a_tracker_restart() -> anyhow::Result<()> {
    bounded(async {
        let mut tracker = TestTracker::start_with(replicating).await?;
        let slow = ["--max-upload-rate", "3M"];
        let mut sharer = TestPeer::register(&tracker, "sharer").await?;
        sharer
            .serve(&["--storage-quota", "0", "--max-upload-rate", "3M"])
            .await?;
        let hosts = nodes(&tracker, "host", 3, &slow).await?;
        let (_src, id, _sha) = share(&sharer, 16 * CHUNK).await?;

        wait_until(Duration::from_secs(30), "replication under way", || {
            held_anywhere(&hosts, &id) >= 2
        })
        .await?;
        let before = tracker.get_json("/api/v1/stats").await?;
        tracker.stop().await?;
        tracker.restart_after_stop().await?;
        wait_replicated(&tracker, &id, N).await?;
        assert!(
            before["pending_tasks"].as_u64() >= Some(1),
            "restart came mid-way: {before}"
        );
        Ok(())
    })
    .await
}

/// Replica chunk files of `id` across `peers`.
fn held_anywhere(peers: &[TestPeer], id: &str) -> usize {
    peers
        .iter()
        .map(|p| files_below(&p.home.path().join("replicas").join(id)).len())
        .sum::<usize>()
}
