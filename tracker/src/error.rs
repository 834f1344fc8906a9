//! The one error type of the tracker. Every layer returns [`Error`]; the gRPC adapter maps it
//! to a `tonic::Status` (in `grpc.rs`) and the REST adapter to JSON (in `rest/error.rs`), each
//! in exactly one place, so a kind of failure looks the same on both wires.

use std::time::Duration;

/// What went wrong, sorted by who must act: the caller (bad input, auth) or the operator
/// (database, I/O).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request does not make sense (bad name, manifest, chunk index, query).
    #[error("{0}")]
    InvalidArgument(String),
    /// No valid session, or wrong credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (closed registration, another user's peer).
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Too many failed logins; the caller may retry after the given time.
    #[error("too many login attempts, retry in {}s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
    /// The caller's user is at one of the tracker's limits (peers, files, chunks); the
    /// message names it and the option that raises it.
    #[error("{0}")]
    LimitReached(String),
    /// The database failed or could not be reached; clients hear [`DB_UNAVAILABLE`].
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Bad configuration (flags, environment or config file).
    #[error("{0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    pub(crate) fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether this is the server's fault (then the message is logged, not shown).
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Error::Database(_) | Error::Io { .. } | Error::Internal(_) | Error::Config(_)
        )
    }
}

/// What a client hears when the database failed (gRPC UNAVAILABLE, HTTP 503): the call had
/// no effect (see "Source of truth and cache" in ARCHITECTURE.md) and may be repeated.
pub const DB_UNAVAILABLE: &str = "the tracker's database is unavailable; try again";

/// Logs a request refused because the database failed: at warn at most once per 10 s (an
/// outage refuses every write, and the writer logs the outage itself), else at debug.
pub fn log_unavailable(cause: &dyn std::fmt::Display) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now >= last + 10
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(%cause, "requests refused: the database is unavailable");
    } else {
        tracing::debug!(%cause, "request refused: the database is unavailable");
    }
}

/// The answer for an unknown user and a wrong password alike.
pub const BAD_CREDENTIALS: &str = "invalid user or password";
