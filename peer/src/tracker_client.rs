//! The tracker's gRPC API as the peer uses it: the session token on every call, fail-over
//! across several tracker URLs, and conversion of prost types into domain types (prost types
//! never leave this module and `server`).
//!
//! Fail-over: calls go to the URL that answered last; on UNAVAILABLE (connection refused,
//! reset, timeout) the next URL is tried, and so on around the list once.
//!
//! A client given a [`Patience`] (the commands' clients) then retries its idempotent calls
//! with back-off while the tracker is unavailable or unreachable, for a bounded time
//! (`patience`); a client without one (the node's) fails at once, and its caller retries.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Certificate, FileId, Manifest, PeerId};
use futures::{Stream, StreamExt};
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient as Grpc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::identity::Identity;
use crate::transport::ClientTls;

mod error;
mod patience;
mod views;
pub use error::TrackerError;
use error::classify;
pub use patience::{Notice, Patience, UNREACHABLE_WAIT};
pub use views::{
    Beat, DropTask, FetchTask, FileMeta, FileView, GetTask, Granted, HolderView, HoldingIn,
    Located, MAX_REPLICA_CHUNKS, PeerView, Relocated, Source, Task, Work,
};
use views::{holders_from_pb, kind_to_pb, manifest_from_pb, task_from_pb, ticket_in};

/// The URL used when nothing else names a tracker.
pub const DEFAULT_TRACKER: &str = "http://127.0.0.1:7070";

/// A client for one or more tracker URLs. Cheap to clone.
#[derive(Clone)]
pub struct TrackerClient {
    urls: Arc<Vec<String>>,
    channels: Arc<Vec<Channel>>,
    current: Arc<AtomicUsize>,
    token: Option<String>,
    /// Retry idempotent calls through an outage (see [`Patience`]).
    patience: Option<Patience>,
}

