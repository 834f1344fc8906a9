//! The node: what `peer serve` runs, as a library, so the CLI, tests and benchmarks start it
//! the same way. [`Node::bind`] takes an already bound listener (tests bind
//! `127.0.0.1:0`), works out the address other peers should dial and writes node.json;
//! [`Node::run`] serves chunks ([`crate::server`]) until the shutdown token is cancelled,
//! with its background work under the same token:
//! - heartbeats ([`heartbeat`]) and the reconciliation of holdings with the tracker at
//!   start, after an outage and every `sync_every` ([`sync`]);
//! - the replication task stream ([`crate::replica::tasks::task_stream`]), opened once the
//!   first heartbeat succeeds and reopened whenever the tracker answers again;
//! - rescans of shared files, the replica store and shared folders ([`folders`]), and
//!   node.json refreshes ([`upkeep`]);
//! - the Prometheus endpoint when a metrics listener is given.
//!
//! The tracker's ticket key, which the node checks every `GetChunks` ticket with, is read
//! from the home at start (saved there by register/login) and taken from every heartbeat
//! answer; until the node has a key it serves nothing.

pub mod advertise;
mod folders;
mod heartbeat;
mod sync;
mod tls;
mod upkeep;
mod waiting;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::PeerId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::flood::Flood;
use crate::home::{Home, HomeError, NodeFile, NodeLock};
use crate::identity::Identity;
use crate::ratelimit::RateLimiter;
use crate::replica::tasks::{Runner, Workers, task_stream};
use crate::replica::{ReplicaError, ReplicaStore};
use crate::server::{self, ChunkSource, PeerService, StoreSource, TrackerKey, TrackerReach};
use crate::tracker_client::{TrackerClient, TrackerError};
use crate::transport::{ClientTls, GrpcTransport};

/// How often shared files and the replica store are checked against the disk by default.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// How often the node sends the tracker its full holdings by default (besides at start and
/// after an outage), so the two converge whatever either lost (see [`heartbeat`]).
pub const SYNC_EVERY: Duration = Duration::from_secs(300);

