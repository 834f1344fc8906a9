//! The tracker's gRPC API as the peer uses it: the session token on every call, fail-over
//! across several tracker URLs, and conversion of prost types into domain types (prost types
//! never leave this module and `server`).
//!
//! Fail-over: calls go to the URL that answered last; on UNAVAILABLE (connection refused,
//! reset, timeout) the next URL is tried, and so on around the list once.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{FileId, Manifest, PeerId};
use futures::{Stream, StreamExt};
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient as Grpc;
use tokio_rustls::rustls;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status};

use crate::transport::{ClientTls, status_detail};

mod views;
pub use views::{
    Beat, DropTask, FetchTask, FileMeta, FileView, Granted, HolderView, HoldingIn, Located,
    MAX_REPLICA_CHUNKS, PeerView, Relocated, Source, Task, Work,
};
use views::{holders_from_pb, kind_to_pb, manifest_from_pb, task_from_pb, ticket_in};

/// The URL used when nothing else names a tracker.
pub const DEFAULT_TRACKER: &str = "http://127.0.0.1:7070";

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
    fn try_next(&self) -> bool {
        matches!(
            self,
            TrackerError::Unavailable { .. }
                | TrackerError::Unreachable { .. }
                | TrackerError::Tls { .. }
        )
    }

    /// The same failure, naming `all` the URLs tried.
    fn at(self, all: String) -> Self {
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

/// A client for one or more tracker URLs. Cheap to clone.
#[derive(Clone)]
pub struct TrackerClient {
    urls: Arc<Vec<String>>,
    channels: Arc<Vec<Channel>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
}

/// Normalises a tracker URL: `host:port` gets `http://`.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    if u.contains("://") {
        u.to_string()
    } else {
        format!("http://{u}")
    }
}

fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint, TrackerError> {
    let bad = || TrackerError::BadUrl(common::names::printable(url, 200));
    let endpoint = Endpoint::from_shared(url.to_string()).map_err(|_| bad())?;
    Ok(tls
        .apply(endpoint)
        .map_err(|_| bad())?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .tcp_nodelay(true)
        // Pings while a call is open, so a task stream to a tracker that vanished without
        // closing the connection fails instead of waiting forever.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// What a failed call to `url` means: the one place that interprets gRPC codes and
/// transport errors. `auth` says whether the call carried the session, so that
/// UNAUTHENTICATED tells an expired session from a wrong password.
///
/// A status with an error source was made by this side's transport: no answer came back.
/// One without came from the other end, and its code says what it means.
fn classify(url: &str, s: &Status, auth: bool) -> TrackerError {
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
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
            matches!(io.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
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

/// The tasks the tracker pushes, converted (a task that does not add up arrives as
/// [`Work::Invalid`], so it can still be answered).
pub type TaskStream = Pin<Box<dyn Stream<Item = Result<Task, TrackerError>> + Send>>;

impl TrackerClient {
    /// A client for `urls` (tried in order), sending `token` if given.
    ///
    /// # Errors
    /// [`TrackerError::BadUrl`] for a URL that does not parse.
    pub fn new(urls: &[String], token: Option<String>) -> Result<Self, TrackerError> {
        Self::with_tls(urls, token, &ClientTls::default())
    }

    /// Like [`TrackerClient::new`], checking `https://` trackers against `tls`.
    ///
    /// # Errors
    /// [`TrackerError::BadUrl`] for a URL that does not parse.
    pub fn with_tls(
        urls: &[String],
        token: Option<String>,
        tls: &ClientTls,
    ) -> Result<Self, TrackerError> {
        let urls: Vec<String> = urls.iter().map(|u| normalize_url(u)).collect();
        let channels = urls
            .iter()
            .map(|u| endpoint(u, tls).map(|e| e.connect_lazy()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            urls: Arc::new(urls),
            channels: Arc::new(channels),
            current: Arc::new(AtomicUsize::new(0)),
            token,
        })
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// Whether `url` accepts a connection within a couple of seconds.
    pub async fn probe(url: &str, tls: &ClientTls) -> bool {
        let Ok(ep) = endpoint(&normalize_url(url), tls) else {
            return false;
        };
        let ep = ep.connect_timeout(Duration::from_secs(2));
        tokio::time::timeout(Duration::from_secs(3), ep.connect())
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends one call, failing over across URLs on connection errors.
    async fn call<Req, Resp, F, Fut>(
        &self,
        req: Req,
        auth: bool,
        f: F,
    ) -> Result<Resp, TrackerError>
    where
        Req: Clone,
        F: Fn(Grpc<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let token = match (&self.token, auth) {
            (Some(t), true) => Some(
                format!("Bearer {t}")
                    .parse::<tonic::metadata::MetadataValue<_>>()
                    .map_err(|_| TrackerError::NotLoggedIn)?,
            ),
            (None, true) => return Err(TrackerError::NotLoggedIn),
            (_, false) => None,
        };
        let n = self.urls.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut last = TrackerError::Unreachable {
            urls: String::new(),
            reason: "no tracker URL".into(),
        };
        for k in 0..n {
            let i = (start + k) % n;
            let client = Grpc::new(self.channels[i].clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20);
            let mut r = Request::new(req.clone());
            if let Some(t) = &token {
                r.metadata_mut().insert("authorization", t.clone());
            }
            match f(client, r).await {
                Ok(resp) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(resp.into_inner());
                }
                Err(s) => {
                    let e = classify(&self.urls[i], &s, auth);
                    if !e.try_next() {
                        return Err(e);
                    }
                    tracing::debug!(url = %self.urls[i], "trying the next tracker: {e}");
                    last = e;
                }
            }
        }
        Err(last.at(self.urls.join(", ")))
    }

    pub async fn register(&self, user: &str, password: &str) -> Result<Granted, TrackerError> {
        let req = pb::Credentials {
            user: user.into(),
            password: password.into(),
        };
        let s = self
            .call(req, false, |mut c, r| async move { c.register(r).await })
            .await?;
        Ok(Granted::from(s))
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Granted, TrackerError> {
        let req = pb::Credentials {
            user: user.into(),
            password: password.into(),
        };
        let s = self
            .call(req, false, |mut c, r| async move { c.login(r).await })
            .await?;
        Ok(Granted::from(s))
    }

    pub async fn logout(&self) -> Result<(), TrackerError> {
        self.call(pb::LogoutRequest {}, true, |mut c, r| async move {
            c.logout(r).await
        })
        .await?;
        Ok(())
    }

    /// Returns the heartbeat interval the tracker wants and its ticket key.
    pub async fn heartbeat(
        &self,
        peer_id: &PeerId,
        addr: &str,
        quota: u64,
        used: u64,
    ) -> Result<Beat, TrackerError> {
        let req = pb::HeartbeatRequest {
            peer_id: peer_id.to_string(),
            addr: addr.into(),
            storage_quota: quota,
            storage_used: used,
        };
        let r = self
            .call(req, true, |mut c, r| async move { c.heartbeat(r).await })
            .await?;
        Ok(Beat {
            interval: Duration::from_millis(r.interval_ms as u64),
            ticket_public_key: r.ticket_public_key.to_vec(),
        })
    }

    /// Returns the file ids the tracker does not know.
    pub async fn sync_holdings(
        &self,
        peer_id: &PeerId,
        holdings: &[HoldingIn],
    ) -> Result<Vec<String>, TrackerError> {
        let req = pb::SyncHoldingsRequest {
            peer_id: peer_id.to_string(),
            holdings: holdings
                .iter()
                .map(|h| pb::Holding {
                    file_id: h.file_id.to_string(),
                    kind: kind_to_pb(h.kind) as i32,
                    have: h
                        .have
                        .as_ref()
                        .map(|b| b.as_bytes().to_vec().into())
                        .unwrap_or_default(),
                })
                .collect(),
        };
        let r = self
            .call(
                req,
                true,
                |mut c, r| async move { c.sync_holdings(r).await },
            )
            .await?;
        Ok(r.unknown_file_ids)
    }

    pub async fn announce(&self, peer_id: &PeerId, m: &Manifest) -> Result<FileView, TrackerError> {
        let req = pb::AnnounceRequest {
            peer_id: peer_id.to_string(),
            manifest: Some(pb::Manifest::from(m)),
        };
        let r = self
            .call(req, true, |mut c, r| async move { c.announce(r).await })
            .await?;
        r.file
            .map(FileView::from)
            .ok_or_else(|| TrackerError::BadAnswer("announce answered no file".into()))
    }

    pub async fn report_chunks(
        &self,
        peer_id: &PeerId,
        file_id: &FileId,
        chunks: Vec<u32>,
    ) -> Result<(), TrackerError> {
        let req = pb::ReportChunksRequest {
            peer_id: peer_id.to_string(),
            file_id: file_id.to_string(),
            kind: pb::HoldingKind::Downloaded as i32,
            chunks,
        };
        self.call(
            req,
            true,
            |mut c, r| async move { c.report_chunks(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn unindex(&self, peer_id: &PeerId, file_id: &FileId) -> Result<(), TrackerError> {
        let req = pb::UnindexRequest {
            peer_id: peer_id.to_string(),
            file_id: file_id.to_string(),
        };
        self.call(req, true, |mut c, r| async move { c.unindex(r).await })
            .await?;
        Ok(())
    }

    pub async fn search(&self, query: &str, kind: &str) -> Result<Vec<FileView>, TrackerError> {
        let req = pb::SearchRequest {
            query: query.into(),
            r#type: kind.into(),
            limit: 1000,
            offset: 0,
        };
        let r = self
            .call(req, true, |mut c, r| async move { c.search(r).await })
            .await?;
        Ok(r.items.into_iter().map(FileView::from).collect())
    }

    pub async fn resolve(&self, term: &str) -> Result<Vec<FileView>, TrackerError> {
        let req = pb::ResolveRequest { term: term.into() };
        let r = self
            .call(req, true, |mut c, r| async move { c.resolve(r).await })
            .await?;
        Ok(r.files.into_iter().map(FileView::from).collect())
    }

    /// A file's manifest (to be checked against the id), live holders and a ticket.
    pub async fn locate(&self, file_id: &FileId) -> Result<Located, TrackerError> {
        let req = pb::LocateRequest {
            file_id: file_id.to_string(),
            have_manifest: false,
        };
        let r = self
            .call(req, true, |mut c, r| async move { c.locate(r).await })
            .await?;
        let file = r
            .file
            .map(FileView::from)
            .ok_or_else(|| TrackerError::BadAnswer("locate answered no file".into()))?;
        let manifest = manifest_from_pb(
            r.manifest
                .ok_or_else(|| TrackerError::BadAnswer("locate answered no manifest".into()))?,
        )?;
        let holders = holders_from_pb(r.holders, manifest.chunk_count());
        Ok(Located {
            file,
            manifest,
            holders,
            ticket: ticket_in(r.ticket.as_ref(), "a located file"),
        })
    }

    /// Locate again, for a caller that holds the verified manifest of the file's `chunks`
    /// chunks: only the live holders and a fresh ticket (the tracker leaves the 32 bytes per
    /// chunk of hashes out).
    pub async fn relocate(&self, file_id: &FileId, chunks: u32) -> Result<Relocated, TrackerError> {
        let req = pb::LocateRequest {
            file_id: file_id.to_string(),
            have_manifest: true,
        };
        let r = self
            .call(req, true, |mut c, r| async move { c.locate(r).await })
            .await?;
        Ok(Relocated {
            holders: holders_from_pb(r.holders, chunks),
            ticket: ticket_in(r.ticket.as_ref(), "a located file"),
        })
    }

    /// Opens this node's task stream.
    pub async fn tasks(&self, peer_id: &PeerId) -> Result<TaskStream, TrackerError> {
        let req = pb::TasksRequest {
            peer_id: peer_id.to_string(),
        };
        let stream = self
            .call(req, true, |mut c, r| async move { c.tasks(r).await })
            .await?;
        let url = self.urls[self.current.load(Ordering::Relaxed)].clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map(task_from_pb).map_err(|s| classify(&url, &s, true))
        })))
    }

    /// Reports a task's outcome (`error` is sent only when `!ok`).
    pub async fn complete_task(
        &self,
        peer_id: &PeerId,
        task_id: u64,
        ok: bool,
        error: &str,
    ) -> Result<(), TrackerError> {
        let req = pb::CompleteTaskRequest {
            peer_id: peer_id.to_string(),
            task_id,
            ok,
            error: if ok { String::new() } else { error.to_string() },
        };
        self.call(
            req,
            true,
            |mut c, r| async move { c.complete_task(r).await },
        )
        .await?;
        Ok(())
    }

    pub async fn list_peers(&self) -> Result<Vec<PeerView>, TrackerError> {
        let r = self
            .call(pb::ListPeersRequest {}, true, |mut c, r| async move {
                c.list_peers(r).await
            })
            .await?;
        Ok(r.peers
            .into_iter()
            .map(|p| PeerView {
                id: p.id,
                user: p.user,
                addr: p.addr,
                state: p.state,
                last_seen_ms: p.last_seen_ms,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme() {
        assert_eq!(normalize_url("127.0.0.1:7070"), "http://127.0.0.1:7070");
        assert_eq!(normalize_url("https://t.example/"), "https://t.example");
    }

    #[tokio::test]
    async fn unreachable_trackers_fail_over_and_then_say_so() {
        // Two closed ports: both are tried, and the error names them.
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let urls = vec![
            a.local_addr().unwrap().to_string(),
            b.local_addr().unwrap().to_string(),
        ];
        drop((a, b));
        let c = TrackerClient::new(&urls, Some("t".into())).unwrap();
        let err = c.search("", "").await.unwrap_err();
        assert!(matches!(err, TrackerError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&urls[1]), "{err}");
        let no_token = TrackerClient::new(&urls, None).unwrap();
        assert!(matches!(
            no_token.search("", "").await,
            Err(TrackerError::NotLoggedIn)
        ));
    }

    #[test]
    fn should_sort_the_trackers_answers_by_code() {
        let url = "http://t:1";
        let answer = |code, auth| classify(url, &Status::new(code, "m"), auth);
        assert!(matches!(
            answer(Code::Unauthenticated, true),
            TrackerError::NotLoggedIn
        ));
        assert!(matches!(
            answer(Code::Unauthenticated, false),
            TrackerError::InvalidCredentials
        ));
        assert!(matches!(
            answer(Code::NotFound, true),
            TrackerError::NotFound { message } if message == "m"
        ));
        assert!(matches!(
            answer(Code::AlreadyExists, false),
            TrackerError::AlreadyExists { .. }
        ));
        assert!(matches!(
            answer(Code::PermissionDenied, true),
            TrackerError::PermissionDenied { .. }
        ));
        for code in [
            Code::InvalidArgument,
            Code::OutOfRange,
            Code::FailedPrecondition,
        ] {
            assert!(
                matches!(answer(code, true), TrackerError::InvalidInput { .. }),
                "{code:?}"
            );
        }
        assert!(matches!(
            answer(Code::ResourceExhausted, false),
            TrackerError::Throttled { .. }
        ));
        for code in [Code::Unavailable, Code::Cancelled, Code::DeadlineExceeded] {
            let e = answer(code, true);
            assert!(
                matches!(&e, TrackerError::Unavailable { urls, .. } if urls == url),
                "{code:?}: {e:?}"
            );
            assert!(e.try_next() && e.affects_every_call());
        }
        for code in [
            Code::Ok,
            Code::Unknown,
            Code::Internal,
            Code::Unimplemented,
            Code::Aborted,
            Code::DataLoss,
        ] {
            assert!(
                matches!(answer(code, true), TrackerError::Protocol(_)),
                "{code:?}"
            );
        }
        // The tracker's words are shown as they are, whatever they say.
        let e = classify(
            url,
            &Status::not_found("transport error: certificate"),
            true,
        );
        assert_eq!(
            e.to_string(),
            "tracker refused: transport error: certificate"
        );
        let e = classify(url, &Status::internal(""), true);
        assert!(
            matches!(&e, TrackerError::Protocol(m) if !m.is_empty()),
            "{e}"
        );
    }

    #[test]
    fn should_sort_transport_failures_by_their_sources() {
        use std::io::{Error as IoError, ErrorKind};
        let local = |e: Box<dyn std::error::Error + Send + Sync>| {
            Status::from_error(Box::new(tonic::ConnectError(e)))
        };
        let refused = local(Box::new(IoError::from(ErrorKind::ConnectionRefused)));
        let e = classify("http://t:1", &refused, true);
        assert!(
            matches!(&e, TrackerError::Unreachable { reason, .. } if !reason.contains("TLS")),
            "{e:?}"
        );
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let tls = local(Box::new(IoError::new(ErrorKind::InvalidData, bad_cert)));
        let e = classify("https://t:1", &tls, false);
        assert!(matches!(e, TrackerError::Tls { .. }), "{e:?}");
        assert!(e.to_string().contains("--ca"), "{e}");
        // Another TLS failure is no certificate problem.
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        let tls = local(Box::new(IoError::new(ErrorKind::InvalidData, alert)));
        let e = classify("https://t:1", &tls, false);
        assert!(matches!(e, TrackerError::Unreachable { .. }), "{e:?}");
        // Even a local status whose code is NOT_FOUND is a failure to reach the tracker.
        let mut odd = Status::not_found("x");
        odd.set_source(std::sync::Arc::new(IoError::from(ErrorKind::NotFound)));
        let e = classify("http://t:1", &odd, true);
        assert!(matches!(e, TrackerError::Unreachable { .. }), "{e:?}");
        // Connected, then closed before any HTTP/2 answer (a TLS port spoken to in plain
        // text loses this race or the protocol-error one): the hint either way.
        let mut closed = Status::cancelled("connection closed");
        closed.set_source(std::sync::Arc::new(IoError::other("connection closed")));
        let e = classify("http://t:1", &closed, true);
        assert!(e.to_string().contains("use https://"), "{e}");
        // A working connection that broke (a tracker restarting) is no TLS mistake.
        let mut reset = Status::unknown("h2 protocol error");
        reset.set_source(std::sync::Arc::new(IoError::from(ErrorKind::BrokenPipe)));
        let e = classify("http://t:1", &reset, true);
        assert!(!e.to_string().contains("https://"), "{e}");
        // A call that timed out is no TLS mistake.
        let mut slow = Status::cancelled("timeout expired");
        slow.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
        let e = classify("http://t:1", &slow, true);
        assert!(!e.to_string().contains("https://"), "{e}");
    }

    #[tokio::test]
    async fn should_name_the_certificate_when_the_tracker_is_not_trusted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![key.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let _ = acceptor.accept(tcp).await;
            }
        });
        // No --ca: nothing is trusted.
        let c = TrackerClient::new(&[format!("https://{addr}")], None).unwrap();
        let err = c.login("u", "p").await.unwrap_err();
        assert!(matches!(err, TrackerError::Tls { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("certificate") && text.contains("--ca"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn should_suggest_https_when_plain_http_meets_a_tls_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // What the tracker's TLS port answers to plain text.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let mut buf = [0u8; 64];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                    .await;
            }
        });
        let url = format!("http://{addr}");
        let c = TrackerClient::new(std::slice::from_ref(&url), None).unwrap();
        let err = c.login("u", "p").await.unwrap_err();
        assert!(matches!(err, TrackerError::Unreachable { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.contains(&url) && text.contains("https://"), "{text}");
    }
}
