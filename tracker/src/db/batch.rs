//! The rows the batch writer persists: one [`WriteOp`] per change, coalesced into a
//! [`Batch`] (the last op per row wins) and written in one transaction.

use std::collections::{HashMap, HashSet};

use common::{FileId, PeerId};

use crate::model::{CollectionRecord, FileRecord, HoldingRecord, PeerRecord, TaskRecord};

/// One change to persist.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Insert or update a peer (owner and creation time are kept on update).
    Peer(PeerRecord),
    /// Insert a file unless it exists.
    FileUpsert(FileRecord),
    /// Delete a file with its collection row, if any.
    FileDelete(FileId),
    /// Insert a collection's listing unless it is stored (its file id fixes its content),
    /// and mark its file a collection.
    Collection(CollectionRecord),
    /// Insert or replace one holding.
    Holding(HoldingRecord),
    HoldingDelete(PeerId, FileId),
    /// Delete every holding of a peer (the start of a full sync).
    ClearHoldings(PeerId),
    /// Insert or update a replication task.
    Task(TaskRecord),
    TaskDelete(u64),
}

/// The row (or rows) an op writes.
#[derive(Debug, PartialEq)]
pub enum RowKey {
    Peer(PeerId),
    File(FileId),
    /// A file's collection row (which deleting the file deletes too).
    Collection(FileId),
    Holding(PeerId, FileId),
    /// Every holding of a peer.
    Holdings(PeerId),
    Task(u64),
}

impl WriteOp {
    pub fn key(&self) -> RowKey {
        match self {
            WriteOp::Peer(p) => RowKey::Peer(p.id.clone()),
            WriteOp::FileUpsert(f) => RowKey::File(f.id()),
            WriteOp::FileDelete(id) => RowKey::File(*id),
            WriteOp::Collection(c) => RowKey::Collection(c.file_id),
            WriteOp::Holding(h) => RowKey::Holding(h.peer_id.clone(), h.file_id),
            WriteOp::HoldingDelete(p, f) => RowKey::Holding(p.clone(), *f),
            WriteOp::ClearHoldings(p) => RowKey::Holdings(p.clone()),
            WriteOp::Task(t) => RowKey::Task(t.id),
            WriteOp::TaskDelete(id) => RowKey::Task(*id),
        }
    }
}

impl RowKey {
    /// Whether the two write a row in common.
    pub fn overlaps(&self, other: &RowKey) -> bool {
        match (self, other) {
            (RowKey::Holdings(p), RowKey::Holding(q, _) | RowKey::Holdings(q))
            | (RowKey::Holding(q, _), RowKey::Holdings(p)) => p == q,
            (RowKey::File(f), RowKey::Collection(g)) | (RowKey::Collection(g), RowKey::File(f)) => {
                f == g
            }
            (a, b) => a == b,
        }
    }
}

/// Coalesced changes, written in one transaction in this order: peers, new files,
/// collections, cleared peers' holdings, holding upserts and deletes, deleted files (with
/// their collections), task upserts and deletes.
#[derive(Debug, Default)]
pub struct Batch {
    pub peers: HashMap<PeerId, PeerRecord>,
    /// `None` deletes the file.
    pub files: HashMap<FileId, Option<FileRecord>>,
    /// Listings to store; a later delete of the file drops its entry here.
    pub collections: HashMap<FileId, CollectionRecord>,
    pub cleared: HashSet<PeerId>,
    /// `None` deletes the holding.
    pub holdings: HashMap<(PeerId, FileId), Option<HoldingRecord>>,
    /// `None` deletes the task.
    pub tasks: HashMap<u64, Option<TaskRecord>>,
    ops: usize,
}

