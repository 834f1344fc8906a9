//! The tracker's web dashboard in a real headless Chromium: a real tracker, three real
//! `peer serve` nodes and two shared files (one with a hostile name), the page driven over
//! WebDriver. It must show the peers and files, search, open a chunk map, show replication
//! health and bytes per peer, notice a killed node and the chunks it leaves
//! under-replicated without a reload (calmly: two peers cannot hold three copies), and say
//! when the tracker is gone. A screenshot is
//! kept in `target/test-artifacts/dashboard.png`.

mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;
use anyhow::{Context, bail};
use serde_json::Value;
use webdriver::Browser;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;
/// Short, so a killed node is soon `down`.
const DASH_PEER_TIMEOUT: Duration = Duration::from_secs(3);
/// The page polls every 1.5 s; on a loaded machine (the whole suite and Chromium on two
/// cores) polls run late, so allow many. Repair waits 60 s, far beyond it.
const POLL_SLACK: Duration = Duration::from_secs(15);
const REPLICATION: usize = 3;
const TITLE: &str = "Tessera tracker";
/// Markup in a file name: it must show up as these characters, never as an element.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\"> & co.bin";
const ALBUM: &str = "Abbey Road.flac";
/// Both files together: 4 MiB + 12,346 B, as the page writes it.
const BOTH_FILES: &str = "4.01 MiB";

fn dashboard_config(cfg: &mut tracker::Config) {
    cfg.peer_timeout = DASH_PEER_TIMEOUT;
    cfg.replication = REPLICATION as u32;
    cfg.repair_grace = Duration::from_secs(60);
}

/// What a user sees, read from the DOM in one go.
const PAGE_STATE: &str = r#"
const rows = (sel) => Array.from(document.querySelectorAll(sel));
return {
  title: document.title,
  conn: document.getElementById('conn').textContent,
  offline: !document.getElementById('offline').hidden,
  marker: window.__dashboardTestMarker || null,
  injected: document.querySelectorAll('body img').length,
  peersUp: document.getElementById('s-peers-up').textContent,
  under: document.getElementById('s-under').textContent,
  target: document.getElementById('s-target').textContent,
  pending: document.getElementById('s-pending').textContent,
  reach: document.getElementById('s-reach').hidden ? null : document.getElementById('s-reach').textContent,
  healthWarn: document.getElementById('health-card').classList.contains('warn'),
  bytesTotal: document.getElementById('s-bytes-total').textContent,
  chunksTotal: document.getElementById('s-chunks-total').textContent,
  peers: rows('#peers tbody tr').map(tr => ({
    id: tr.dataset.peerId,
    state: tr.dataset.state,
    cells: Array.from(tr.cells).map(td => td.textContent),
  })),
  files: rows('#files tbody tr').map(tr => ({
    id: tr.dataset.fileId,
    cells: Array.from(tr.cells).map(td => td.textContent),
  })),
  detailShown: !document.getElementById('detail').hidden,
  detailName: document.getElementById('detail-name').textContent,
  cells: rows('#chunkmap .c').map(c => Number(c.dataset.copies)),
  holders: rows('#chunks tbody tr').map(tr => tr.cells[4] ? tr.cells[4].textContent : ''),
};
"#;

