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

/// The answer for an unknown user and a wrong password alike.
pub const BAD_CREDENTIALS: &str = "invalid user or password";
