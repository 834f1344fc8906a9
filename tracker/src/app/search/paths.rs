//! The entry paths of collections, searched after their names. A term of three bytes or
//! more matches a collection when it is in one of its names or in the path of one of its
//! entries (a directory's or a file's, from the top of the collection); shorter terms
//! match names only, as they would otherwise have to scan every collection's paths.
//!
//! Each collection's paths are one lowercased text, a path a line ([`PathText`], made
//! outside the index lock), with a trigram inverted index over the collections: one slot
//! per collection, whatever its names. A search looks at the collections holding every
//! trigram of a term and scans only their text for it.
//!
//! **Bound:** a listing is at most 8 MiB (100,000 entries), so its text is about as much
//! (a lowercase letter may be longer than its capital), and its distinct trigrams are
//! fewer than its bytes: each is kept twice, in the collection's own list (to unlist it)
//! and in one posting list, 4 bytes each. Real listings repeat most of their trigrams.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use common::FileId;
use common::collection::Collection;

use super::{GRAM, NameIndex, all_of, pack, post, trigrams, unpost};

/// Texts from this size collect their trigrams in a bitmap of every trigram (2 MiB) rather
/// than by sorting one entry per byte.
const BITMAP_FROM: usize = 1 << 16;

/// A collection's entry paths as the search reads them.
#[derive(Debug)]
pub struct PathText {
    /// Every entry's path, lowercased, each followed by a line end (which no term has).
    text: Box<str>,
    /// The distinct trigrams of the paths (none across a line end), ascending.
    grams: Vec<u32>,
}

impl PathText {
    /// The text and trigrams of `c`'s paths: up to a few tens of milliseconds for the
    /// largest listing, so callers make it before they take the index lock.
    pub fn new(c: &Collection) -> Self {
        let mut text = String::new();
        for e in c.entries() {
            text.push_str(&e.path().as_str().to_lowercase());
            text.push('\n');
        }
        let lines = || text.split('\n').map(str::as_bytes);
        let grams = if text.len() < BITMAP_FROM {
            let mut g: Vec<u32> = lines().flat_map(|l| l.windows(GRAM).map(pack)).collect();
            g.sort_unstable();
            g.dedup();
            g
        } else {
            let mut seen = vec![0u64; (1 << 24) / 64];
            for w in lines().flat_map(|l| l.windows(GRAM)) {
                let g = pack(w) as usize;
                seen[g / 64] |= 1 << (g % 64);
            }
            let mut g = Vec::new();
            for (i, &word) in seen.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    g.push((i as u32) << 6 | bits.trailing_zeros());
                    bits &= bits - 1;
                }
            }
            g
        };
        Self {
            text: text.into(),
            grams,
        }
    }

    /// Whether `term` (lowercased, without a line end) is in an entry's path; always false
    /// for a term shorter than three bytes.
    pub fn contains(&self, term: &str) -> bool {
        term.len() >= GRAM && self.text.contains(term)
    }
}

/// The collections' paths with their trigram postings.
#[derive(Debug, Default)]
pub struct PathIndex {
    slots: Vec<Option<(FileId, Arc<PathText>)>>,
    free: Vec<u32>,
    slot_of: HashMap<FileId, u32>,
    /// Packed trigram → the slots of the collections whose paths contain it, ascending.
    postings: HashMap<u32, Vec<u32>>,
}

impl PathIndex {
    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    pub fn contains(&self, id: &FileId) -> bool {
        self.slot_of.contains_key(id)
    }

    /// Records `id`'s paths, replacing any it had.
    pub fn insert(&mut self, id: FileId, paths: Arc<PathText>) {
        self.remove(&id);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 collections")
            }
        };
        for &g in &paths.grams {
            post(&mut self.postings, g, slot);
        }
        self.slots[slot as usize] = Some((id, paths));
        self.slot_of.insert(id, slot);
    }

    /// Forgets `id`'s paths; false if it had none.
    pub fn remove(&mut self, id: &FileId) -> bool {
        let Some(slot) = self.slot_of.remove(id) else {
            return false;
        };
        let (_, paths) = self.slots[slot as usize]
            .take()
            .expect("slot_of names occupied slots");
        for &g in &paths.grams {
            unpost(&mut self.postings, g, slot);
        }
        self.free.push(slot);
        true
    }

    /// The collections with `term` (lowercased) in an entry's path.
    fn matching(&self, term: &str) -> HashSet<FileId> {
        if term.len() < GRAM {
            return HashSet::new();
        }
        (all_of(&self.postings, &trigrams(term)).into_iter())
            .filter_map(|s| self.slots[s as usize].as_ref())
            .filter(|(_, p)| p.contains(term))
            .map(|(id, _)| *id)
            .collect()
    }
}

