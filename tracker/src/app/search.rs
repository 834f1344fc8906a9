//! The name index behind Search: a trigram inverted index over lowercased file names, so a
//! query with a term of three bytes or more looks only at the files holding every trigram
//! of its long terms instead of scanning every name under the index lock.
//!
//! Files live in dense slots (`u32`), so each posting list is a sorted `Vec<u32>`; freed slots
//! are reused. A trigram match is only a candidate: every candidate is verified with the
//! exact rule (each term a substring of the lowercased name, and the type filter).

use std::collections::HashMap;
use std::sync::Arc;

use common::{FileId, FileType, Manifest};

/// Terms shorter than this (in bytes) have no trigram and fall back to the scan.
const GRAM: usize = 3;

/// What a slot keeps of a file: enough to verify a match and order it.
#[derive(Debug)]
struct Named {
    id: FileId,
    manifest: Arc<Manifest>,
    name_lower: Box<str>,
    file_type: FileType,
}

/// Trigram postings, per-type counts and the slot of every file.
#[derive(Debug, Default)]
pub struct NameIndex {
    slots: Vec<Option<Named>>,
    free: Vec<u32>,
    slot_of: HashMap<FileId, u32>,
    /// Packed trigram → the slots whose name contains it, ascending.
    postings: HashMap<u32, Vec<u32>>,
    /// How many files of each type, so a type-only query counts its total without a scan.
    per_type: HashMap<FileType, usize>,
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

/// Whether a file matches: of the type if given, and every term in its lowercased name.
fn matches(
    name_lower: &str,
    file_type: FileType,
    terms: &[String],
    want: Option<FileType>,
) -> bool {
    want.is_none_or(|t| t == file_type) && terms.iter().all(|t| name_lower.contains(t.as_str()))
}

impl NameIndex {
    /// Indexes a file's name (replacing what was indexed under the same id).
    pub fn insert(&mut self, id: FileId, manifest: &Arc<Manifest>, file_type: FileType) {
        self.remove(&id);
        let name_lower: Box<str> = manifest.name.to_lowercase().into();
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 files")
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
        *self.per_type.entry(file_type).or_default() += 1;
        self.slot_of.insert(id, slot);
        self.slots[slot as usize] = Some(Named {
            id,
            manifest: Arc::clone(manifest),
            name_lower,
            file_type,
        });
    }

    /// Drops a file from the index; false if it was not there.
    pub fn remove(&mut self, id: &FileId) -> bool {
        let Some(slot) = self.slot_of.remove(id) else {
            return false;
        };
        let named = self.slots[slot as usize]
            .take()
            .expect("slot_of names an occupied slot");
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
        if let Some(n) = self.per_type.get_mut(&named.file_type) {
            *n -= 1;
            if *n == 0 {
                self.per_type.remove(&named.file_type);
            }
        }
        self.free.push(slot);
        true
    }

    /// How many files of `t` are indexed.
    pub fn count_of(&self, t: FileType) -> usize {
        self.per_type.get(&t).copied().unwrap_or(0)
    }

