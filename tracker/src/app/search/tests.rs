//! The name index against a full scan of a model, with names changing under it and files
//! becoming collections.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use common::collection::{Collection, Entry, RelPath};
use common::{Bitfield, Manifest, PeerId, Sha256Digest};
use proptest::prelude::*;

use super::super::index::{FileEntry, Holding, Index, PeerEntry, Search};
use super::*;
use crate::model::{FileRecord, HoldingKind, PeerRecord};

/// Lowercase and uppercase letters, a space, a dot, and characters whose lowercase
/// changes their length or depends on context, over an alphabet small enough that
/// random terms often match.
const ALPHABET: &[char] = &['a', 'b', 'A', 'B', ' ', '.', 'é', 'İ', 'Σ'];
const EXTS: &[&str] = &["", ".mp3", ".TXT", ".mkv", ".zip", ".Flac"];
/// Peers that share; peer `p` belongs to account `p % 3`, so some accounts have two.
const PEERS: u8 = 5;

#[derive(Clone, Debug)]
enum Op {
    Insert(String),
    /// Inserts again the live file at this index (modulo their number), renamed if
    /// a name is given: a file's id does not cover its name. Its holdings go.
    Reinsert(usize, Option<String>),
    Remove(usize),
    /// A peer shares (or renames its listing of) a live file.
    Share(usize, u8, String),
    /// A peer's holding becomes a download, which has no name.
    Download(usize, u8),
    /// A peer's holding goes.
    Unshare(usize, u8),
    Query(Vec<String>, Option<FileType>, usize, usize),
    /// Resolves one of the listed names exactly.
    Exact(usize, usize),
    /// Makes a live file a collection with these directories (skipped when they are not a
    /// valid collection).
    Collect(usize, Vec<String>),
}

fn text(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), min..max)
        .prop_map(|c| c.into_iter().collect())
}

fn name() -> impl Strategy<Value = String> {
    (text(1, 12), prop::sample::select(EXTS)).prop_map(|(s, e)| s + e)
}

fn op() -> impl Strategy<Value = Op> {
    let term = text(1, 6).prop_map(|t| t.to_lowercase());
    let ty = prop::option::of(prop::sample::select(FileType::ALL.to_vec()));
    let peer = 0..PEERS;
    prop_oneof![
        4 => name().prop_map(Op::Insert),
        1 => (any::<usize>(), prop::option::of(name()))
            .prop_map(|(i, n)| Op::Reinsert(i, n)),
        2 => any::<usize>().prop_map(Op::Remove),
        // Few names, so sharers often agree on one.
        5 => (any::<usize>(), peer.clone(), prop::sample::select(vec!["x.mkv", "X.mp3", "ab", "b a.zip"]))
            .prop_map(|(i, p, n)| Op::Share(i, p, n.to_string())),
        2 => (any::<usize>(), peer.clone(), name()).prop_map(|(i, p, n)| Op::Share(i, p, n)),
        1 => (any::<usize>(), peer.clone()).prop_map(|(i, p)| Op::Download(i, p)),
        2 => (any::<usize>(), peer).prop_map(|(i, p)| Op::Unshare(i, p)),
        4 => (prop::collection::vec(term, 0..3), ty, 0usize..6, 0usize..6)
            .prop_map(|(t, ty, l, o)| Op::Query(t, ty, l, o)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Op::Exact(i, j)),
        2 => (any::<usize>(), prop::collection::vec(text(1, 8), 1..4))
            .prop_map(|(i, p)| Op::Collect(i, p)),
    ]
}

fn entry(name: &str, n: u32) -> FileEntry {
    let mut digest = [0u8; 32];
    digest[..4].copy_from_slice(&n.to_be_bytes());
    let manifest =
        Manifest::from_parts(name.into(), 1, Sha256Digest(digest), 1 << 20, &digest).unwrap();
    FileEntry::new(FileRecord {
        manifest,
        created_at_ms: 0,
    })
}

fn peer(p: u8) -> PeerId {
    PeerId::from_random([p + 1; 16])
}