impl Batch {
    /// Folds `op` in; the last op for a row wins.
    pub fn push(&mut self, op: WriteOp) {
        self.ops += 1;
        match op {
            WriteOp::Peer(p) => {
                self.peers.insert(p.id.clone(), p);
            }
            WriteOp::FileUpsert(f) => {
                self.files.insert(f.id(), Some(f));
            }
            WriteOp::FileDelete(id) => {
                self.collections.remove(&id);
                self.files.insert(id, None);
            }
            WriteOp::Collection(c) => {
                self.collections.insert(c.file_id, c);
            }
            WriteOp::Holding(h) => {
                self.holdings
                    .insert((h.peer_id.clone(), h.file_id), Some(h));
            }
            WriteOp::HoldingDelete(p, f) => {
                self.holdings.insert((p, f), None);
            }
            WriteOp::ClearHoldings(p) => {
                // Earlier changes to this peer's holdings are superseded by the clear, which
                // runs before the holding changes that follow it.
                self.holdings.retain(|(peer, _), _| *peer != p);
                self.cleared.insert(p);
            }
            WriteOp::Task(t) => {
                self.tasks.insert(t.id, Some(t));
            }
            WriteOp::TaskDelete(id) => {
                self.tasks.insert(id, None);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ops == 0
    }

    /// Ops folded in since the last write.
    pub fn ops(&self) -> usize {
        self.ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HoldingKind;

    fn peer(n: u8) -> PeerId {
        PeerId::from_random([n; 16])
    }

    fn file(n: u8) -> FileId {
        FileId(common::Sha256Digest([n; 32]))
    }

    fn holding(p: u8, f: u8, have: u8) -> HoldingRecord {
        HoldingRecord {
            peer_id: peer(p),
            file_id: file(f),
            kind: HoldingKind::Downloaded,
            have: vec![have],
            updated_at_ms: 0,
            verified: Vec::new(),
            name: None,
        }
    }

    fn seen(p: u8, at: i64) -> PeerRecord {
        PeerRecord {
            id: peer(p),
            user_id: 1,
            addr: format!("h:{at}"),
            storage_quota: 0,
            storage_used: 0,
            last_seen_ms: Some(at),
            created_at_ms: 0,
        }
    }

    #[test]
    fn should_keep_only_the_last_update_of_a_row() {
        let mut b = Batch::default();
        for at in 0..10 {
            b.push(WriteOp::Peer(seen(1, at)));
        }
        b.push(WriteOp::Holding(holding(1, 1, 0x80)));
        b.push(WriteOp::Holding(holding(1, 1, 0xc0)));
        b.push(WriteOp::Holding(holding(2, 1, 0x80)));
        assert_eq!(b.ops(), 13);
        assert_eq!(b.peers.len(), 1);
        assert_eq!(b.peers[&peer(1)].last_seen_ms, Some(9));
        assert_eq!(b.holdings.len(), 2);
        assert_eq!(
            b.holdings[&(peer(1), file(1))]
                .as_ref()
                .map(|h| h.have.clone()),
            Some(vec![0xc0])
        );
        b.push(WriteOp::HoldingDelete(peer(1), file(1)));
        assert!(b.holdings[&(peer(1), file(1))].is_none());
    }

    #[test]
    fn should_drop_earlier_holdings_of_a_cleared_peer_but_keep_later_ones() {
        let mut b = Batch::default();
        b.push(WriteOp::Holding(holding(1, 1, 0x80)));
        b.push(WriteOp::Holding(holding(2, 1, 0x80)));
        b.push(WriteOp::ClearHoldings(peer(1)));
        b.push(WriteOp::Holding(holding(1, 2, 0x80)));
        assert!(b.cleared.contains(&peer(1)));
        assert!(!b.holdings.contains_key(&(peer(1), file(1))));
        assert!(b.holdings.contains_key(&(peer(1), file(2))));
        assert!(b.holdings.contains_key(&(peer(2), file(1))));
    }

    #[test]
    fn should_see_a_peer_clear_overlap_its_holdings_only() {
        let clear = WriteOp::ClearHoldings(peer(1)).key();
        assert!(clear.overlaps(&WriteOp::Holding(holding(1, 2, 0)).key()));
        assert!(
            WriteOp::HoldingDelete(peer(1), file(2))
                .key()
                .overlaps(&clear)
        );
        assert!(!clear.overlaps(&WriteOp::Holding(holding(2, 2, 0)).key()));
        assert!(!clear.overlaps(&WriteOp::Peer(seen(1, 0)).key()));
        assert!(WriteOp::TaskDelete(7).key().overlaps(&RowKey::Task(7)));
    }

    #[test]
    fn should_let_a_delete_override_an_earlier_file_insert() {
        let m = common::Manifest::from_parts(
            "a".into(),
            1,
            common::Sha256Digest([0; 32]),
            common::manifest::MIN_CHUNK_SIZE,
            &[0; 32],
        )
        .unwrap();
        let f = FileRecord {
            manifest: m,
            created_at_ms: 0,
        };
        let id = f.id();
        let mut b = Batch::default();
        b.push(WriteOp::FileUpsert(f));
        let listing = CollectionRecord {
            file_id: id,
            listing: bytes::Bytes::from_static(b"tessera-collection/1\n"),
        };
        b.push(WriteOp::Collection(listing.clone()));
        assert!(b.collections.contains_key(&id));
        b.push(WriteOp::FileDelete(id));
        assert!(b.files[&id].is_none());
        assert!(
            b.collections.is_empty(),
            "the delete takes the collection with it"
        );
        // A stale delete of the file must be written before a collection row of it.
        let key = WriteOp::Collection(listing).key();
        assert!(key.overlaps(&WriteOp::FileDelete(id).key()));
        assert!(WriteOp::FileDelete(id).key().overlaps(&key));
        assert!(!key.overlaps(&WriteOp::FileDelete(file(9)).key()));
    }
}