    /// The files matching `terms` (lowercased, at least one) and the type filter: the ids
    /// of the page `offset..offset + limit` in (name, id) order, and the total.
    pub fn find(
        &self,
        terms: &[String],
        file_type: Option<FileType>,
        offset: usize,
        limit: usize,
    ) -> (Vec<FileId>, usize) {
        let hits: Vec<&Named> = match self.candidates(terms) {
            Some(slots) => slots
                .into_iter()
                .filter_map(|s| self.slots[s as usize].as_ref())
                .filter(|n| matches(&n.name_lower, n.file_type, terms, file_type))
                .collect(),
            None => self
                .slots
                .iter()
                .flatten()
                .filter(|n| matches(&n.name_lower, n.file_type, terms, file_type))
                .collect(),
        };
        let total = hits.len();
        (page(hits, offset, limit), total)
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

/// The ids of `offset..offset + limit` of `hits` in (name, id) order: only the first
/// `offset + limit` are sorted.
fn page(mut hits: Vec<&Named>, offset: usize, limit: usize) -> Vec<FileId> {
    let end = offset.saturating_add(limit).min(hits.len());
    if offset >= end {
        return Vec::new();
    }
    if end < hits.len() {
        hits.select_nth_unstable_by(end - 1, |a, b| order(a, b));
        hits.truncate(end);
    }
    hits.sort_unstable_by(|a, b| order(a, b));
    hits[offset..].iter().map(|n| n.id).collect()
}

/// (name, id) order.
fn order(a: &Named, b: &Named) -> std::cmp::Ordering {
    (a.manifest.name.as_str(), a.id).cmp(&(b.manifest.name.as_str(), b.id))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use common::Sha256Digest;
    use proptest::prelude::*;

    use super::super::index::{FileEntry, Index, Search};
    use super::*;
    use crate::model::FileRecord;

    /// Lowercase and uppercase letters, a space, a dot, and characters whose lowercase
    /// changes their length or depends on context, over an alphabet small enough that
    /// random terms often match.
    const ALPHABET: &[char] = &['a', 'b', 'A', 'B', ' ', '.', 'é', 'İ', 'Σ'];
    const EXTS: &[&str] = &["", ".mp3", ".TXT", ".mkv", ".zip", ".Flac"];

    #[derive(Clone, Debug)]
    enum Op {
        Insert(String),
        /// Inserts again the live file at this index (modulo their number), renamed if
        /// a name is given: a file's id does not cover its name.
        Reinsert(usize, Option<String>),
        Remove(usize),
        Query(Vec<String>, Option<FileType>, usize, usize),
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
        prop_oneof![
            4 => name().prop_map(Op::Insert),
            1 => (any::<usize>(), prop::option::of(name()))
                .prop_map(|(i, n)| Op::Reinsert(i, n)),
            2 => any::<usize>().prop_map(Op::Remove),
            4 => (prop::collection::vec(term, 0..3), ty, 0usize..6, 0usize..6)
                .prop_map(|(t, ty, l, o)| Op::Query(t, ty, l, o)),
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

    /// The definition of Search: scan every file.
    fn naive(files: &BTreeMap<FileId, (String, FileType)>, q: &Search) -> (Vec<FileId>, usize) {
        let mut hits: Vec<(&str, FileId)> = files
            .iter()
            .filter(|(_, (name, t))| matches(&name.to_lowercase(), *t, &q.terms, q.file_type))
            .map(|(id, (name, _))| (name.as_str(), *id))
            .collect();
        hits.sort();
        let page = hits
            .iter()
            .skip(q.offset)
            .take(q.limit)
            .map(|h| h.1)
            .collect();
        (page, hits.len())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn search_agrees_with_a_full_scan(ops in prop::collection::vec(op(), 1..80)) {
            let mut ix = Index::new(1000);
            let mut model: BTreeMap<FileId, (String, FileType)> = BTreeMap::new();
            let mut live: Vec<(FileId, String, u32)> = Vec::new();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Insert(name) => {
                        let e = entry(&name, n as u32);
                        model.insert(e.id, (name.clone(), e.file_type));
                        live.push((e.id, name, n as u32));
                        ix.insert_file(e);
                    }
                    Op::Reinsert(i, rename) if !live.is_empty() => {
                        let at = i % live.len();
                        if let Some(name) = rename {
                            live[at].1 = name;
                        }
                        let (id, name, seed) = &live[at];
                        let e = entry(name, *seed);
                        prop_assert_eq!(e.id, *id);
                        model.insert(e.id, (name.clone(), e.file_type));
                        ix.insert_file(e);
                    }
                    Op::Remove(i) if !live.is_empty() => {
                        let (id, _, _) = live.swap_remove(i % live.len());
                        model.remove(&id);
                        prop_assert!(ix.remove_file(&id).is_some());
                        prop_assert!(!ix.names.remove(&id));
                    }
                    Op::Query(terms, file_type, limit, offset) => {
                        let q = Search { terms, file_type, limit, offset };
                        let (page, total) = ix.search(&q);
                        let got: Vec<FileId> = page.iter().map(|f| f.id).collect();
                        prop_assert_eq!((got, total), naive(&model, &q), "{:?}", q);
                    }
                    _ => {}
                }
            }
            // Removing everything leaves no posting behind.
            for (id, _, _) in live {
                ix.remove_file(&id);
            }
            prop_assert!(ix.names.postings.is_empty());
            prop_assert!(ix.names.per_type.is_empty());
        }
    }
}
