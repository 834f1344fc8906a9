//! Search without a tracker: a query flooded over the peers' contacts, as the unstructured
//! networks this project grows from did.
//!
//! The origin (`peer search`, [`origin`]) sends a query with a random 16-byte id and a TTL
//! to its contacts and listens for answers for a few seconds. Each node that takes it
//! ([`Flood::on_query`]) answers from its own store straight to the origin, and forwards
//! it with `ttl - 1` to at most [`FANOUT`] of its contacts while that is above 0.
//!
//! **No storm.** A node remembers each query id for [`SEEN_FOR`] and drops it when it
//! comes again, unless it comes with more TTL left than before: then it forwards it again
//! (it answers once), so a query that first arrived by a long path still reaches every
//! peer within TTL hops of the origin. So a node forwards a query at most TTL times, and
//! once unless the paths race.
//!
//! **Bounded against abuse.** Every query, answer and exchange carries the sender's
//! certificate and a proof of its key (`crate::auth::Gate::admit_peer`), so each has an
//! account behind it; each sender may send [`QUERY_BURST`] queries at once and
//! [`QUERY_RATE`] a second after that (RESOURCE_EXHAUSTED past it); a node forwards to at
//! most [`FANOUT`] contacts and answers with at most [`MAX_ANSWER_FILES`] files; the origin
//! takes at most `MAX_ANSWERS` files in all. A hostile peer can still answer with lies:
//! a flooded answer is a hint, and a get checks every chunk map against the file id.

pub mod origin;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CertificateClaims, FileId, FileType, Method, PeerId, Sha256Digest};
use proto::peer::v1 as pb;
use tonic::Status;

use crate::contacts::{Contacts, parse_addr};
use crate::home::{Home, Kind, StoreRecord};
use crate::metrics::metrics;
use crate::tracker_client::TrackerClient;
use crate::transport::GrpcTransport;

/// Hops a query travels when the user does not say.
pub const DEFAULT_TTL: u32 = 4;
/// Most hops a query may travel.
pub const MAX_TTL: u32 = 7;
/// Most contacts a node forwards one query to.
pub const FANOUT: usize = 8;
/// Most files one node answers with.
pub const MAX_ANSWER_FILES: usize = 50;
/// How long a query id is remembered.
pub const SEEN_FOR: Duration = Duration::from_secs(300);
/// Most query ids remembered; past it the oldest half is forgotten.
const MAX_SEEN: usize = 65_536;
/// Queries a sender may send at once, then [`QUERY_RATE`] a second.
pub const QUERY_BURST: f64 = 20.0;
pub const QUERY_RATE: f64 = 5.0;
/// Most contacts one peer exchange hands out.
pub const EXCHANGE: usize = 32;
/// Longest query text.
const MAX_QUERY: usize = 256;
/// How long sending one message to a contact may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the store's list of files is reused between queries.
const RECORDS_FOR: Duration = Duration::from_secs(2);

/// What the proofs of a query and of its answers sign: the SHA-256 of the query id.
pub fn query_subject(query_id: &[u8]) -> FileId {
    FileId(Sha256Digest::of(query_id))
}

/// What the proof of a peer exchange signs.
pub fn contacts_subject() -> FileId {
    FileId(Sha256Digest::of(b""))
}

/// Whether `name` (of type `kind`) matches `query` (every word occurs, case-insensitively)
/// and `file_type` (empty: any). The tracker's search applies the same rule.
pub fn matches(name: &str, kind: FileType, query: &str, file_type: &str) -> bool {
    let name = name.to_lowercase();
    (file_type.is_empty() || kind.as_str() == file_type)
        && query
            .split_whitespace()
            .all(|w| name.contains(&w.to_lowercase()))
}

/// A token bucket per sender.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A node's side of flooded search.
pub struct Flood {
    home: Home,
    contacts: Contacts,
    /// This node's advertised address: never a forward target, and what answers name.
    own_addr: String,
    transport: Arc<GrpcTransport>,
    /// Query id → most TTL seen with it, and when it was first seen.
    seen: Mutex<HashMap<[u8; 16], (u32, Instant)>>,
    senders: Mutex<HashMap<PeerId, Bucket>>,
    records: Mutex<Option<(Instant, Arc<Vec<StoreRecord>>)>>,
    /// Whether contacts are learnt (from the tracker and from peers).
    learn: bool,
}

