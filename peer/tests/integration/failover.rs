//! Tracker failover with real processes: two `tracker` processes on one database (a fresh
//! PostgreSQL database when `TRACKER_TEST_DATABASE_URL` names a server, else one shared
//! SQLite file), peers given both with `--tracker A,B`; tracker A is SIGKILLed in the middle
//! of a get, and the get finishes byte-identical through B. And with one tracker: it is
//! SIGKILLed mid-get and started again on the same address and database, and the get
//! finishes once it is back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use anyhow::Context;
use tokio::process::Child;
use tracker::testing::{TempPostgres, postgres_admin_url};

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// A database both trackers share, dropped at the end when it is a PostgreSQL one.
struct SharedDb {
    url: String,
    pg: Option<TempPostgres>,
    _dir: tempfile::TempDir,
}

impl SharedDb {
    async fn create() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let Some(admin) = postgres_admin_url() else {
            eprintln!("TRACKER_TEST_DATABASE_URL is not set: the trackers share an SQLite file");
            let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
            return Ok(Self {
                url,
                pg: None,
                _dir: dir,
            });
        };
        let pg = TempPostgres::create(&admin).await;
        Ok(Self {
            url: pg.url.clone(),
            pg: Some(pg),
            _dir: dir,
        })
    }

    async fn drop_db(self) {
        if let Some(pg) = self.pg {
            pg.drop_db().await;
        }
    }
}

/// A seed sharing a 24-chunk file at 3 MB/s (a get lasts ~8 s) and a getter, both
/// registered through `urls`.
struct Scene {
    _src: tempfile::TempDir,
    _seed: TestPeer,
    getter: TestPeer,
    id: String,
    sha: ::common::Sha256Digest,
}

impl Scene {
    async fn new(urls: &str) -> anyhow::Result<Self> {
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "shared.bin", 24 * CHUNK)?;
        let mut seed = Self::registered(urls, "seed").await?;
        let id = seed.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        seed.serve(&["--max-upload-rate", "3M"]).await?;
        let getter = Self::registered(urls, "getter").await?;
        Ok(Self {
            _src: src,
            _seed: seed,
            getter,
            id,
            sha,
        })
    }

    async fn registered(urls: &str, user: &str) -> anyhow::Result<TestPeer> {
        TestPeer::register_at(urls, user).await
    }

    /// Starts the getter's `get` into `out` and waits until it holds some chunks, not all.
    async fn get_under_way(&self, out: &Path) -> anyhow::Result<Child> {
        let child = self.getter.spawn_get(&self.id, out)?;
        wait_until(Duration::from_secs(30), "some chunks", || {
            self.getter.held_chunks(&self.id) >= 3
        })
        .await?;
        assert!(
            self.getter.held_chunks(&self.id) < 24,
            "the get ended before the tracker died"
        );
        Ok(child)
    }
}

/// Runs `test` with the tracker binary and a shared database, dropped afterwards; skips
/// when cargo did not build the tracker next to the peer.
async fn with_trackers<F, Fut>(test: F) -> anyhow::Result<()>
where
    F: FnOnce(PathBuf, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let Some(bin) = tracker_bin() else {
        eprintln!(
            "no tracker binary next to the peer binary (cargo test --workspace builds it); skipping"
        );
        return Ok(());
    };
    let db = SharedDb::create().await?;
    let res = bounded(test(bin, db.url.clone())).await;
    db.drop_db().await;
    res
}

#[tokio::test(flavor = "multi_thread")]
async fn should_finish_a_get_through_tracker_b_when_tracker_a_is_killed() -> anyhow::Result<()> {
    with_trackers(|bin, db| async move {
        let mut a = TrackerProcess::start(&bin, &db).await?;
        let mut b = TrackerProcess::start(&bin, &db).await?;
        let s = Scene::new(&format!("{},{}", a.url, b.url)).await?;
        let out = tempfile::tempdir()?;
        let child = s.get_under_way(out.path()).await?;
        a.child.kill().await?;

        let done = child.wait_with_output().await?;
        assert_got(&done, &out.path().join("shared.bin"), &s.sha)?;
        // B has heard of the getter's copy (reported to it after A died).
        let client = reqwest::Client::new();
        let mut recorded = false;
        for _ in 0..100 {
            let f: serde_json::Value = client
                .get(format!("{}/api/v1/files/{}", b.url, s.id))
                .send()
                .await?
                .json()
                .await?;
            if f["chunk_map"][23]["peers"]
                .as_array()
                .is_some_and(|p| p.len() == 2)
            {
                recorded = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recorded, "B does not list the getter as a holder");
        b.child.kill().await?;
        Ok(())
    })
    .await
}

/// The only tracker dies (SIGKILL: no flush, no goodbye) in the middle of a get and comes
/// back on the same address and database 2 s later: the get carries on with the source it
/// knows, finishes at the latest once the tracker is back, and writes only its file.
#[tokio::test(flavor = "multi_thread")]
async fn should_finish_a_get_when_its_only_tracker_is_killed_and_restarted() -> anyhow::Result<()> {
    with_trackers(|bin, db| async move {
        let listen = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        let mut t = TrackerProcess::start_on(&bin, &db, &listen).await?;
        let s = Scene::new(&t.url).await?;
        let out = tempfile::tempdir()?;
        let mut child = s.get_under_way(out.path()).await?;
        t.child.kill().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The port was just freed; binding it again may take a moment.
        let mut again = None;
        for _ in 0..50 {
            match TrackerProcess::start_on(&bin, &db, &listen).await {
                Ok(p) => {
                    again = Some(p);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let mut again = again.context("the tracker did not start again on its address")?;
        assert_eq!(again.url, t.url);
        assert!(
            child.try_wait()?.is_none(),
            "the get ended while the tracker was down; the test needs it to outlast the outage"
        );

        let done = child.wait_with_output().await?;
        assert_got(&done, &out.path().join("shared.bin"), &s.sha)?;
        let written: Vec<_> = std::fs::read_dir(out.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(written, vec![std::ffi::OsString::from("shared.bin")]);
        again.child.kill().await?;
        Ok(())
    })
    .await
}
