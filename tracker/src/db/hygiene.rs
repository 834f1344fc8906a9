//! SQLite connections that a failure may have spoiled are closed on their way back to the
//! pool, and fresh ones take their place.
//!
//! Two ways a connection goes bad while the database file cannot be written (a disk gone
//! read-only): after an I/O error inside a transaction SQLite may refuse the ROLLBACK that
//! ends it, so the connection holds the write lock for good and every later "transaction"
//! on it is a savepoint inside that one, reported committed but never written; and a
//! connection opened meanwhile is opened read-only by SQLite and stays so. So a connection
//! still inside a transaction is closed, and so is every one opened before the last failed
//! statement or commit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sea_orm::sqlx::pool::{PoolConnectionMetadata, PoolOptions};
use sea_orm::sqlx::{Connection, Sqlite};

/// When a statement or commit last failed.
#[derive(Debug)]
pub(super) struct Failures {
    base: Instant,
    /// Milliseconds after `base` plus one; 0 for never.
    last: AtomicU64,
}

impl Failures {
    pub(super) fn new() -> Arc<Failures> {
        Arc::new(Failures {
            base: Instant::now(),
            last: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX) + 1
    }

    pub(super) fn note(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// Whether something failed since a connection `age` old was opened.
    fn since(&self, age: Duration) -> bool {
        let opened = self
            .now()
            .saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
        self.last.load(Ordering::Relaxed) >= opened
    }
}

/// The pool options with the check on release.
pub(super) fn checked(o: PoolOptions<Sqlite>, failures: Arc<Failures>) -> PoolOptions<Sqlite> {
    o.after_release(move |conn, meta: PoolConnectionMetadata| {
        let failures = failures.clone();
        Box::pin(async move {
            // Queued after the rollback of a dropped transaction, so that has run by now.
            conn.ping().await?;
            let stuck = conn.is_in_transaction();
            if stuck {
                tracing::warn!("closing a database connection left inside a failed transaction");
            }
            let stale = failures.since(meta.age);
            if stale && !stuck {
                tracing::debug!("renewing a database connection opened before a failure");
            }
            Ok(!stuck && !stale)
        })
    })
}
