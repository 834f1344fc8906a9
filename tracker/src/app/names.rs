//! Names belong to sharers. A file id covers the content (size, chunk size, chunk hashes),
//! not the name, so the first announcer must not name a file for everyone: each peer that
//! shares a file names its own listing (its shared holding's `name`), and a file is listed
//! (searched, resolved) under every name a current sharer gives it. Once no sharer is left
//! (replicas or downloads only) it is listed under the last name known, which the entry
//! keeps as its manifest's name and [`save_last_name`] writes to the files row.
//!
//! Where one name must stand for a file (Locate, Resolve by id, the REST file) it is the
//! caller's own if it shares the file, else the one most sharers use. Sharers are counted
//! by account, so one account's many peers weigh as one; ties go to the name used longest
//! (as far as this tracker has seen), then to name order. Search shows a file once, under
//! the strongest of its names that match.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use common::{FileId, FileType, Manifest, PeerId};

use super::index::{FileEntry, Holding, Index, Search};
use super::search::page;
use crate::db::writer::WriteOp;
use crate::model::{FileRecord, HoldingKind};

/// One peer sharing under a name: its account (`None` if the index does not know the
/// peer) and since when it uses the name (Unix ms).
#[derive(Clone, Copy, Debug)]
struct Use {
    user: Option<i32>,
    since_ms: i64,
}

/// The names a file's current sharers give it.
#[derive(Debug, Default)]
pub struct SharerNames {
    by_name: BTreeMap<String, HashMap<PeerId, Use>>,
    /// The manifest was renamed to the last known name and not yet written.
    unsaved: bool,
}

/// How a file's listings changed: the index drops `gone` and adds `new`.
#[derive(Debug, Default, PartialEq)]
pub struct Relist {
    pub gone: Vec<String>,
    pub new: Vec<String>,
}

impl Holding {
    /// The name this holding lists its file under: a shared holding's own.
    pub fn sharer_name(&self) -> Option<&str> {
        match self.kind {
            HoldingKind::Shared => self.name.as_deref(),
            _ => None,
        }
    }
}

/// How strongly a name stands for its file: distinct accounts using it, then age.
fn rank(sharers: &HashMap<PeerId, Use>) -> (usize, Reverse<i64>) {
    let mut users = HashSet::new();
    let mut unknown = 0;
    let mut since = i64::MAX;
    for u in sharers.values() {
        match u.user {
            Some(id) => {
                users.insert(id);
            }
            None => unknown += 1,
        }
        since = since.min(u.since_ms);
    }
    (users.len() + unknown, Reverse(since))
}

impl SharerNames {
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The strongest of the names `pick` accepts (given each name's sharers).
    fn best(&self, pick: impl Fn(&str, &HashMap<PeerId, Use>) -> bool) -> Option<&str> {
        let mut picked = self.by_name.iter().filter(|(n, s)| pick(n, s));
        let first = picked.next()?;
        let Some(second) = picked.next() else {
            return Some(first.0);
        };
        let mut best = (first.0.as_str(), rank(first.1));
        // Names come in order, so on a tie the earlier name stays.
        for (name, sharers) in std::iter::once(second).chain(picked) {
            let r = rank(sharers);
            if r > best.1 {
                best = (name, r);
            }
        }
        Some(best.0)
    }

    /// Every name, strongest first.
    fn ordered(&self) -> Vec<&str> {
        let mut all: Vec<(&str, (usize, Reverse<i64>))> = self
            .by_name
            .iter()
            .map(|(n, s)| (n.as_str(), rank(s)))
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        all.into_iter().map(|(n, _)| n).collect()
    }

    /// Adds `peer` under `name`; true when the name is new to the file.
    fn add(&mut self, name: &str, peer: &PeerId, u: Use) -> bool {
        match self.by_name.get_mut(name) {
            Some(s) => {
                s.insert(peer.clone(), u);
                false
            }
            None => {
                self.by_name
                    .insert(name.to_string(), HashMap::from([(peer.clone(), u)]));
                true
            }
        }
    }

    /// Removes `peer` from `name`; true when no sharer uses the name any more.
    fn remove(&mut self, name: &str, peer: &PeerId) -> bool {
        let Some(s) = self.by_name.get_mut(name) else {
            return false;
        };
        s.remove(peer);
        if s.is_empty() {
            self.by_name.remove(name);
            return true;
        }
        false
    }
}

impl Relist {
    /// Drops the names both added and removed (a listing that stays).
    fn settle(mut self) -> Self {
        let both: Vec<String> = self
            .gone
            .iter()
            .filter(|n| self.new.contains(n))
            .cloned()
            .collect();
        self.gone.retain(|n| !both.contains(n));
        self.new.retain(|n| !both.contains(n));
        self
    }
}

impl FileEntry {
    /// Follows `peer`'s holding becoming `new` (`None`: going away) in the sharer names;
    /// call it before the holding map changes. `user` is the peer's account. Returns the
    /// listings to change. A sharer that keeps its name keeps its age.
    pub(super) fn rename(
        &mut self,
        peer: &PeerId,
        user: Option<i32>,
        new: Option<&Holding>,
    ) -> Relist {
        let old = self.holdings.get(peer).and_then(Holding::sharer_name);
        let name = new.and_then(Holding::sharer_name);
        if old == name {
            return Relist::default();
        }
        let old = old.map(str::to_owned);
        let fell_back = self.names.is_empty();
        let mut r = Relist::default();
        if let Some(o) = &old
            && self.names.remove(o, peer)
        {
            r.gone.push(o.clone());
        }
        if let (Some(n), Some(h)) = (name, new) {
            let u = Use {
                user,
                since_ms: h.updated_at_ms,
            };
            if self.names.add(n, peer, u) {
                r.new.push(n.to_string());
            }
        }
        match (fell_back, self.names.is_empty()) {
            (true, false) => r.gone.push(self.manifest.name.clone()),
            (false, true) => {
                // The last sharer left: its name is the last one known.
                if let Some(last) = old
                    && last != self.manifest.name
                {
                    self.manifest = Arc::new(Manifest {
                        name: last,
                        ..(*self.manifest).clone()
                    });
                    self.names.unsaved = true;
                }
                r.new.push(self.manifest.name.clone());
            }
            _ => {}
        }
        r.settle()
    }

