//! Database outages: every answer tells the truth. Fake peers (gRPC clients from `proto`)
//! announce, unindex, register, log in, heartbeat, report chunks and search against real
//! trackers while their database refuses service. Every call must either succeed or fail
//! with UNAVAILABLE and [`DB_UNAVAILABLE`]; once the database is back, no answer may be
//! contradicted (a refused announce is never listed, an acknowledged one always is) and
//! nothing acknowledged may be lost, which is checked on every tracker, in the database,
//! and again after a restart.
//!
//! - `postgres`: the database refusing connections (1 s and 15 s) under two trackers, and a
//!   tracker started while it refuses.
//! - `sqlite`: a write lock held elsewhere past the busy timeout, and the file made
//!   immutable.
//!
//! Time is driven by events (an outage lasts until every kind of write has been refused),
//! with generous bounds.

mod postgres;
mod sqlite;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::common::manifest::MIN_CHUNK_SIZE;
use ::common::{Bitfield, Manifest};
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracker::error::DB_UNAVAILABLE;

use crate::common::{TestTracker, authed, heartbeat, node_key, register};

/// Bound on every wait of these tests (convergence, a refusal to be seen, a restart).
pub const PATIENCE: Duration = Duration::from_secs(60);
/// Chunks of the file every fake peer reports pieces of.
pub const SHARED_CHUNKS: u32 = 64;
/// Names of the files the workload announces start with this (a search term).
const PREFIX: &str = "outage";

/// The writes a client waits for, each of which must be seen refused during an outage
/// and succeed after it.
pub const WAITED: [&str; 4] = ["announce", "unindex", "register", "login"];

/// What the clients were told.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Every file announced: whether it is listed, as acknowledged answers say (an
    /// acknowledged announce lists it, an acknowledged unindex withdraws it).
    pub files: HashMap<String, bool>,
    /// Files whose only announce was refused.
    pub refused: HashSet<String>,
    /// Users whose registration was acknowledged (true) or refused (false).
    pub users: HashMap<String, bool>,
    /// Tokens of acknowledged logins.
    pub sessions: Vec<String>,
    /// peer id → chunks of the shared file acknowledged as reported.
    pub reported: HashMap<String, BTreeSet<u32>>,
    /// Answers per call: (succeeded, refused as unavailable).
    pub counts: HashMap<&'static str, (u32, u32)>,
}

