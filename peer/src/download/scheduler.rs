//! Which chunk each source fetches next. Pure bookkeeping (no I/O, no clock), so the rules
//! of STATE.md are unit-tested here:
//!
//! - a source is only given chunks it holds;
//! - rarest first: among the Missing chunks a source holds, the one the fewest sources hold,
//!   ties broken at random (so getters spread over the file and can serve each other);
//! - endgame: when no chunk is Missing (every one is asked for) and a source is idle, it may
//!   duplicate an InFlight chunk (of those with the fewest copies in flight, the last in the file: asked
//!   for last, so likeliest still queued at its source); the first verified copy wins;
//! - a source that fails or is dropped releases its chunks; those in flight nowhere else go
//!   back to Missing;
//! - a full holder (a seed, a finished getter) is offered a candidate set instead of one
//!   chunk, and chooses the chunk it has sent least (super-seeding; ties in the order
//!   offered): the Missing chunks no other source holds, or every Missing chunk when there
//!   are none, every `step`-th from the lowest, so the file comes about in order. The
//!   candidates are reserved for it (InFlight) until the answer comes, so two full holders
//!   are never asked for one chunk; the ones not sent go back to Missing. A chunk that is
//!   only offered so is not held back from a partial source that turns out to hold it
//!   (another getter): that source may take it (Missing chunks first), since the seed will
//!   likely pick another, sent less, and in a swarm nearly every chunk sits in some set.

use std::collections::HashMap;
use std::hash::Hash;

use common::Bitfield;
use rand::RngExt;

/// The state of one chunk (see STATE.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkState<S> {
    Missing,
    /// Requested from these sources (more than one only in the endgame).
    InFlight(Vec<S>),
    Verified,
}

/// Chunk states of one file and the chunk sets of its sources.
#[derive(Debug)]
pub struct Scheduler<S> {
    states: Vec<ChunkState<S>>,
    sources: HashMap<S, Bitfield>,
    /// How many sources hold each chunk.
    avail: Vec<u32>,
    /// Chunks InFlight only as candidates of a full holder's pick (the holder is first in
    /// the InFlight list): another source that holds one may still take it.
    offered: Vec<bool>,
    verified: u32,
}

impl<S: Clone + Eq + Hash> Scheduler<S> {
    /// A file of `chunks` chunks, all Missing, with no sources.
    pub fn new(chunks: u32) -> Self {
        Self {
            states: vec![ChunkState::Missing; chunks as usize],
            sources: HashMap::new(),
            avail: vec![0; chunks as usize],
            offered: vec![false; chunks as usize],
            verified: 0,
        }
    }

    pub fn chunk_count(&self) -> u32 {
        self.states.len() as u32
    }

    pub fn verified_count(&self) -> u32 {
        self.verified
    }

    pub fn is_complete(&self) -> bool {
        self.verified == self.chunk_count()
    }

    pub fn state(&self, i: u32) -> &ChunkState<S> {
        &self.states[i as usize]
    }

    /// The Verified chunks as a bitfield.
    pub fn verified_bits(&self) -> Bitfield {
        let mut b = Bitfield::new(self.chunk_count());
        for (i, s) in self.states.iter().enumerate() {
            if *s == ChunkState::Verified {
                b.set(i as u32);
            }
        }
        b
    }

    /// Number of chunks currently requested from some source.
    pub fn in_flight_count(&self) -> usize {
        self.states
            .iter()
            .filter(|s| matches!(s, ChunkState::InFlight(_)))
            .count()
    }

    pub fn has_source(&self, s: &S) -> bool {
        self.sources.contains_key(s)
    }

    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// Adds a source, or updates the chunk set of a known one.
    pub fn add_source(&mut self, s: S, have: Bitfield) {
        if have.len() != self.chunk_count() {
            return;
        }
        if let Some(old) = self.sources.get(&s) {
            for i in old.iter_ones() {
                self.avail[i as usize] -= 1;
            }
        }
        for i in have.iter_ones() {
            self.avail[i as usize] += 1;
        }
        self.sources.insert(s, have);
    }

