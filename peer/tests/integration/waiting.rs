//! `get --wait`: a file whose only holder is offline is queued (at the tracker, and in the
//! home for where it goes) instead of failing, and the tracker has the home's node fetch it
//! once the holder is back, with the command that queued it long gone and the tracker
//! restarted in between; `status` shows waiting gets and `get --cancel` forgets them.

use std::time::Duration;

use crate::common::*;
use anyhow::Context;

/// Waits until the tracker lists `peer` as down.
async fn until_down(tracker: &TestTracker, peer: &TestPeer) -> anyhow::Result<()> {
    let id = peer.peer_id.clone().context("peer id")?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let peers = tracker.get_json("/api/v1/peers").await?;
        let down = peers["items"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["id"] == id.as_str()))
            .is_some_and(|p| p["state"] == "down");
        if down {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the tracker never saw {id} go down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn waiting_ids(status: &serde_json::Value) -> Vec<String> {
    status["waiting"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|w| w["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_get_completes_when_the_only_holder_returns_with_the_cli_long_gone()
-> anyhow::Result<()> {
    bounded(async {
        let mut tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let data = tempfile::tempdir()?;
        let chunk = ::common::manifest::MIN_CHUNK_SIZE as usize;
        let (f, f_sha) = random_file(data.path(), "f.bin", 3 * chunk + 5)?;
        let (g, _) = random_file(data.path(), "g.bin", 1000)?;
        let f_id = alice.index(&f).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let g_id = alice.index(&g).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        alice.kill_node().await?;
        until_down(&tracker, &alice).await?;

        let mut bob = TestPeer::register(&tracker, "bob").await?;
        // The node's own walk of its list comes only after an hour: the tracker's queue
        // must be what brings the file. No replicas: g must stay with alice alone.
        bob.serve(&["--waiting-every", "1h", "--storage-quota", "0"])
            .await?;
        let out = tempfile::tempdir()?;
        let dir = out.path().to_str().context("utf-8")?;

        // Without --wait: no live holder is an error.
        let plain = bob.run(&["get", &f_id, "--output", dir]).await?;
        assert!(!plain.status.success(), "{}", plain.stderr);
        assert!(plain.stderr.contains("offline"), "{}", plain.stderr);

        // With --wait: queued, and the command ends at once, successfully.
        let queued = bob
            .run(&["--json", "get", &f_id, "--wait", "--output", dir])
            .await?
            .ok()?
            .json()?;
        assert_eq!(queued[0]["id"], f_id.as_str(), "{queued}");
        assert_eq!(queued[0]["waiting"], true, "{queued}");
        assert!(queued[0]["tracker_task"].is_u64(), "{queued}");
        let status = bob.run(&["--json", "status"]).await?.ok()?.json()?;
        assert_eq!(waiting_ids(&status), vec![f_id.clone()], "{status}");
        assert!(!out.path().join("f.bin").exists());

        // The queue is the tracker's database: it outlives a restart.
        tracker.stop().await?;
        tracker.restart_after_stop().await?;

        // The holder comes back; the tracker pushes the get to bob's node.
        alice.serve(&[]).await?;
        let path = out.path().join("f.bin");
        wait_until(
            Duration::from_secs(90),
            "bob's node to fetch the waiting get",
            || sha256_of(&path).is_ok_and(|s| s == f_sha),
        )
        .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let status = bob.run(&["--json", "status"]).await?.ok()?.json()?;
            if waiting_ids(&status).is_empty() {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "still waiting: {status}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // The node stops when asked, waiting gets and all.
        bob.stop_node().await?;

        // A waiting get can be cancelled; carol has no node, and is told so.
        alice.kill_node().await?;
        until_down(&tracker, &alice).await?;
        let carol = TestPeer::register(&tracker, "carol").await?;
        let q = carol
            .run(&["get", &g_id, "--wait", "--output", dir])
            .await?
            .ok()?;
        assert!(q.stdout.contains("waiting"), "{}", q.stdout);
        assert!(q.stdout.contains("queued in this home"), "{}", q.stdout);
        assert!(
            q.stderr.contains("no node is serving this home"),
            "{}",
            q.stderr
        );
        let status = carol.run(&["--json", "status"]).await?.ok()?.json()?;
        assert_eq!(waiting_ids(&status), vec![g_id.clone()], "{status}");
        let c = carol.run(&["get", "--cancel", &g_id[..12]]).await?.ok()?;
        assert!(c.stdout.contains("cancelled"), "{}", c.stdout);
        let status = carol.run(&["--json", "status"]).await?.ok()?.json()?;
        assert!(waiting_ids(&status).is_empty(), "{status}");
        let again = carol.run(&["get", "--cancel", &g_id]).await?;
        assert!(!again.status.success());
        assert!(again.stderr.contains("no waiting get"), "{}", again.stderr);
        Ok(())
    })
    .await
}