impl Ledger {
    /// Counts an answer; `Some` on success. Any error but UNAVAILABLE with the one message
    /// fails the test.
    fn answer<T>(&mut self, call: &'static str, r: Result<T, Status>) -> Option<T> {
        let c = self.counts.entry(call).or_default();
        match r {
            Ok(v) => {
                c.0 += 1;
                Some(v)
            }
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable, "{call}: {s:?}");
                assert_eq!(s.message(), DB_UNAVAILABLE, "{call}: {s:?}");
                c.1 += 1;
                None
            }
        }
    }

    fn count(&self, call: &str) -> (u32, u32) {
        self.counts.get(call).copied().unwrap_or_default()
    }

    /// Answers so far per waited-for write, to compare with later ones.
    pub fn waited(&self) -> [(u32, u32); 4] {
        WAITED.map(|c| self.count(c))
    }

    /// Whether each waited-for write was refused (`ok` false) or succeeded (`ok` true)
    /// since the answers counted in `before`.
    pub fn each_since(&self, before: &[(u32, u32); 4], ok: bool) -> bool {
        (before.iter().zip(self.waited())).all(|(b, n)| if ok { n.0 > b.0 } else { n.1 > b.1 })
    }

    /// The files listed, as the answers say.
    fn listed(&self) -> BTreeSet<String> {
        (self.files.iter())
            .filter(|(_, l)| **l)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

pub type Shared = Arc<Mutex<Ledger>>;

/// A fake peer: one account, one peer id, a client of one tracker.
#[derive(Clone)]
pub struct Peer {
    pub n: u64,
    pub token: String,
    pub peer: String,
    pub client: TrackerClient<Channel>,
    /// The files it announced and has not unindexed, as acknowledged, oldest first.
    mine: Arc<Mutex<Vec<String>>>,
}

impl Peer {
    /// Registers user `peer{n}` on `t` and says its node is up.
    pub async fn join(t: &TestTracker, n: u64) -> Peer {
        let mut client = t.grpc().await;
        let token = register(&mut client, &format!("peer{n}")).await;
        let peer = ::common::PeerId::from_random([n as u8; 16]).to_string();
        heartbeat(
            &mut client,
            &token,
            &peer,
            &format!("127.0.0.1:{}", 20_000 + n),
        )
        .await;
        Peer {
            n,
            token,
            peer,
            client,
            mine: Arc::default(),
        }
    }
}

/// A two-chunk manifest whose content (so whose id) is unique to `tag`.
pub fn unique_manifest(name: &str, tag: u64) -> (pb::Manifest, String) {
    let mut hashes = Vec::with_capacity(64);
    for c in 0..2u64 {
        hashes.extend(tag.to_le_bytes());
        hashes.extend(c.to_le_bytes());
        hashes.extend([7u8; 16]);
    }
    let m = pb::Manifest {
        name: name.into(),
        size: 2 * u64::from(MIN_CHUNK_SIZE),
        sha256: vec![(tag % 251) as u8; 32].into(),
        chunk_size: MIN_CHUNK_SIZE,
        chunk_hashes: hashes.into(),
    };
    let id = Manifest::try_from(m.clone()).unwrap().id().to_string();
    (m, id)
}

/// The clients' loops, until stopped.
pub struct Workload {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl Workload {
    /// Starts, for each peer, one loop per kind of call (so each kind is tried while
    /// another waits on a slow database); `round` keeps names and contents unique.
    pub fn start(peers: &[Peer], shared: &str, ledger: &Shared, round: u64) -> Workload {
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for p in peers {
            let mine = p.mine.clone();
            let c = Loop {
                p: p.clone(),
                ledger: ledger.clone(),
                stop: stop.clone(),
                round,
            };
            tasks.push(tokio::spawn(c.clone().announce(mine.clone())));
            tasks.push(tokio::spawn(c.clone().unindex(mine)));
            tasks.push(tokio::spawn(c.clone().background(shared.to_string())));
            tasks.push(tokio::spawn(c.clone().register()));
            tasks.push(tokio::spawn(c.login()));
        }
        Workload { stop, tasks }
    }

    /// Stops the loops after the calls in flight have their answers.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("a client loop panicked");
        }
    }
}

/// One client's loop of one kind of call.
#[derive(Clone)]
struct Loop {
    p: Peer,
    ledger: Shared,
    stop: CancellationToken,
    round: u64,
}