pub use crate::server::{StreamCaps, StreamLimits};
pub use tls::identity as tls_identity;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No live session in the home.
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    #[error("--advertise must be HOST:PORT, got '{0}'")]
    BadAdvertise(String),
    #[error("--advertise https://… needs --tls-cert and --tls-key")]
    HttpsWithoutTls,
    #[error("{0}")]
    Tls(String),
    /// `what` is "" for the node's port, or e.g. "for metrics ".
    #[error("cannot listen {what}on {addr}: {source}")]
    Listen {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the socket's address: {0}")]
    Socket(#[source] std::io::Error),
    /// The home (identity, store records, node.json) could not be read or written.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The replica store could not be opened.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error("the node's server failed: {0}")]
    Server(#[source] tonic::transport::Error),
    #[error("the node's server task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Wraps the node's chunk source, e.g. with a test's fault injection.
pub type SourceLayer = Box<dyn FnOnce(Arc<dyn ChunkSource>) -> Arc<dyn ChunkSource> + Send>;

/// Everything a node is started with. Built by `peer serve` from its flags, or by tests.
pub struct NodeConfig {
    pub home: Home,
    /// The trackers, in the order to try them.
    pub trackers: Vec<String>,
    /// CAs trusted for https:// trackers and TLS nodes.
    pub client_tls: ClientTls,
    /// What to tell the tracker other peers should dial (`--advertise`); worked out from
    /// the listener and the route to the tracker when `None`.
    pub advertise: Option<String>,
    /// Serve chunks over TLS with this certificate and key.
    pub tls: Option<tonic::transport::Identity>,
    /// Bytes offered for replicas.
    pub storage_quota: u64,
    /// Upload cap in bytes per second, shared by all uploads.
    pub max_upload_rate: Option<u64>,
    /// How often shared files and the replica store are checked against the disk.
    pub rescan_every: Duration,
    /// How often the full holdings are sent to the tracker.
    pub sync_every: Duration,
    /// Serve Prometheus metrics on this listener.
    pub metrics: Option<TcpListener>,
    /// Applied to the chunk source the node serves from.
    pub source_layer: Option<SourceLayer>,
    /// What clients may take: streams, chunk bytes in memory, connections.
    pub limits: StreamLimits,
    /// Whether contacts are learnt from the tracker and from other peers.
    pub learn_contacts: bool,
    /// How often waiting gets (`get --wait`) are tried.
    pub waiting_every: Duration,
}

impl NodeConfig {
    /// A node of `home` with the defaults of `peer serve`.
    pub fn new(home: Home, trackers: Vec<String>) -> Self {
        Self {
            home,
            trackers,
            client_tls: ClientTls::default(),
            advertise: None,
            tls: None,
            storage_quota: 1_000_000_000,
            max_upload_rate: None,
            rescan_every: RESCAN_EVERY,
            sync_every: SYNC_EVERY,
            metrics: None,
            source_layer: None,
            limits: StreamLimits::default(),
            learn_contacts: true,
            waiting_every: Duration::from_secs(15),
        }
    }
}

/// A bound node, ready to [`run`](Node::run).
pub struct Node {
    home: Home,
    peer_id: PeerId,
    advertised: String,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    tls: Option<tonic::transport::Identity>,
    client: TrackerClient,
    /// Chunk fetches of replication tasks, flooded queries and peer exchange.
    transport: Arc<GrpcTransport>,
    /// CAs for TLS nodes, for the lookups of waiting gets among peers.
    client_tls: ClientTls,
    waiting_every: Duration,
    /// Learns contacts in the background (`None` with `learn_contacts` off).
    flood: Option<Arc<Flood>>,
    svc: Arc<PeerService>,
    store: Arc<StoreSource>,
    replicas: Arc<ReplicaStore>,
    key: TrackerKey,
    /// This home's key and certificate (the node renews the certificate).
    identity: Arc<Identity>,
    /// Whether the tracker answers, as heartbeats find (the server reads it).
    reach: TrackerReach,
    rescan_every: Duration,
    sync_every: Duration,
    node_file: NodeFile,
    /// The home's node lock, held until the node stops, so a second node on the same home
    /// is refused instead of fighting this one over node.json and the store.
    lock: NodeLock,
}

/// Binds and runs a node until `shutdown` is cancelled.
///
/// # Errors
/// See [`Node::bind`] and [`Node::run`].
pub async fn run(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    Node::bind(config, listener).await?.run(shutdown).await
}

impl Node {
    /// Takes the home's node lock, checks the session, opens the replica store, works out
    /// the advertised address and writes node.json.
    ///
    /// # Errors
    /// Another node on this home ([`HomeError::NodeRunning`]), no live session
    /// ([`TrackerError::NotLoggedIn`]), a bad `--advertise`, an unreadable home or replica
    /// store.
    pub async fn bind(config: NodeConfig, listener: TcpListener) -> Result<Node, NodeError> {
        let NodeConfig {
            home,
            trackers,
            client_tls,
            advertise,
            tls,
            storage_quota,
            max_upload_rate,
            rescan_every,
            sync_every,
            metrics,
            source_layer,
            limits,
            learn_contacts,
            waiting_every,
        } = config;
        let lock = home.lock_node()?;
        let peer_id = home.peer_id()?;
        let token = home
            .session()?
            .filter(|s| s.expires_at_ms <= 0 || s.expires_at_ms > crate::now_ms())
            .map(|s| s.token);
        if token.is_none() {
            return Err(TrackerError::NotLoggedIn.into());
        }
        let client = TrackerClient::with_tls(&trackers, token, &client_tls)?;
        let h = home.clone();
        let replicas = tokio::task::spawn_blocking(move || ReplicaStore::open(h, storage_quota))
            .await
            .map_err(NodeError::Task)??;
        let bound = listener.local_addr().map_err(NodeError::Socket)?;
        let advertised = advertise::resolve(
            advertise.as_deref(),
            bound,
            trackers.first().map(String::as_str),
            tls.is_some(),
        )
        .await?;
        let scheme = if tls.is_some() { "https://" } else { "" };

        let identity = Identity::load(&home)?;
        let reach = TrackerReach::default();
        let key = TrackerKey::default();
        match home.tracker_key() {
            Ok(Some(k)) => {
                if let Err(e) = key.set(&k) {
                    tracing::warn!("ignoring the saved tracker key: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot read the saved tracker key: {e}"),
        }
        let store = Arc::new(StoreSource::new(
            home.clone(),
            peer_id.clone(),
            Some(client.clone()),
        ));
        let source: Arc<dyn ChunkSource> = store.clone();
        let source = match source_layer {
            Some(layer) => layer(source),
            None => source,
        };
        let transport = Arc::new(GrpcTransport::new(client_tls.clone(), identity.clone()));
        let flood = Arc::new(Flood::new(
            &home,
            advertised.clone(),
            transport.clone(),
            learn_contacts,
        ));
        let svc = Arc::new(
            PeerService::new(
                source,
                peer_id.clone(),
                advertised.clone(),
                max_upload_rate.map(|r| Arc::new(RateLimiter::new(r))),
                key.clone(),
                reach.clone(),
            )
            .with_limits(limits)
            .with_flood(flood.clone()),
        );
        let node_file = NodeFile {
            pid: std::process::id(),
            addr: advertised.clone(),
            local_addr: format!("{scheme}{}", advertise::local(bound)),
            peer_id: peer_id.clone(),
            started_at_ms: crate::now_ms(),
            storage_quota: Some(storage_quota),
            storage_used: Some(replicas.used()),
            tasks_connected: Some(false),
        };
        home.save_node(&node_file)?;
        tracing::info!(
            peer = %peer_id,
            addr = %advertised,
            listen = %bound,
            storage_quota,
            storage_used = replicas.used(),
            "node up"
        );
        Ok(Node {
            home,
            peer_id,
            advertised,
            listener,
            metrics,
            tls,
            client,
            transport,
            client_tls,
            waiting_every,
            flood: learn_contacts.then_some(flood),
            svc,
            store,
            replicas,
            key,
            identity,
            reach,
            rescan_every,
            sync_every,
            node_file,
            lock,
        })
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> &PeerId {
        &self.peer_id
    }

    /// The address other peers dial (`https://` in front for a TLS node).
    pub fn advertised(&self) -> &str {
        &self.advertised
    }

    /// The bound metrics endpoint's URL, when metrics are served.
    pub fn metrics_url(&self) -> Option<String> {
        let bound = self.metrics.as_ref()?.local_addr().ok()?;
        Some(crate::metrics::url(bound))
    }

    /// Serves until `shutdown` is cancelled (then waits up to 5 s for open streams) or the
    /// server fails; removes node.json when it stops.
    ///
    /// # Errors
    /// When the server fails (a TLS identity that does not fit, a dead listener).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), NodeError> {
        let token = shutdown.child_token();
        let mut server = tokio::spawn(server::run(
            self.listener,
            self.svc.clone(),
            self.tls,
            token.clone(),
        ));
        let mut background = tokio::task::JoinSet::new();
        if let Some(l) = self.metrics {
            let store = self.replicas.clone();
            let storage: crate::metrics::Storage = Arc::new(move || (store.used(), store.quota()));
            let token = token.clone();
            background.spawn(async move {
                if let Err(e) = crate::metrics::serve(l, storage, token).await {
                    tracing::warn!("the metrics endpoint failed: {e}");
                }
            });
        }
        let (tracker_up, tracker_up_rx) = watch::channel(0u64);
        let connected = Arc::new(AtomicBool::new(false));
        let runner = Arc::new(Runner::new(
            self.replicas.clone(),
            self.transport.clone(),
            self.peer_id.clone(),
            self.advertised.clone(),
        ));
        background.spawn(
            heartbeat::Heartbeats {
                client: self.client.clone(),
                home: self.home.clone(),
                peer_id: self.peer_id.clone(),
                addr: self.advertised.clone(),
                replicas: self.replicas.clone(),
                key: self.key,
                identity: self.identity.clone(),
                reach: self.reach.clone(),
                tracker_up,
                sync_every: self.sync_every,
            }
            .run(token.clone()),
        );
        let waiting_cx = Arc::new(crate::download::Context {
            home: self.home.clone(),
            peer_id: self.peer_id.clone(),
            tracker: self.client.clone(),
            key: self.identity.public_key(),
            transport: self.transport.clone(),
            rate: None,
            cfg: crate::download::DownloadConfig::default(),
            offline: Some(crate::flood::origin::PeerLocate {
                home: self.home.clone(),
                tls: self.client_tls.clone(),
                wait: Duration::from_secs(3),
            }),
        });
        let (gets, gets_rx) = tokio::sync::mpsc::channel(64);
        background.spawn(waiting::run(
            waiting_cx,
            self.waiting_every,
            gets_rx,
            self.reach.clone(),
            token.clone(),
        ));
        if let Some(flood) = self.flood {
            background.spawn(flood.learn(self.client.clone(), self.sync_every, token.clone()));
        }
        let folders = upkeep::Folders {
            home: self.home.clone(),
            client: self.client.clone(),
            peer_id: self.peer_id.clone(),
        };
        background.spawn(task_stream(
            self.client,
            self.peer_id,
            self.identity.public_key(),
            Workers { runner, gets },
            tracker_up_rx,
            connected.clone(),
            token.clone(),
        ));
        background.spawn(upkeep::rescans(
            self.store,
            self.replicas.clone(),
            folders,
            self.rescan_every,
            token.clone(),
        ));
        background.spawn(upkeep::node_file(
            self.home.clone(),
            self.node_file,
            self.replicas,
            connected,
            token.clone(),
        ));

        let failed = tokio::select! {
            r = &mut server => Some(match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(NodeError::Server(e)),
                Err(e) => Err(NodeError::Task(e)),
            }),
            () = token.cancelled() => None,
        };
        tracing::info!("shutting down");
        token.cancel();
        while background.join_next().await.is_some() {}
        if failed.is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
        }
        let deleted = self.home.delete_node();
        // Only now may another node start on this home.
        drop(self.lock);
        deleted?;
        failed.unwrap_or(Ok(()))
    }

    /// The bound listener's address.
    ///
    /// # Errors
    /// When the socket cannot tell.
    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.listener.local_addr().map_err(NodeError::Socket)
    }
}
