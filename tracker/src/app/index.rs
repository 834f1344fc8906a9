//! The in-memory index: every file with its manifest and holdings, and every peer with its
//! liveness. Search, resolve, locate, stats and the per-request checks read only this, so
//! hot paths never wait for the database. It is rebuilt from the database at start; every
//! change made here is also queued to the batch writer by the caller (`app`).
//!
//! Time is passed in (`now_ms`) rather than read, so liveness is testable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use common::{Bitfield, FileId, FileType, Manifest, PeerId, Sha256Digest};

use super::commit::Reservations;
use super::limits::Usage;
use super::names::SharerNames;
use super::search::{NameIndex, PathText};
use crate::model::{FileRecord, HoldingKind, HoldingRecord, PeerRecord};
use crate::replication::TaskTable;

/// What one peer holds of one file.
///
/// `have` is what the peer claims; `verified` (a subset of it) what audits confirmed. Only
/// verified chunks count as copies (holders, `min_copies`, replication); claimed ones are
/// still handed to getters, who check every chunk themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct Holding {
    pub kind: HoldingKind,
    pub have: Bitfield,
    pub verified: Bitfield,
    /// The sharer's name for the file (shared holdings), else `None`.
    pub name: Option<String>,
    pub updated_at_ms: i64,
}

impl Holding {
    /// A fresh claim: nothing of it verified yet.
    pub fn claimed(kind: HoldingKind, have: Bitfield, now_ms: i64) -> Self {
        let verified = Bitfield::new(have.len());
        Self {
            kind,
            have,
            verified,
            name: None,
            updated_at_ms: now_ms,
        }
    }

    /// A stored holding of a file of `chunks` chunks; `None` when its bitfields do not fit.
    /// What was verified but is no longer claimed is dropped.
    pub fn from_record(rec: &HoldingRecord, chunks: u32) -> Option<Self> {
        let have = Bitfield::from_bytes(&rec.have, chunks).ok()?;
        let mut verified = if rec.verified.is_empty() {
            Bitfield::new(chunks)
        } else {
            Bitfield::from_bytes(&rec.verified, chunks).ok()?
        };
        verified.intersect_with(&have);
        Some(Self {
            kind: rec.kind,
            have,
            verified,
            name: rec.name.clone(),
            updated_at_ms: rec.updated_at_ms,
        })
    }
}

/// A known file.
#[derive(Debug)]
pub struct FileEntry {
    pub id: FileId,
    pub manifest: Arc<Manifest>,
    /// The chunk hashes as they go on the wire, packed once so every Locate shares them.
    pub packed_hashes: Bytes,
    pub created_at_ms: i64,
    pub holdings: HashMap<PeerId, Holding>,
    /// The names its sharers give it (`super::names`); kept by `Index::set_holding` and
    /// `take_holding`.
    pub names: SharerNames,
    /// When it is a collection (`super::collections`), its entries' paths as search reads
    /// them; set by `Index::set_collection`.
    pub collection: Option<Arc<PathText>>,
}

impl FileEntry {
    pub fn new(rec: FileRecord) -> Self {
        let id = rec.id();
        let m = rec.manifest;
        Self {
            id,
            packed_hashes: Bytes::from(m.packed_hashes()),
            manifest: Arc::new(m),
            created_at_ms: rec.created_at_ms,
            holdings: HashMap::new(),
            names: SharerNames::default(),
            collection: None,
        }
    }

    /// Its type when shown under `name`: `collection` for a collection, else the name's.
    pub fn file_type(&self, name: &str) -> FileType {
        match self.collection {
            Some(_) => FileType::Collection,
            None => FileType::from_name(name),
        }
    }
}

/// A known peer and its owner's name.
#[derive(Clone, Debug)]
pub struct PeerEntry {
    pub rec: PeerRecord,
    pub user: String,
}

/// A peer is up iff its last heartbeat is at most `timeout_ms` old.
pub fn is_up(last_seen_ms: Option<i64>, now_ms: i64, timeout_ms: i64) -> bool {
    last_seen_ms.is_some_and(|t| now_ms.saturating_sub(t) <= timeout_ms)
}

