//! A database outage on PostgreSQL, seen from real `peer` processes: the tracker's real
//! database refuses connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`, every open
//! connection ended, as in the tracker's own `outage::postgres` tests) while a getter
//! fetches a replicated file, served from what the tracker holds in memory, and an index
//! waits for the database; once it is back, the tracker agrees with every answer it gave,
//! and a tracker started again on the database still does. Skipped, saying so, unless
//! `TRACKER_TEST_DATABASE_URL` names a server.

use std::time::{Duration, Instant};

use crate::common::*;
use crate::outage::{CHUNK, DB_DOWN, Running, WAITING, id_of, lists, lists_up, time_until};
use anyhow::Context;

/// The tracker's PostgreSQL database refusing connections (`ALLOW_CONNECTIONS false`, every
/// open connection ended), as a database restart looks to the tracker; set from an admin
/// connection to the database `TRACKER_TEST_DATABASE_URL` names, never to `name`.
/// Connections are allowed again when it is dropped, even by a failing test.
struct DbRefusing {
    admin: String,
    name: String,
    refusing: bool,
}

impl DbRefusing {
    async fn start(admin: &str, name: &str) -> anyhow::Result<Self> {
        // Built first, so a failure between the two statements allows again.
        let down = Self {
            admin: admin.into(),
            name: name.into(),
            refusing: true,
        };
        pg_exec(
            admin,
            &format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"),
        )
        .await?;
        let kill = format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{name}' AND pid <> pg_backend_pid()"
        );
        pg_exec(admin, &kill).await?;
        Ok(down)
    }

    async fn end(mut self) -> anyhow::Result<()> {
        pg_exec(&self.admin, &self.allow()).await?;
        self.refusing = false;
        Ok(())
    }

    fn allow(&self) -> String {
        format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name)
    }
}

impl Drop for DbRefusing {
    fn drop(&mut self) {
        if !self.refusing {
            return;
        }
        let (admin, sql) = (self.admin.clone(), self.allow());
        // Drop may run on a runtime's thread: a thread with a runtime of its own.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(pg_exec(&admin, &sql))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not allow connections to {} again", self.name);
        }
    }
}

async fn pg_exec(url: &str, sql: &str) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let db = sea_orm::Database::connect(url).await?;
    db.execute_unprepared(sql)
        .await
        .with_context(|| sql.to_string())?;
    db.close().await?;
    Ok(())
}

/// Three copies wanted: the sharer's, a replica on the one storage node, and the getter's
/// download, so that none of them is a surplus copy to drop.
fn replicating(cfg: &mut tracker::Config) {
    cfg.replication = 3;
    cfg.repair_grace = Duration::from_secs(1);
    cfg.task_lease = Duration::from_secs(10);
}

/// The `holders` of file `id` in what `peer --json search NAME` lists, if it lists it.
async fn holders_found(peer: &TestPeer, name: &str, id: &str) -> anyhow::Result<Option<u64>> {
    let v = peer.run(&["--json", "search", name]).await?.ok()?.json()?;
    let files = v.as_array().context("a JSON array")?;
    Ok(files
        .iter()
        .find(|f| f["id"] == id)
        .and_then(|f| f["holders"].as_u64()))
}

async fn file_json(tracker: &TestTracker, id: &str) -> anyhow::Result<serde_json::Value> {
    tracker.get_json(&format!("/api/v1/files/{id}")).await
}

/// `e` with what the tracker lists for file `id`, for a failure's message.
async fn explain(e: anyhow::Error, tracker: &TestTracker, id: &str) -> anyhow::Error {
    match file_json(tracker, id).await {
        Ok(file) => e.context(format!("the tracker lists {file}")),
        Err(_) => e,
    }
}

