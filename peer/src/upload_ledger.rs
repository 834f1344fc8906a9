//! How many times this node has recently sent each chunk of each file, so a `GetChunks`
//! that offers a candidate set (`pick` > 0) gets the chunks this node has sent least.
//!
//! This is super-seeding: a seed asked by many getters at once sends every chunk once
//! before it sends any chunk twice, so its capped upload is never spent on copies the
//! getters can trade among themselves. Counts are taken when a chunk is chosen (not when it
//! is sent), so concurrent requests choose different chunks; a file's counts are forgotten
//! after [`FORGET_AFTER`] without a pick, so a later swarm starts afresh.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::FileId;

/// A file's counts are dropped after this long without a pick.
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// Per-file send counts of one node.
#[derive(Debug, Default)]
pub struct UploadLedger {
    files: Mutex<HashMap<FileId, Counts>>,
}

#[derive(Debug)]
struct Counts {
    sent: Vec<u32>,
    used: Instant,
}

/// The process's ledger (one node per process).
pub fn ledger() -> &'static UploadLedger {
    static L: OnceLock<UploadLedger> = OnceLock::new();
    L.get_or_init(UploadLedger::default)
}

impl UploadLedger {
    /// Chooses up to `pick` of `candidates` (indices below `chunks`, duplicates ignored):
    /// the least sent first, ties in the order offered (the getter's preference: the front
    /// of what it misses), and counts them as sent.
    pub fn pick(&self, id: &FileId, chunks: u32, candidates: &[u32], pick: usize) -> Vec<u32> {
        let now = Instant::now();
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files.retain(|_, c| now.duration_since(c.used) < FORGET_AFTER);
        let c = files.entry(*id).or_insert_with(|| Counts {
            sent: Vec::new(),
            used: now,
        });
        c.used = now;
        c.sent.resize(c.sent.len().max(chunks as usize), 0);
        let mut order: Vec<(u32, usize, u32)> = candidates
            .iter()
            .enumerate()
            .filter(|&(_, &i)| i < chunks)
            .map(|(at, &i)| (c.sent[i as usize], at, i))
            .collect();
        order.sort_unstable();
        let mut out: Vec<u32> = Vec::with_capacity(pick);
        for (_, _, i) in order {
            if out.len() == pick {
                break;
            }
            if !out.contains(&i) {
                c.sent[i as usize] += 1;
                out.push(i);
            }
        }
        out
    }

    /// How many times chunk `i` of `id` was chosen (tests and diagnostics).
    pub fn sent(&self, id: &FileId, i: u32) -> u32 {
        let files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        files
            .get(id)
            .and_then(|c| c.sent.get(i as usize).copied())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::Sha256Digest;

    #[test]
    fn sends_every_chunk_once_before_any_twice() {
        let l = UploadLedger::default();
        let id = FileId(Sha256Digest::of(b"f"));
        let all: Vec<u32> = (0..8).collect();
        let mut first: Vec<u32> = (0..8).flat_map(|_| l.pick(&id, 8, &all, 1)).collect();
        first.sort();
        assert_eq!(first, all, "each chunk once in the first round");
        let two = l.pick(&id, 8, &all, 2);
        assert_eq!(two.len(), 2);
        assert_ne!(two[0], two[1]);
        assert!(two.iter().all(|&i| l.sent(&id, i) == 2));
    }

    #[test]
    fn picks_only_among_the_candidates_least_sent_first() {
        let l = UploadLedger::default();
        let id = FileId(Sha256Digest::of(b"g"));
        assert_eq!(l.pick(&id, 4, &[2], 1), vec![2]);
        assert_eq!(l.pick(&id, 4, &[2, 3], 1), vec![3]);
        // Past the end and duplicates are ignored; never more than asked or offered.
        assert_eq!(l.pick(&id, 4, &[9, 1, 1], 3), vec![1]);
        assert!(l.pick(&id, 4, &[], 1).is_empty());
    }

    #[test]
    fn breaks_ties_in_the_order_offered() {
        let l = UploadLedger::default();
        let id = FileId(Sha256Digest::of(b"o"));
        assert_eq!(l.pick(&id, 8, &[5, 1, 7], 1), vec![5]);
        assert_eq!(l.pick(&id, 8, &[5, 1, 7], 2), vec![1, 7]);
        // 5 was sent once, 1 and 7 once too: now the order offered again.
        assert_eq!(l.pick(&id, 8, &[7, 5], 1), vec![7]);
    }
}