    /// The names it is listed under: its sharers', or the last known one.
    pub fn listed(&self) -> Vec<&str> {
        if self.names.is_empty() {
            return vec![self.manifest.name.as_str()];
        }
        self.names.by_name.keys().map(String::as_str).collect()
    }

    /// The strongest listed name that `pick` accepts.
    pub fn best_listed(&self, pick: impl Fn(&str) -> bool) -> Option<&str> {
        if self.names.is_empty() {
            let last = self.manifest.name.as_str();
            return pick(last).then_some(last);
        }
        self.names.best(|n, _| pick(n))
    }

    /// The name that stands for it: the one most sharers use, or the last known one.
    pub fn display_name(&self) -> &str {
        self.names.best(|_, _| true).unwrap_or(&self.manifest.name)
    }

    /// The name `user` sees: their own if one of their peers shares it, else
    /// [`FileEntry::display_name`].
    pub fn name_for(&self, user: i32) -> &str {
        self.names
            .best(|_, s| s.values().any(|u| u.user == Some(user)))
            .unwrap_or_else(|| self.display_name())
    }

    /// Every listed name, strongest first.
    pub fn all_names(&self) -> Vec<String> {
        self.listed_ordered()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    fn listed_ordered(&self) -> Vec<&str> {
        if self.names.is_empty() {
            return vec![self.manifest.name.as_str()];
        }
        self.names.ordered()
    }
}

impl Index {
    /// Applies a file's listing changes to the name index.
    pub(super) fn relist(&mut self, id: FileId, r: Relist) {
        for n in &r.gone {
            self.names.remove(&id, n);
        }
        for n in &r.new {
            self.names.insert(id, n);
        }
    }