impl Loop {
    /// Sleeps `ms` between calls; false once stopped.
    async fn pause(&self, ms: u64) -> bool {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => !self.stop.is_cancelled(),
            () = self.stop.cancelled() => false,
        }
    }

    /// Announces a new file each time.
    async fn announce(mut self, mine: Arc<Mutex<Vec<String>>>) {
        let mut k = 0u64;
        loop {
            k += 1;
            let (round, n) = (self.round, self.p.n);
            let tag = (round << 48) | (n << 32) | k;
            let (m, id) = unique_manifest(&format!("{PREFIX}-{round}-{n}-{k}.bin"), tag);
            let req = pb::AnnounceRequest {
                peer_id: self.p.peer.clone(),
                manifest: Some(m),
                ..Default::default()
            };
            let r = self.p.client.announce(authed(req, &self.p.token)).await;
            {
                let mut l = self.ledger.lock().unwrap();
                if l.answer("announce", r).is_some() {
                    l.files.insert(id.clone(), true);
                    mine.lock().unwrap().push(id);
                } else {
                    l.refused.insert(id);
                }
            }
            if !self.pause(100).await {
                return;
            }
        }
    }

    /// Unindexes the oldest file this peer lists.
    async fn unindex(mut self, mine: Arc<Mutex<Vec<String>>>) {
        while self.pause(150).await {
            let Some(id) = mine.lock().unwrap().first().cloned() else {
                continue;
            };
            let req = pb::UnindexRequest {
                peer_id: self.p.peer.clone(),
                file_id: id.clone(),
            };
            let r = self.p.client.unindex(authed(req, &self.p.token)).await;
            let mut l = self.ledger.lock().unwrap();
            if l.answer("unindex", r).is_some() {
                mine.lock().unwrap().retain(|m| *m != id);
                l.files.insert(id, false);
            }
        }
    }

    /// Heartbeats, reports a chunk of the shared file and searches.
    async fn background(mut self, shared: String) {
        let (n, mut k) = (self.p.n, 0u64);
        loop {
            k += 1;
            let req = pb::HeartbeatRequest {
                peer_id: self.p.peer.clone(),
                addr: format!("127.0.0.1:{}", 20_000 + n),
                storage_quota: 0,
                storage_used: 0,
            };
            let r = self.p.client.heartbeat(authed(req, &self.p.token)).await;
            self.ledger.lock().unwrap().answer("heartbeat", r);
            let chunk = ((n * 7 + k) % u64::from(SHARED_CHUNKS)) as u32;
            let req = pb::ReportChunksRequest {
                peer_id: self.p.peer.clone(),
                file_id: shared.clone(),
                kind: pb::HoldingKind::Downloaded as i32,
                chunks: vec![chunk],
            };
            let r = self
                .p
                .client
                .report_chunks(authed(req, &self.p.token))
                .await;
            {
                let mut l = self.ledger.lock().unwrap();
                if l.answer("report", r).is_some() {
                    let peer = self.p.peer.clone();
                    l.reported.entry(peer).or_default().insert(chunk);
                }
            }
            let req = pb::SearchRequest {
                query: PREFIX.into(),
                limit: 1,
                ..Default::default()
            };
            let r = self.p.client.search(authed(req, &self.p.token)).await;
            self.ledger.lock().unwrap().answer("search", r);
            if !self.pause(100).await {
                return;
            }
        }
    }

    /// Registers a new user.
    async fn register(mut self) {
        let mut k = 0u64;
        loop {
            k += 1;
            let user = format!("u{}x{}x{k}", self.round, self.p.n);
            let creds = pb::Credentials {
                user: user.clone(),
                password: format!("pw-of-{user}"),
            };
            let r = self.p.client.register(creds).await;
            {
                let mut l = self.ledger.lock().unwrap();
                let ok = l.answer("register", r).is_some();
                l.users.insert(user, ok);
            }
            if !self.pause(300).await {
                return;
            }
        }
    }

    /// Logs in as this peer's own user.
    async fn login(mut self) {
        loop {
            let user = format!("peer{}", self.p.n);
            let creds = pb::Credentials {
                user: user.clone(),
                password: format!("pw-of-{user}"),
            };
            let r = self.p.client.login(creds).await;
            {
                let mut l = self.ledger.lock().unwrap();
                if let Some(s) = l.answer("login", r) {
                    l.sessions.push(s.into_inner().token);
                }
            }
            if !self.pause(300).await {
                return;
            }
        }
    }
}

/// Runs `f` with a bound generous enough for two outages on a loaded machine.
pub async fn bounded<F: Future>(f: F) -> F::Output {
    // Room for the optional 2-minute outage (TRACKER_TEST_LONG_OUTAGE=1) besides the rest.
    tokio::time::timeout(Duration::from_secs(420), f)
        .await
        .expect("test timed out")
}