/// Files, peers, holdings and replication tasks.
///
/// Holdings are changed only through [`Index::set_holding`] and [`Index::take_holding`], which
/// keep the per-peer index of held files (so a peer's liveness change finds its files
/// without a scan) and the file's sharer names and listings (`super::names`), and mark the
/// file dirty for the replication planner.
#[derive(Debug, Default)]
pub struct Index {
    pub files: BTreeMap<FileId, FileEntry>,
    /// Every listing (a file under one of its names) in order, with trigram postings: for
    /// searches and exact-name lookups.
    pub(super) names: NameIndex,
    pub peers: HashMap<PeerId, PeerEntry>,
    /// peer → the files it holds something of.
    peer_files: HashMap<PeerId, HashSet<FileId>>,
    /// The replication tasks not yet completed.
    pub tasks: TaskTable,
    /// Files whose copies changed since the planner last looked at them.
    pub dirty: HashSet<FileId>,
    /// Holdings that claim chunks no audit has verified yet, for the auditor.
    pub unverified: HashSet<(FileId, PeerId)>,
    /// Peers demoted by failed audits or bad reports, until when (Unix ms): they are not
    /// serving, so nothing of theirs is handed out or counted.
    pub demoted: HashMap<PeerId, i64>,
    /// Claims count as verified as soon as they are made (`--audit false`).
    pub trust_claims: bool,
    /// The peer timeout in milliseconds.
    pub timeout_ms: i64,
    /// Per-user counts for the limits (`super::limits`), kept by the methods that change
    /// peers and holdings.
    pub(super) usage: Usage,
    /// The files and new peer ids of client-waited writes in flight (`super::commit`).
    pub(super) reserved: Reservations,
}

/// One search, already validated.
#[derive(Clone, Debug, Default)]
pub struct Search {
    pub terms: Vec<String>,
    pub file_type: Option<FileType>,
    pub limit: usize,
    pub offset: usize,
}

impl Index {
    pub fn new(timeout_ms: i64) -> Self {
        Self {
            timeout_ms,
            ..Self::default()
        }
    }

    pub fn insert_file(&mut self, entry: FileEntry) {
        self.names.remove_file(&entry.id);
        if let Some(c) = &entry.collection {
            self.names.set_paths(entry.id, c.clone());
        }
        for name in entry.listed() {
            self.names.insert(entry.id, name);
        }
        self.files.insert(entry.id, entry);
    }

    pub fn remove_file(&mut self, id: &FileId) -> Option<FileEntry> {
        let entry = self.files.remove(id)?;
        self.names.remove_file(id);
        let chunks = entry.manifest.chunk_count();
        for (peer, h) in &entry.holdings {
            self.usage
                .holding_changed(peer, chunks, Usage::counts(h.kind), false);
            self.unlink(peer, id);
            self.unverified.remove(&(*id, peer.clone()));
        }
        self.dirty.remove(id);
        Some(entry)
    }

    /// Records what `peer` holds of a known file (replacing what it held); false for an
    /// unknown file.
    pub fn set_holding(&mut self, file: FileId, peer: &PeerId, h: Holding) -> bool {
        let user = self.peers.get(peer).map(|p| p.rec.user_id);
        let Some(f) = self.files.get_mut(&file) else {
            return false;
        };
        let relist = f.rename(peer, user, Some(&h));
        let mut h = h;
        if self.trust_claims {
            h.verified = h.have.clone();
        } else {
            // A chunk no longer claimed (dropped, changed on disk) is no longer a copy.
            h.verified.intersect_with(&h.have);
        }
        if h.have.is_subset_of(&h.verified) {
            self.unverified.remove(&(file, peer.clone()));
        } else {
            self.unverified.insert((file, peer.clone()));
        }
        let (chunks, shared) = (f.manifest.chunk_count(), Usage::counts(h.kind));
        let was = f.holdings.insert(peer.clone(), h);
        let was = was.is_some_and(|o| Usage::counts(o.kind));
        self.usage.holding_changed(peer, chunks, was, shared);
        self.peer_files
            .entry(peer.clone())
            .or_default()
            .insert(file);
        self.dirty.insert(file);
        self.relist(file, relist);
        true
    }

    /// Removes `peer`'s holding of a file.
    pub fn take_holding(&mut self, file: &FileId, peer: &PeerId) -> Option<Holding> {
        let f = self.files.get_mut(file)?;
        let relist = f.rename(peer, None, None);
        let h = f.holdings.remove(peer)?;
        let chunks = f.manifest.chunk_count();
        self.usage
            .holding_changed(peer, chunks, Usage::counts(h.kind), false);
        self.unlink(peer, file);
        self.unverified.remove(&(*file, peer.clone()));
        self.dirty.insert(*file);
        self.relist(*file, relist);
        Some(h)
    }

