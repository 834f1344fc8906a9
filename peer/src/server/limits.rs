//! What one node lets its clients take, so a hostile or broken client cannot grow it without
//! bound: how many streams are open (per connection, per client, in total) and how many
//! chunk bytes are held in memory for them, with backpressure rather than refusal for bytes.
//!
//! A client is counted twice, by the user its ticket names and by its IP address: a ticket is
//! a bearer credential, so one account may come from many addresses and one address may hold
//! tickets of many accounts. `GetChunks` and `Holdings` streams are capped by the same
//! scheme ([`StreamCaps`]), each with its own numbers; a stream over a cap is refused with
//! RESOURCE_EXHAUSTED, which a getter takes as "busy, try again later" (see
//! `transport::classify`), not as a bad source.
//!
//! **Memory bound.** Every chunk byte is counted from just before it is read from disk until
//! the connection's socket has taken it (`super::meter`), twice while it is copied into its
//! gRPC frame; a read waits until its bytes fit. So chunk data in memory never exceeds
//! [`StreamLimits::upload_buffer`] (128 MiB by default), a quarter of it per client, and a
//! stream holds at most [`MESSAGES_PER_STREAM`] chunks. Beyond chunk data, each connection
//! costs its HTTP/2 and TLS buffers ([`CONN_OVERHEAD`]) and each open stream its state and
//! request buffer ([`STREAM_OVERHEAD`], at most [`StreamLimits::h2_streams`] per
//! connection). With the defaults: 128 MiB + 128 connections × (128 KiB + 88 × 16 KiB)
//! = 320 MiB above the node's idle size, whatever its clients do
//! ([`StreamLimits::memory_bound`]). Measured with 1,000 stalled streams from one client:
//! about 90 MiB at the peak, back to the idle size once they close.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Status;

/// Chunks one stream may have read and not yet handed to the socket: one being written, one
/// ready behind it, so a fast reader never waits on the disk and a stalled one pins two.
pub const MESSAGES_PER_STREAM: usize = 2;
/// Most bytes a request may have (a GetChunks with 256 indices and a ticket takes under 2 KiB):
/// a half-sent request holds no more than this.
pub const MAX_REQUEST: usize = 4 << 10;
/// Per-stream overhead the bound assumes: HTTP/2, gRPC and task state, the request buffer.
pub const STREAM_OVERHEAD: u64 = 16 << 10;
/// Per-connection overhead the bound assumes: HTTP/2 read and write buffers and header
/// tables (16 KiB frames, since the node keeps HTTP/2's default), TLS buffers.
pub const CONN_OVERHEAD: u64 = 128 << 10;
/// Streams per connection beyond the two capped kinds (Status, health, reflection).
const OTHER_STREAMS: usize = 8;
/// The smallest upload buffer used: the largest chunk message and its copy in its frame.
pub const MIN_UPLOAD_BUFFER: u64 = 2 * crate::transport::MAX_MESSAGE as u64;

/// Caps on one kind of stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamCaps {
    /// Open at once on the node.
    pub total: usize,
    /// Open at once for one client: one ticket user, and one remote IP address.
    pub per_client: usize,
    /// Open at once on one connection.
    pub per_connection: usize,
}

/// The node's resource limits (`peer serve --max-uploads`, `--max-uploads-per-client`,
/// `--upload-buffer`; the rest are fixed defaults tests may shorten).
#[derive(Clone, Debug)]
pub struct StreamLimits {
    /// `GetChunks` streams. A getter keeps at most 32 requests in flight per file and
    /// source (32 MiB of 1 MiB chunks), so 64 per client lets one run two files, or a get
    /// and a replica fetch, at full depth; four such clients fill a node's 256, whose
    /// uplink is full long before.
    pub uploads: StreamCaps,
    /// `Holdings` streams: one per file a getter follows at a partial source. Few per
    /// connection, so they never take the HTTP/2 slots chunk requests need.
    pub holdings: StreamCaps,
    /// Chunk bytes held in memory at once, node-wide; a client may hold a quarter.
    pub upload_buffer: u64,
    /// Open connections in total; past it a new one is closed at once.
    pub connections: usize,
    /// Open connections from one IP address. Like every per-client share, a quarter of the
    /// node's: one address cannot take it all, and a few getters behind one NAT fit.
    pub connections_per_ip: usize,
    /// A connection with chunk bytes queued of which none reached the socket for this long
    /// is closed. A getter reading 1 MB/s takes a 1 MiB piece a second, and drops a source
    /// itself after 20 s without a chunk.
    pub stall_timeout: Duration,
    /// A new connection must have sent the HTTP/2 preface's 24 bytes (or as much of a TLS
    /// handshake) within this.
    pub handshake_timeout: Duration,
    /// A connection from which nothing was read for this long is closed. The node pings
    /// every 30 s, so a live HTTP/2 client always answers within it.
    pub idle_timeout: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            uploads: StreamCaps {
                total: 256,
                per_client: 64,
                per_connection: 64,
            },
            holdings: StreamCaps {
                total: 256,
                per_client: 64,
                per_connection: 16,
            },
            upload_buffer: 128 << 20,
            connections: 128,
            connections_per_ip: 32,
            stall_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
        }
    }
}

