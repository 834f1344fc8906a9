//! Writes a client waits for (announce, unindex, task completion): they commit before they
//! answer or have no effect at all (see "Source of truth and cache" in ARCHITECTURE.md).
//!
//! Such a write is planned under the index lock without changing memory: everything that
//! can refuse it (permissions, limits, what exists) is checked, and the rows it will write
//! and the keys it touches are decided. The rows go to the batch writer as a commit
//! ([`crate::db::writer::Writer::commit`]), sharing a transaction with whatever else is
//! being written (group commit). Only once that transaction has committed does the writer
//! run the write's memory change; if it fails, the change is dropped and the caller hears
//! UNAVAILABLE. Nothing is retried behind the caller's back.
//!
//! Two writes in flight on one file (or one new peer id) would each be planned without the
//! other's change, which memory only gets later: an unindex could withdraw a file that an
//! announce still in flight shares. So a planned write reserves its keys until its memory
//! change is made or dropped, and a write that meets a reserved key waits for it and plans
//! again. Reservations also count towards the per-user limits, so writes in flight cannot
//! together pass one. Background writes (heartbeats, reports) do not wait; the writer keeps
//! their rows in order with the commit's (see `db::writer`).

use std::collections::HashMap;

use common::{FileId, PeerId};
use tokio::sync::oneshot;

use super::TrackerService;
use super::index::Index;
use crate::Error;
use crate::db::writer::{Apply, WriteOp};

/// What a write in flight reserves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    /// A file, its holdings and its tasks.
    File(FileId),
    /// A peer id not known yet, which the write claims for its user.
    NewPeer(PeerId),
}

/// One reservation: whose, and what it will add to its user's shares.
#[derive(Debug)]
struct Hold {
    token: u64,
    user: i32,
    /// Chunks of a file the write will newly share.
    shares: Option<u32>,
}

/// The keys of the writes in flight.
#[derive(Debug, Default)]
pub struct Reservations {
    held: HashMap<Key, Hold>,
    next: u64,
}

impl Reservations {
    pub fn is_held(&self, key: &Key) -> bool {
        self.held.contains_key(key)
    }

    /// The user claiming `peer` in a write in flight, if any.
    pub fn claimant(&self, peer: &PeerId) -> Option<i32> {
        self.held.get(&Key::NewPeer(peer.clone())).map(|h| h.user)
    }

    /// New peer ids that writes in flight claim for `user`.
    pub fn new_peers_of(&self, user: i32) -> usize {
        (self.held.iter())
            .filter(|(k, h)| matches!(k, Key::NewPeer(_)) && h.user == user)
            .count()
    }

    /// Files and chunks that writes in flight will newly share for `user`.
    pub fn shares_of(&self, user: i32) -> (u64, u64) {
        (self.held.values())
            .filter(|h| h.user == user)
            .filter_map(|h| h.shares)
            .fold((0, 0), |(f, c), n| (f + 1, c + u64::from(n)))
    }

    fn hold(&mut self, plan: &Planned) -> u64 {
        self.next += 1;
        for key in &plan.keys {
            let shares = match key {
                Key::File(_) => plan.shares,
                Key::NewPeer(_) => None,
            };
            let hold = Hold {
                token: self.next,
                user: plan.user,
                shares,
            };
            self.held.insert(key.clone(), hold);
        }
        self.next
    }

    fn release(&mut self, token: u64, keys: &[Key]) {
        for key in keys {
            if self.held.get(key).is_some_and(|h| h.token == token) {
                self.held.remove(key);
            }
        }
    }
}

/// A write's memory change, made under the index lock once its rows are committed; it
/// returns the rows it changed as memory now has them, and the caller's answer.
pub type Change<T> = Box<dyn FnOnce(&mut Index) -> (Vec<WriteOp>, T) + Send>;

/// A planned write.
pub struct Plan<T> {
    pub planned: Planned,
    pub change: Change<T>,
}

impl<T> Plan<T> {
    /// A write of `user`'s on one file that shares nothing new: it reserves the file,
    /// commits `ops`, then makes `change`.
    pub fn on_file(user: i32, file: FileId, ops: Vec<WriteOp>, change: Change<T>) -> Self {
        Plan {
            planned: Planned {
                user,
                keys: vec![Key::File(file)],
                shares: None,
                ops,
            },
            change,
        }
    }
}