/// What the index must hold for one file: its last known name, its sharers (peer → name,
/// account, since when), and for a collection its entries' paths.
#[derive(Debug)]
struct Model {
    last: String,
    seed: u32,
    sharers: BTreeMap<u8, (String, i32, i64)>,
    paths: Option<Vec<String>>,
}

impl Model {
    /// The definition of a match under name `n`: of the type (a collection's, or the
    /// name's), every term in the name or, three bytes or more, in an entry's path.
    fn hit(&self, n: &str, q: &Search) -> bool {
        let lower = n.to_lowercase();
        let in_paths = |t: &str| {
            t.len() >= 3 && (self.paths.iter().flatten()).any(|p| p.to_lowercase().contains(t))
        };
        let file_type = match self.paths {
            Some(_) => FileType::Collection,
            None => FileType::from_name(n),
        };
        q.file_type.is_none_or(|t| t == file_type)
            && q.terms
                .iter()
                .all(|t| lower.contains(t.as_str()) || in_paths(t))
    }

    fn listed(&self) -> BTreeSet<&str> {
        if self.sharers.is_empty() {
            return BTreeSet::from([self.last.as_str()]);
        }
        self.sharers.values().map(|s| s.0.as_str()).collect()
    }

    /// The definition of the strongest name: most accounts, then oldest, then order.
    fn best(&self, pick: impl Fn(&str) -> bool) -> Option<&str> {
        let rank = |n: &str| {
            let users: HashSet<i32> = self
                .sharers
                .values()
                .filter(|s| s.0 == n)
                .map(|s| s.1)
                .collect();
            let since = (self.sharers.values().filter(|s| s.0 == n))
                .map(|s| s.2)
                .min();
            (users.len(), Reverse(since))
        };
        let mut best: Option<&str> = None;
        for n in self.listed().into_iter().filter(|n| pick(n)) {
            if best.is_none_or(|b| rank(n) > rank(b)) {
                best = Some(n);
            }
        }
        best
    }

    fn unshare(&mut self, p: u8) {
        if let Some((name, _, _)) = self.sharers.remove(&p)
            && self.sharers.is_empty()
        {
            self.last = name;
        }
    }
}

/// The definition of Search: every file's matching names, the strongest as its row.
fn naive(files: &BTreeMap<FileId, Model>, q: &Search) -> (Vec<(FileId, String)>, usize) {
    let mut rows: Vec<(String, FileId)> = files
        .iter()
        .filter_map(|(id, m)| m.best(|n| m.hit(n, q)).map(|n| (n.to_string(), *id)))
        .collect();
    rows.sort();
    let page = rows
        .iter()
        .skip(q.offset)
        .take(q.limit)
        .map(|(n, id)| (*id, n.clone()))
        .collect();
    (page, rows.len())
}