impl Flood {
    pub fn new(home: &Home, own_addr: String, transport: Arc<GrpcTransport>, learn: bool) -> Self {
        Self {
            home: home.clone(),
            contacts: Contacts::new(home),
            own_addr,
            transport,
            seen: Mutex::default(),
            senders: Mutex::default(),
            records: Mutex::default(),
            learn,
        }
    }

    pub fn contacts(&self) -> &Contacts {
        &self.contacts
    }

    /// Peer exchange: up to [`EXCHANGE`] of this node's contacts at random, for `sender`
    /// at `their_addr` (learnt as a contact when the node learns contacts). Exchanges count
    /// against the sender's query rate.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED past the sender's rate.
    pub fn exchange(
        &self,
        their_addr: &str,
        sender: &CertificateClaims,
    ) -> Result<Vec<String>, Status> {
        use rand::seq::SliceRandom;
        if !self.allow(&sender.peer_id) {
            metrics().query("limited");
            return Err(Status::resource_exhausted(format!(
                "more than {QUERY_RATE} queries a second from this peer"
            )));
        }
        let mut all = self.contacts.all();
        all.retain(|a| a != their_addr);
        all.shuffle(&mut rand::rng());
        all.truncate(EXCHANGE);
        if self.learn && !their_addr.is_empty() {
            let _ = self.contacts.learn([their_addr], &self.own_addr);
        }
        Ok(all)
    }

    /// Takes one query from `sender` (already admitted): answers and forwards it in the
    /// background, at once.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED past the sender's rate; INVALID_ARGUMENT for a malformed query.
    pub fn on_query(
        self: &Arc<Self>,
        req: pb::QueryRequest,
        sender: &CertificateClaims,
    ) -> Result<pb::QueryReply, Status> {
        if !self.allow(&sender.peer_id) {
            metrics().query("limited");
            return Err(Status::resource_exhausted(format!(
                "more than {QUERY_RATE} queries a second from this peer"
            )));
        }
        let id: [u8; 16] = req.query_id[..]
            .try_into()
            .map_err(|_| Status::invalid_argument("query_id must be 16 bytes"))?;
        if req.ttl == 0 || req.ttl > MAX_TTL {
            return Err(Status::invalid_argument(format!(
                "ttl must be 1 to {MAX_TTL}"
            )));
        }
        if req.query.len() > MAX_QUERY {
            return Err(Status::invalid_argument(format!(
                "a query is at most {MAX_QUERY} bytes"
            )));
        }
        if !req.file_type.is_empty() && req.file_type.parse::<FileType>().is_err() {
            return Err(Status::invalid_argument("unknown file type"));
        }
        parse_addr(&req.reply_to)
            .map_err(|e| Status::invalid_argument(format!("reply_to: {e}")))?;
        metrics().query("received");
        let first = match self.note(id, req.ttl) {
            None => {
                metrics().query("duplicate");
                return Ok(pb::QueryReply { fresh: false });
            }
            Some(first) => first,
        };
        let me = self.clone();
        tokio::spawn(async move {
            if first {
                me.answer(&req).await;
            }
            me.forward(req).await;
        });
        Ok(pb::QueryReply { fresh: true })
    }

