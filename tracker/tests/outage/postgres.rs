//! PostgreSQL refusing connections (`ALTER DATABASE … ALLOW_CONNECTIONS false`, every
//! open connection terminated), as a database restart or failover looks to the tracker.
//! Run when `TRACKER_TEST_DATABASE_URL` names a server; skipped, saying so, otherwise.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use proto::tracker::v1 as pb;
use sea_orm::{ConnectionTrait, Database};
use tempfile::TempDir;
use tokio::time::Instant;
use tracker::Config;
use tracker::testing::{postgres_admin_url, with_db_name};

use super::{
    PATIENCE, Peer, SHARED_CHUNKS, Shared, Workload, bounded, contradictions, health, ok_or,
    sessions_and_users_survive, summary, until,
};
use crate::common::{TestTracker, announce, manifest};

/// A database of its own on the test server, which the test can make refuse connections;
/// dropped (connections allowed again first) when the value is dropped, even by a failing
/// test.
struct Db {
    admin: String,
    name: String,
    url: String,
}

impl Db {
    async fn create(admin: &str) -> Db {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("tessera_outage_{}_{nanos}", std::process::id());
        exec(admin, &format!("CREATE DATABASE {name}")).await;
        Db {
            admin: admin.into(),
            url: with_db_name(admin, &name),
            name,
        }
    }

    /// Refuses new connections and ends every open one (from the admin connection, to
    /// another database).
    async fn refuse(&self) {
        exec(
            &self.admin,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS false", self.name),
        )
        .await;
        exec(
            &self.admin,
            &format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{}' AND pid <> pg_backend_pid()",
                self.name
            ),
        )
        .await;
    }

    async fn allow(&self) {
        exec(
            &self.admin,
            &format!("ALTER DATABASE {} ALLOW_CONNECTIONS true", self.name),
        )
        .await;
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs outside any runtime's reach: a thread with a runtime of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                exec(&admin, &sql).await;
            });
        })
        .join();
    }
}

async fn exec(admin: &str, sql: &str) {
    let db = Database::connect(admin)
        .await
        .expect("the admin connection");
    db.execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    db.close().await.unwrap();
}

/// Two trackers on one database, two fake peers on each, clients working throughout. For
/// a short (1 s) and a long (15 s) outage: while the database refuses, every waited-for
/// write is refused with UNAVAILABLE (and every background one accepted) and `/healthz`
/// says 503 on both; once it is back, both trackers and the database agree with every
/// answer given, within a bound that is measured; after a restart on the same database,
/// still.
#[tokio::test(flavor = "multi_thread")]
async fn should_answer_truthfully_through_outages_under_two_trackers() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("SKIPPED: TRACKER_TEST_DATABASE_URL is not set (needs a PostgreSQL server)");
        return;
    };
    bounded(async {
        let db = Db::create(&admin).await;
        let dir = TempDir::new().unwrap();
        let cfg = Config {
            database_url: db.url.clone(),
            ..Config::ephemeral(dir.path())
        };
        let a = TestTracker::start_with(cfg.clone()).await;
        let b = TestTracker::start_with(cfg.clone()).await;
        let mut owner = Peer::join(&a, 100).await;
        let shared = announce(
            &mut owner.client,
            &owner.token,
            &owner.peer,
            manifest("shared.bin", SHARED_CHUNKS, 1),
        )
        .await
        .id;
        // B learns of the shared file through the change feed.
        until("the shared file on both trackers", || async {
            let url = b.url(&format!("/api/v1/files/{shared}"));
            let found = reqwest::get(url).await.is_ok_and(|r| r.status() == 200);
            ok_or(found, "not yet")
        })
        .await;
        let mut peers = Vec::new();
        for n in 0..4 {
            peers.push(Peer::join(if n % 2 == 0 { &a } else { &b }, n).await);
        }
        let ledger: Shared = Shared::default();

        // Before: every kind of write succeeds.
        let w = Workload::start(&peers, &shared, &ledger, 0);
        let none = [(0, 0); 4];
        until("writes before the outage", || async {
            ok_or(ledger.lock().unwrap().each_since(&none, true), "waiting")
        })
        .await;
        w.stop().await;

        let mut outages = vec![(1, Duration::from_secs(1)), (2, Duration::from_secs(15))];
        // The 2-minute outage of the issue runs on request only (it alone takes 2 minutes):
        // TRACKER_TEST_LONG_OUTAGE=1.
        if std::env::var("TRACKER_TEST_LONG_OUTAGE").is_ok_and(|v| v == "1") {
            outages.push((3, Duration::from_secs(120)));
        }
        for (round, outage) in outages {
            let before = ledger.lock().unwrap().waited();
            let w = Workload::start(&peers, &shared, &ledger, round);
            tokio::time::sleep(Duration::from_millis(200)).await;
            db.refuse().await;
            let refused_at = Instant::now();
            until("503 on both trackers", || async {
                ok_or(
                    health(&a).await == 503 && health(&b).await == 503,
                    "not 503",
                )
            })
            .await;
            until("every waited-for write refused", || async {
                ok_or(ledger.lock().unwrap().each_since(&before, false), "waiting")
            })
            .await;
            if let Some(rest) = outage.checked_sub(refused_at.elapsed()) {
                tokio::time::sleep(rest).await;
            }
            w.stop().await;
            {
                let l = ledger.lock().unwrap();
                for call in ["heartbeat", "report", "search"] {
                    let (_, no) = l.counts.get(call).copied().unwrap_or_default();
                    assert_eq!(no, 0, "background {call}s are accepted during an outage");
                }
            }
            let down_for = refused_at.elapsed();
            db.allow().await;
            let took = until("convergence after the outage", || async {
                ok_or(
                    health(&a).await == 200 && health(&b).await == 200,
                    "not 200",
                )?;
                contradictions(&ledger, &[&a, &b], &db.url, &shared).await
            })
            .await;
            eprintln!(
                "outage of {down_for:.1?}: both trackers and the database agreed with every \
                 answer {took:?} after the database came back"
            );
            // The trackers recover by themselves: every kind of write succeeds again.
            let w = Workload::start(&peers, &shared, &ledger, round + 10);
            let before = ledger.lock().unwrap().waited();
            until("writes after the outage", || async {
                ok_or(ledger.lock().unwrap().each_since(&before, true), "waiting")
            })
            .await;
            w.stop().await;
        }
        eprintln!("{}", summary(&ledger));

        // Nothing acknowledged is lost, nothing refused appears: a restart reads it all back.
        a.stop().await;
        b.stop().await;
        let c = TestTracker::start_with(cfg).await;
        let took = until("state after a restart", || async {
            contradictions(&ledger, &[&c], &db.url, &shared).await
        })
        .await;
        assert!(took < PATIENCE);
        sessions_and_users_survive(&ledger, &c).await;
        c.stop().await;
    })
    .await;
}