/// What a plan reserves and commits.
pub struct Planned {
    pub user: i32,
    pub keys: Vec<Key>,
    /// Chunks of a file the write will newly share, counted against the user's limits
    /// while it is in flight.
    pub shares: Option<u32>,
    pub ops: Vec<WriteOp>,
}

/// A reservation, released when the write's memory change is made or, if it never is
/// (the commit failed, the writer stopped), when this is dropped.
struct Held {
    svc: TrackerService,
    token: u64,
    keys: Vec<Key>,
    done: bool,
}

impl Held {
    fn release(&mut self, ix: &mut Index) {
        ix.reserved.release(self.token, &self.keys);
        self.done = true;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if !self.done {
            self.svc
                .index_mut()
                .reserved
                .release(self.token, &self.keys);
            self.svc.inner.freed.notify_waiters();
        }
    }
}

impl TrackerService {
    /// Runs a client-waited write: `plan` (under the index lock, changing nothing but
    /// reservations) checks it and decides its rows; they commit, then its change is made.
    /// Returns the change's answer.
    ///
    /// # Errors
    /// What `plan` refuses; [`Error::Database`] when the commit failed, and then nothing
    /// of the write happened.
    pub(super) async fn write_through<T: Send + 'static>(
        &self,
        mut plan: impl FnMut(&mut Index) -> Result<Plan<T>, Error>,
    ) -> Result<T, Error> {
        loop {
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let planned = {
                let mut ix = self.index_mut();
                let p = plan(&mut ix)?;
                if p.planned.keys.iter().any(|k| ix.reserved.is_held(k)) {
                    None
                } else {
                    let token = ix.reserved.hold(&p.planned);
                    Some((p, token))
                }
            };
            let Some((Plan { planned, change }, token)) = planned else {
                // Another write on the same file or peer is in flight: plan again after it.
                freed.await;
                continue;
            };
            let held = Held {
                svc: self.clone(),
                token,
                keys: planned.keys,
                done: false,
            };
            let (answer_tx, answer) = oneshot::channel();
            let svc = self.clone();
            let apply: Apply = Box::new(move |stale| {
                let mut held = held;
                let (rows, out) = {
                    let mut ix = svc.index_mut();
                    held.release(&mut ix);
                    let out = change(&mut ix);
                    stale.drain();
                    out
                };
                svc.inner.freed.notify_waiters();
                let _ = answer_tx.send(out);
                rows
            });
            // Sent outside the lock: the writer orders a commit's rows after every
            // background row it folds in, wherever it sits in the queue.
            self.inner.writer.commit(planned.ops, apply)?.wait().await?;
            return answer
                .await
                .map_err(|_| Error::Internal("a committed write's change was lost".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(user: i32, keys: Vec<Key>, shares: Option<u32>) -> Planned {
        Planned {
            user,
            keys,
            shares,
            ops: Vec::new(),
        }
    }

    #[test]
    fn should_count_writes_in_flight_until_released_by_their_own_token() {
        let mut r = Reservations::default();
        let f = Key::File(FileId(common::Sha256Digest([1; 32])));
        let p = PeerId::from_random([2; 16]);
        let first = r.hold(&planned(
            7,
            vec![f.clone(), Key::NewPeer(p.clone())],
            Some(10),
        ));
        assert!(r.is_held(&f));
        assert_eq!(r.claimant(&p), Some(7));
        assert_eq!(r.new_peers_of(7), 1);
        assert_eq!(r.shares_of(7), (1, 10));
        assert_eq!(r.shares_of(8), (0, 0));
        r.release(first, std::slice::from_ref(&f));
        assert!(!r.is_held(&f));
        // A later write's reservation of the key is not released by an older token.
        let second = r.hold(&planned(8, vec![f.clone()], None));
        r.release(first, &[f.clone(), Key::NewPeer(p.clone())]);
        assert!(r.is_held(&f));
        assert_eq!(r.claimant(&p), None);
        r.release(second, std::slice::from_ref(&f));
        assert!(!r.is_held(&f));
    }
}