impl StreamLimits {
    /// HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`: both capped kinds at their per-connection
    /// caps plus a few others. A client that respects it queues further requests.
    pub fn h2_streams(&self) -> u32 {
        let n = self.uploads.per_connection + self.holdings.per_connection + OTHER_STREAMS;
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// The most a node's memory grows above its idle size under these limits, whatever its
    /// clients do (see the module documentation for where each term comes from).
    pub fn memory_bound(&self) -> u64 {
        let conn = CONN_OVERHEAD + u64::from(self.h2_streams()) * STREAM_OVERHEAD;
        self.buffer() + self.connections as u64 * conn
    }

    /// The upload buffer in use: as configured, but at least [`MIN_UPLOAD_BUFFER`].
    fn buffer(&self) -> u64 {
        self.upload_buffer.max(MIN_UPLOAD_BUFFER)
    }

    /// A client's share of the upload buffer.
    fn client_buffer(&self) -> u64 {
        self.buffer() / 4
    }
}

/// Which capped kind a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Uploads,
    Holdings,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Uploads => "chunk",
            Kind::Holdings => "holdings",
        }
    }
}

/// A byte semaphore and its size, so a request larger than the whole is clamped to it.
#[derive(Clone)]
pub(crate) struct Share {
    sem: Arc<Semaphore>,
    size: u32,
}

impl Share {
    fn new(bytes: u64) -> Self {
        let size = u32::try_from(bytes).unwrap_or(u32::MAX).max(1);
        Self {
            sem: Arc::new(Semaphore::new(size as usize)),
            size,
        }
    }

    /// `n` bytes, or the whole share when `n` is more.
    async fn take(&self, n: u64) -> OwnedSemaphorePermit {
        let n = u32::try_from(n).unwrap_or(u32::MAX).min(self.size);
        self.sem
            .clone()
            .acquire_many_owned(n)
            .await
            .expect("byte semaphores are never closed")
    }
}

/// The counters of one scope: the node, a client, or a connection.
pub(crate) struct Scope {
    uploads: Arc<Semaphore>,
    holdings: Arc<Semaphore>,
    /// Chunk bytes (none for a connection, whose client's share bounds it).
    bytes: Option<Share>,
}

impl Scope {
    fn new(limits: &StreamLimits, pick: fn(&StreamCaps) -> usize, bytes: Option<u64>) -> Self {
        Self {
            uploads: Arc::new(Semaphore::new(pick(&limits.uploads))),
            holdings: Arc::new(Semaphore::new(pick(&limits.holdings))),
            bytes: bytes.map(Share::new),
        }
    }

    /// The scope of one connection.
    pub(crate) fn connection(limits: &StreamLimits) -> Self {
        Self::new(limits, |c| c.per_connection, None)
    }

    fn streams(&self, kind: Kind) -> &Arc<Semaphore> {
        match kind {
            Kind::Uploads => &self.uploads,
            Kind::Holdings => &self.holdings,
        }
    }

    /// Whether nothing is held in it (a client's scope can then be forgotten).
    fn unused(&self) -> bool {
        Arc::strong_count(&self.uploads) == 1
            && Arc::strong_count(&self.holdings) == 1
            && self
                .bytes
                .as_ref()
                .is_none_or(|b| Arc::strong_count(&b.sem) == 1)
    }
}

/// The scopes of every client with something open, by key.
struct Clients<K>(Mutex<HashMap<K, Arc<Scope>>>);

impl<K: Eq + Hash> Clients<K> {
    fn get(&self, key: K, limits: &StreamLimits) -> Arc<Scope> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= 64 && !map.contains_key(&key) {
            map.retain(|_, s| !s.unused());
        }
        map.entry(key)
            .or_insert_with(|| {
                Arc::new(Scope::new(
                    limits,
                    |c| c.per_client,
                    Some(limits.client_buffer()),
                ))
            })
            .clone()
    }
}

/// The node's limits as they are being used.
pub(crate) struct Limits {
    pub(crate) cfg: StreamLimits,
    node: Scope,
    users: Clients<String>,
    ips: Clients<IpAddr>,
}

impl Limits {
    pub(crate) fn new(cfg: StreamLimits) -> Self {
        let node = Scope::new(&cfg, |c| c.total, Some(cfg.buffer()));
        Self {
            cfg,
            node,
            users: Clients(Mutex::default()),
            ips: Clients(Mutex::default()),
        }
    }

    /// Chunk bytes the node's buffer holds now (each counted twice while it is copied).
    pub(crate) fn buffered(&self) -> u64 {
        self.node
            .bytes
            .as_ref()
            .map_or(0, |b| u64::from(b.size) - b.sem.available_permits() as u64)
    }