/// Whether a call may be sent again after a failure that may or may not have reached the
/// tracker: it is idempotent, and the tracker's failed calls have no effect.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Retry {
    Yes,
    No,
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
            .map(|u| endpoint(u, tls).map(|e| crate::connector::lazy(&e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            urls: Arc::new(urls),
            channels: Arc::new(channels),
            current: Arc::new(AtomicUsize::new(0)),
            token,
            patience: None,
        })
    }

    /// The same client, retrying its idempotent calls through outages with `patience`.
    #[must_use]
    pub fn with_patience(mut self, patience: Patience) -> Self {
        self.patience = Some(patience);
        self
    }

    /// The same client waiting out a tracker that answers UNAVAILABLE, but failing at once
    /// when no tracker answers at all, for a caller with another way to go.
    pub fn impatient_when_unreachable(mut self) -> Self {
        self.patience = self.patience.map(Patience::none_for_unreachable);
        self
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
        tokio::time::timeout(Duration::from_secs(3), crate::connector::connect(&ep))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends one call (see [`TrackerClient::call_retried`]).
    async fn call<Req, Resp, F, Fut>(
        &self,
        req: Req,
        auth: bool,
        retry: Retry,
        f: F,
    ) -> Result<Resp, TrackerError>
    where
        Req: Clone,
        F: Fn(Grpc<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.call_retried(req, auth, retry, f).await.0
    }

    /// Sends one call, failing over across URLs on connection errors, and with `retry`
    /// and patience, again after a pause while the tracker is unavailable. Also says
    /// whether the call was sent more than once (an earlier try may have taken effect).
    async fn call_retried<Req, Resp, F, Fut>(
        &self,
        req: Req,
        auth: bool,
        retry: Retry,
        f: F,
    ) -> (Result<Resp, TrackerError>, bool)
    where
        Req: Clone,
        F: Fn(Grpc<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let patience = self.patience.as_ref().filter(|_| retry == Retry::Yes);
        let mut attempt = 0;
        loop {
            let r = self.call_once(req.clone(), auth, &f).await;
            let pause = match (&r, patience) {
                (Err(e), Some(p)) => p.pause(e, attempt),
                _ => None,
            };
            let Some(pause) = pause else {
                if r.is_ok()
                    && let Some(p) = &self.patience
                {
                    p.answered();
                }
                return (r, attempt > 0);
            };
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// Sends one call once, failing over across URLs on connection errors.
    async fn call_once<Req, Resp, F, Fut>(
        &self,
        req: Req,
        auth: bool,
        f: &F,
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
            .call(req, false, Retry::No, |mut c, r| async move {
                c.register(r).await
            })
            .await?;
        Ok(Granted::from(s))
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Granted, TrackerError> {
        let req = pb::Credentials {
            user: user.into(),
            password: password.into(),
        };
        let s = self
            .call(req, false, Retry::Yes, |mut c, r| async move {
                c.login(r).await
            })
            .await?;
        Ok(Granted::from(s))
    }

    pub async fn logout(&self) -> Result<(), TrackerError> {
        self.call(
            pb::LogoutRequest {},
            true,
            Retry::No,
            |mut c, r| async move { c.logout(r).await },
        )
        .await?;
        Ok(())
    }

    /// Has the tracker certify `key` as this user's peer `peer_id`; returns the certificate
    /// and the tracker's key (the caller checks that one against the other).
    pub async fn certify(
        &self,
        peer_id: &PeerId,
        key: &[u8; 32],
    ) -> Result<(Certificate, Vec<u8>), TrackerError> {
        let req = pb::CertifyRequest {
            peer_id: peer_id.to_string(),
            key: Bytes::copy_from_slice(key),
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.certify(r).await
            })
            .await?;
        let cert = r
            .certificate
            .as_ref()
            .ok_or_else(|| TrackerError::BadAnswer("certify answered no certificate".into()))
            .and_then(|c| {
                Certificate::try_from(c).map_err(|e| TrackerError::BadAnswer(e.to_string()))
            })?;
        Ok((cert, r.ticket_public_key.to_vec()))
    }

    /// Has the tracker certify `identity`'s key as `peer_id` and keeps the certificate in
    /// the home.
    pub async fn renew_certificate(
        &self,
        identity: &Identity,
        peer_id: &PeerId,
    ) -> Result<Certificate, TrackerError> {
        let (cert, tracker_key) = self.certify(peer_id, &identity.public_key()).await?;
        identity
            .keep(cert.clone(), &tracker_key, peer_id)
            .map_err(|e| TrackerError::BadAnswer(e.into()))?;
        Ok(cert)
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
            .call(req, true, Retry::No, |mut c, r| async move {
                c.heartbeat(r).await
            })
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
            .call(req, true, Retry::No, |mut c, r| async move {
                c.sync_holdings(r).await
            })
            .await?;
        Ok(r.unknown_file_ids)
    }

    /// Shares `m`; `listing` is the file's whole content when it is a collection's listing
    /// (the tracker checks it against the manifest before it lists a collection).
    pub async fn announce(
        &self,
        peer_id: &PeerId,
        m: &Manifest,
        listing: Option<bytes::Bytes>,
    ) -> Result<FileView, TrackerError> {
        let req = pb::AnnounceRequest {
            peer_id: peer_id.to_string(),
            manifest: Some(pb::Manifest::from(m)),
            listing: listing.unwrap_or_default(),
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.announce(r).await
            })
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
        self.call(req, true, Retry::No, |mut c, r| async move {
            c.report_chunks(r).await
        })
        .await?;
        Ok(())
    }

    /// Tells the tracker that `source` failed this getter on `chunk`; the tracker audits it
    /// before believing it.
    pub async fn report_source(
        &self,
        me: &PeerId,
        file_id: &FileId,
        source: &PeerId,
        chunk: u32,
        fault: pb::SourceFault,
    ) -> Result<(), TrackerError> {
        let req = pb::ReportSourceRequest {
            reporter_peer_id: me.to_string(),
            file_id: file_id.to_string(),
            peer_id: source.to_string(),
            chunk,
            fault: fault as i32,
        };
        self.call(req, true, Retry::No, |mut c, r| async move {
            c.report_source(r).await
        })
        .await?;
        Ok(())
    }

    /// Withdraws this peer's holding of a file. A NOT_FOUND after a retry means done: an
    /// earlier try (whose answer was lost) took effect.
    pub async fn unindex(&self, peer_id: &PeerId, file_id: &FileId) -> Result<(), TrackerError> {
        let req = pb::UnindexRequest {
            peer_id: peer_id.to_string(),
            file_id: file_id.to_string(),
        };
        match self
            .call_retried(req, true, Retry::Yes, |mut c, r| async move {
                c.unindex(r).await
            })
            .await
        {
            (Ok(_), _) | (Err(TrackerError::NotFound { .. }), true) => Ok(()),
            (Err(e), _) => Err(e),
        }
    }

    pub async fn search(&self, query: &str, kind: &str) -> Result<Vec<FileView>, TrackerError> {
        let req = pb::SearchRequest {
            query: query.into(),
            r#type: kind.into(),
            limit: 1000,
            offset: 0,
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.search(r).await
            })
            .await?;
        Ok(r.items.into_iter().map(FileView::from).collect())
    }

    pub async fn resolve(&self, term: &str) -> Result<Vec<FileView>, TrackerError> {
        let req = pb::ResolveRequest { term: term.into() };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.resolve(r).await
            })
            .await?;
        Ok(r.files.into_iter().map(FileView::from).collect())
    }

    /// A file's manifest (to be checked against the id), live holders and a ticket.
    /// A file's manifest, holders, and a ticket naming `key` (the getter's public key, which
    /// its requests to holders prove).
    pub async fn locate(&self, file_id: &FileId, key: &[u8; 32]) -> Result<Located, TrackerError> {
        let req = pb::LocateRequest {
            file_id: file_id.to_string(),
            have_manifest: false,
            requester_key: Bytes::copy_from_slice(key),
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.locate(r).await
            })
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
    pub async fn relocate(
        &self,
        file_id: &FileId,
        chunks: u32,
        key: &[u8; 32],
    ) -> Result<Relocated, TrackerError> {
        let req = pb::LocateRequest {
            file_id: file_id.to_string(),
            have_manifest: true,
            requester_key: Bytes::copy_from_slice(key),
        };
        let r = self
            .call(
                req,
                true,
                Retry::No,
                |mut c, r| async move { c.locate(r).await },
            )
            .await?;
        Ok(Relocated {
            holders: holders_from_pb(r.holders, chunks),
            ticket: ticket_in(r.ticket.as_ref(), "a located file"),
        })
    }

    /// Opens this node's task stream; the tickets of its tasks name `key`, the node's own.
    pub async fn tasks(
        &self,
        peer_id: &PeerId,
        key: &[u8; 32],
    ) -> Result<TaskStream, TrackerError> {
        let req = pb::TasksRequest {
            peer_id: peer_id.to_string(),
            node_key: Bytes::copy_from_slice(key),
        };
        let stream = self
            .call(
                req,
                true,
                Retry::No,
                |mut c, r| async move { c.tasks(r).await },
            )
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
        self.call(req, true, Retry::No, |mut c, r| async move {
            c.complete_task(r).await
        })
        .await?;
        Ok(())
    }

    /// Queues a waiting get of `file_id` for the node `peer_id` (idempotent); returns the
    /// tracker's task id.
    pub async fn queue_get(&self, peer_id: &PeerId, file_id: &FileId) -> Result<u64, TrackerError> {
        let req = pb::QueueGetRequest {
            peer_id: peer_id.to_string(),
            file_id: file_id.to_string(),
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.queue_get(r).await
            })
            .await?;
        Ok(r.task_id)
    }

    /// Cancels the node's waiting get of `file_id`; says whether there was one.
    pub async fn cancel_get(
        &self,
        peer_id: &PeerId,
        file_id: &FileId,
    ) -> Result<bool, TrackerError> {
        let req = pb::CancelGetRequest {
            peer_id: peer_id.to_string(),
            file_id: file_id.to_string(),
        };
        let r = self
            .call(req, true, Retry::Yes, |mut c, r| async move {
                c.cancel_get(r).await
            })
            .await?;
        Ok(r.cancelled)
    }

    pub async fn list_peers(&self) -> Result<Vec<PeerView>, TrackerError> {
        let r = self
            .call(
                pb::ListPeersRequest {},
                true,
                Retry::Yes,
                |mut c, r| async move { c.list_peers(r).await },
            )
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
mod tests;
