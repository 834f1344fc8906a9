//! Per-user limits: peer ids, shared files and their chunks, and the chunks of one new
//! manifest. With open registration anyone can make an account, so what one account may
//! make the tracker hold must be bounded; the limits are settings (`--max-peers-per-user`,
//! …) and a refusal names the one reached.
//!
//! The counts live in the index ([`Usage`]) and change with it: a peer is added or removed
//! through [`Index::insert_peer`] and [`Index::remove_peer`], and a holding's shared-ness
//! changes in `Index::set_holding`, `take_holding` and `remove_file`, so a check costs a
//! few map lookups under the lock the caller holds anyway. Peer counts are per user; files
//! and chunks per peer, summed over the user's peers at check time. They include what
//! other trackers on the database applied, so limits hold across a cluster up to the
//! feed's delay.
//!
//! Answers are bounded too: a Locate lists a random choice of at most
//! [`MAX_LOCATE_HOLDERS`] holders, however many claim a piece of the file.

use std::collections::{HashMap, HashSet};

use common::{Bitfield, FileId, PeerId};
use rand::RngExt;

use super::index::{Index, PeerEntry};
use super::{Caller, HolderView};
use crate::model::HoldingKind;
use crate::{Config, Error};

/// The limits, copied from the settings when the index is built.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub peers_per_user: u32,
    pub files_per_user: u32,
    pub chunks_per_file: u32,
    pub chunks_per_user: u64,
}

impl Default for Limits {
    /// No limit (unit tests of the index).
    fn default() -> Self {
        Self {
            peers_per_user: u32::MAX,
            files_per_user: u32::MAX,
            chunks_per_file: u32::MAX,
            chunks_per_user: u64::MAX,
        }
    }
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Self {
            peers_per_user: c.max_peers_per_user,
            files_per_user: c.max_files_per_user,
            chunks_per_file: c.max_chunks_per_file,
            chunks_per_user: c.max_chunks_per_user,
        }
    }
}

/// What one peer shares: files (holdings of kind shared) and their chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Shared {
    files: u64,
    chunks: u64,
}

/// The per-user counts the limits are checked against.
#[derive(Debug, Default)]
pub struct Usage {
    pub limits: Limits,
    /// user → the peers it owns.
    peers: HashMap<i32, HashSet<PeerId>>,
    /// peer → what it shares (absent when nothing).
    shared: HashMap<PeerId, Shared>,
}

impl Usage {
    /// Follows one holding of `peer` (of a file of `chunks` chunks) changing from shared or
    /// not (`was`) to shared or not (`is`).
    pub fn holding_changed(&mut self, peer: &PeerId, chunks: u32, was: bool, is: bool) {
        match (was, is) {
            (false, true) => {
                let s = self.shared.entry(peer.clone()).or_default();
                s.files += 1;
                s.chunks += u64::from(chunks);
            }
            (true, false) => {
                if let Some(s) = self.shared.get_mut(peer) {
                    s.files = s.files.saturating_sub(1);
                    s.chunks = s.chunks.saturating_sub(u64::from(chunks));
                    if s.files == 0 {
                        self.shared.remove(peer);
                    }
                }
            }
            _ => {}
        }
    }

    /// Whether a holding of this kind counts as shared.
    pub fn counts(kind: HoldingKind) -> bool {
        kind == HoldingKind::Shared
    }

    fn peers_of(&self, user: i32) -> usize {
        self.peers.get(&user).map_or(0, HashSet::len)
    }

    /// Files and chunks shared by all of `user`'s peers.
    fn shared_by(&self, user: i32) -> Shared {
        let mut total = Shared::default();
        for p in self.peers.get(&user).into_iter().flatten() {
            if let Some(s) = self.shared.get(p) {
                total.files += s.files;
                total.chunks += s.chunks;
            }
        }
        total
    }
}