/// Waits until `check` holds (polling every 50 ms) or [`PATIENCE`] runs out; returns how
/// long it took, or panics with what `check` last said.
pub async fn until<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return started.elapsed(),
            Err(why) if started.elapsed() > PATIENCE => {
                panic!("{what}: not within {PATIENCE:?}: {why}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `/healthz`'s status on `t` (0 when it does not answer).
pub async fn health(t: &TestTracker) -> u16 {
    match reqwest::get(t.url("/healthz")).await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

/// The workload's files that `t` lists (REST search, every page).
async fn listed_on(t: &TestTracker) -> Result<BTreeSet<String>, String> {
    let mut out = BTreeSet::new();
    loop {
        let url = t.url(&format!(
            "/api/v1/files?q={PREFIX}&limit=1000&offset={}",
            out.len()
        ));
        let r = reqwest::get(url).await.map_err(|e| e.to_string())?;
        let page: Value = r.json().await.map_err(|e| e.to_string())?;
        let items = page["items"].as_array().ok_or(format!("{page}"))?;
        for f in items {
            out.insert(f["id"].as_str().unwrap_or_default().to_string());
        }
        if items.is_empty() || out.len() as u64 >= page["total"].as_u64().unwrap_or(0) {
            return Ok(out);
        }
    }
}

/// Differences between what the answers said and what `trackers` and the database at
/// `url` hold: the files listed (exactly the acknowledged ones), the users (acknowledged
/// ones exist, refused ones do not) and the shared file's reported chunks.
pub async fn contradictions(
    ledger: &Shared,
    trackers: &[&TestTracker],
    url: &str,
    shared: &str,
) -> Result<(), String> {
    let (listed, users, reported) = {
        let l = ledger.lock().unwrap();
        (l.listed(), l.users.clone(), l.reported.clone())
    };
    for (i, t) in trackers.iter().enumerate() {
        let on = listed_on(t).await?;
        if on != listed {
            let extra: Vec<_> = on.difference(&listed).collect();
            let missing: Vec<_> = listed.difference(&on).collect();
            return Err(format!(
                "tracker {i} lists {} more, {} fewer: {extra:?} {missing:?}",
                extra.len(),
                missing.len()
            ));
        }
    }
    let db = Database::connect(url).await.map_err(|e| e.to_string())?;
    let rows = |sql: String| {
        let db = &db;
        async move {
            let st = Statement::from_string(db.get_database_backend(), sql);
            db.query_all_raw(st).await.map_err(|e| e.to_string())
        }
    };
    let mut stored = BTreeSet::new();
    for r in rows("SELECT f.id FROM files f JOIN holdings h ON h.file_id = f.id WHERE h.kind = 1 AND f.name LIKE 'outage-%'".into()).await? {
        stored.insert(r.try_get::<String>("", "id").map_err(|e| e.to_string())?);
    }
    if stored != listed {
        let extra: Vec<_> = stored.difference(&listed).collect();
        let missing: Vec<_> = listed.difference(&stored).collect();
        return Err(format!(
            "the database has {extra:?} more, {missing:?} fewer"
        ));
    }
    let mut names = HashSet::new();
    for r in rows("SELECT name FROM users".into()).await? {
        names.insert(r.try_get::<String>("", "name").map_err(|e| e.to_string())?);
    }
    for (u, ok) in &users {
        if names.contains(u) != *ok {
            return Err(format!("user {u}: acknowledged {ok}, stored {}", !ok));
        }
    }
    let sql = format!("SELECT peer_id, have FROM holdings WHERE file_id = '{shared}'");
    let mut held: HashMap<String, Bitfield> = HashMap::new();
    for r in rows(sql).await? {
        let peer: String = r.try_get("", "peer_id").map_err(|e| e.to_string())?;
        let have: Vec<u8> = r.try_get("", "have").map_err(|e| e.to_string())?;
        held.insert(peer, Bitfield::from_bytes(&have, SHARED_CHUNKS).unwrap());
    }
    for (peer, chunks) in &reported {
        let have = held.get(peer).ok_or(format!("no holding of {peer}"))?;
        if let Some(c) = chunks.iter().find(|&&c| !have.get(c)) {
            return Err(format!("{peer}: reported chunk {c} is not stored"));
        }
    }
    db.close().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// After a restart on the same database: every acknowledged login's session still works
/// (a Locate of an unknown file is NOT_FOUND, not UNAUTHENTICATED), and acknowledged users
/// log in (a few: each is a password check; refused ones are checked in the database, as
/// logging in as each would be throttled as guessing).
pub async fn sessions_and_users_survive(ledger: &Shared, t: &TestTracker) {
    let (sessions, users) = {
        let l = ledger.lock().unwrap();
        (l.sessions.clone(), l.users.clone())
    };
    let mut c = t.grpc().await;
    for token in sessions {
        let req = pb::LocateRequest {
            file_id: "ab".repeat(32),
            requester_key: node_key(),
            ..Default::default()
        };
        let e = c.locate(authed(req, &token)).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "an acknowledged session: {e:?}");
    }
    for user in users.iter().filter(|(_, ok)| **ok).map(|(u, _)| u).take(8) {
        let creds = pb::Credentials {
            user: user.clone(),
            password: format!("pw-of-{user}"),
        };
        let r = c.login(creds).await;
        assert!(r.is_ok(), "acknowledged user {user}: {r:?}");
    }
}

/// One line for the test's output: the answers by call.
pub fn summary(ledger: &Shared) -> String {
    let l = ledger.lock().unwrap();
    let mut calls: Vec<_> = l.counts.iter().collect();
    calls.sort();
    calls
        .iter()
        .map(|(c, (ok, no))| format!("{c} {ok} ok/{no} refused"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Ok` when `cond` holds, else `why` (for [`until`]).
pub fn ok_or(cond: bool, why: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(why.into()) }
}