impl NameIndex {
    /// The listings of collections that match `terms` only with their paths: each term in
    /// the listing's name or in the collection's paths, and some term not in the name
    /// (listings with every term in the name are found by name).
    pub(super) fn by_paths(&self, terms: &[String]) -> Vec<(FileId, &str)> {
        if self.paths.is_empty() {
            return Vec::new();
        }
        let found: Vec<HashSet<FileId>> = terms.iter().map(|t| self.paths.matching(t)).collect();
        let mut ids: Vec<FileId> = found.iter().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut out = Vec::new();
        for id in ids {
            let slots = self.slots_of.get(&id).into_iter().flatten();
            for n in slots.filter_map(|&s| self.slots[s as usize].as_ref()) {
                let in_name: Vec<bool> = terms
                    .iter()
                    .map(|t| n.name_lower.contains(t.as_str()))
                    .collect();
                let all =
                    (in_name.iter().zip(&found)).all(|(&name, paths)| name || paths.contains(&id));
                if all && in_name.contains(&false) {
                    out.push((id, &*n.name));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use common::collection::{Entry, RelPath};

    use super::*;

    fn collection(paths: &[&str]) -> Collection {
        Collection::new(
            paths
                .iter()
                .map(|p| Entry::Dir(RelPath::parse(p).unwrap()))
                .collect(),
        )
        .unwrap()
    }

    fn id(n: u8) -> FileId {
        FileId(common::Sha256Digest([n; 32]))
    }

    fn found(ix: &NameIndex, terms: &[&str]) -> Vec<(FileId, String)> {
        let terms: Vec<String> = terms.iter().map(|t| t.to_lowercase()).collect();
        let mut out: Vec<(FileId, String)> = (ix.find(&terms, None).into_iter())
            .map(|(id, n)| (id, n.to_string()))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn should_find_a_collection_by_the_paths_inside_it() {
        let mut ix = NameIndex::default();
        ix.insert(id(1), "photos");
        ix.insert(id(2), "holiday notes.txt");
        ix.set_paths(
            id(1),
            Arc::new(PathText::new(&collection(&[
                "Holiday/A.jpg",
                "holiday",
                "x/Trip",
            ]))),
        );
        assert_eq!(ix.count_of(common::FileType::Collection), 1);
        let photos = || (id(1), "photos".to_string());
        assert_eq!(found(&ix, &["a.jpg"]), [photos()]);
        assert_eq!(
            found(&ix, &["holiday"]),
            [photos(), (id(2), "holiday notes.txt".into())]
        );
        // Each term in the name or in a path, not necessarily the same one.
        assert_eq!(found(&ix, &["phot", "trip"]), [photos()]);
        assert_eq!(found(&ix, &["a.jpg", "trip"]), [photos()]);
        assert!(found(&ix, &["a.jpg", "nowhere"]).is_empty());
        // Found by name alone once only.
        assert_eq!(found(&ix, &["photos"]), [photos()]);
        // Short terms match names only; a line end joins no two paths.
        assert!(found(&ix, &["/a"]).is_empty());
        assert!(found(&ix, &["jpg\nh"]).is_empty());
        assert!(found(&ix, &["jpgh"]).is_empty());
        // The type filter: every listing of a collection is a collection.
        let terms = vec!["holiday".to_string()];
        assert_eq!(ix.find(&terms, Some(common::FileType::Collection)).len(), 1);
        assert_eq!(ix.find(&terms, Some(common::FileType::Document)).len(), 1);
        // A new name of the collection is typed and found by paths too.
        ix.insert(id(1), "album.mp3");
        assert_eq!(ix.count_of(common::FileType::Audio), 0);
        assert_eq!(found(&ix, &["a.jpg"]).len(), 2);
        assert!(ix.remove_file(&id(1)));
        assert!(found(&ix, &["a.jpg"]).is_empty());
        assert!(ix.paths.is_empty() && ix.paths.postings.is_empty());
        assert_eq!(ix.count_of(common::FileType::Collection), 0);
    }

    #[test]
    fn should_collect_the_same_trigrams_by_bitmap_and_by_sorting() {
        let paths: Vec<String> = (0..3000)
            .map(|i| format!("Dir {}/Ünïcödé {i:05} ΣΑΣ.jpg", i % 7))
            .collect();
        let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
        let big = PathText::new(&collection(&refs));
        assert!(big.text.len() >= BITMAP_FROM);
        let mut sorted: Vec<u32> = (big.text.split('\n'))
            .flat_map(|l| l.as_bytes().windows(GRAM).map(pack))
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(big.grams, sorted);
        assert!(big.contains("dir 0/ünïcödé 00042"), "lowercased");
        assert!(!big.contains("Dir"));
    }
}