impl Index {
    /// Adds or replaces a peer (the only ways peers enter and leave the index, so the
    /// per-user counts follow).
    pub fn insert_peer(&mut self, entry: PeerEntry) {
        let (id, user) = (entry.rec.id.clone(), entry.rec.user_id);
        if let Some(old) = self.peers.insert(id.clone(), entry)
            && old.rec.user_id != user
        {
            self.forget_owner(old.rec.user_id, &id);
        }
        self.usage.peers.entry(user).or_default().insert(id);
    }

    /// Removes a peer (its holdings are the caller's to take first).
    pub fn remove_peer(&mut self, id: &PeerId) -> Option<PeerEntry> {
        let old = self.peers.remove(id)?;
        self.forget_owner(old.rec.user_id, id);
        self.usage.shared.remove(id);
        Some(old)
    }

    fn forget_owner(&mut self, user: i32, id: &PeerId) {
        if let Some(set) = self.usage.peers.get_mut(&user) {
            set.remove(id);
            if set.is_empty() {
                self.usage.peers.remove(&user);
            }
        }
    }

    /// Refuses a new peer id for a user that owns as many as it may.
    ///
    /// # Errors
    /// [`Error::LimitReached`] naming `--max-peers-per-user`.
    pub fn check_new_peer(&self, caller: &Caller) -> Result<(), Error> {
        let max = self.usage.limits.peers_per_user;
        let n = self.usage.peers_of(caller.user_id) + self.reserved.new_peers_of(caller.user_id);
        if n >= max as usize {
            return Err(Error::LimitReached(format!(
                "user {} has {n} peer ids, the most this tracker allows \
                 (its --max-peers-per-user is {max}): reuse one (a peer's home keeps its id)",
                caller.user
            )));
        }
        Ok(())
    }

    /// Refuses an announce of `file` (of `chunks` chunks) that would make the tracker hold
    /// more than the limits allow: a new file with too many chunks, or a file `peer` does
    /// not share yet that would take its user past its files or chunks. Re-announcing what the peer shares always passes.
    ///
    /// # Errors
    /// [`Error::LimitReached`] naming the limit and its option.
    pub fn check_announce(
        &self,
        caller: &Caller,
        peer: &PeerId,
        file: &FileId,
        chunks: u32,
    ) -> Result<(), Error> {
        let l = self.usage.limits;
        let known = self.files.get(file);
        if known.is_none() && chunks > l.chunks_per_file {
            return Err(Error::LimitReached(format!(
                "the file has {chunks} chunks, more than this tracker takes in one file \
                 (its --max-chunks-per-file is {})",
                l.chunks_per_file
            )));
        }
        let shares = known
            .and_then(|f| f.holdings.get(peer))
            .is_some_and(|h| Usage::counts(h.kind));
        if shares {
            return Ok(());
        }
        // Writes in flight count as done: together they must not pass a limit either.
        let mut used = self.usage.shared_by(caller.user_id);
        let (pending_files, pending_chunks) = self.reserved.shares_of(caller.user_id);
        used.files += pending_files;
        used.chunks += pending_chunks;
        if used.files >= u64::from(l.files_per_user) {
            return Err(Error::LimitReached(format!(
                "user {} shares {} files, the most this tracker allows \
                 (its --max-files-per-user is {})",
                caller.user, used.files, l.files_per_user
            )));
        }
        if used.chunks + u64::from(chunks) > l.chunks_per_user {
            return Err(Error::LimitReached(format!(
                "user {} shares {} chunks; this file's {chunks} would pass the most this \
                 tracker allows (its --max-chunks-per-user is {})",
                caller.user, used.chunks, l.chunks_per_user
            )));
        }
        Ok(())
    }
}

/// The most holders one Locate lists. A partial holder's bitfield is up to 32 KiB (a file
/// at the default --max-chunks-per-file) and accounts can add partial holders at will, so
/// the answer must not list them all: 128 keep it under the gRPC message limit beside the
/// file's hashes, and are more sources than a getter uses at once.
pub const MAX_LOCATE_HOLDERS: usize = 128;

