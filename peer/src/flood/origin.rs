//! The searching side of a flooded search (`peer search` without a tracker): send the query
//! to this home's contacts, then take answers on a short-lived `Origin` service for a few
//! seconds and merge them by file id.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{FileId, FileType, Method};
use proto::peer::v1 as pb;
use proto::peer::v1::origin_server::{Origin, OriginServer};
use rand::RngExt;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::{FANOUT, MAX_ANSWER_FILES, query_subject, send_query};
use crate::auth::{Gate, TrackerKey, TrackerReach};
use crate::contacts::{Contacts, parse_addr};
use crate::home::Home;
use crate::identity::Identity;
use crate::tracker_client::{FileView, HolderView, Located};
use crate::transport::{ClientTls, GrpcTransport, route_ip};

/// Most (file, holder) pairs one search takes, whatever peers send.
pub const MAX_ANSWERS: usize = 500;

/// What to look for.
#[derive(Debug, Clone)]
pub struct Params {
    pub query: String,
    pub file_type: Option<FileType>,
    pub ttl: u32,
    /// How long to wait for answers.
    pub wait: Duration,
}

/// One file that peers said they hold, with the holders that said so.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub size: u64,
    #[serde(rename = "type")]
    pub kind: String,
    /// How many peers answered that they hold it.
    pub holders: usize,
    /// Where they listen.
    pub addrs: Vec<String>,
    /// Their peer ids (from their certificates), in the order of `addrs`.
    #[serde(skip)]
    pub peer_ids: Vec<common::PeerId>,
    /// Always `peers`: these results come from a flooded search, not from a tracker.
    pub source: &'static str,
}

/// What a flooded search found.
#[derive(Debug)]
pub struct Outcome {
    pub files: Vec<Found>,
    /// Contacts that took the query.
    pub asked: usize,
    /// When the first answer arrived, after the query went out.
    pub first_answer: Option<Duration>,
}

/// Why a flooded search could not run.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("this peer has no contacts; add some with `peer contacts add HOST:PORT`")]
    NoContacts,
    #[error("this peer has no certificate from the tracker; log in while a tracker answers")]
    NoCertificate,
    #[error("this peer does not know the tracker's key; log in while a tracker answers")]
    NoTrackerKey,
    #[error("no contact took the query ({0})")]
    NobodyAnswered(String),
    #[error("no peer within reach answered that it holds {0}")]
    NotFound(FileId),
    #[error("no holder gave a chunk map that matches {id} ({why})")]
    NoChunkMap { id: FileId, why: String },
    #[error("cannot listen for answers: {0}")]
    Listen(std::io::Error),
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
}

/// Answers as they arrive.
#[derive(Default)]
struct Collected {
    files: BTreeMap<String, Found>,
    /// Peers that answered already (one answer each).
    answered: HashSet<String>,
    pairs: usize,
    first_at: Option<Instant>,
}

struct OriginService {
    query_id: [u8; 16],
    /// This home's peer id: its own node's answer is not news.
    own: String,
    gate: Gate,
    got: Arc<Mutex<Collected>>,
}

