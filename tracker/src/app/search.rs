//! The name index behind Search and Resolve: every listing of a file (one per name its
//! sharers give it, see `names`) in (name, id) order, and a trigram inverted index over the
//! lowercased names, so a query with a term of three bytes or more looks only at the
//! listings holding every trigram of its long terms instead of scanning every name under
//! the index lock.
//!
//! Listings live in dense slots (`u32`), so each posting list is a sorted `Vec<u32>`; freed
//! slots are reused. A trigram match is only a candidate: every candidate is verified with
//! the exact rule (each term a substring of the lowercased name, and the type filter, a
//! listing's type being its name's).

use std::collections::{BTreeSet, HashMap};

use common::{FileId, FileType, Sha256Digest};

/// Terms shorter than this (in bytes) have no trigram and fall back to the scan.
const GRAM: usize = 3;

/// One listing: enough to verify a match and order it.
#[derive(Debug)]
struct Named {
    id: FileId,
    name: Box<str>,
    name_lower: Box<str>,
    file_type: FileType,
}

/// The listings in order, their trigram postings, and per-type file counts.
#[derive(Debug, Default)]
pub struct NameIndex {
    slots: Vec<Option<Named>>,
    free: Vec<u32>,
    /// file → the slots of its listings (a few: one per distinct sharer name).
    slots_of: HashMap<FileId, Vec<u32>>,
    /// Packed trigram → the slots whose name contains it, ascending.
    postings: HashMap<u32, Vec<u32>>,
    /// How many files have a listing of each type, so a type-only query counts its total
    /// without a scan.
    per_type: HashMap<FileType, usize>,
    /// Every listing in (name, id) order, for unfiltered pages and exact-name lookups.
    ordered: BTreeSet<(String, FileId)>,
}

/// The distinct trigrams of `s`, packed into the low 24 bits of a `u32`.
fn trigrams(s: &str) -> Vec<u32> {
    let mut g: Vec<u32> = s
        .as_bytes()
        .windows(GRAM)
        .map(|w| u32::from(w[0]) << 16 | u32::from(w[1]) << 8 | u32::from(w[2]))
        .collect();
    g.sort_unstable();
    g.dedup();
    g
}

/// Whether a listing matches: of the type if given, and every term in its lowercased name.
fn matches(
    name_lower: &str,
    file_type: FileType,
    terms: &[String],
    want: Option<FileType>,
) -> bool {
    want.is_none_or(|t| t == file_type) && terms.iter().all(|t| name_lower.contains(t.as_str()))
}

