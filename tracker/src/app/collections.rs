//! Collections (shared folders). A collection is an ordinary file (manifest, chunks,
//! holdings, replication and audits as for any file) whose content is a listing
//! (`common::collection`) and whose manifest name is the folder's.
//!
//! Its sharer sends the listing with the announce; before anything is written the tracker
//! checks it against the manifest ([`check_listing`]: its size, each chunk's SHA-256 and
//! the whole's, so it is exactly the content getters fetch) and parses it. The announce
//! then commits the listing (a `collections` row) in the transaction of its file and
//! holding; the row goes with its file's, and the change feed names the new collection,
//! whose listing other trackers read from that row. In memory a collection's
//! [`FileEntry`](super::index::FileEntry) carries the lowercased paths of its entries
//! ([`PathText`]), by which search finds it (`search::paths`); the parsed entries
//! are not kept (nothing on the tracker reads them), and the listing is served as stored.
//! A file known as a collection stays one (its id fixes its content); an announce with a
//! valid listing makes a plain one a collection.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use common::collection::{Collection, CollectionError, MAX_LISTING};
use common::{FileId, Manifest, Sha256Digest};

use super::TrackerService;
use super::index::Index;
use super::queries::by_unique_prefix;
use super::search::PathText;
use crate::Error;

/// Why a listing is refused because it is not the file's content.
fn mismatch(why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "the collection listing does not match its manifest: {why}"
    ))
}

/// The cheap checks of a listing sent with `manifest`: at most [`MAX_LISTING`] bytes, and
/// as many as the manifest says (so it has a few chunks at most).
fn check_size(manifest: &Manifest, listing: &[u8]) -> Result<(), Error> {
    if listing.len() > MAX_LISTING {
        return Err(Error::invalid(
            CollectionError::TooBig(listing.len()).to_string(),
        ));
    }
    if listing.len() as u64 != manifest.size {
        return Err(mismatch(format_args!(
            "{} bytes where the manifest says {}",
            listing.len(),
            manifest.size
        )));
    }
    Ok(())
}

/// Checks that `listing` is the content `manifest` describes (size, each chunk's SHA-256,
/// the whole's) and a valid listing, and returns it parsed.
///
/// # Errors
/// `InvalidArgument` saying which.
pub fn check_listing(manifest: &Manifest, listing: &[u8]) -> Result<Collection, Error> {
    check_size(manifest, listing)?;
    for i in 0..manifest.chunk_count() {
        let r = manifest.chunk_range(i);
        if !manifest.check_chunk(i, &listing[r.start as usize..r.end as usize]) {
            return Err(mismatch(format_args!("chunk {i} has another SHA-256")));
        }
    }
    if Sha256Digest::of(listing) != manifest.sha256 {
        return Err(mismatch("the whole has another SHA-256"));
    }
    Collection::parse(listing)
        .map_err(|e| Error::invalid(format!("the collection listing is not valid: {e}")))
}

/// [`check_listing`] and the collection's search text off the async threads (an 8 MiB
/// listing takes some milliseconds to hash, parse and index).
///
/// # Errors
/// `InvalidArgument` for a listing that is refused.
pub(super) async fn checked(manifest: &Manifest, listing: Bytes) -> Result<Arc<PathText>, Error> {
    // Before the copy of the manifest: it has a few chunks once its size is a listing's.
    check_size(manifest, &listing)?;
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        check_listing(&manifest, &listing).map(|c| Arc::new(PathText::new(&c)))
    })
    .await
    .map_err(|e| Error::Internal(format!("checking a collection listing: {e}")))?
}

/// Stored listings, parsed into their search texts (call it off the async threads); one
/// that does not parse is skipped with a warning, and its file stays a plain file here.
pub(super) fn parse_stored(rows: Vec<(FileId, Vec<u8>)>) -> HashMap<FileId, Arc<PathText>> {
    rows.into_iter()
        .filter_map(|(id, listing)| match Collection::parse(&listing) {
            Ok(c) => Some((id, Arc::new(PathText::new(&c)))),
            Err(e) => {
                tracing::warn!(file = %id, cause = %e, "skipping a stored collection whose listing does not parse");
                None
            }
        })
        .collect()
}

impl Index {
    /// Makes a known file a collection whose entries have `paths` (from its listing, which
    /// must be its content); true when it was not one yet. Its listings (names) become of
    /// type `collection`, and it is found by its entries' paths too.
    pub fn set_collection(&mut self, id: FileId, paths: Arc<PathText>) -> bool {
        let Some(f) = self.files.get_mut(&id) else {
            return false;
        };
        if f.collection.is_some() {
            return false;
        }
        self.names.set_paths(id, paths.clone());
        f.collection = Some(paths);
        true
    }
}