#[tonic::async_trait]
impl Origin for OriginService {
    async fn answer(
        &self,
        request: Request<pb::AnswerRequest>,
    ) -> Result<Response<pb::AnswerReply>, Status> {
        let a = request.into_inner();
        if a.query_id[..] != self.query_id {
            return Err(Status::not_found("no such query here"));
        }
        let from = self.gate.admit_peer(
            Method::Answer,
            &query_subject(&a.query_id),
            a.proof.as_ref(),
            a.certificate.as_ref(),
        )?;
        let addr = parse_addr(&a.holder_addr)
            .map_err(|e| Status::invalid_argument(format!("holder_addr: {e}")))?;
        if a.files.len() > MAX_ANSWER_FILES {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_ANSWER_FILES} files per answer"
            )));
        }
        let mut got = self.got.lock().unwrap_or_else(|p| p.into_inner());
        if from.peer_id.as_str() == self.own || !got.answered.insert(from.peer_id.to_string()) {
            return Ok(Response::new(pb::AnswerReply {}));
        }
        got.first_at.get_or_insert_with(Instant::now);
        for f in a.files {
            if got.pairs >= MAX_ANSWERS {
                break;
            }
            let Ok(id) = f.file_id.parse::<FileId>() else {
                continue;
            };
            let kind = f
                .file_type
                .parse::<FileType>()
                .unwrap_or(FileType::Other)
                .as_str()
                .to_string();
            got.pairs += 1;
            let e = got.files.entry(id.to_string()).or_insert_with(|| Found {
                id: id.to_string(),
                name: f.name.clone(),
                size: f.size,
                kind,
                holders: 0,
                addrs: Vec::new(),
                peer_ids: Vec::new(),
                source: "peers",
            });
            if !e.addrs.contains(&addr) {
                e.holders += 1;
                e.addrs.push(addr.clone());
                e.peer_ids.push(from.peer_id.clone());
            }
        }
        Ok(Response::new(pb::AnswerReply {}))
    }
}