    /// Adds the chunks of `have` to what a known source holds (the tracker's answer may be
    /// older than what the source itself said on its holdings stream, so it never takes
    /// chunks away), or adds the source.
    pub fn merge_source(&mut self, s: S, have: Bitfield) {
        if have.len() != self.chunk_count() {
            return;
        }
        let Some(old) = self.sources.get_mut(&s) else {
            self.add_source(s, have);
            return;
        };
        for i in have.iter_ones() {
            if !old.get(i) {
                old.set(i);
                self.avail[i as usize] += 1;
            }
        }
    }

    /// Drops a source: its in-flight chunks are released (Missing again unless another
    /// source is fetching them). Returns the chunks that went back to Missing.
    pub fn remove_source(&mut self, s: &S) -> Vec<u32> {
        if let Some(old) = self.sources.remove(s) {
            for i in old.iter_ones() {
                self.avail[i as usize] -= 1;
            }
        }
        let mut requeued = Vec::new();
        for i in 0..self.chunk_count() {
            if self.release_one(i, s) {
                requeued.push(i);
            }
        }
        requeued
    }

    /// A request for chunk `i` from `s` ended without a verified chunk. True if the chunk
    /// went back to Missing.
    pub fn release(&mut self, i: u32, s: &S) -> bool {
        self.release_one(i, s)
    }

    fn release_one(&mut self, i: u32, s: &S) -> bool {
        let st = &mut self.states[i as usize];
        if let ChunkState::InFlight(v) = st
            && let Some(pos) = v.iter().position(|x| x == s)
        {
            v.remove(pos);
            if pos == 0 {
                self.offered[i as usize] = false;
            }
            if v.is_empty() {
                *st = ChunkState::Missing;
                return true;
            }
        }
        false
    }

    /// Marks chunk `i` Verified (a resumed part file, or a checked chunk). True if this was
    /// the first copy (false: a duplicate from the endgame, or already there).
    pub fn mark_verified(&mut self, i: u32) -> bool {
        self.offered[i as usize] = false;
        let st = &mut self.states[i as usize];
        if *st == ChunkState::Verified {
            return false;
        }
        *st = ChunkState::Verified;
        self.verified += 1;
        true
    }