fn nth(files: &BTreeMap<FileId, Model>, i: usize) -> Option<FileId> {
    (!files.is_empty()).then(|| *files.keys().nth(i % files.len()).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn search_agrees_with_a_full_scan(ops in prop::collection::vec(op(), 1..80)) {
        let mut ix = Index::new(1000);
        for p in 0..PEERS {
            let rec = PeerRecord {
                id: peer(p),
                user_id: i32::from(p % 3),
                addr: String::new(),
                storage_quota: 0,
                storage_used: 0,
                last_seen_ms: None,
                created_at_ms: 0,
            };
            ix.peers.insert(rec.id.clone(), PeerEntry { rec, user: String::new() });
        }
        let mut model: BTreeMap<FileId, Model> = BTreeMap::new();
        for (n, op) in ops.into_iter().enumerate() {
            // A coarse clock, so names tie on age too.
            let now = (n / 4) as i64;
            match op {
                Op::Insert(name) => {
                    let e = entry(&name, n as u32);
                    let m = Model { last: name, seed: n as u32, sharers: BTreeMap::new(), paths: None };
                    model.insert(e.id, m);
                    ix.insert_file(e);
                }
                Op::Reinsert(i, rename) => {
                    let Some(id) = nth(&model, i) else { continue };
                    let m = model.get_mut(&id).unwrap();
                    if let Some(name) = rename {
                        m.last = name;
                    }
                    m.sharers.clear();
                    m.paths = None;
                    let e = entry(&m.last, m.seed);
                    prop_assert_eq!(e.id, id);
                    ix.insert_file(e);
                }
                Op::Remove(i) => {
                    let Some(id) = nth(&model, i) else { continue };
                    model.remove(&id);
                    prop_assert!(ix.remove_file(&id).is_some());
                    prop_assert!(!ix.names.remove_file(&id));
                }
                Op::Share(i, p, name) => {
                    let Some(id) = nth(&model, i) else { continue };
                    let m = model.get_mut(&id).unwrap();
                    let since = match m.sharers.get(&p) {
                        Some(s) if s.0 == name => s.2,
                        _ => now,
                    };
                    m.sharers.insert(p, (name.clone(), i32::from(p % 3), since));
                    let mut h = Holding::claimed(HoldingKind::Shared, Bitfield::full(1), now);
                    h.name = Some(name);
                    ix.set_holding(id, &peer(p), h);
                }
                Op::Download(i, p) => {
                    let Some(id) = nth(&model, i) else { continue };
                    model.get_mut(&id).unwrap().unshare(p);
                    let h = Holding::claimed(HoldingKind::Downloaded, Bitfield::full(1), now);
                    ix.set_holding(id, &peer(p), h);
                }
                Op::Unshare(i, p) => {
                    let Some(id) = nth(&model, i) else { continue };
                    model.get_mut(&id).unwrap().unshare(p);
                    ix.take_holding(&id, &peer(p));
                }
                Op::Query(terms, file_type, limit, offset) => {
                    let q = Search { terms, file_type, limit, offset };
                    let (page, total) = ix.search(&q);
                    let got: Vec<(FileId, String)> =
                        page.iter().map(|(f, n)| (f.id, n.to_string())).collect();
                    prop_assert_eq!((got, total), naive(&model, &q), "{:?}", q);
                }
                Op::Exact(i, j) => {
                    let Some(id) = nth(&model, i) else { continue };
                    let listed = model[&id].listed();
                    let name = *listed.iter().nth(j % listed.len()).unwrap();
                    let want: BTreeSet<FileId> = (model.iter())
                        .filter(|(_, m)| m.listed().contains(name))
                        .map(|(id, _)| *id)
                        .collect();
                    let got: BTreeSet<FileId> = ix
                        .resolve(name)
                        .into_iter()
                        .filter(|(_, by)| *by == Some(name))
                        .map(|(f, _)| f.id)
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Collect(i, paths) => {
                    let Some(id) = nth(&model, i) else { continue };
                    let entries: Option<Vec<Entry>> =
                        paths.iter().map(|p| RelPath::parse(p).ok().map(Entry::Dir)).collect();
                    let Some(c) = entries.and_then(|e| Collection::new(e).ok()) else { continue };
                    let m = model.get_mut(&id).unwrap();
                    let made = ix.set_collection(id, Arc::new(PathText::new(&c)));
                    prop_assert_eq!(made, m.paths.is_none());
                    m.paths.get_or_insert(paths);
                }
            }
            for (id, m) in &model {
                let f = &ix.files[id];
                let listed: BTreeSet<&str> = f.listed().into_iter().collect();
                prop_assert_eq!(&listed, &m.listed());
                prop_assert_eq!(Some(f.display_name()), m.best(|_| true));
                let all = f.all_names();
                prop_assert_eq!(all[0].as_str(), f.display_name());
                prop_assert_eq!(all.len(), listed.len());
            }
        }
        // Removing everything leaves no listing behind.
        for id in model.keys() {
            ix.remove_file(id);
        }
        prop_assert!(ix.names.postings.is_empty());
        prop_assert!(ix.names.per_type.is_empty());
        prop_assert!(ix.names.ordered.is_empty());
        prop_assert!(ix.names.slots_of.is_empty());
        prop_assert!(ix.names.paths.is_empty());
    }
}