async fn healthz(tracker: &TestTracker) -> anyhow::Result<u16> {
    let r = reqwest::get(format!("{}/healthz", tracker.url())).await?;
    Ok(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_get_and_index_through_a_database_outage_on_postgres() -> anyhow::Result<()> {
    tracker::testing::init_logging();
    let Some((tracker, pg)) = TestTracker::start_on_postgres(replicating).await? else {
        return Ok(());
    };
    // Longer than the usual bound: replication, a 10 s outage and a restart, on a machine
    // that may be loaded. Run as a task of its own so that the database is dropped however
    // it ends (connections allowed again first, by the guard, even on a panic).
    let mut run = tokio::spawn(through_a_database_outage(tracker, pg.name.clone()));
    let res = match tokio::time::timeout(Duration::from_secs(300), &mut run).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => Err(anyhow::anyhow!("the test failed: {e}")),
        Err(_) => {
            run.abort();
            let _ = run.await;
            Err(anyhow::anyhow!("test timed out"))
        }
    };
    pg.drop_db().await;
    res
}

/// Alice shares a file that is replicated on bob's storage node; the database refuses
/// connections for 10 s, during which carol gets the file and alice indexes another.
async fn through_a_database_outage(mut tracker: TestTracker, db: String) -> anyhow::Result<()> {
    let admin = tracker::testing::postgres_admin_url().context("the server")?;
    let mut alice = TestPeer::register(&tracker, "alice").await?;
    alice.serve(&["--storage-quota", "0"]).await?;
    let mut bob = TestPeer::register(&tracker, "bob").await?;
    bob.serve(&["--storage-quota", "64M"]).await?;
    // Carol's node syncs at its start only: what she gets reaches the tracker by her
    // get's reports alone.
    let mut carol = TestPeer::register(&tracker, "carol").await?;
    carol
        .serve(&["--storage-quota", "0", "--sync-every", "1h"])
        .await?;
    let bob_id = bob.peer_id.clone().context("bob's id")?;
    let carol_id = carol.peer_id.clone().context("carol's id")?;
    let src = tempfile::tempdir()?;
    let (first, sha) = random_file(src.path(), "first.bin", 4 * CHUNK + 777)?;
    let second = random_file(src.path(), "second.bin", 2 * CHUNK)?.0;
    let first = id_of(&alice.index(&first).await?)?;
    // Alice and bob are the only holders there can be so far: two verified copies of
    // every chunk are hers and bob's replica.
    let limit = Duration::from_secs(90);
    let replicated = time_until(limit, "the first file replicated on bob", || async {
        Ok(file_json(&tracker, &first).await?["min_copies"].as_u64() >= Some(2))
    })
    .await;
    if let Err(e) = replicated {
        return Err(explain(e, &tracker, &first).await);
    }

    // The database goes away. An index waits for it (saying so once, in the tracker's
    // words), and meanwhile carol gets the file from what the tracker holds in memory.
    let outage = Duration::from_secs(10);
    let down = DbRefusing::start(&admin, &db).await?;
    let down_at = Instant::now();
    let path = second.to_str().context("utf-8")?;
    let mut index = Running::start(&alice, "60s", &["--json", "index", path])?;
    index.until_waiting().await?;
    let out = tempfile::tempdir()?;
    let started = Instant::now();
    let got = carol.get(&first, out.path(), &[]).await?;
    let get_took = started.elapsed();
    assert_eq!(sha256_of(&out.path().join("first.bin"))?, sha);
    assert!(got["sources"].as_u64() >= Some(1), "{got}");
    assert_eq!(healthz(&tracker).await?, 503, "the outage spans the get");
    if let Some(rest) = outage.checked_sub(down_at.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    let down_for = down_at.elapsed();
    down.end().await?;
    let back = Instant::now();

    let done = index.finish().await?;
    let indexed_after = back.elapsed();
    assert!(done.status.success(), "{:?}", done.stderr);
    let waiting = done.lines_with(WAITING);
    assert_eq!(waiting.len(), 1, "it says it waits once: {:?}", done.stderr);
    assert!(waiting[0].contains(DB_DOWN), "{}", waiting[0]);
    let printed: serde_json::Value = serde_json::from_str(&done.stdout)?;
    let second = id_of(printed.as_array().context("index --json prints an array")?)?;

    // Once it is back, the tracker agrees with every answer it gave: the new file is
    // listed with a holder, and carol (whose reports were answered during the outage)
    // holds the first one, verified: a third holder with alice and bob.
    let agreed = time_until(
        Duration::from_secs(60),
        "agreement after the outage",
        || async {
            Ok(
                holders_found(&carol, "second.bin", &second).await? >= Some(1)
                    && lists_up(&tracker, &first, &carol_id).await?
                    && file_json(&tracker, &first).await?["holders"] == 3,
            )
        },
    )
    .await;
    if let Err(e) = agreed {
        return Err(explain(e, &tracker, &first).await);
    }
    let agreed = back.elapsed();
    println!(
        "the database refused connections for {down_for:.1?}; the get took {get_took:.1?} \
         during it; after it came back the index finished in {indexed_after:.1?} and \
         everything agreed in {agreed:.1?}"
    );
    // Bob's replica of the new file keeps it listed with a holder after the restart.
    let replicated = time_until(limit, "the second file replicated on bob", || async {
        Ok(file_json(&tracker, &second).await?["min_copies"].as_u64() >= Some(2))
    })
    .await;
    if let Err(e) = replicated {
        return Err(explain(e, &tracker, &second).await);
    }

    // It was committed, not only held in memory: a tracker started again on the database
    // lists the same, with nobody to tell it again (alice's and carol's nodes are gone;
    // bob's holds only replicas, which a node never announces).
    alice.kill_node().await?;
    carol.kill_node().await?;
    tracker.stop().await?;
    tracker.restart_after_stop().await?;
    let again = time_until(
        Duration::from_secs(60),
        "the same after a restart",
        || async {
            Ok(
                holders_found(&carol, "second.bin", &second).await? >= Some(1)
                    && lists(&tracker, &first, &carol_id).await?
                    && lists_up(&tracker, &first, &bob_id).await?,
            )
        },
    )
    .await;
    match again {
        Ok(again) => {
            println!("after a restart on the same database, the same within {again:.1?}");
            Ok(())
        }
        Err(e) => Err(explain(e, &tracker, &first).await),
    }
}