    /// The next chunk for source `s`, now InFlight from it. `idle` says `s` has nothing in
    /// flight (only then may it duplicate an InFlight chunk in the endgame).
    pub fn next_for(&mut self, s: &S, idle: bool, rng: &mut impl rand::Rng) -> Option<u32> {
        let have = self.sources.get(s)?;
        // (offered, availability, index): Missing chunks before ones only offered to a full
        // holder, rarer before commoner.
        let mut best: Option<(bool, u32, u32)> = None;
        let mut ties = 0u32;
        for i in have.iter_ones() {
            let offered = match &self.states[i as usize] {
                ChunkState::Missing => false,
                ChunkState::InFlight(v)
                    if self.offered[i as usize] && v.len() == 1 && v[0] != *s =>
                {
                    true
                }
                _ => continue,
            };
            let key = (offered, self.avail[i as usize]);
            match best {
                Some((bo, ba, _)) if key > (bo, ba) => {}
                Some((bo, ba, _)) if key == (bo, ba) => {
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = Some((key.0, key.1, i));
                    }
                }
                _ => {
                    best = Some((key.0, key.1, i));
                    ties = 1;
                }
            }
        }
        if let Some((_, _, i)) = best {
            match &mut self.states[i as usize] {
                ChunkState::InFlight(v) => v.push(s.clone()),
                st => *st = ChunkState::InFlight(vec![s.clone()]),
            }
            return Some(i);
        }
        // Endgame only once every chunk is asked for (BitTorrent's rule): before that, a
        // source that holds nothing Missing is one that holds little yet (another getter),
        // and a duplicate it sent would take its uplink from chunks only it can give.
        if !idle || self.states.contains(&ChunkState::Missing) {
            return None;
        }
        // Endgame: duplicate the InFlight chunk with the fewest copies that `s` holds; of
        // those the last in the file, asked for last (chunks go about in order), so the
        // likeliest still queued at its source rather than half sent: a duplicate that wins
        // then cancels a request that cost its source nothing yet.
        let mut dup: Option<(usize, u32)> = None;
        for i in have.iter_ones() {
            if let ChunkState::InFlight(v) = &self.states[i as usize]
                && !v.contains(s)
                && dup.is_none_or(|(n, _)| v.len() <= n)
            {
                dup = Some((v.len(), i));
            }
        }
        let (_, i) = dup?;
        if let ChunkState::InFlight(v) = &mut self.states[i as usize] {
            v.push(s.clone());
        }
        Some(i)
    }

    /// Whether `s` holds every chunk: a seed or a finished getter, likely serving others too.
    pub fn is_full_holder(&self, s: &S) -> bool {
        self.sources
            .get(s)
            .is_some_and(|b| b.count() == self.chunk_count())
    }

    /// Reserves a candidate set for `s`, which then sends the one it has sent least (ties
    /// in the order offered): the Missing chunks that only `s` holds, or, when there are
    /// none, every Missing chunk it holds; a few of them, every `step`-th from the lowest, so
    /// each set starts at the front of what is missing and a lone getter gets the file about
    /// in order (its whole-file hash, which must go front to back, then keeps up instead of
    /// hashing most of the file after the last chunk). The candidates become InFlight from `s`, so no other
    /// request asks for them (no chunk is sent twice outside the endgame); the caller
    /// releases those not sent. Of chunks only `s` holds, its `depth` requests share them
    /// all (`pool / depth` each); of chunks others hold too, the set is small enough that
    /// `depth` such requests from each source leave half the Missing chunks to others
    /// (`missing / (2 · sources · depth)`); between 1 and `max`. Empty when nothing `s`
    /// holds is Missing.
    pub fn reserve_candidates(&mut self, s: &S, depth: usize, max: usize) -> Vec<u32> {
        let Some(have) = self.sources.get(s) else {
            return Vec::new();
        };
        let missing = |i: &u32| self.states[*i as usize] == ChunkState::Missing;
        let mut out: Vec<u32> = have
            .iter_ones()
            .filter(|i| missing(i) && self.avail[*i as usize] <= 1)
            .collect();
        let k = if out.is_empty() {
            // Chunks others hold too: a small set, leaving the rest to them.
            out = have.iter_ones().filter(missing).collect();
            let all_missing = self
                .states
                .iter()
                .filter(|st| **st == ChunkState::Missing)
                .count();
            all_missing / (2 * self.sources.len().max(1) * depth.max(1))
        } else {
            // Chunks only `s` holds: nobody else could be asked for them anyway, so its
            // requests share them out, and the seed gets a real choice (super-seeding).
            out.len() / depth.max(1)
        };
        let k = k.clamp(1, max.max(1));
        if out.len() > k {
            let step = out.len() / k;
            out = out.into_iter().step_by(step).take(k).collect();
        }
        for &i in &out {
            self.states[i as usize] = ChunkState::InFlight(vec![s.clone()]);
            self.offered[i as usize] = true;
        }
        out
    }

    /// Chunks not yet Verified.
    pub fn remaining(&self) -> u32 {
        self.chunk_count() - self.verified
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits(n: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::new(n);
        for &i in ones {
            b.set(i);
        }
        b
    }

    #[test]
    fn picks_rarest_first() {
        let mut s = Scheduler::new(4);
        s.add_source("a", Bitfield::full(4));
        s.add_source("b", bits(4, &[0, 1, 3]));
        s.add_source("c", bits(4, &[0, 1]));
        let mut rng = rand::rng();
        // Chunk 2 is held by a only; chunk 3 by a and b; 0 and 1 by all three.
        assert_eq!(s.next_for(&"a", true, &mut rng), Some(2));
        assert_eq!(s.next_for(&"a", false, &mut rng), Some(3));
        let c = s.next_for(&"c", true, &mut rng).unwrap();
        assert!(c == 0 || c == 1);
        assert_eq!(s.state(2), &ChunkState::InFlight(vec!["a"]));
    }

    #[test]
    fn ties_are_broken_at_random() {
        let mut seen = std::collections::HashSet::new();
        let mut rng = rand::rng();
        for _ in 0..200 {
            let mut s = Scheduler::new(8);
            s.add_source(1, Bitfield::full(8));
            seen.insert(s.next_for(&1, true, &mut rng).unwrap());
        }
        assert!(seen.len() > 3, "{seen:?}");
    }

    #[test]
    fn never_gives_a_source_a_chunk_it_lacks() {
        let mut s = Scheduler::new(6);
        s.add_source("a", bits(6, &[1, 4]));
        let mut rng = rand::rng();
        let mut got = vec![];
        while let Some(i) = s.next_for(&"a", false, &mut rng) {
            got.push(i);
        }
        got.sort();
        assert_eq!(got, vec![1, 4]);
        assert_eq!(s.next_for(&"unknown", true, &mut rng), None);
    }

    #[test]
    fn failures_requeue_chunks() {
        let mut s = Scheduler::new(3);
        s.add_source("a", Bitfield::full(3));
        s.add_source("b", Bitfield::full(3));
        let mut rng = rand::rng();
        let i = s.next_for(&"a", true, &mut rng).unwrap();
        let j = s.next_for(&"a", false, &mut rng).unwrap();
        assert!(s.release(i, &"a"));
        assert_eq!(s.state(i), &ChunkState::Missing);
        let mut back = s.remove_source(&"a");
        back.sort();
        assert_eq!(back, vec![j]);
        assert!(!s.has_source(&"a"));
        // b now gets everything, including the released chunks.
        let mut got = vec![];
        while let Some(k) = s.next_for(&"b", false, &mut rng) {
            got.push(k);
        }
        got.sort();
        assert_eq!(got, vec![0, 1, 2]);
    }

    #[test]
    fn endgame_duplicates_only_when_idle_and_first_copy_wins() {
        let mut s = Scheduler::new(2);
        s.add_source("slow", Bitfield::full(2));
        s.add_source("fast", bits(2, &[0]));
        let mut rng = rand::rng();
        // slow takes both chunks (the rarer one first).
        assert_eq!(s.next_for(&"slow", true, &mut rng), Some(1));
        assert_eq!(s.next_for(&"slow", false, &mut rng), Some(0));
        // fast is busy elsewhere: no duplicate.
        assert_eq!(s.next_for(&"fast", false, &mut rng), None);
        // fast is idle: it duplicates chunk 0 (the only one it holds), not chunk 1.
        assert_eq!(s.next_for(&"fast", true, &mut rng), Some(0));
        assert_eq!(s.state(0), &ChunkState::InFlight(vec!["slow", "fast"]));
        // ... and not twice.
        assert_eq!(s.next_for(&"fast", true, &mut rng), None);
        assert!(s.mark_verified(0));
        assert!(!s.mark_verified(0), "the second copy is a duplicate");
        // The late copy's release does not undo the verification.
        assert!(!s.release(0, &"slow"));
        assert_eq!(s.state(0), &ChunkState::Verified);
        // Dropping slow sends chunk 1 back to Missing; fast cannot take it.
        assert_eq!(s.remove_source(&"slow"), vec![1]);
        assert_eq!(s.next_for(&"fast", true, &mut rng), None);
        assert_eq!(s.remaining(), 1);
    }

    #[test]
    fn a_getter_takes_a_chunk_only_offered_to_a_seed() {
        let mut s = Scheduler::new(4);
        s.add_source("seed", Bitfield::full(4));
        // Every chunk only the seed holds goes into its candidate sets.
        let set = s.reserve_candidates(&"seed", 1, 16);
        assert_eq!(set, vec![0, 1, 2, 3]);
        // Another getter turns out to hold chunks 1 and 3: it may take them, Missing ones
        // first (none here), rarest first; never a second time.
        s.add_source("getter", bits(4, &[1, 3]));
        let mut rng = rand::rng();
        let a = s.next_for(&"getter", true, &mut rng).unwrap();
        let b = s.next_for(&"getter", false, &mut rng).unwrap();
        assert_eq!([a.min(b), a.max(b)], [1, 3]);
        assert_eq!(s.state(1), &ChunkState::InFlight(vec!["seed", "getter"]));
        assert_eq!(s.next_for(&"getter", true, &mut rng), None);
        // The seed sends chunk 0; the rest of its set is released: chunk 2 is Missing again,
        // chunks 1 and 3 stay with the getter and are no longer offered.
        assert!(s.mark_verified(0));
        for j in [1, 2, 3] {
            s.release(j, &"seed");
        }
        assert_eq!(s.state(2), &ChunkState::Missing);
        assert_eq!(s.state(3), &ChunkState::InFlight(vec!["getter"]));
        // A second getter holding chunk 3 cannot take it from the first (only in the endgame,
        // which waits for chunk 2 to be asked for).
        s.add_source("other", bits(4, &[3]));
        assert_eq!(s.next_for(&"other", true, &mut rng), None);
        // A getter's failed request does not make the chunk offered again.
        s.release(1, &"getter");
        assert_eq!(s.state(1), &ChunkState::Missing);
    }

    #[test]
    fn no_endgame_while_a_chunk_is_missing() {
        let mut s = Scheduler::new(3);
        s.add_source("seed", Bitfield::full(3));
        s.add_source("getter", bits(3, &[0]));
        let mut rng = rand::rng();
        // The seed has chunk 0 in flight; chunks 1 and 2 wait for it (only it holds them).
        assert_eq!(s.state(0), &ChunkState::Missing);
        s.states[0] = ChunkState::InFlight(vec!["seed"]);
        // The getter holds nothing Missing and is idle, but chunks are still Missing.
        assert_eq!(s.next_for(&"getter", true, &mut rng), None);
        // Once every chunk is asked for, it may duplicate.
        s.states[1] = ChunkState::InFlight(vec!["seed"]);
        s.states[2] = ChunkState::InFlight(vec!["seed"]);
        assert_eq!(s.next_for(&"getter", true, &mut rng), Some(0));
    }

    #[test]
    fn the_endgame_duplicates_the_chunk_asked_for_last() {
        let mut s = Scheduler::new(3);
        s.add_source("a", Bitfield::full(3));
        let mut rng = rand::rng();
        for _ in 0..3 {
            s.next_for(&"a", false, &mut rng).unwrap();
        }
        s.add_source("b", Bitfield::full(3));
        assert_eq!(s.next_for(&"b", true, &mut rng), Some(2));
    }

    #[test]
    fn updating_a_source_adjusts_availability() {
        let mut s = Scheduler::new(3);
        s.add_source("a", bits(3, &[0]));
        s.add_source("b", bits(3, &[0, 1, 2]));
        s.add_source("a", bits(3, &[0, 1]));
        let mut rng = rand::rng();
        // Chunk 2 (held by b only) is rarest for b.
        assert_eq!(s.next_for(&"b", true, &mut rng), Some(2));
        assert_eq!(s.source_count(), 2);
        // A bitfield of the wrong length is ignored.
        s.add_source("c", Bitfield::new(5));
        assert!(!s.has_source(&"c"));
    }

    #[test]
    fn merging_a_source_only_adds_chunks() {
        let mut s = Scheduler::new(4);
        s.merge_source("a", bits(4, &[0]));
        s.add_source("a", bits(4, &[0, 1, 2]));
        // An older answer that lacks chunk 2 leaves it; chunk 3 is new.
        s.merge_source("a", bits(4, &[0, 3]));
        assert!(s.is_full_holder(&"a"));
        s.add_source("b", bits(4, &[2]));
        let mut rng = rand::rng();
        // Chunks 0, 1 and 3 are held by a alone, chunk 2 by both: a takes it last.
        let mut got = vec![];
        while let Some(i) = s.next_for(&"a", false, &mut rng) {
            got.push(i);
        }
        assert_eq!(got.last(), Some(&2), "{got:?}");
        s.merge_source("c", bits(5, &[0]));
        assert!(
            !s.has_source(&"c"),
            "a bitfield of the wrong length is ignored"
        );
    }

    #[test]
    fn a_full_holder_is_offered_only_what_no_other_source_holds() {
        let mut s = Scheduler::new(6);
        s.add_source("seed", Bitfield::full(6));
        s.add_source("peer", bits(6, &[0, 1]));
        let mut rng = rand::rng();
        assert!(s.is_full_holder(&"seed"));
        assert!(!s.is_full_holder(&"peer"));
        s.mark_verified(5);
        let taken = s.next_for(&"peer", true, &mut rng).unwrap();
        assert!(taken == 0 || taken == 1);
        // Not 0 or 1 (peer holds them), not 5 (Verified): the seed-only chunks, shared out
        // over its requests (depth 2: one and two), reserved for the seed.
        let c = s.reserve_candidates(&"seed", 2, 10);
        assert_eq!(c.len(), 1);
        assert!([2, 3, 4].contains(&c[0]), "{c:?}");
        assert_eq!(s.state(c[0]), &ChunkState::InFlight(vec!["seed"]));
        // A second request gets others: requests never overlap.
        let mut d = s.reserve_candidates(&"seed", 1, 10);
        d.sort();
        assert_eq!(d.len(), 2);
        assert!(!d.contains(&c[0]));
        // The chunk that arrives becomes Verified; the others are released.
        assert!(s.mark_verified(d[0]));
        assert!(s.release(d[1], &"seed"));
        assert_eq!(s.state(d[1]), &ChunkState::Missing);
        // With nothing only it holds, the seed is offered every Missing chunk it holds.
        s.add_source("peer", bits(6, &[0, 1, 2, 3, 4]));
        let mut c = s.reserve_candidates(&"seed", 1, 10);
        c.sort();
        assert_eq!(c.len(), 1);
        assert!(s.reserve_candidates(&"unknown", 1, 10).is_empty());
    }

    #[test]
    fn candidate_sets_leave_work_for_other_sources() {
        let mut s = Scheduler::new(256);
        for seed in ["a", "b", "c", "d"] {
            s.add_source(seed, Bitfield::full(256));
        }
        // Four seeds, 8 requests deep each: sets of 256 / (2·4·8) = 4 chunks, disjoint.
        let mut seen = std::collections::HashSet::new();
        for seed in ["a", "b", "c", "d"] {
            for _ in 0..8 {
                let c = s.reserve_candidates(&seed, 8, 16);
                assert!(!c.is_empty() && c.len() <= 4, "{c:?}");
                for i in c {
                    assert!(seen.insert(i), "chunk {i} offered twice");
                }
            }
        }
        assert!(seen.len() <= 128, "half the chunks stay for others");
        // One chunk left: one request gets it; the next one nothing (no duplicate).
        let mut one = Scheduler::new(1);
        one.add_source("seed", Bitfield::full(1));
        assert_eq!(one.reserve_candidates(&"seed", 16, 16), vec![0]);
        assert!(one.reserve_candidates(&"seed", 16, 16).is_empty());
    }

    #[test]
    fn candidate_sets_start_at_the_front_and_interleave() {
        // One seed, 4 requests deep, 16 chunks: each set is every `step`-th of what is
        // Missing from the lowest, so the seed (least sent first, ties in the order
        // offered) sends 0, 1, 2, 3.
        let mut s = Scheduler::new(16);
        s.add_source("seed", Bitfield::full(16));
        let sets: Vec<Vec<u32>> = (0..4)
            .map(|_| s.reserve_candidates(&"seed", 4, 64))
            .collect();
        assert_eq!(sets[0], vec![0, 4, 8, 12]);
        assert_eq!(sets[1], vec![1, 6, 11]);
        assert_eq!(
            sets.iter().map(|c| c[0]).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        for c in &sets {
            assert!(c.windows(2).all(|w| w[0] < w[1]), "ascending: {c:?}");
        }
    }

    #[test]
    fn resumed_chunks_are_not_fetched() {
        let mut s = Scheduler::new(3);
        s.mark_verified(1);
        s.add_source("a", Bitfield::full(3));
        let mut rng = rand::rng();
        let mut got = vec![];
        while let Some(k) = s.next_for(&"a", false, &mut rng) {
            got.push(k);
        }
        got.sort();
        assert_eq!(got, vec![0, 2]);
        assert_eq!(s.verified_bits().iter_ones().collect::<Vec<_>>(), vec![1]);
    }
}