/// A `tracker` process, killed when dropped.
struct Proc {
    child: Child,
    stderr: mpsc::Receiver<String>,
    stdout: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a line containing `needle`; returns it.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line with {needle:?} within {PATIENCE:?}: {e}"),
        }
    }
}

/// The `tracker` binary started while its database refuses connections waits for it,
/// saying so (its port stays closed, so clients try another tracker), and serves once the
/// database answers: no supervisor restart is needed.
#[tokio::test(flavor = "multi_thread")]
async fn should_wait_for_a_refusing_database_at_start_and_serve_once_it_answers() {
    let Some(admin) = postgres_admin_url() else {
        eprintln!("SKIPPED: TRACKER_TEST_DATABASE_URL is not set (needs a PostgreSQL server)");
        return;
    };
    bounded(async {
        let db = Db::create(&admin).await;
        db.refuse().await;
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracker"))
            .env_remove("TRACKER_LISTEN")
            .env_remove("TRACKER_CONFIG")
            .env("RUST_LOG", "info")
            .env("TRACKER_LOG_FORMAT", "text")
            .args(["--listen", "127.0.0.1:0", "--database-url", &db.url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tracker binary");
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let p = Proc {
            child,
            stdout: lines(out),
            stderr: lines(err),
        };
        let line = wait_line(&p.stderr, "the database is unavailable");
        eprintln!("the waiting tracker logs: {line}");
        // It keeps waiting (and trying) rather than exiting.
        wait_line(&p.stderr, "the database is unavailable");
        assert!(p.stdout.try_recv().is_err(), "it does not listen yet");
        let allowed = Instant::now();
        db.allow().await;
        let listening = wait_line(&p.stdout, "tracker listening on ");
        let url = listening.rsplit(' ').next().unwrap().to_string();
        let mut c = proto::tracker::v1::tracker_client::TrackerClient::connect(url.clone())
            .await
            .unwrap();
        let r = c
            .register(pb::Credentials {
                user: "late".into(),
                password: "pw-of-late".into(),
            })
            .await;
        assert!(r.is_ok(), "{r:?}");
        let health = reqwest::get(format!("{url}/healthz")).await.unwrap();
        assert_eq!(health.status(), 200);
        eprintln!(
            "serving {:?} after the database allowed connections",
            allowed.elapsed()
        );
        drop(p);
    })
    .await;
}