    /// Records query `id` arriving with `ttl`: `None` when it was seen with as much TTL
    /// before (drop it), else whether it is new.
    fn note(&self, id: [u8; 16], ttl: u32) -> Option<bool> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if seen.len() >= MAX_SEEN {
            seen.retain(|_, (_, at)| now.duration_since(*at) < SEEN_FOR);
            if seen.len() >= MAX_SEEN {
                let mut ages: Vec<Instant> = seen.values().map(|(_, at)| *at).collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                seen.retain(|_, (_, at)| *at > cut);
            }
        }
        match seen.get_mut(&id) {
            Some((best, at)) if now.duration_since(*at) < SEEN_FOR => {
                if ttl <= *best {
                    return None;
                }
                *best = ttl;
                Some(false)
            }
            _ => {
                seen.insert(id, (ttl, now));
                Some(true)
            }
        }
    }

    fn allow(&self, sender: &PeerId) -> bool {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if senders.len() > 10_000 {
            senders.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
        }
        let b = senders.entry(sender.clone()).or_insert(Bucket {
            tokens: QUERY_BURST,
            at: now,
        });
        b.tokens =
            (b.tokens + now.duration_since(b.at).as_secs_f64() * QUERY_RATE).min(QUERY_BURST);
        b.at = now;
        if b.tokens < 1.0 {
            return false;
        }
        b.tokens -= 1.0;
        true
    }

    /// The store's records, re-read at most every [`RECORDS_FOR`].
    fn records(&self) -> Arc<Vec<StoreRecord>> {
        let mut cached = self.records.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, r)) = cached.as_ref()
            && at.elapsed() < RECORDS_FOR
        {
            return r.clone();
        }
        let r = Arc::new(self.home.records().unwrap_or_default());
        *cached = Some((Instant::now(), r.clone()));
        r
    }

    /// What this node holds whole that matches `req`, at most [`MAX_ANSWER_FILES`]. A
    /// query that is a whole file id matches that file, whatever its name.
    pub fn local_matches(&self, query: &str, file_type: &str) -> Vec<pb::FoundFile> {
        let by_id = query.trim().parse::<FileId>().ok();
        self.records()
            .iter()
            .filter(|r| r.complete && !r.changed && r.kind != Kind::Replica)
            .filter(|r| by_id.is_none_or(|id| r.file_id == id))
            .filter_map(|r| {
                let kind = if r.folder.is_some() || r.path.starts_with(self.home.collections_dir())
                {
                    FileType::Collection
                } else {
                    FileType::from_name(&r.name)
                };
                let hit = by_id.is_some() || matches(&r.name, kind, query, file_type);
                hit.then(|| pb::FoundFile {
                    file_id: r.file_id.to_string(),
                    name: r.name.clone(),
                    size: r.size,
                    file_type: kind.as_str().to_string(),
                })
            })
            .take(MAX_ANSWER_FILES)
            .collect()
    }

    /// Sends this node's matches to the query's origin (nothing when there are none).
    async fn answer(&self, req: &pb::QueryRequest) {
        let files = self.local_matches(&req.query, &req.file_type);
        if files.is_empty() {
            return;
        }
        let identity = self.transport.identity();
        let subject = query_subject(&req.query_id);
        let msg = pb::AnswerRequest {
            query_id: req.query_id.clone(),
            files,
            holder_addr: self.own_addr.clone(),
            proof: Some((&identity.prove(Method::Answer, &subject)).into()),
            certificate: identity.certificate().as_ref().map(Into::into),
        };
        let sent = match self.transport.origin(&req.reply_to) {
            Ok(mut c) => tokio::time::timeout(SEND_TIMEOUT, c.answer(msg))
                .await
                .map_err(|_| "timed out".to_string())
                .and_then(|r| r.map(|_| ()).map_err(|s| s.message().to_string())),
            Err(e) => Err(e.to_string()),
        };
        match sent {
            Ok(()) => metrics().query("answered"),
            Err(e) => tracing::debug!(origin = %req.reply_to, "cannot answer a query: {e}"),
        }
    }

    /// Sends `req` on with one hop less to at most [`FANOUT`] contacts, not to the one it
    /// came from.
    async fn forward(&self, mut req: pb::QueryRequest) {
        if req.ttl <= 1 {
            return;
        }
        let from = std::mem::take(&mut req.sender_addr);
        let mut targets: Vec<String> = self
            .contacts
            .all()
            .into_iter()
            .filter(|a| *a != from && *a != self.own_addr && *a != req.reply_to)
            .collect();
        if targets.len() > FANOUT {
            use rand::seq::SliceRandom;
            targets.shuffle(&mut rand::rng());
            targets.truncate(FANOUT);
        }
        if targets.is_empty() {
            return;
        }
        metrics().query("relayed");
        req.ttl -= 1;
        req.sender_addr = self.own_addr.clone();
        let sends = targets.into_iter().map(|addr| {
            let req = req.clone();
            async move { (send_query(&self.transport, &addr, req).await, addr) }
        });
        for (r, addr) in futures::future::join_all(sends).await {
            match r {
                Ok(()) => metrics().query("forwarded"),
                Err(e) => tracing::debug!(contact = %addr, "cannot forward a query: {e}"),
            }
        }
    }
}

