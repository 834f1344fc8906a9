//! SQLite refusing writes: another connection holding the write lock for longer than the
//! tracker's busy timeout (5 s), and the database file made immutable. Reads go on, so
//! `/healthz` stays 200; writes a client waits for are refused with UNAVAILABLE until the
//! file can be written again, and then nothing contradicts an answer. Skipped under
//! `TRACKER_TEST_BACKEND=postgres`.

use std::path::{Path, PathBuf};
use std::process::Command;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sea_orm::sqlx::{ConnectOptions, Connection};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracker::Config;

use super::{
    Peer, SHARED_CHUNKS, Shared, Workload, bounded, contradictions, ok_or,
    sessions_and_users_survive, summary, until,
};
use crate::common::{TestTracker, announce, manifest, postgres_backend};

/// A tracker on a file in `dir`, an owner sharing the file the peers report pieces of,
/// three fake peers, and a ledger in which every kind of write has succeeded once.
struct Setup {
    t: TestTracker,
    url: String,
    shared: String,
    peers: Vec<Peer>,
    ledger: Shared,
}

impl Setup {
    async fn start(dir: &TempDir) -> Setup {
        let url = Config::ephemeral(dir.path()).database_url;
        let t = TestTracker::start(dir).await;
        let mut owner = Peer::join(&t, 100).await;
        let shared = announce(
            &mut owner.client,
            &owner.token,
            &owner.peer,
            manifest("shared.bin", SHARED_CHUNKS, 1),
        )
        .await
        .id;
        let mut peers = Vec::new();
        for n in 0..3 {
            peers.push(Peer::join(&t, n).await);
        }
        let ledger = Shared::default();
        let w = Workload::start(&peers, &shared, &ledger, 0);
        let none = [(0, 0); 4];
        until("writes before the fault", || async {
            ok_or(ledger.lock().unwrap().each_since(&none, true), "waiting")
        })
        .await;
        w.stop().await;
        Setup {
            t,
            url,
            shared,
            peers,
            ledger,
        }
    }

    /// Runs the workload while `fault` lasts: from `start` until every waited-for write
    /// was refused (then `end` is called); checks the answers against the tracker and the
    /// database, the recovery, and a restart. Returns the convergence time.
    async fn through<S, E>(self, dir: &TempDir, start: S, end: E)
    where
        S: AsyncFnOnce(),
        E: AsyncFnOnce(),
    {
        let Setup {
            t,
            url,
            shared,
            peers,
            ledger,
        } = self;
        let before = ledger.lock().unwrap().waited();
        let w = Workload::start(&peers, &shared, &ledger, 1);
        start().await;
        let faulted = Instant::now();
        until("every waited-for write refused", || async {
            ok_or(ledger.lock().unwrap().each_since(&before, false), "waiting")
        })
        .await;
        w.stop().await;
        {
            let l = ledger.lock().unwrap();
            for call in ["heartbeat", "report", "search"] {
                let (_, no) = l.counts.get(call).copied().unwrap_or_default();
                assert_eq!(no, 0, "background {call}s are accepted meanwhile");
            }
        }
        let lasted = faulted.elapsed();
        end().await;
        let took = until("convergence", || async {
            contradictions(&ledger, &[&t], &url, &shared).await
        })
        .await;
        eprintln!(
            "fault of {lasted:.1?}: everything agreed with every answer {took:?} after it ended"
        );
        let before = ledger.lock().unwrap().waited();
        let w = Workload::start(&peers, &shared, &ledger, 2);
        until("writes after the fault", || async {
            ok_or(ledger.lock().unwrap().each_since(&before, true), "waiting")
        })
        .await;
        w.stop().await;
        eprintln!("{}", summary(&ledger));
        t.stop().await;
        let t = TestTracker::start(dir).await;
        until("state after a restart", || async {
            contradictions(&ledger, &[&t], &url, &shared).await
        })
        .await;
        sessions_and_users_survive(&ledger, &t).await;
        t.stop().await;
    }
}

/// Holds SQLite's write lock on `db` (`BEGIN IMMEDIATE` on a connection of its own, as a
/// backup tool or an operator's `sqlite3` shell would) from when `taken` is answered until
/// `release` fires.
async fn hold_write_lock(db: PathBuf, taken: oneshot::Sender<()>, release: oneshot::Receiver<()>) {
    let mut conn: SqliteConnection = SqliteConnectOptions::new()
        .filename(&db)
        .busy_timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .expect("a second connection to the tracker's database");
    sea_orm::sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .expect("the write lock");
    taken.send(()).unwrap();
    let _ = release.await;
    sea_orm::sqlx::query("ROLLBACK")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A write lock held elsewhere for as long as it takes every waited-for write to be
/// refused (each after the busy timeout, so well past it): no waiting on machine speed.
#[tokio::test(flavor = "multi_thread")]
async fn should_answer_truthfully_while_a_write_lock_outlasts_the_busy_timeout() {
    if postgres_backend().is_some() {
        eprintln!("SKIPPED: SQLite's write lock only exists on SQLite");
        return;
    }
    bounded(async {
        let dir = TempDir::new().unwrap();
        let setup = Setup::start(&dir).await;
        let (taken_tx, taken) = oneshot::channel();
        let (release, release_rx) = oneshot::channel();
        let db = dir.path().join("tracker.db");
        let holder = tokio::spawn(hold_write_lock(db, taken_tx, release_rx));
        let start = async || taken.await.expect("the lock holder took the lock");
        let end = async || {
            release.send(()).unwrap();
            holder.await.unwrap();
        };
        setup.through(&dir, start, end).await;
    })
    .await;
}

/// Sets or clears the immutable attribute of `path`.
fn chattr(flag: &str, path: &Path) -> bool {
    Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Files made immutable, made writable again when dropped (even by a failing test, so
/// the temp dir can be removed).
struct Immutable(Vec<PathBuf>);

impl Drop for Immutable {
    fn drop(&mut self) {
        for p in &self.0 {
            chattr("-i", p);
        }
    }
}

/// The database file and its write-ahead log made immutable while the tracker runs (a
/// disk gone read-only): `chmod` cannot do this, since SQLite writes through descriptors
/// it opened while it could, so this needs `chattr +i` (root, on a file system that has the
/// attribute) and is skipped, saying so, without it.
#[tokio::test(flavor = "multi_thread")]
async fn should_answer_truthfully_while_the_database_file_cannot_be_written() {
    if postgres_backend().is_some() {
        eprintln!("SKIPPED: an SQLite file only exists on SQLite");
        return;
    }
    let dir = TempDir::new().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, b"x").unwrap();
    let can = chattr("+i", &probe) && std::fs::write(&probe, b"y").is_err();
    chattr("-i", &probe);
    if !can {
        eprintln!(
            "SKIPPED: `chattr +i` is not available here (it needs root and a file system \
             with the immutable attribute); chmod would not stop a running SQLite"
        );
        return;
    }
    bounded(async {
        let setup = Setup::start(&dir).await;
        let files: Vec<PathBuf> = ["tracker.db", "tracker.db-wal"]
            .iter()
            .map(|f| dir.path().join(f))
            .collect();
        let guard = std::sync::Mutex::new(None);
        let start = async || {
            for f in &files {
                assert!(chattr("+i", f), "chattr +i {}", f.display());
            }
            *guard.lock().unwrap() = Some(Immutable(files.clone()));
        };
        let end = async || drop(guard.lock().unwrap().take());
        setup.through(&dir, start, end).await;
    })
    .await;
}