/// A holder offered to a Locate answer: its id, its entry and, for a partial holder, what
/// it holds.
pub type Offered<'a> = (&'a PeerId, &'a PeerEntry, Option<&'a Bitfield>);

/// A uniform random choice of at most [`MAX_LOCATE_HOLDERS`] of the items offered
/// (reservoir sampling: one pass, nothing copied), so repeated Locates of a file with many
/// holders spread their getters over all of them.
pub struct Sample<T> {
    seen: usize,
    items: Vec<T>,
}

impl<T> Sample<T> {
    pub fn new() -> Self {
        Self {
            seen: 0,
            items: Vec::new(),
        }
    }

    pub fn offer(&mut self, item: T) {
        self.seen += 1;
        if self.items.len() < MAX_LOCATE_HOLDERS {
            self.items.push(item);
        } else {
            let j = rand::rng().random_range(0..self.seen);
            if let Some(slot) = self.items.get_mut(j) {
                *slot = item;
            }
        }
    }

    /// How many were offered.
    pub fn seen(&self) -> usize {
        self.seen
    }
}

/// The holders a Locate lists, by id: the chosen complete ones first, then as many chosen
/// partial ones as there is room for, with a copy of their bitfields.
pub fn holder_views(full: Sample<Offered<'_>>, partial: Sample<Offered<'_>>) -> Vec<HolderView> {
    let room = MAX_LOCATE_HOLDERS.saturating_sub(full.items.len());
    let mut out: Vec<HolderView> = full
        .items
        .into_iter()
        .chain(partial.items.into_iter().take(room))
        .map(|(id, peer, have)| HolderView {
            peer_id: id.clone(),
            addr: peer.rec.addr.clone(),
            have: have.cloned(),
        })
        .collect();
    out.sort_unstable_by(|a, b| a.peer_id.cmp(&b.peer_id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::index::{FileEntry, Holding};
    use crate::model::{FileRecord, PeerRecord};
    use common::Manifest;
    use common::manifest::MIN_CHUNK_SIZE;

    fn manifest(chunks: u32, seed: u8) -> Manifest {
        let hashes: Vec<u8> = (0..chunks * 32).map(|i| seed ^ i as u8).collect();
        Manifest::from_parts(
            format!("f{seed}"),
            u64::from(chunks) * u64::from(MIN_CHUNK_SIZE),
            common::Sha256Digest([seed; 32]),
            MIN_CHUNK_SIZE,
            &hashes,
        )
        .unwrap()
    }

    fn peer(ix: &mut Index, n: u8, user: i32) -> PeerId {
        let id = PeerId::from_random([n; 16]);
        ix.insert_peer(PeerEntry {
            rec: PeerRecord {
                id: id.clone(),
                user_id: user,
                addr: String::new(),
                storage_quota: 0,
                storage_used: 0,
                last_seen_ms: None,
                created_at_ms: 0,
            },
            user: format!("u{user}"),
        });
        id
    }

    fn caller(user: i32) -> Caller {
        Caller {
            user_id: user,
            user: format!("u{user}"),
        }
    }

    fn share(ix: &mut Index, m: &Manifest, p: &PeerId, kind: HoldingKind) {
        if !ix.files.contains_key(&m.id()) {
            ix.insert_file(FileEntry::new(FileRecord {
                manifest: m.clone(),
                created_at_ms: 0,
            }));
        }
        let have = Bitfield::full(m.chunk_count());
        ix.set_holding(m.id(), p, Holding::claimed(kind, have, 0));
    }

    fn announce(ix: &Index, c: &Caller, p: &PeerId, m: &Manifest) -> Result<(), Error> {
        ix.check_announce(c, p, &m.id(), m.chunk_count())
    }

    fn limits(peers: u32, files: u32, per_file: u32, per_user: u64) -> Limits {
        Limits {
            peers_per_user: peers,
            files_per_user: files,
            chunks_per_file: per_file,
            chunks_per_user: per_user,
        }
    }

    #[test]
    fn lists_a_bounded_random_choice_of_holders_complete_ones_first() {
        let mut ix = Index::new(1000);
        for n in 0..200u8 {
            peer(&mut ix, n, 1);
        }
        let entries: Vec<(&PeerId, &PeerEntry)> = ix.peers.iter().collect();
        let have = Bitfield::new(8);
        let (mut full, mut partial) = (Sample::new(), Sample::new());
        for (i, (id, e)) in entries.iter().enumerate() {
            if i < 3 {
                full.offer((*id, *e, None));
            } else {
                partial.offer((*id, *e, Some(&have)));
            }
        }
        assert_eq!((full.seen(), partial.seen()), (3, 197));
        let views = holder_views(full, partial);
        assert_eq!(views.len(), MAX_LOCATE_HOLDERS);
        assert_eq!(views.iter().filter(|v| v.have.is_none()).count(), 3);
        assert!(views.windows(2).all(|w| w[0].peer_id < w[1].peer_id));
    }

    #[test]
    fn counts_peers_per_user_and_refuses_past_the_limit() {
        let mut ix = Index::new(1000);
        ix.usage.limits = limits(2, 10, 10, 100);
        peer(&mut ix, 1, 1);
        assert!(ix.check_new_peer(&caller(1)).is_ok());
        let b = peer(&mut ix, 2, 1);
        let e = ix.check_new_peer(&caller(1)).unwrap_err();
        assert!(matches!(e, Error::LimitReached(_)));
        assert!(e.to_string().contains("--max-peers-per-user is 2"), "{e}");
        assert!(ix.check_new_peer(&caller(2)).is_ok());
        ix.remove_peer(&b);
        assert!(ix.check_new_peer(&caller(1)).is_ok());
    }

    #[test]
    fn counts_shared_files_and_chunks_and_refuses_past_the_limits() {
        let mut ix = Index::new(1000);
        ix.usage.limits = limits(10, 2, 8, 10);
        let (a, b) = (peer(&mut ix, 1, 1), peer(&mut ix, 2, 1));
        let c = caller(1);
        let e = announce(&ix, &c, &a, &manifest(9, 1)).unwrap_err();
        assert!(e.to_string().contains("--max-chunks-per-file is 8"), "{e}");
        let (m4, m5) = (manifest(4, 2), manifest(5, 3));
        share(&mut ix, &m4, &a, HoldingKind::Shared);
        // A replica or download is not the user's own sharing.
        share(&mut ix, &m5, &b, HoldingKind::Replica);
        assert_eq!(
            ix.usage.shared_by(1),
            Shared {
                files: 1,
                chunks: 4
            }
        );
        // 4 + 5 chunks fit in 10; re-announcing what is shared always passes.
        assert!(announce(&ix, &c, &b, &m5).is_ok());
        assert!(announce(&ix, &c, &a, &m4).is_ok());
        share(&mut ix, &m5, &b, HoldingKind::Shared);
        let e = announce(&ix, &c, &a, &manifest(2, 4)).unwrap_err();
        assert!(e.to_string().contains("--max-files-per-user is 2"), "{e}");
        ix.take_holding(&m4.id(), &a);
        let e = announce(&ix, &c, &a, &manifest(6, 5)).unwrap_err();
        assert!(e.to_string().contains("--max-chunks-per-user is 10"), "{e}");
        assert!(announce(&ix, &c, &a, &manifest(5, 6)).is_ok());
        ix.remove_file(&m5.id());
        assert_eq!(ix.usage.shared_by(1), Shared::default());
        // Another user is counted apart.
        let other = peer(&mut ix, 3, 2);
        assert!(announce(&ix, &caller(2), &other, &manifest(8, 7)).is_ok());
    }
}
