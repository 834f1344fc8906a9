//! The whole migration history applies, rolls back and re-applies, and an upgrade from the
//! previous schema keeps the rows already there: on a real SQLite file, and on a fresh
//! PostgreSQL database when `TRACKER_TEST_DATABASE_URL` names a server.

use migrations::{Migrator, MigratorTrait, SchemaManager};
use sea_orm_migration::sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, QueryResult, Statement,
};

/// Every table of the current schema.
const TABLES: [&str; 10] = [
    "users",
    "sessions",
    "peers",
    "files",
    "holdings",
    "tasks",
    "tracker_keys",
    "changes",
    "leases",
    "collections",
];

/// Migrations in the schema before the cluster tables (changes, leases) were added.
const PREVIOUS_LAST: u32 = 7;

/// A database for one test: an SQLite file in a temp dir, or a PostgreSQL database created
/// for it and dropped by [`TestDb::finish`].
struct TestDb {
    db: DatabaseConnection,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        TestDb {
            db: Database::connect(&url).await.unwrap(),
            _dir: Some(dir),
            pg: None,
        }
    }

    /// `None` (with the reason printed) when no PostgreSQL server is configured.
    async fn postgres() -> Option<TestDb> {
        let Some(admin) = std::env::var("TRACKER_TEST_DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
        else {
            eprintln!("TRACKER_TEST_DATABASE_URL is not set; skipping the PostgreSQL run");
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("tessera_mig_{}_{nanos}", std::process::id());
        let server = Database::connect(&admin).await.unwrap();
        server
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        server.close().await.unwrap();
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let db = Database::connect(format!("{base}/{name}")).await.unwrap();
        Some(TestDb {
            db,
            _dir: None,
            pg: Some((admin.clone(), name)),
        })
    }

    async fn finish(self) {
        self.db.close().await.unwrap();
        if let Some((admin, name)) = self.pg {
            let server = Database::connect(&admin).await.unwrap();
            server
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .unwrap();
            server.close().await.unwrap();
        }
    }

    async fn exec(&self, sql: &str) {
        self.db
            .execute_unprepared(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    async fn rows(&self, sql: &str) -> Vec<QueryResult> {
        let backend = self.db.get_database_backend();
        self.db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

async fn check_up_down_up(t: &TestDb) {
    let db = &t.db;
    Migrator::up(db, None).await.unwrap();
    let manager = SchemaManager::new(db);
    for table in TABLES {
        assert!(manager.has_table(table).await.unwrap(), "{table} after up");
    }
    Migrator::down(db, None).await.unwrap();
    for table in TABLES {
        assert!(
            !manager.has_table(table).await.unwrap(),
            "{table} after down"
        );
    }
    Migrator::up(db, None).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .unwrap()
            .is_empty()
    );
    for table in TABLES {
        assert!(
            manager.has_table(table).await.unwrap(),
            "{table} after up again"
        );
    }
    // The change feed's ids come from the database, in order.
    t.exec("INSERT INTO changes (origin, payload, at_ms) VALUES ('a', '{}', 1)")
        .await;
    t.exec("INSERT INTO changes (origin, payload, at_ms) VALUES ('b', '{}', 2)")
        .await;
    let ids: Vec<i64> = t
        .rows("SELECT id FROM changes ORDER BY at_ms")
        .await
        .iter()
        .map(|r| r.try_get("", "id").unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "{ids:?}");
}

async fn check_upgrade_keeps_rows(t: &TestDb) {
    let db = &t.db;
    Migrator::up(db, Some(PREVIOUS_LAST)).await.unwrap();
    let manager = SchemaManager::new(db);
    assert!(manager.has_table("tasks").await.unwrap());
    assert!(!manager.has_table("changes").await.unwrap());
    let pending = Migrator::get_pending_migrations(db).await.unwrap();
    assert_eq!(
        pending.len(),
        Migrator::migrations().len() - PREVIOUS_LAST as usize
    );
    for sql in [
        "INSERT INTO users (name, password_hash, created_at) VALUES ('alice', 'h', 1)",
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) \
         VALUES ('t1', 1, 2, 3)",
        "INSERT INTO peers (id, user_id, addr, storage_quota, storage_used, last_seen, created_at) \
         VALUES ('p1', 1, '127.0.0.1:9', 100, 10, 4, 5)",
        "INSERT INTO files (id, name, size, sha256, type, chunk_size, chunk_count, chunk_hashes, created_at) \
         VALUES ('f1', 'a.txt', 7, 'ab', 'document', 1048576, 1, X'00', 6)",
        "INSERT INTO holdings (peer_id, file_id, kind, have, updated_at) \
         VALUES ('p1', 'f1', 1, X'80', 7)",
        "INSERT INTO tasks (id, peer_id, kind, file_id, chunks, state, attempts, next_attempt_at, created_at) \
         VALUES (42, 'p1', 1, 'f1', '0', 1, 0, 8, 9)",
        "INSERT INTO tracker_keys (name, secret, created_at) VALUES ('ticket', X'0102', 10)",
    ] {
        // PostgreSQL spells a blob literal '\x..'::bytea.
        let sql = if t.pg.is_some() {
            sql.replace("X'00'", "'\\x00'::bytea")
                .replace("X'80'", "'\\x80'::bytea")
                .replace("X'0102'", "'\\x0102'::bytea")
        } else {
            sql.to_string()
        };
        t.exec(&sql).await;
    }
    Migrator::up(db, None).await.unwrap();
    assert!(
        Migrator::get_pending_migrations(db)
            .await
            .unwrap()
            .is_empty()
    );
    let count = |table: &'static str| async move {
        let rows = t.rows(&format!("SELECT COUNT(*) AS n FROM {table}")).await;
        rows[0].try_get::<i64>("", "n").unwrap()
    };
    for table in [
        "users",
        "sessions",
        "peers",
        "files",
        "holdings",
        "tasks",
        "tracker_keys",
    ] {
        assert_eq!(count(table).await, 1, "{table} kept its row");
    }
    let peer = &t.rows("SELECT addr, last_seen FROM peers").await[0];
    assert_eq!(peer.try_get::<String>("", "addr").unwrap(), "127.0.0.1:9");
    assert_eq!(peer.try_get::<i64>("", "last_seen").unwrap(), 4);
    let task = &t.rows("SELECT id, chunks FROM tasks").await[0];
    assert_eq!(task.try_get::<i64>("", "id").unwrap(), 42);
    assert_eq!(task.try_get::<String>("", "chunks").unwrap(), "0");
    let have = &t.rows("SELECT have FROM holdings").await[0];
    assert_eq!(have.try_get::<Vec<u8>>("", "have").unwrap(), vec![0x80]);
    // The new tables are there and usable.
    assert!(manager.has_table("changes").await.unwrap());
    t.exec("INSERT INTO leases (name, holder, expires_at_ms) VALUES ('planner', '', 0)")
        .await;
    assert!(manager.has_table("collections").await.unwrap());
    assert_eq!(count("collections").await, 0, "no file is a collection yet");
}

#[tokio::test]
async fn should_apply_roll_back_and_reapply_every_migration_on_sqlite() {
    let t = TestDb::sqlite().await;
    check_up_down_up(&t).await;
    t.finish().await;
}

#[tokio::test]
async fn should_apply_roll_back_and_reapply_every_migration_on_postgres() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    check_up_down_up(&t).await;
    t.finish().await;
}

#[tokio::test]
async fn should_keep_rows_when_upgrading_from_the_previous_schema_on_sqlite() {
    let t = TestDb::sqlite().await;
    check_upgrade_keeps_rows(&t).await;
    t.finish().await;
}

#[tokio::test]
async fn should_keep_rows_when_upgrading_from_the_previous_schema_on_postgres() {
    let Some(t) = TestDb::postgres().await else {
        return;
    };
    check_upgrade_keeps_rows(&t).await;
    t.finish().await;
}