impl NameIndex {
    /// Lists `id` under `name` (nothing changes if it is listed so already).
    pub fn insert(&mut self, id: FileId, name: &str) {
        if self.slot(&id, name).is_some() {
            return;
        }
        let file_type = FileType::from_name(name);
        if !self.has_type(&id, file_type) {
            *self.per_type.entry(file_type).or_default() += 1;
        }
        let name_lower: Box<str> = name.to_lowercase().into();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 listings")
            }
        };
        for g in trigrams(&name_lower) {
            let list = self.postings.entry(g).or_default();
            // Fresh slots are the largest so far: the common case is a push.
            match list.last() {
                Some(&last) if last > slot => {
                    let at = list.partition_point(|&s| s < slot);
                    list.insert(at, slot);
                }
                _ => list.push(slot),
            }
        }
        self.slots_of.entry(id).or_default().push(slot);
        self.ordered.insert((name.to_string(), id));
        self.slots[slot as usize] = Some(Named {
            id,
            name: name.into(),
            name_lower,
            file_type,
        });
    }

    /// Drops the listing of `id` under `name`; false if there was none.
    pub fn remove(&mut self, id: &FileId, name: &str) -> bool {
        let Some(slot) = self.slot(id, name) else {
            return false;
        };
        if let Some(slots) = self.slots_of.get_mut(id) {
            slots.retain(|&s| s != slot);
            if slots.is_empty() {
                self.slots_of.remove(id);
            }
        }
        let named = self.slots[slot as usize]
            .take()
            .expect("slots_of names occupied slots");
        self.ordered.remove(&(named.name.to_string(), named.id));
        for g in trigrams(&named.name_lower) {
            if let Some(list) = self.postings.get_mut(&g) {
                if let Ok(at) = list.binary_search(&slot) {
                    list.remove(at);
                }
                if list.is_empty() {
                    self.postings.remove(&g);
                }
            }
        }
        if !self.has_type(id, named.file_type)
            && let Some(n) = self.per_type.get_mut(&named.file_type)
        {
            *n -= 1;
            if *n == 0 {
                self.per_type.remove(&named.file_type);
            }
        }
        self.free.push(slot);
        true
    }

    /// Drops every listing of `id`; false if it had none.
    pub fn remove_file(&mut self, id: &FileId) -> bool {
        let names: Vec<Box<str>> = self
            .slots_of
            .get(id)
            .into_iter()
            .flatten()
            .filter_map(|&s| self.slots[s as usize].as_ref().map(|n| n.name.clone()))
            .collect();
        for n in &names {
            self.remove(id, n);
        }
        !names.is_empty()
    }

    /// The slot of `id`'s listing under `name`.
    fn slot(&self, id: &FileId, name: &str) -> Option<u32> {
        self.slots_of.get(id)?.iter().copied().find(|&s| {
            self.slots[s as usize]
                .as_ref()
                .is_some_and(|n| &*n.name == name)
        })
    }

    /// Whether `id` has a listing of type `t`.
    fn has_type(&self, id: &FileId, t: FileType) -> bool {
        self.slots_of.get(id).is_some_and(|slots| {
            slots.iter().any(|&s| {
                self.slots[s as usize]
                    .as_ref()
                    .is_some_and(|n| n.file_type == t)
            })
        })
    }

    /// How many files have a listing of type `t`.
    pub fn count_of(&self, t: FileType) -> usize {
        self.per_type.get(&t).copied().unwrap_or(0)
    }

    /// Every listing in (name, id) order.
    pub fn ordered(&self) -> impl Iterator<Item = (&str, FileId)> {
        self.ordered.iter().map(|(n, id)| (n.as_str(), *id))
    }

    /// The listings under exactly `name`, by id.
    pub fn exact(&self, name: &str) -> impl Iterator<Item = (&str, FileId)> {
        let lo = (name.to_string(), FileId(Sha256Digest([0; 32])));
        let hi = (name.to_string(), FileId(Sha256Digest([0xff; 32])));
        self.ordered.range(lo..=hi).map(|(n, id)| (n.as_str(), *id))
    }

    /// Every listing matching `terms` (lowercased, at least one) and the type filter, in no
    /// particular order.
    pub fn find(&self, terms: &[String], file_type: Option<FileType>) -> Vec<(FileId, &str)> {
        let hit = |n: &&Named| matches(&n.name_lower, n.file_type, terms, file_type);
        let hits: Vec<&Named> = match self.candidates(terms) {
            Some(slots) => slots
                .into_iter()
                .filter_map(|s| self.slots[s as usize].as_ref())
                .filter(hit)
                .collect(),
            None => self.slots.iter().flatten().filter(hit).collect(),
        };
        hits.into_iter().map(|n| (n.id, &*n.name)).collect()
    }

    /// The slots holding every trigram of every long term, or `None` when no term is long
    /// enough to narrow the search.
    fn candidates(&self, terms: &[String]) -> Option<Vec<u32>> {
        let mut grams: Vec<u32> = terms
            .iter()
            .filter(|t| t.len() >= GRAM)
            .flat_map(|t| trigrams(t))
            .collect();
        if grams.is_empty() {
            return None;
        }
        grams.sort_unstable();
        grams.dedup();
        let mut lists = Vec::with_capacity(grams.len());
        for g in &grams {
            match self.postings.get(g) {
                Some(l) => lists.push(l),
                None => return Some(Vec::new()),
            }
        }
        lists.sort_by_key(|l| l.len());
        let mut out = lists[0].clone();
        for l in &lists[1..] {
            intersect(&mut out, l);
            if out.is_empty() {
                break;
            }
        }
        Some(out)
    }
}

/// Keeps the slots of `out` that are also in `other` (both ascending): one merge pass,
/// which beats a binary search per slot when the lists are of like length (a common word).
fn intersect(out: &mut Vec<u32>, other: &[u32]) {
    let mut j = 0;
    out.retain(|&s| {
        while j < other.len() && other[j] < s {
            j += 1;
        }
        j < other.len() && other[j] == s
    });
}

/// Rows `offset..offset + limit` of `rows` (name, id, row) in (name, id) order: only the
/// first `offset + limit` are sorted.
pub(super) fn page<T>(
    mut rows: Vec<(&str, FileId, T)>,
    offset: usize,
    limit: usize,
) -> Vec<(&str, T)> {
    let end = offset.saturating_add(limit).min(rows.len());
    if offset >= end {
        return Vec::new();
    }
    if end < rows.len() {
        rows.select_nth_unstable_by(end - 1, order);
        rows.truncate(end);
    }
    rows.sort_unstable_by(order);
    rows.drain(offset..).map(|(n, _, r)| (n, r)).collect()
}

/// (name, id) order.
fn order<T>(a: &(&str, FileId, T), b: &(&str, FileId, T)) -> std::cmp::Ordering {
    (a.0, a.1).cmp(&(b.0, b.1))
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BTreeSet, HashSet};

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

    /// What the index must hold for one file: its last known name and its sharers
    /// (peer → name, account, since when).
    #[derive(Debug)]
    struct Model {
        last: String,
        seed: u32,
        sharers: BTreeMap<u8, (String, i32, i64)>,
    }

    impl Model {
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
            .filter_map(|(id, m)| {
                let hit = |n: &str| {
                    matches(
                        &n.to_lowercase(),
                        FileType::from_name(n),
                        &q.terms,
                        q.file_type,
                    )
                };
                m.best(hit).map(|n| (n.to_string(), *id))
            })
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
                        model.insert(e.id, Model { last: name, seed: n as u32, sharers: BTreeMap::new() });
                        ix.insert_file(e);
                    }
                    Op::Reinsert(i, rename) => {
                        let Some(id) = nth(&model, i) else { continue };
                        let m = model.get_mut(&id).unwrap();
                        if let Some(name) = rename {
                            m.last = name;
                        }
                        m.sharers.clear();
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
        }
    }
}