/// The address answers should come to: the local IP that routes to the first contact.
async fn listen_ip(first_contact: &str) -> IpAddr {
    let plain = first_contact
        .strip_prefix("https://")
        .unwrap_or(first_contact);
    route_ip(&format!("http://{plain}"))
        .await
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// Floods `p` from `home` to its contacts and returns what answered within `p.wait`.
///
/// # Errors
/// [`SearchError`] when the search cannot start (no contacts, certificate or tracker key,
/// no port to listen on) or no contact took the query.
pub async fn search(home: &Home, tls: ClientTls, p: &Params) -> Result<Outcome, SearchError> {
    let contacts = Contacts::new(home).all();
    let Some(first) = contacts.first() else {
        return Err(SearchError::NoContacts);
    };
    let identity = Identity::load(home)?;
    if identity.certificate().is_none() {
        return Err(SearchError::NoCertificate);
    }
    let key = TrackerKey::default();
    let tracker_key = home.tracker_key()?.ok_or(SearchError::NoTrackerKey)?;
    key.set(&tracker_key)
        .map_err(|_| SearchError::NoTrackerKey)?;
    let transport = GrpcTransport::new(tls, identity);

    let ip = listen_ip(first).await;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(SearchError::Listen)?;
    let reply_to = listener
        .local_addr()
        .map_err(SearchError::Listen)?
        .to_string();
    let mut query_id = [0u8; 16];
    rand::rng().fill(&mut query_id);
    let got = Arc::new(Mutex::new(Collected::default()));
    let svc = OriginService {
        query_id,
        own: home.peer_id()?.to_string(),
        gate: Gate::new(key, TrackerReach::default()),
        got: got.clone(),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn({
        let stop = stop.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tonic::transport::Server::builder()
            .add_service(OriginServer::new(svc))
            .serve_with_incoming_shutdown(incoming, async move { stop.cancelled().await })
    });

    let req = pb::QueryRequest {
        query_id: query_id.to_vec().into(),
        query: p.query.clone(),
        file_type: p
            .file_type
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        ttl: p.ttl,
        reply_to,
        // This home's node, if one runs, is not sent the query back.
        sender_addr: home.live_node().map(|n| n.addr).unwrap_or_default(),
        ..Default::default()
    };
    let sent_at = Instant::now();
    let sends = contacts.iter().take(2 * FANOUT).map(|addr| {
        let (req, transport) = (req.clone(), &transport);
        async move { send_query(transport, addr, req).await }
    });
    let results = futures::future::join_all(sends).await;
    let asked = results.iter().filter(|r| r.is_ok()).count();
    if asked == 0 {
        stop.cancel();
        let _ = server.await;
        let why = results
            .into_iter()
            .filter_map(Result::err)
            .next()
            .unwrap_or_default();
        return Err(SearchError::NobodyAnswered(why));
    }
    tokio::time::sleep(p.wait).await;
    stop.cancel();
    let _ = server.await;
    let got = std::mem::take(&mut *got.lock().unwrap_or_else(|p| p.into_inner()));
    let mut files: Vec<Found> = got.files.into_values().collect();
    files.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Ok(Outcome {
        files,
        asked,
        first_answer: got.first_at.map(|t| t.saturating_duration_since(sent_at)),
    })
}

/// Where a download finds a file when no tracker answers: this home's peers.
#[derive(Debug, Clone)]
pub struct PeerLocate {
    pub home: Home,
    pub tls: ClientTls,
    /// How long to wait for answers to the flooded search.
    pub wait: Duration,
}

impl PeerLocate {
    /// See [`locate`].
    ///
    /// # Errors
    /// As [`locate`].
    pub async fn locate(&self, id: &FileId) -> Result<Located, SearchError> {
        locate(&self.home, self.tls.clone(), id, self.wait).await
    }
}

/// What Locate gives, found among peers when no tracker answers: the holders of `id` by a
/// flooded search for it (the nodes match a whole id whatever the name), and the chunk map
/// from the first of them that has one, checked against the id (which commits to it)
/// before anything is fetched. There is no ticket: the holders take the home's certificate
/// while their tracker does not answer.
///
/// # Errors
/// [`SearchError`]: the search could not run, no holder answered, or no holder's chunk map
/// matches the id.
pub async fn locate(
    home: &Home,
    tls: ClientTls,
    id: &FileId,
    wait: Duration,
) -> Result<Located, SearchError> {
    let p = Params {
        query: id.to_string(),
        file_type: None,
        ttl: super::DEFAULT_TTL,
        wait,
    };
    let found = search(home, tls.clone(), &p).await?;
    let Some(f) = found.files.into_iter().find(|f| f.id == id.to_string()) else {
        return Err(SearchError::NotFound(*id));
    };
    let transport = GrpcTransport::new(tls, Identity::load(home)?);
    let identity = transport.identity().clone();
    let mut why = String::from("none asked");
    let mut manifest = None;
    for addr in &f.addrs {
        let req = pb::ChunkMapRequest {
            file_id: id.to_string(),
            proof: Some((&identity.prove(Method::ChunkMap, id)).into()),
            certificate: identity.certificate().as_ref().map(Into::into),
        };
        let answer = match transport.peer(addr) {
            Ok(mut c) => c.chunk_map(req).await.map_err(|s| s.message().to_string()),
            Err(e) => Err(e.to_string()),
        };
        let checked = answer.and_then(|r| {
            let r = r.into_inner();
            let sha = common::Sha256Digest::from_slice(&r.sha256)
                .ok_or_else(|| "a whole-file digest that is not 32 bytes".to_string())?;
            common::Manifest::from_parts(r.name, r.size, sha, r.chunk_size, &r.chunk_hashes)
                .and_then(|m| m.verified(id))
                .map_err(|e| e.to_string())
        });
        match checked {
            Ok(m) => {
                manifest = Some(m);
                break;
            }
            Err(e) => why = format!("{addr}: {e}"),
        }
    }
    let manifest = manifest.ok_or(SearchError::NoChunkMap { id: *id, why })?;
    let holders = f
        .peer_ids
        .iter()
        .zip(&f.addrs)
        .map(|(peer_id, addr)| HolderView {
            peer_id: peer_id.clone(),
            addr: addr.clone(),
            have: common::Bitfield::full(manifest.chunk_count()),
        })
        .collect::<Vec<_>>();
    let file = FileView {
        id: id.to_string(),
        name: manifest.name.clone(),
        size: manifest.size,
        sha256: manifest.sha256.to_hex(),
        kind: f.kind,
        chunks: manifest.chunk_count(),
        chunk_size: manifest.chunk_size,
        holders: holders.len() as u32,
    };
    Ok(Located {
        file,
        manifest,
        holders,
        ticket: None,
    })
}
