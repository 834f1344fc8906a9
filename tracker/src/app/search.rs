//! The name index behind Search and Resolve: every listing of a file (one per name its
//! sharers give it, see `names`) in (name, id) order, and a trigram inverted index over the
//! lowercased names, so a query with a term of three bytes or more looks only at the
//! listings holding every trigram of its long terms instead of scanning every name under
//! the index lock.
//!
//! Listings live in dense slots (`u32`), so each posting list is a sorted `Vec<u32>`; freed
//! slots are reused. A trigram match is only a candidate: every candidate is verified with
//! the exact rule (each term a substring of the lowercased name, and the type filter, a
//! listing's type being its name's, or `collection` for every listing of a collection).
//!
//! A collection (a shared folder) is also found by the paths inside it: a term of three
//! bytes or more matches it when it is in one of its names or in the path of one of its
//! entries ([`paths`], searched after the names).

mod paths;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use common::{FileId, FileType, Sha256Digest};

use paths::PathIndex;
pub use paths::PathText;

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
    /// The entry paths of the collections, by file.
    paths: PathIndex,
}

/// One trigram (`GRAM` bytes) packed into the low 24 bits of a `u32`.
fn pack(w: &[u8]) -> u32 {
    u32::from(w[0]) << 16 | u32::from(w[1]) << 8 | u32::from(w[2])
}

/// The distinct trigrams of `s`, packed, ascending.
fn trigrams(s: &str) -> Vec<u32> {
    let mut g: Vec<u32> = s.as_bytes().windows(GRAM).map(pack).collect();
    g.sort_unstable();
    g.dedup();
    g
}

/// Adds `slot` to the posting list of `gram`, keeping it ascending.
fn post(postings: &mut HashMap<u32, Vec<u32>>, gram: u32, slot: u32) {
    let list = postings.entry(gram).or_default();
    // Fresh slots are the largest so far: the common case is a push.
    match list.last() {
        Some(&last) if last > slot => {
            let at = list.partition_point(|&s| s < slot);
            list.insert(at, slot);
        }
        _ => list.push(slot),
    }
}

/// Takes `slot` out of the posting list of `gram`, dropping the list once empty.
fn unpost(postings: &mut HashMap<u32, Vec<u32>>, gram: u32, slot: u32) {
    if let Some(list) = postings.get_mut(&gram) {
        if let Ok(at) = list.binary_search(&slot) {
            list.remove(at);
        }
        if list.is_empty() {
            postings.remove(&gram);
        }
    }
}

/// The slots in the posting lists of every one of `grams` (sorted, distinct, at least one).
fn all_of(postings: &HashMap<u32, Vec<u32>>, grams: &[u32]) -> Vec<u32> {
    let mut lists = Vec::with_capacity(grams.len());
    for g in grams {
        match postings.get(g) {
            Some(l) => lists.push(l),
            None => return Vec::new(),
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
    out
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
        let file_type = if self.paths.contains(&id) {
            FileType::Collection
        } else {
            FileType::from_name(name)
        };
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
            post(&mut self.postings, g, slot);
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
            unpost(&mut self.postings, g, slot);
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

    /// Drops every listing of `id`, and its paths if it is a collection; false if it had
    /// neither.
    pub fn remove_file(&mut self, id: &FileId) -> bool {
        let names = self.names_of(id);
        for n in &names {
            self.remove(id, n);
        }
        let had_paths = self.paths.remove(id);
        had_paths || !names.is_empty()
    }

    /// Makes `id` a collection whose entries have `paths`: its listings, now and later, are
    /// of type `collection`, and found by those paths too.
    pub fn set_paths(&mut self, id: FileId, paths: Arc<PathText>) {
        let names = self.names_of(&id);
        for n in &names {
            self.remove(&id, n);
        }
        self.paths.insert(id, paths);
        for n in &names {
            self.insert(id, n);
        }
    }

    /// The names `id` is listed under.
    fn names_of(&self, id: &FileId) -> Vec<Box<str>> {
        (self.slots_of.get(id).into_iter().flatten())
            .filter_map(|&s| self.slots[s as usize].as_ref().map(|n| n.name.clone()))
            .collect()
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
    /// particular order: each term in its name or, for a collection, in its paths.
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
        let mut out: Vec<(FileId, &str)> = hits.into_iter().map(|n| (n.id, &*n.name)).collect();
        if file_type.is_none_or(|t| t == FileType::Collection) {
            out.extend(self.by_paths(terms));
        }
        out
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
        Some(all_of(&self.postings, &grams))
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
) -> Vec<(&str, FileId, T)> {
    let end = offset.saturating_add(limit).min(rows.len());
    if offset >= end {
        return Vec::new();
    }
    if end < rows.len() {
        rows.select_nth_unstable_by(end - 1, order);
        rows.truncate(end);
    }
    rows.sort_unstable_by(order);
    rows.drain(offset..).collect()
}

/// (name, id) order.
fn order<T>(a: &(&str, FileId, T), b: &(&str, FileId, T)) -> std::cmp::Ordering {
    (a.0, a.1).cmp(&(b.0, b.1))
}

#[cfg(test)]
mod tests;