    /// The files `peer` holds something of.
    pub fn files_of(&self, peer: &PeerId) -> Vec<FileId> {
        self.peer_files
            .get(peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    fn unlink(&mut self, peer: &PeerId, file: &FileId) {
        if let Some(s) = self.peer_files.get_mut(peer) {
            s.remove(file);
            if s.is_empty() {
                self.peer_files.remove(peer);
            }
        }
    }

    pub fn is_up(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| is_up(p.rec.last_seen_ms, now_ms, self.timeout_ms))
    }

    /// Up, reachable and not demoted: the only peers handed out to getters or counted as
    /// copies.
    pub fn is_serving(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.peers.get(peer).is_some_and(|p| {
            !p.rec.addr.is_empty() && is_up(p.rec.last_seen_ms, now_ms, self.timeout_ms)
        }) && !self.is_demoted(peer, now_ms)
    }

    /// Whether a failed audit or bad reports demoted `peer` and the demotion still runs.
    pub fn is_demoted(&self, peer: &PeerId, now_ms: i64) -> bool {
        self.demoted.get(peer).is_some_and(|&until| now_ms < until)
    }

    /// Serving peers that can hold a copy of something: holders (of any kind) and peers
    /// with a storage quota for replicas. No chunk can have more live copies than this, so
    /// a replication target above it cannot be met now.
    pub fn copy_capable_peers(&self, now_ms: i64) -> u32 {
        let capable = |p: &&PeerEntry| {
            (p.rec.storage_quota > 0 || self.peer_files.contains_key(&p.rec.id))
                && self.is_serving(&p.rec.id, now_ms)
        };
        self.peers.values().filter(capable).count() as u32
    }

    /// Serving peers holding some verified chunk, if together they hold every chunk; else
    /// 0. For a file with no chunks: serving peers holding it.
    pub fn holders(&self, file: &FileEntry, now_ms: i64) -> u32 {
        let chunks = file.manifest.chunk_count();
        let mut union = Bitfield::new(chunks);
        let mut n = 0;
        for (peer, h) in &file.holdings {
            if !self.is_serving(peer, now_ms) {
                continue;
            }
            if chunks > 0 {
                if h.verified.count() == 0 {
                    continue;
                }
                union.union_with(&h.verified);
            }
            n += 1;
        }
        if chunks == 0 || union.is_complete() {
            n
        } else {
            0
        }
    }

    /// Files whose id starts with `prefix` (lowercase hex, at most 64 digits).
    pub fn by_id_prefix(&self, prefix: &str) -> Vec<&FileEntry> {
        let pad = |c: char| -> Option<FileId> {
            let mut s = prefix.to_string();
            while s.len() < 64 {
                s.push(c);
            }
            s.parse::<Sha256Digest>().ok().map(FileId)
        };
        let (Some(lo), Some(hi)) = (pad('0'), pad('f')) else {
            return Vec::new();
        };
        self.files.range(lo..=hi).map(|(_, f)| f).collect()
    }

    /// The fewest serving holders of any chunk of `file`, counting verified chunks only. Complete holders are counted
    /// without looking at their bits, the common case for a popular file.
    pub fn min_copies(&self, file: &FileEntry, now_ms: i64) -> u32 {
        let chunks = file.manifest.chunk_count() as usize;
        let mut full = 0u32;
        let mut partial: Option<Vec<u32>> = None;
        for (peer, h) in &file.holdings {
            if !self.is_serving(peer, now_ms) {
                continue;
            }
            if h.verified.is_complete() {
                full += 1;
            } else {
                let copies = partial.get_or_insert_with(|| vec![0u32; chunks]);
                for i in h.verified.iter_ones() {
                    copies[i as usize] += 1;
                }
            }
        }
        full + partial.map_or(0, |c| c.into_iter().min().unwrap_or(0))
    }

    /// Per chunk of `file`: how many serving peers hold it verified.
    pub fn copies(&self, file: &FileEntry, now_ms: i64) -> Vec<u32> {
        let mut copies = vec![0u32; file.manifest.chunk_count() as usize];
        for (peer, h) in &file.holdings {
            if self.is_serving(peer, now_ms) {
                for i in h.verified.iter_ones() {
                    copies[i as usize] += 1;
                }
            }
        }
        copies
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::manifest::MIN_CHUNK_SIZE;

    fn manifest(name: &str, chunks: u32, seed: u8) -> Manifest {
        let hashes: Vec<u8> = (0..chunks * 32).map(|i| seed ^ i as u8).collect();
        Manifest::from_parts(
            name.into(),
            chunks as u64 * MIN_CHUNK_SIZE as u64,
            Sha256Digest([seed; 32]),
            MIN_CHUNK_SIZE,
            &hashes,
        )
        .unwrap()
    }

    fn add_file(ix: &mut Index, name: &str, chunks: u32, seed: u8) -> FileId {
        let e = FileEntry::new(FileRecord {
            manifest: manifest(name, chunks, seed),
            created_at_ms: 0,
        });
        let id = e.id;
        ix.insert_file(e);
        id
    }

    fn add_peer(ix: &mut Index, n: u8, last_seen: Option<i64>, addr: &str) -> PeerId {
        let id = PeerId::from_random([n; 16]);
        ix.peers.insert(
            id.clone(),
            PeerEntry {
                rec: PeerRecord {
                    id: id.clone(),
                    user_id: 1,
                    addr: addr.into(),
                    storage_quota: 0,
                    storage_used: 0,
                    last_seen_ms: last_seen,
                    created_at_ms: 0,
                },
                user: "u".into(),
            },
        );
        id
    }

    /// Records an audited holding (its claim verified) of `chunks`.
    fn hold(ix: &mut Index, file: FileId, peer: &PeerId, chunks: &[u32]) {
        let mut have = Bitfield::new(ix.files[&file].manifest.chunk_count());
        for &c in chunks {
            have.set(c);
        }
        let mut h = Holding::claimed(HoldingKind::Shared, have, 0);
        h.verified = h.have.clone();
        ix.set_holding(file, peer, h);
    }

    #[test]
    fn should_count_only_verified_chunks_and_no_demoted_peer() {
        let mut ix = Index::new(100_000);
        let f = add_file(&mut ix, "a.bin", 2, 1);
        let liar = add_peer(&mut ix, 1, Some(10_000), "h:1");
        let honest = add_peer(&mut ix, 2, Some(10_000), "h:2");
        ix.set_holding(
            f,
            &liar,
            Holding::claimed(HoldingKind::Replica, Bitfield::full(2), 0),
        );
        assert!(ix.unverified.contains(&(f, liar.clone())));
        assert_eq!(ix.holders(&ix.files[&f], 10_000), 0);
        assert_eq!(ix.copies(&ix.files[&f], 10_000), vec![0, 0]);
        hold(&mut ix, f, &honest, &[0, 1]);
        assert!(!ix.unverified.contains(&(f, honest.clone())));
        assert_eq!(ix.holders(&ix.files[&f], 10_000), 1);
        assert_eq!(ix.min_copies(&ix.files[&f], 10_000), 1);
        ix.demoted.insert(honest.clone(), 15_000);
        assert_eq!(ix.holders(&ix.files[&f], 10_000), 0);
        assert!(!ix.is_serving(&honest, 10_000));
        // A demotion ends.
        assert_eq!(ix.holders(&ix.files[&f], 15_000), 1);
        ix.take_holding(&f, &liar);
        assert!(ix.unverified.is_empty());
    }

    #[test]
    fn should_count_a_peer_up_only_within_the_timeout() {
        assert!(is_up(Some(1000), 1500, 500));
        assert!(!is_up(Some(1000), 1501, 500));
        assert!(!is_up(None, 0, 500));
    }

    #[test]
    fn should_count_holders_only_when_live_peers_cover_every_chunk() {
        let mut ix = Index::new(1000);
        let f = add_file(&mut ix, "a.bin", 3, 1);
        let a = add_peer(&mut ix, 1, Some(10_000), "h:1");
        let b = add_peer(&mut ix, 2, Some(10_000), "h:2");
        let down = add_peer(&mut ix, 3, Some(0), "h:3");
        let no_addr = add_peer(&mut ix, 4, Some(10_000), "");
        hold(&mut ix, f, &a, &[0, 1]);
        hold(&mut ix, f, &down, &[2]);
        hold(&mut ix, f, &no_addr, &[2]);
        assert_eq!(ix.holders(&ix.files[&f], 10_000), 0);
        hold(&mut ix, f, &b, &[2]);
        assert_eq!(ix.holders(&ix.files[&f], 10_000), 2);
        assert_eq!(ix.copies(&ix.files[&f], 10_000), vec![1, 1, 1]);
        // Everyone is down later.
        assert_eq!(ix.holders(&ix.files[&f], 20_000), 0);

        let empty = add_file(&mut ix, "empty", 0, 2);
        assert_eq!(ix.holders(&ix.files[&empty], 10_000), 0);
        hold(&mut ix, empty, &a, &[]);
        hold(&mut ix, empty, &down, &[]);
        assert_eq!(ix.holders(&ix.files[&empty], 10_000), 1);
    }

    #[test]
    fn should_search_all_terms_case_insensitively_in_name_order() {
        let mut ix = Index::new(1000);
        add_file(&mut ix, "Zebra Live.mp4", 1, 1);
        add_file(&mut ix, "abbey road.flac", 1, 2);
        add_file(&mut ix, "Abbey Road Remastered.FLAC", 1, 3);
        add_file(&mut ix, "notes.txt", 1, 4);
        let q = |terms: &[&str], t: Option<FileType>, limit, offset| Search {
            terms: terms.iter().map(|s| s.to_string()).collect(),
            file_type: t,
            limit,
            offset,
        };
        let names = |r: (Vec<(&FileEntry, &str)>, usize)| {
            (r.0.iter().map(|f| f.1.to_string()).collect::<Vec<_>>(), r.1)
        };
        let (all, total) = names(ix.search(&q(&[], None, 50, 0)));
        assert_eq!(total, 4);
        assert_eq!(all[0], "Abbey Road Remastered.FLAC");
        assert_eq!(all[3], "notes.txt");
        let (hits, total) = names(ix.search(&q(&["road", "abbey"], None, 50, 0)));
        assert_eq!(total, 2);
        assert_eq!(hits.len(), 2);
        let (audio, _) = names(ix.search(&q(&[], Some(FileType::Audio), 50, 0)));
        assert_eq!(audio.len(), 2);
        let (page, total) = names(ix.search(&q(&[], None, 1, 1)));
        assert_eq!((page, total), (vec!["Zebra Live.mp4".to_string()], 4));
        assert_eq!(ix.search(&q(&["nothing"], None, 50, 0)).1, 0);
    }

    #[test]
    fn should_resolve_by_id_prefix_and_exact_name() {
        let mut ix = Index::new(1000);
        let a = add_file(&mut ix, "same.txt", 1, 1);
        let b = add_file(&mut ix, "same.txt", 2, 2);
        add_file(&mut ix, "other.txt", 1, 3);
        let hex = a.to_string();
        assert_eq!(ix.resolve(&hex).len(), 1);
        assert_eq!(ix.resolve(&hex[..6].to_uppercase())[0].0.id, a);
        assert_eq!(ix.resolve(&hex[..7]).len(), 1);
        assert!(ix.resolve(&hex[..5]).is_empty());
        let both = ix.resolve("same.txt");
        assert_eq!(both.len(), 2);
        assert!(both.iter().any(|f| f.0.id == b && f.1 == Some("same.txt")));
        assert!(ix.resolve("SAME.TXT").is_empty());
        assert!(ix.resolve("").is_empty());
        assert_eq!(ix.resolve(&format!(" {}\n", &hex[..8]))[0].0.id, a);
        let spaced = add_file(&mut ix, " leading space.txt", 1, 4);
        assert_eq!(ix.resolve(" leading space.txt")[0].0.id, spaced);
        assert!(ix.resolve("leading space.txt").is_empty());
        assert!(ix.resolve(" same.txt").is_empty());
        assert!(ix.remove_file(&a).is_some());
        assert_eq!(ix.resolve("same.txt").len(), 1);
    }

    #[test]
    fn should_index_the_files_each_peer_holds() {
        let mut ix = Index::new(1000);
        let f = add_file(&mut ix, "a", 2, 1);
        let g = add_file(&mut ix, "b", 2, 2);
        let p = add_peer(&mut ix, 1, Some(0), "h:1");
        hold(&mut ix, f, &p, &[0]);
        hold(&mut ix, g, &p, &[1]);
        let mut held = ix.files_of(&p);
        held.sort();
        let mut want = vec![f, g];
        want.sort();
        assert_eq!(held, want);
        assert!(ix.dirty.contains(&f));
        assert!(ix.take_holding(&f, &p).is_some());
        assert_eq!(ix.files_of(&p), vec![g]);
        ix.remove_file(&g);
        assert!(ix.files_of(&p).is_empty());
    }
}