    /// Files with a name containing every term (already lowercased), of the type if given:
    /// one row per file, under the strongest of its names that match, ordered by that name
    /// then id. A collection also matches a term of three bytes or more in one of its
    /// entries' paths (`search::paths`). Returns one page and the total.
    ///
    /// Without terms this walks the listings in order and stops once the page is full (the
    /// total is a count kept on insert and remove); with terms the name index
    /// ([`super::search::NameIndex`]) narrows the listings to look at.
    pub fn search(&self, q: &Search) -> (Vec<(&FileEntry, &str)>, usize) {
        if !q.terms.is_empty() {
            // A common word matches a good part of the files, and every match is counted:
            // the listings are grouped by id (a file listed under several matching names is
            // one row) with the ids' first eight bytes as the key, which orders nearly every
            // pair of SHA-256s without a full compare, and a file is looked up only when it
            // has several matching names or makes the page.
            let mut hits = self.names.find(&q.terms, q.file_type);
            hits.sort_unstable_by(|a, b| {
                (id_prefix(&a.0).cmp(&id_prefix(&b.0))).then_with(|| a.0.cmp(&b.0))
            });
            let rows: Vec<(&str, FileId, Option<&FileEntry>)> = hits
                .chunk_by(|a, b| a.0 == b.0)
                .filter_map(|g| match g {
                    [one] => Some((one.1, one.0, None)),
                    _ => {
                        let f = self.files.get(&g[0].0)?;
                        let name = f.best_listed(|n| g.iter().any(|h| h.1 == n))?;
                        Some((name, f.id, Some(f)))
                    }
                })
                .collect();
            let total = rows.len();
            let page = page(rows, q.offset, q.limit);
            let page = page
                .into_iter()
                .filter_map(|(n, id, f)| Some((f.or_else(|| self.files.get(&id))?, n)))
                .collect();
            return (page, total);
        }
        let total = match q.file_type {
            None => self.files.len(),
            Some(t) => self.names.count_of(t),
        };
        // Only a collection is not of its names' type: a name of another type than the one
        // asked for is skipped unread, unless collections are asked for.
        let maybe = |n: &str| {
            q.file_type
                .is_none_or(|t| t == FileType::Collection || FileType::from_name(n) == t)
        };
        let page = self
            .names
            .ordered()
            .filter(|&(name, _)| maybe(name))
            .filter_map(|(name, id)| {
                let f = self.files.get(&id)?;
                let fits = |n: &str| q.file_type.is_none_or(|t| f.file_type(n) == t);
                (fits(name) && f.best_listed(fits) == Some(name)).then_some((f, name))
            })
            .skip(q.offset)
            .take(q.limit)
            .collect();
        (page, total)
    }

