//! Storage: the SeaORM connection and every query the tracker makes. The rest of the crate
//! sees only [`Store`] and the records of `crate::model`; entities stay in here.
//!
//! SQLite (the default) runs in WAL mode with a busy timeout and a small pool, so the batch
//! writer and the rare direct writes (login, announce) do not block readers. Frequent updates
//! (heartbeats, chunk reports) go through [`writer`], which coalesces them into one
//! transaction every few hundred milliseconds.
//!
//! Layout: `accounts` (users, sessions), `keys`, `load` (the directory at start), `apply`
//! (a writer batch), [`changes`] (the change feed and leases), [`writer`].

mod accounts;
mod apply;
pub mod changes;
pub mod entities;
mod keys;
mod load;
pub mod writer;

use std::time::Duration;

use migrations::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};

use crate::Error;

/// Rows per multi-row INSERT, well under SQLite's bound-parameter limit.
const INSERT_CHUNK: usize = 200;

/// A handle on the database (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// This process's instance id in the change feed and the leases (random per start).
    origin: String,
}

impl Store {
    /// Connects (creating an SQLite file if the URL says `mode=rwc`).
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached.
    pub async fn connect(url: &str) -> Result<Store, Error> {
        let mut opts = ConnectOptions::new(url);
        opts.sqlx_logging(false)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(30));
        if url.starts_with("sqlite:") {
            opts.max_connections(4).map_sqlx_sqlite_opts(|o| {
                o.journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(5))
            });
        } else {
            opts.max_connections(10);
        }
        let db = Database::connect(opts).await?;
        let origin = format!("{:032x}", rand::random::<u128>());
        Ok(Store { db, origin })
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