impl TrackerService {
    /// The listing of a collection by full id or unique id prefix, as stored: the file's
    /// exact content.
    ///
    /// # Errors
    /// `InvalidArgument` for text that is not 6–64 hex digits, `NotFound` for no match, an
    /// ambiguous prefix or a file that is not a collection, `Database` when the read fails.
    pub async fn collection_listing(&self, id: &str) -> Result<Vec<u8>, Error> {
        let not_one = |id: FileId| Error::not_found(format!("file {id} is not a collection"));
        let file = {
            let ix = self.index();
            let f = by_unique_prefix(&ix, id)?;
            if f.collection.is_none() {
                return Err(not_one(f.id));
            }
            f.id
        };
        // Forgotten since (withdrawn): no row.
        self.inner
            .store
            .collection_listing(&file)
            .await?
            .ok_or_else(|| not_one(file))
    }
}

#[cfg(test)]
mod tests {
    use common::collection::{Entry, RelPath};
    use common::manifest::hash_bytes;

    use super::*;

    fn listing(paths: &[&str]) -> Vec<u8> {
        let entries = paths
            .iter()
            .map(|p| Entry::File {
                path: RelPath::parse(p).unwrap(),
                id: FileId(Sha256Digest([7; 32])),
                size: 3,
            })
            .collect();
        Collection::new(entries).unwrap().encode()
    }

    fn refused(m: &Manifest, bytes: &[u8]) -> String {
        match check_listing(m, bytes) {
            Err(Error::InvalidArgument(msg)) => msg,
            other => panic!("not refused as invalid: {other:?}"),
        }
    }

    #[test]
    fn should_accept_exactly_the_content_of_the_manifest() {
        let bytes = listing(&["holiday/a.jpg", "b.txt"]);
        let m = hash_bytes(&bytes, "photos".into());
        let c = check_listing(&m, &bytes).unwrap();
        assert_eq!(c.files().count(), 2);

        let mut other = bytes.clone();
        *other.last_mut().unwrap() = b'x';
        let msg = refused(&m, &other);
        assert!(msg.contains("does not match its manifest"), "{msg}");
        let msg = refused(&m, &bytes[..bytes.len() - 1]);
        assert!(msg.contains("does not match its manifest"), "{msg}");
        // The chunks match but the whole's SHA-256 is another.
        let wrong_whole = Manifest {
            sha256: Sha256Digest([0; 32]),
            ..m.clone()
        };
        assert!(refused(&wrong_whole, &bytes).contains("the whole"));
    }

    #[test]
    fn should_refuse_a_listing_that_does_not_parse_or_is_too_big() {
        let evil = format!(
            "{}f\t{}\t1\t../x\n",
            common::collection::HEADER,
            FileId(Sha256Digest([7; 32]))
        )
        .into_bytes();
        let msg = refused(&hash_bytes(&evil, "evil".into()), &evil);
        assert!(msg.contains("is not valid") && msg.contains(".."), "{msg}");
        let plain = b"just a file\n".to_vec();
        let msg = refused(&hash_bytes(&plain, "a.txt".into()), &plain);
        assert!(msg.contains("not a collection listing"), "{msg}");
        let huge = vec![b'a'; MAX_LISTING + 1];
        let m = Manifest {
            size: huge.len() as u64,
            ..hash_bytes(b"", "big".into())
        };
        assert!(refused(&m, &huge).contains("more than"));
    }

    #[test]
    fn should_keep_a_collection_once_known() {
        let bytes = listing(&["holiday/a.jpg"]);
        let m = hash_bytes(&bytes, "photos".into());
        let mut ix = Index::new(1000);
        let entry = super::super::index::FileEntry::new(crate::model::FileRecord {
            manifest: m.clone(),
            created_at_ms: 0,
        });
        let id = entry.id;
        ix.insert_file(entry);
        let l = Arc::new(PathText::new(&check_listing(&m, &bytes).unwrap()));
        assert!(!ix.set_collection(FileId(Sha256Digest([1; 32])), l.clone()));
        assert!(ix.set_collection(id, l.clone()));
        assert!(!ix.set_collection(id, l), "once");
        let f = &ix.files[&id];
        assert_eq!(f.file_type("photos"), common::FileType::Collection);
        let q = super::super::index::Search {
            terms: vec!["a.jpg".into()],
            file_type: Some(common::FileType::Collection),
            limit: 10,
            offset: 0,
        };
        assert_eq!(ix.search(&q).1, 1);
        ix.remove_file(&id);
        assert_eq!(ix.search(&q).1, 0);
    }
}