    /// Every match of a term: by id prefix (6+ hex digits, case-insensitive, surrounding
    /// whitespace ignored, as a pasted id often has), then by exact name as given (a name
    /// may begin or end with spaces) among every sharer's names, without duplicates. Each
    /// comes with the name it matched (`None` for an id).
    pub fn resolve(&self, term: &str) -> Vec<(&FileEntry, Option<&str>)> {
        let mut out: Vec<(&FileEntry, Option<&str>)> = Vec::new();
        let lower = term.trim().to_ascii_lowercase();
        if (6..=64).contains(&lower.len()) && lower.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.extend(self.by_id_prefix(&lower).into_iter().map(|f| (f, None)));
        }
        for (name, id) in self.names.exact(term) {
            if let Some(f) = self.files.get(&id)
                && !out.iter().any(|o| o.0.id == id)
            {
                out.push((f, Some(name)));
            }
        }
        out
    }
}

/// The first eight bytes of an id, as a sort key.
fn id_prefix(id: &FileId) -> u64 {
    let b = &id.0.0;
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// The write that keeps a file's last known name (the manifest's, renamed when its last
/// sharer left) over a restart, if it is not written yet. Callers that remove a sharer's
/// holding queue it.
pub(super) fn save_last_name(ix: &mut Index, file: &FileId) -> Option<WriteOp> {
    let f = ix.files.get_mut(file)?;
    if !std::mem::take(&mut f.names.unsaved) {
        return None;
    }
    Some(WriteOp::FileUpsert(FileRecord {
        manifest: (*f.manifest).clone(),
        created_at_ms: f.created_at_ms,
    }))
}

#[cfg(test)]
mod tests {
    use common::{Bitfield, Sha256Digest};

    use super::*;
    use crate::app::index::{PeerEntry, Search};
    use crate::model::PeerRecord;

    fn add_file(ix: &mut Index, name: &str) -> FileId {
        let m =
            Manifest::from_parts(name.into(), 1, Sha256Digest([7; 32]), 1 << 20, &[7; 32]).unwrap();
        let e = FileEntry::new(FileRecord {
            manifest: m,
            created_at_ms: 0,
        });
        let id = e.id;
        ix.insert_file(e);
        id
    }

    fn add_peer(ix: &mut Index, n: u8, user_id: i32) -> PeerId {
        let rec = PeerRecord {
            id: PeerId::from_random([n; 16]),
            user_id,
            addr: String::new(),
            storage_quota: 0,
            storage_used: 0,
            last_seen_ms: None,
            created_at_ms: 0,
        };
        let id = rec.id.clone();
        let user = format!("u{user_id}");
        ix.peers.insert(id.clone(), PeerEntry { rec, user });
        id
    }

    fn share(ix: &mut Index, f: FileId, p: &PeerId, name: &str, now: i64) {
        let mut h = Holding::claimed(HoldingKind::Shared, Bitfield::full(1), now);
        h.name = Some(name.into());
        ix.set_holding(f, p, h);
    }

    fn found(ix: &Index, term: &str) -> Vec<String> {
        let q = Search {
            terms: vec![term.to_lowercase()],
            limit: 10,
            ..Search::default()
        };
        ix.search(&q).0.iter().map(|r| r.1.to_string()).collect()
    }

    #[test]
    fn should_list_a_file_under_each_sharers_own_name() {
        let mut ix = Index::new(1000);
        let hostile = add_peer(&mut ix, 1, 1);
        let alice = add_peer(&mut ix, 2, 2);
        let f = add_file(&mut ix, "../../../tmp/x");
        share(&mut ix, f, &hostile, "../../../tmp/x", 10);
        share(&mut ix, f, &alice, "holiday.mkv", 20);
        let e = &ix.files[&f];
        assert_eq!(e.name_for(2), "holiday.mkv");
        assert_eq!(e.name_for(1), "../../../tmp/x");
        // One sharer each: the older name stands for the file, for anyone else.
        assert_eq!(e.name_for(3), "../../../tmp/x");
        assert_eq!(found(&ix, "holiday"), ["holiday.mkv"]);
        assert_eq!(found(&ix, "tmp"), ["../../../tmp/x"]);
        assert_eq!(ix.resolve("holiday.mkv")[0].1, Some("holiday.mkv"));

        // A second account with the same name outweighs the first announcer.
        let carol = add_peer(&mut ix, 3, 3);
        share(&mut ix, f, &carol, "holiday.mkv", 30);
        assert_eq!(ix.files[&f].display_name(), "holiday.mkv");
        assert_eq!(ix.files[&f].all_names(), ["holiday.mkv", "../../../tmp/x"]);
        // Many peers of one account weigh as one.
        for n in 10..15 {
            let p = add_peer(&mut ix, n, 1);
            share(&mut ix, f, &p, "../../../tmp/x", 40);
        }
        assert_eq!(ix.files[&f].display_name(), "holiday.mkv");

        // A re-announce renames only that sharer's listing; the name leaves with it.
        share(&mut ix, f, &carol, "trip.mkv", 50);
        assert_eq!(found(&ix, "holiday"), ["holiday.mkv"]);
        assert_eq!(found(&ix, "trip"), ["trip.mkv"]);
        ix.take_holding(&f, &alice);
        assert!(found(&ix, "holiday").is_empty());
        assert!(ix.resolve("holiday.mkv").is_empty());
    }

    #[test]
    fn should_fall_back_to_the_last_sharers_name_and_save_it() {
        let mut ix = Index::new(1000);
        let hostile = add_peer(&mut ix, 1, 1);
        let alice = add_peer(&mut ix, 2, 2);
        let getter = add_peer(&mut ix, 3, 3);
        let f = add_file(&mut ix, "x.bin");
        share(&mut ix, f, &hostile, "x.bin", 10);
        share(&mut ix, f, &alice, "holiday.mkv", 20);
        let download = Holding::claimed(HoldingKind::Downloaded, Bitfield::full(1), 30);
        ix.set_holding(f, &getter, download);
        ix.take_holding(&f, &hostile);
        assert!(found(&ix, "x.bin").is_empty(), "no stale name");
        assert!(save_last_name(&mut ix, &f).is_none());
        ix.take_holding(&f, &alice);
        // Downloads only: the last known name, which is the last sharer's.
        assert_eq!(ix.files[&f].display_name(), "holiday.mkv");
        assert_eq!(ix.files[&f].name_for(1), "holiday.mkv");
        assert_eq!(found(&ix, "holiday"), ["holiday.mkv"]);
        assert_eq!(ix.resolve("holiday.mkv").len(), 1);
        let Some(WriteOp::FileUpsert(rec)) = save_last_name(&mut ix, &f) else {
            panic!("the last known name is written");
        };
        assert_eq!((rec.manifest.name.as_str(), rec.id()), ("holiday.mkv", f));
        assert!(save_last_name(&mut ix, &f).is_none(), "once");
        // A new sharer's name replaces the fallback listing.
        share(&mut ix, f, &hostile, "y.bin", 40);
        assert!(found(&ix, "holiday").is_empty());
        assert_eq!(ix.files[&f].all_names(), ["y.bin"]);
        ix.remove_file(&f);
        assert!(found(&ix, "y.bin").is_empty());
    }
}