/// Polls the page every 200 ms until `cond` holds, failing with the last state seen.
async fn wait_page(
    b: &Browser,
    limit: Duration,
    what: &str,
    mut cond: impl FnMut(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let s = b.eval(PAGE_STATE).await?;
        if cond(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("the page did not show {what} within {limit:?}; it shows {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn peer_row<'a>(s: &'a Value, id: &str) -> Option<&'a Value> {
    s["peers"].as_array()?.iter().find(|p| p["id"] == id)
}

/// The Shared and Held cells of a peer's row.
fn bytes_cells(s: &Value, id: &str) -> Option<(String, String)> {
    let cells = &peer_row(s, id)?["cells"];
    Some((
        cells[4].as_str()?.to_string(),
        cells[5].as_str()?.to_string(),
    ))
}

fn file_names(s: &Value) -> Vec<String> {
    s["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["cells"][0].as_str().map(str::to_string))
        .collect()
}

/// `target/test-artifacts`, found from this test binary (`target/debug/deps/…`).
fn artifacts_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .nth(3)
        .context("the test binary is not under target/PROFILE/deps")?;
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Waits until every chunk of `id` has `n` up holders and `n` verified copies (the page
/// shows verified copies; a replica's later chunks are audited up to 30 s after its first).
async fn wait_copies(tracker: &TestTracker, id: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(100);
    loop {
        let f = tracker.get_json(&format!("/api/v1/files/{id}")).await?;
        let map = f["chunk_map"].as_array().context("chunk_map")?;
        let ok = map.iter().all(|c| {
            c["copies"].as_u64().is_some_and(|k| k >= n as u64)
                && c["peers"]
                    .as_array()
                    .is_some_and(|p| p.iter().filter(|p| p["state"] == "up").count() >= n)
        });
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("file {id} did not reach {n} copies: {f}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dashboard_shows_peers_files_and_a_node_going_down() -> anyhow::Result<()> {
    webdriver::require_chromium()?;
    bounded(async {
        let tracker = TestTracker::start_with(dashboard_config).await?;
        let mut peers = Vec::new();
        for name in ["alice", "bob", "carol"] {
            let mut p = TestPeer::register(&tracker, name).await?;
            p.serve(&["--storage-quota", "64M"]).await?;
            peers.push(p);
        }
        let src = tempfile::tempdir()?;
        random_file(src.path(), ALBUM, 3 * CHUNK + 12_345)?;
        random_file(src.path(), HOSTILE, CHUNK + 1)?;
        let mut files = peers[0].index(&src.path().join(ALBUM)).await?;
        files.extend(peers[0].index(&src.path().join(HOSTILE)).await?);
        let album_id = files[0]["id"].as_str().context("id")?.to_string();
        let hostile_id = files[1]["id"].as_str().context("id")?.to_string();
        assert_eq!(files[1]["name"], HOSTILE, "the tracker keeps the name as given");

        // The page and its assets come from the tracker with proper headers.
        let resp = reqwest::get(format!("{}/", tracker.url())).await?;
        assert_eq!(resp.status(), 200);
        let ctype = resp.headers()["content-type"].to_str()?.to_string();
        assert!(ctype.starts_with("text/html"), "{ctype}");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert!(resp.headers().contains_key("etag"));

        let b = Browser::start(1280, 1000).await?;
        b.goto(&format!("{}/", tracker.url())).await?;
        let ids: Vec<String> = peers.iter().filter_map(|p| p.peer_id.clone()).collect();
        let s = wait_page(&b, Duration::from_secs(30), "3 peers up and 2 files", |s| {
            s["conn"] == "live"
                && ids.iter().all(|id| {
                    peer_row(s, id).is_some_and(|r| r["state"] == "up" && r["cells"][0] == "up")
                })
                && file_names(s).len() == 2
        })
        .await?;
        for p in &peers {
            let row = peer_row(&s, p.peer_id.as_deref().context("peer id")?).context("row")?;
            assert_eq!(row["cells"][1], p.name.as_str(), "user column: {row}");
            assert_eq!(row["cells"][3], p.addr.as_deref().context("addr")?, "{row}");
            let seen = row["cells"][7].as_str().unwrap_or_default();
            assert!(seen.ends_with(" s ago"), "last seen reads like '2 s ago': {seen:?}");
        }
        let mut names = file_names(&s);
        names.sort();
        assert_eq!(names, [HOSTILE, ALBUM], "file names shown verbatim");
        assert_eq!(s["title"], TITLE, "the hostile name ran as markup");
        assert_eq!(s["injected"], 0, "the hostile name became an element");
        let album = s["files"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["id"] == album_id.as_str()))
            .context("album row")?;
        assert_eq!(album["cells"][1], "audio");
        assert_eq!(album["cells"][2], "3.01 MiB", "human-readable size");
        assert_eq!(album["cells"][3], "4");

        // Search narrows the list through /api/v1/files?q=.
        b.type_into("#search", "abbey").await?;
        wait_page(&b, Duration::from_secs(30), "only the album after a search", |s| {
            file_names(s) == [ALBUM]
        })
        .await?;
        b.eval("const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'));")
            .await?;
        wait_page(&b, Duration::from_secs(30), "both files again", |s| {
            file_names(s).len() == 2
        })
        .await?;

        // Clicking a file opens its chunk map; copies follow replication as it happens.
        wait_copies(&tracker, &album_id, REPLICATION).await?;
        wait_copies(&tracker, &hostile_id, REPLICATION).await?;
        b.click(&format!("#files tr[data-file-id='{album_id}']")).await?;
        let s = wait_page(&b, Duration::from_secs(30), "the album's chunk map", |s| {
            s["detailShown"] == true
                && s["detailName"] == ALBUM
                && s["cells"].as_array().is_some_and(|c| {
                    c.len() == 4 && c.iter().all(|k| k == REPLICATION)
                })
        })
        .await?;
        for holders in s["holders"].as_array().context("holders")? {
            let h = holders.as_str().unwrap_or_default();
            assert!(
                ["alice", "bob", "carol"].iter().all(|u| h.contains(u)),
                "every chunk lists its three holders by user: {h:?}"
            );
        }

        // Replication has settled: nothing under-replicated or pending, every node holds
        // both files, and only alice shares them. Bob and carol each fetched the 6 chunks
        // (4 + 2) of both files as replicas: that is all the tracker saw moving.
        let s = wait_page(&b, Duration::from_secs(30), "replication settled", |s| {
            s["under"] == "0"
                && s["pending"] == "0"
                && s["chunksTotal"] == "12"
                && ids.iter().all(|id| {
                    bytes_cells(s, id).is_some_and(|(_, held)| held == BOTH_FILES)
                })
        })
        .await?;
        assert_eq!(s["target"], REPLICATION.to_string());
        assert_eq!(s["bytesTotal"], "8.02 MiB", "twice both files");
        assert_eq!(s["reach"], Value::Null, "three peers can hold three copies");
        assert_eq!(s["healthWarn"], false);
        for (p, shared) in peers.iter().zip([BOTH_FILES, "0 B", "0 B"]) {
            let id = p.peer_id.as_deref().context("id")?;
            assert_eq!(
                bytes_cells(&s, id),
                Some((shared.to_string(), BOTH_FILES.to_string())),
                "{}'s Shared and Held cells",
                p.name
            );
        }

        // A node dies: the page (not reloaded) shows it down within the peer timeout.
        b.eval("window.__dashboardTestMarker = 'same page';").await?;
        let bob = peers[1].peer_id.clone().context("bob's id")?;
        let killed = Instant::now();
        peers[1].kill_node().await?;
        let limit = DASH_PEER_TIMEOUT + POLL_SLACK;
        let s = wait_page(&b, limit, "bob down", |s| {
            peer_row(s, &bob).is_some_and(|r| r["state"] == "down" && r["cells"][0] == "down")
        })
        .await?;
        let took = killed.elapsed();
        eprintln!("dashboard showed the killed node down after {took:?}");
        assert_eq!(s["marker"], "same page", "the page was reloaded");
        assert_eq!(s["peersUp"], "2");
        for p in [&peers[0], &peers[2]] {
            let id = p.peer_id.as_deref().context("id")?;
            assert_eq!(peer_row(&s, id).context("row")?["state"], "up");
        }

        // Each of the 6 chunks now has 2 live copies of 3. Repair waits for the grace
        // period (60 s), so nothing is pending; the tracker still records what bob held.
        // Two peers cannot hold three copies: the page says so, without the warning.
        let s = wait_page(&b, POLL_SLACK, "6 under-replicated chunks", |s| {
            s["under"] == "6"
        })
        .await?;
        assert_eq!(s["pending"], "0", "no repair task within the grace period");
        assert_eq!(s["target"], REPLICATION.to_string());
        assert_eq!(s["reach"], "target 3, only 2 peers can hold copies");
        assert_eq!(s["healthWarn"], false, "an unreachable target is no alarm");
        assert_eq!(
            bytes_cells(&s, &bob),
            Some(("0 B".to_string(), BOTH_FILES.to_string())),
            "bob's row once he is down"
        );

        let errors = b.console_errors().await?;
        assert!(errors.is_empty(), "the page logged errors: {errors:#?}");

        let png = b.screenshot().await?;
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let path = artifacts_dir()?.join("dashboard.png");
        std::fs::write(&path, &png)?;
        eprintln!("screenshot: {}", path.display());

        // The tracker goes away: the page says so instead of showing stale data as live.
        let mut tracker = tracker;
        tracker.stop().await?;
        wait_page(&b, Duration::from_secs(30), "the tracker unreachable", |s| {
            s["conn"] == "unreachable" && s["offline"] == true && s["marker"] == "same page"
        })
        .await?;
        drop(b);
        Ok(())
    })
    .await
}