impl Flood {
    /// Learns contacts until `token` is cancelled: a few seconds after start and then every
    /// `every`, the up peers the tracker lists (a random [`EXCHANGE`] of them) and the
    /// contacts of one random contact (peer exchange). Failures are logged at debug level:
    /// the contacts known stay.
    pub async fn learn(
        self: Arc<Self>,
        client: TrackerClient,
        every: Duration,
        token: tokio_util::sync::CancellationToken,
    ) {
        let mut wait = Duration::from_secs(3);
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = token.cancelled() => return,
            }
            wait = every;
            match client.list_peers().await {
                Ok(peers) => {
                    use rand::seq::SliceRandom;
                    let mut up: Vec<String> = peers
                        .into_iter()
                        .filter(|p| p.state == "up" && !p.addr.is_empty())
                        .map(|p| p.addr)
                        .collect();
                    up.shuffle(&mut rand::rng());
                    up.truncate(EXCHANGE);
                    self.keep(up.iter().map(String::as_str), "the tracker");
                }
                Err(e) => tracing::debug!("cannot learn contacts from the tracker: {e}"),
            }
            self.exchange_with_one().await;
        }
    }

    fn keep<'a>(&self, addrs: impl IntoIterator<Item = &'a str>, from: &str) {
        match self.contacts.learn(addrs, &self.own_addr) {
            Ok(0) => {}
            Ok(n) => tracing::info!(new = n, "learnt contacts from {from}"),
            Err(e) => tracing::warn!("cannot save learnt contacts: {e}"),
        }
    }

    /// Asks one random contact for its contacts.
    async fn exchange_with_one(&self) {
        use rand::seq::IndexedRandom;
        let Some(addr) = self.contacts.all().choose(&mut rand::rng()).cloned() else {
            return;
        };
        let identity = self.transport.identity();
        let Some(cert) = identity.certificate() else {
            return;
        };
        let req = pb::ContactsRequest {
            addr: self.own_addr.clone(),
            proof: Some((&identity.prove(Method::Contacts, &contacts_subject())).into()),
            certificate: Some((&cert).into()),
        };
        let answer = match self.transport.peer(&addr) {
            Ok(mut c) => tokio::time::timeout(SEND_TIMEOUT, c.contacts(req)).await,
            Err(_) => return,
        };
        match answer {
            Ok(Ok(r)) => {
                let addrs = r.into_inner().addrs;
                self.keep(addrs.iter().take(EXCHANGE).map(String::as_str), "a peer");
            }
            Ok(Err(s)) => {
                tracing::debug!(contact = %addr, "peer exchange refused: {}", s.message())
            }
            Err(_) => tracing::debug!(contact = %addr, "peer exchange timed out"),
        }
    }
}

/// Signs `req` as this peer's and sends it to the node at `addr`.
///
/// # Errors
/// Why it was not delivered.
pub async fn send_query(
    transport: &GrpcTransport,
    addr: &str,
    mut req: pb::QueryRequest,
) -> Result<(), String> {
    let identity = transport.identity();
    let Some(cert) = identity.certificate() else {
        return Err("this peer has no certificate (log in while a tracker answers)".into());
    };
    req.proof = Some((&identity.prove(Method::Query, &query_subject(&req.query_id))).into());
    req.certificate = Some((&cert).into());
    let mut c = transport.peer(addr).map_err(|e| e.to_string())?;
    match tokio::time::timeout(SEND_TIMEOUT, c.query(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
        Err(_) => Err("timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_match_every_word_case_insensitively_and_the_type() {
        assert!(matches(
            "Holiday Video.MP4",
            FileType::Video,
            "video holiday",
            ""
        ));
        assert!(matches("a.mp4", FileType::Video, "", "video"));
        assert!(!matches("a.mp4", FileType::Video, "", "audio"));
        assert!(!matches("a.mp4", FileType::Video, "a b", ""));
    }

    #[test]
    fn should_drop_a_seen_query_unless_it_has_more_ttl_left() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let identity = crate::identity::Identity::load(&home).unwrap();
        let transport = Arc::new(GrpcTransport::new(Default::default(), identity));
        let f = Flood::new(&home, "127.0.0.1:1".into(), transport, true);
        assert_eq!(f.note([1; 16], 2), Some(true));
        assert_eq!(f.note([1; 16], 2), None);
        assert_eq!(f.note([1; 16], 1), None);
        assert_eq!(
            f.note([1; 16], 3),
            Some(false),
            "forwarded again, not answered"
        );
        assert_eq!(f.note([2; 16], 1), Some(true));
    }

    #[test]
    fn should_limit_each_sender_to_its_burst_then_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::open(Some(dir.path().to_path_buf())).unwrap();
        let identity = crate::identity::Identity::load(&home).unwrap();
        let transport = Arc::new(GrpcTransport::new(Default::default(), identity));
        let f = Flood::new(&home, "127.0.0.1:1".into(), transport, true);
        let (a, b) = (PeerId::from_random([1; 16]), PeerId::from_random([2; 16]));
        let taken = (0..100).filter(|_| f.allow(&a)).count();
        assert!((20..=21).contains(&taken), "{taken}");
        assert!(f.allow(&b), "another sender has its own bucket");
    }
}
