//! What a failed call to the tracker means: [`TrackerError`], and [`classify`], the one
//! place that reads gRPC codes and transport errors.

use tokio_rustls::rustls;
use tonic::{Code, Status};

use crate::transport::status_detail;

/// What went wrong talking to the tracker, by meaning. [`classify`] is the one place that
/// reads gRPC codes and transport errors to pick a variant; the texts of the tracker's own
/// messages are shown, never interpreted.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// No session, or the tracker no longer accepts it.
    #[error("not logged in (or the session expired): run `peer login --user NAME`")]
    NotLoggedIn,
    /// Login or registration with a user name and password the tracker does not accept.
    #[error("invalid user or password")]
    InvalidCredentials,
    /// What the call names does not exist (a file, a holding, a task).
    #[error("tracker refused: {message}")]
    NotFound { message: String },
    /// What the call would create exists already (a user).
    #[error("tracker refused: {message}")]
    AlreadyExists { message: String },
    /// The session may not do this (closed registration, another user's peer).
    #[error("tracker refused: {message}")]
    PermissionDenied { message: String },
    /// The tracker found the request malformed (a name, a query, a manifest).
    #[error("tracker refused: {message}")]
    InvalidInput { message: String },
    /// Too many attempts (failed logins); the tracker takes more later.
    #[error("tracker refused: {message}")]
    Throttled { message: String },
    /// A tracker answered but cannot serve now (its database, a shutdown); the other URLs
    /// were tried too.
    #[error("the tracker at {urls} cannot serve now: {message}")]
    Unavailable { urls: String, message: String },
    /// No tracker URL answered: the connection was refused, reset or timed out, or what
    /// came back was not HTTP/2.
    #[error("cannot reach the tracker at {urls}: {reason}")]
    Unreachable { urls: String, reason: String },
    /// The tracker's TLS certificate was not accepted (no `--ca`, or the wrong one).
    #[error(
        "cannot reach the tracker at {urls}: {reason} (give --ca the certificate of the CA that signed the tracker's)"
    )]
    Tls { urls: String, reason: String },
    /// The tracker failed on its side or answered outside the protocol (INTERNAL,
    /// UNIMPLEMENTED, ...).
    #[error("tracker failed: {0}")]
    Protocol(String),
    /// An answer that does not add up (a missing field, a malformed manifest).
    #[error("tracker sent a bad answer: {0}")]
    BadAnswer(String),
    #[error("invalid tracker URL '{0}'")]
    BadUrl(String),
}

impl TrackerError {
    /// Whether the failure is about the tracker or the session rather than this one call,
    /// so the next call would fail the same way (commands stop instead of going on with
    /// their other items).
    pub fn affects_every_call(&self) -> bool {
        matches!(
            self,
            TrackerError::NotLoggedIn
                | TrackerError::Unavailable { .. }
                | TrackerError::Unreachable { .. }
                | TrackerError::Tls { .. }
                | TrackerError::BadUrl(_)
        )
    }

    /// Whether another tracker URL may do better (fail-over).
    pub(super) fn try_next(&self) -> bool {
        matches!(
            self,
            TrackerError::Unavailable { .. }
                | TrackerError::Unreachable { .. }
                | TrackerError::Tls { .. }
        )
    }

    /// The same failure, naming `all` the URLs tried.
    pub(super) fn at(self, all: String) -> Self {
        match self {
            TrackerError::Unavailable { message, .. } => {
                TrackerError::Unavailable { urls: all, message }
            }
            TrackerError::Unreachable { reason, .. } => {
                TrackerError::Unreachable { urls: all, reason }
            }
            TrackerError::Tls { reason, .. } => TrackerError::Tls { urls: all, reason },
            other => other,
        }
    }
}

/// What a failed call to `url` means: the one place that interprets gRPC codes and
/// transport errors. `auth` says whether the call carried the session, so that
/// UNAUTHENTICATED tells an expired session from a wrong password.
///
/// A status with an error source was made by this side's transport: no answer came back.
/// One without came from the other end, and its code says what it means.
pub(super) fn classify(url: &str, s: &Status, auth: bool) -> TrackerError {
    if std::error::Error::source(s).is_some() {
        return transport_failure(url, s);
    }
    let message = common::names::printable(s.message(), 300);
    let message = if message.is_empty() {
        s.code().description().to_string()
    } else {
        message
    };
    match s.code() {
        Code::Unauthenticated if auth => TrackerError::NotLoggedIn,
        Code::Unauthenticated => TrackerError::InvalidCredentials,
        Code::NotFound => TrackerError::NotFound { message },
        Code::AlreadyExists => TrackerError::AlreadyExists { message },
        Code::PermissionDenied => TrackerError::PermissionDenied { message },
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            TrackerError::InvalidInput { message }
        }
        Code::ResourceExhausted => TrackerError::Throttled { message },
        Code::Unavailable | Code::Cancelled | Code::DeadlineExceeded => TrackerError::Unavailable {
            urls: url.to_string(),
            message,
        },
        Code::Ok
        | Code::Unknown
        | Code::Internal
        | Code::Unimplemented
        | Code::Aborted
        | Code::DataLoss => TrackerError::Protocol(message),
    }
}

/// A call that got no answer from `url`: the connection or the TLS handshake failed, the
/// call timed out, or the bytes back were not HTTP/2. Read from the error sources tonic
/// keeps on the status (its code only says how tonic sorted them).
fn transport_failure(url: &str, s: &Status) -> TrackerError {
    let reason = common::names::printable(&status_detail(s), 300);
    let (mut connecting, mut timed_out, mut broken) = (false, false, false);
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(s);
    while let Some(e) = next {
        connecting |= e.is::<tonic::ConnectError>();
        timed_out |= e.is::<tonic::TimeoutExpired>();
        // A connection that broke (the tracker restarting, a reset) is no protocol mismatch.
        broken |= e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            use std::io::ErrorKind::{
                BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset,
            };
            // Refused shows here, after "connecting", when the SYN carried data (Fast Open).
            matches!(
                io.kind(),
                BrokenPipe | ConnectionReset | ConnectionAborted | ConnectionRefused
            )
        });
        // `io::Error::source` skips the error it wraps, so look at that one directly.
        let wrapped = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if [Some(e), wrapped]
            .into_iter()
            .flatten()
            .filter_map(|e| e.downcast_ref::<rustls::Error>())
            .any(is_certificate_problem)
        {
            return TrackerError::Tls {
                urls: url.to_string(),
                reason,
            };
        }
        next = e.source();
    }
    // Connected, then no HTTP/2 came back (a protocol error, or the connection closed
    // before any answer; not a timeout): most likely a TLS port spoken to in plain text.
    let not_http2 = !connecting && !timed_out && !broken && s.code() != Code::Unavailable;
    let reason = if not_http2 && url.starts_with("http://") {
        format!("{reason} (does the tracker serve TLS? then use https://)")
    } else {
        reason
    };
    TrackerError::Unreachable {
        urls: url.to_string(),
        reason,
    }
}

/// Whether a TLS failure was about the tracker's certificate (which `--ca` can fix).
fn is_certificate_problem(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
    )
}