    /// A slot for one more stream of `kind` for `user` on `conn` (none when the call came
    /// from elsewhere than the node's listener, as in unit tests), held for its life.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED naming the cap that is full.
    pub(crate) fn admit(
        &self,
        kind: Kind,
        user: &str,
        conn: Option<&super::conn::ConnInfo>,
    ) -> Result<Admission, Status> {
        let user_scope = self.users.get(user.to_string(), &self.cfg);
        let ip_scope = conn.map(|c| self.ips.get(c.ip(), &self.cfg));
        let mut scopes: Vec<(&Scope, String)> = Vec::with_capacity(4);
        if let Some(c) = conn {
            scopes.push((c.scope(), "this connection has".into()));
        }
        if let (Some(s), Some(c)) = (&ip_scope, conn) {
            scopes.push((s, format!("{} has", c.ip())));
        }
        scopes.push((&user_scope, format!("user '{user}' has")));
        scopes.push((&self.node, "this node has".into()));
        let mut permits = Vec::with_capacity(scopes.len());
        for (scope, who) in scopes {
            let Ok(p) = scope.streams(kind).clone().try_acquire_owned() else {
                let noun = kind.noun();
                tracing::debug!(user, "refused a {noun} stream: {who} its cap open");
                return Err(Status::resource_exhausted(format!(
                    "node busy: {who} as many {noun} streams open as it may; try again later \
                     or another source"
                )));
            };
            permits.push(p);
        }
        let mut clients: Vec<Share> = user_scope.bytes.iter().cloned().collect();
        clients.extend(ip_scope.as_ref().and_then(|s| s.bytes.clone()));
        Ok(Admission {
            _permits: permits,
            budget: Budget {
                clients,
                node: self.node.bytes.clone(),
            },
        })
    }
}

/// One admitted stream's slots (released when it ends) and its way to the byte budget.
/// What it holds keeps its client scopes from being forgotten (see `Scope::unused`).
pub(crate) struct Admission {
    _permits: Vec<OwnedSemaphorePermit>,
    pub(crate) budget: Budget,
}

/// The byte shares a stream's chunks are counted against.
pub(crate) struct Budget {
    /// The user's and the IP address's shares.
    clients: Vec<Share>,
    node: Option<Share>,
}

impl Budget {
    /// Waits until `len` more bytes fit every client share and twice `len` the node's
    /// buffer (the message and its copy in the gRPC frame), narrowest first, so a client
    /// over its share waits without holding any of the node's buffer.
    pub(crate) async fn take(&self, len: u64) -> Held {
        let mut held = Vec::with_capacity(self.clients.len() + 1);
        for s in &self.clients {
            held.push(s.take(len).await);
        }
        let mut copy = None;
        if let Some(s) = &self.node {
            let mut p = s.take(2 * len).await;
            copy = p.split(p.num_permits() / 2);
            held.push(p);
        }
        Held { held, _copy: copy }
    }
}

/// Chunk bytes counted for one message until they reached the socket.
pub(crate) struct Held {
    pub(crate) held: Vec<OwnedSemaphorePermit>,
    /// The node's count for the message's copy into its frame: dropped with the rest of
    /// `Held` once the message is framed, while `held` moves on with the frame.
    pub(crate) _copy: Option<OwnedSemaphorePermit>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_until_its_bytes_fit_the_clients_share() {
        let limits = Limits::new(StreamLimits {
            upload_buffer: 64 << 20,
            ..StreamLimits::default()
        });
        let a = limits.admit(Kind::Uploads, "alice", None).unwrap();
        let b = limits.admit(Kind::Uploads, "alice", None).unwrap();
        // Alice's share is 16 MiB: 10 MiB fit once, not twice.
        let first = a.budget.take(10 << 20).await;
        let wait = Duration::from_millis(200);
        let second = tokio::time::timeout(wait, b.budget.take(10 << 20)).await;
        assert!(second.is_err(), "the second read waits");
        // Another client is not held up by her.
        let c = limits.admit(Kind::Uploads, "bob", None).unwrap();
        let _bob = tokio::time::timeout(wait, c.budget.take(10 << 20))
            .await
            .expect("bob's read does not wait for alice's");
        drop(first);
        tokio::time::timeout(wait, b.budget.take(10 << 20))
            .await
            .expect("room once the first is sent");
        // A chunk larger than a whole share takes all of it instead of waiting forever.
        drop(_bob);
        let _all = tokio::time::timeout(wait, c.budget.take(40 << 20))
            .await
            .expect("clamped to the share");
    }

    #[test]
    fn the_default_bound_is_what_the_docs_say() {
        let l = StreamLimits::default();
        assert_eq!(l.h2_streams(), 88);
        let mib = l.memory_bound() >> 20;
        assert_eq!(mib, 320, "{mib} MiB");
    }
}
