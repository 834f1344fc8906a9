//! Storage: the SeaORM connection and every query the tracker makes. The rest of the crate
//! sees only [`Store`] and the records of `crate::model`; entities stay in here.
//!
//! SQLite (the default) runs in WAL mode with a busy timeout and a small pool, so the batch
//! writer and the rare direct writes (login, announce) do not block readers. Frequent updates
//! (heartbeats, chunk reports) go through [`writer`], which coalesces them into one
//! transaction every few hundred milliseconds.
//!
//! Layout: `accounts` (users, sessions), `keys`, `load` (the directory at start), `batch`
//! (the writer's rows), `apply` (writing them), [`changes`] (the change feed and leases),
//! [`writer`].

mod accounts;
mod apply;
mod batch;
pub mod changes;
pub mod entities;
mod hygiene;
mod keys;
mod load;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr, Statement,
};

use crate::Error;

/// Rows per multi-row INSERT, well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 200;

/// A handle on the database (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// This process's instance id in the change feed and the leases (random per start).
    origin: String,
    /// Failed statements and commits, after which SQLite connections are renewed.
    failures: Arc<hygiene::Failures>,
}

impl Store {
    /// Connects (creating an SQLite file if the URL says `mode=rwc`).
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let mut opts = ConnectOptions::new(url);
        // A request waits at most this long for a connection, so while the database is
        // down callers get an answer (UNAVAILABLE), not a hang.
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10));
        let failures = hygiene::Failures::new();
        let sqlite = url.starts_with("sqlite:");
        if sqlite {
            let f = failures.clone();
            // Enough that the writer, the follower and a few direct writes each waiting out
            // a busy timeout (a lock held elsewhere) do not queue for a connection too.
            opts.max_connections(8)
                .map_sqlx_sqlite_opts(|o| {
                    o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                        .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                        .busy_timeout(Duration::from_secs(5))
                })
                .map_sqlx_sqlite_pool_opts(move |o| hygiene::checked(o, f.clone()));
        } else {
            opts.max_connections(10);
        }
        let mut db = Database::connect(opts).await?;
        if sqlite {
            let f = failures.clone();
            db.set_metric_callback(move |info| {
                if info.failed {
                    f.note();
                }
            });
        }
        let origin = format!("{:032x}", rand::random::<u128>());
        Ok(Store {
            db,
            origin,
            failures,
        })
    }

    /// Commits `txn`, noting a failure (see `hygiene`).
    async fn commit(&self, txn: sea_orm::DatabaseTransaction) -> Result<(), Error> {
        txn.commit().await.map_err(|e| {
            self.failures.note();
            e.into()
        })
    }

    /// Applies every pending migration.
    ///
    /// # Errors
    /// [`Error::Database`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), Error> {
        // Trackers starting together on one database race to record the same migration;
        // the loser retries and then finds nothing pending (every step is idempotent).
        let mut tries = 0;
        loop {
            match Migrator::up(&self.db, None).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 5 => {
                    tries += 1;
                    tracing::debug!(cause = %e, "migrating raced another tracker; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * tries)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A trivial query, for health checks.
    ///
    /// # Errors
    /// [`Error::Database`] when the database does not answer.
    pub async fn ping(&self) -> Result<(), Error> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(Statement::from_string(backend, "SELECT 1"))
            .await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        if let Err(e) = self.db.close().await {
            tracing::warn!(cause = %e, "closing the database");
        }
    }
}

/// Whether `e` says the database cannot be reached or cannot serve right now (refused or
/// lost connections, a server starting or shutting down, a lock held elsewhere), as opposed
/// to a mistake that waiting will not fix (a bad URL, password or path).
pub fn is_unavailable(e: &Error) -> bool {
    let Error::Database(e) = e else {
        return false;
    };
    let sqlx = match e {
        DbErr::ConnectionAcquire(_) => return true,
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    use sea_orm::sqlx::Error as E;
    match &**sqlx {
        E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => true,
        E::Database(d) => {
            let code = d.code().unwrap_or_default();
            // PostgreSQL: connection exceptions (08…), shutdown and start-up (57P0…), too
            // many connections, and a database not accepting connections (55000, what
            // `ALLOW_CONNECTIONS false` answers). SQLite: busy and locked.
            code.starts_with("08")
                || code.starts_with("57P0")
                || code == "53300"
                || code == "55000"
                // SQLite's codes are numbers (extended ones keep the primary in the low
                // byte); PostgreSQL's are five characters.
                || (code.len() < 5 && matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(5 | 6)))
        }
        _ => false,
    }
}
