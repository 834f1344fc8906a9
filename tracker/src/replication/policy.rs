//! Placement policy: which peers receive a new copy of a chunk, and which surplus copies go.
//! Pure functions over a list of peer loads, so they are tested without a tracker.
//!
//! A peer is a target only if it is up now, is not excluded (it already holds the chunk, has
//! a pending fetch or drop of it, or failed it too often), and has room for it:
//! `quota - assigned >= chunk_len`. Among those, the least loaded wins; ties are broken at
//! random so equal peers fill evenly without a fixed order.

use rand::{Rng, RngExt};

/// What the policy knows of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerLoad {
    /// Up now (heartbeat fresh and an address to fetch from).
    pub up: bool,
    /// Bytes offered for replicas.
    pub quota: u64,
    /// Bytes counted against the quota: `max(reported used, replica holdings)` plus pending
    /// fetches.
    pub assigned: u64,
}

impl PeerLoad {
    fn room_for(&self, len: u64) -> bool {
        self.up && self.quota.saturating_sub(self.assigned) >= len
    }
}

/// Chooses up to `copies` distinct targets for a chunk of `chunk_len` bytes among `peers`,
/// skipping those for which `excluded(i)` holds, least assigned first with random
/// tie-breaks. Adds `chunk_len` to each chosen peer's `assigned`. Returns their indexes
/// (fewer than `copies` when not enough peers qualify).
pub fn place<R: Rng + ?Sized>(
    peers: &mut [PeerLoad],
    excluded: impl Fn(usize) -> bool,
    chunk_len: u64,
    copies: usize,
    rng: &mut R,
) -> Vec<usize> {
    let mut chosen: Vec<usize> = Vec::with_capacity(copies);
    while chosen.len() < copies {
        let mut best: Option<usize> = None;
        let mut ties = 0u32;
        for (i, p) in peers.iter().enumerate() {
            if !p.room_for(chunk_len) || chosen.contains(&i) || excluded(i) {
                continue;
            }
            match best {
                Some(b) if peers[b].assigned < p.assigned => {}
                Some(b) if peers[b].assigned == p.assigned => {
                    // Reservoir sampling over the ties: each is kept with equal chance.
                    ties += 1;
                    if rng.random_range(0..ties) == 0 {
                        best = Some(i);
                    }
                }
                _ => {
                    best = Some(i);
                    ties = 1;
                }
            }
        }
        let Some(b) = best else {
            break;
        };
        peers[b].assigned = peers[b].assigned.saturating_add(chunk_len);
        chosen.push(b);
    }
    chosen
}

/// Chooses `surplus` of the `candidates` (indexes into `peers`) whose copies to drop: the
/// most assigned first, so relief goes to the fullest peers.
pub fn surplus(peers: &[PeerLoad], candidates: &[usize], surplus: usize) -> Vec<usize> {
    let mut order = candidates.to_vec();
    order.sort_by(|&a, &b| peers[b].assigned.cmp(&peers[a].assigned).then(a.cmp(&b)));
    order.truncate(surplus);
    order
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    const MB: u64 = 1 << 20;

    fn peer(quota: u64, assigned: u64) -> PeerLoad {
        PeerLoad {
            up: true,
            quota,
            assigned,
        }
    }

    #[test]
    fn should_fill_equal_peers_evenly() {
        let mut rng = rand::rng();
        let mut peers = vec![peer(1 << 40, 0); 7];
        for _ in 0..1000 {
            let got = place(&mut peers, |_| false, MB, 2, &mut rng);
            assert_eq!(got.len(), 2);
        }
        let min = peers.iter().map(|p| p.assigned).min().unwrap();
        let max = peers.iter().map(|p| p.assigned).max().unwrap();
        assert!(max - min <= MB, "spread {} chunks", (max - min) / MB);
        assert_eq!(peers.iter().map(|p| p.assigned).sum::<u64>(), 2000 * MB);
    }

    #[test]
    fn should_break_ties_at_random() {
        let mut rng = rand::rng();
        let mut firsts = HashSet::new();
        for _ in 0..200 {
            let mut peers = vec![peer(10 * MB, 0); 4];
            firsts.insert(place(&mut peers, |_| false, MB, 1, &mut rng)[0]);
        }
        assert_eq!(firsts.len(), 4, "every equal peer is chosen sometimes");
    }

    #[test]
    fn should_never_put_two_copies_on_one_peer() {
        let mut rng = rand::rng();
        let mut peers = vec![peer(100 * MB, 0); 3];
        let got = place(&mut peers, |_| false, MB, 5, &mut rng);
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!(got.len(), 3, "only three peers exist");
        assert_eq!(distinct.len(), 3);
        // Excluded peers (holders, pending fetches) are skipped.
        let got = place(&mut peers, |i| i != 1, MB, 3, &mut rng);
        assert_eq!(got, vec![1]);
    }

    #[test]
    fn should_never_exceed_a_quota() {
        let mut rng = rand::rng();
        let mut peers = vec![peer(3 * MB, 0), peer(5 * MB, MB), peer(MB / 2, 0)];
        let mut placed = 0;
        for _ in 0..100 {
            placed += place(&mut peers, |_| false, MB, 2, &mut rng).len();
        }
        assert_eq!(
            placed,
            3 + 4,
            "room for 3 and 4 chunks, none on the tiny one"
        );
        for p in &peers {
            assert!(p.assigned <= p.quota.max(MB), "{p:?}");
        }
        assert_eq!(peers[2].assigned, 0);
        // A peer already over quota (it reported more used than offered) gets nothing.
        let mut over = vec![peer(MB, 2 * MB)];
        assert!(place(&mut over, |_| false, 1, 1, &mut rng).is_empty());
    }

    #[test]
    fn should_never_choose_a_down_peer() {
        let mut rng = rand::rng();
        let mut peers = vec![
            PeerLoad {
                up: false,
                quota: 1 << 40,
                assigned: 0,
            },
            peer(1 << 40, 100 * MB),
        ];
        for _ in 0..50 {
            assert_eq!(place(&mut peers, |_| false, MB, 2, &mut rng), vec![1]);
        }
        assert_eq!(peers[0].assigned, 0);
    }

    #[test]
    fn should_prefer_the_least_loaded() {
        let mut rng = rand::rng();
        let mut peers = vec![
            peer(1 << 40, 5 * MB),
            peer(1 << 40, MB),
            peer(1 << 40, 3 * MB),
        ];
        assert_eq!(place(&mut peers, |_| false, MB, 2, &mut rng), vec![1, 2]);
    }

    #[test]
    fn should_drop_surplus_from_the_fullest_first() {
        let peers = vec![peer(10, 3), peer(10, 9), peer(10, 5), peer(10, 7)];
        assert_eq!(surplus(&peers, &[0, 1, 2], 2), vec![1, 2]);
        assert_eq!(surplus(&peers, &[0, 3], 5), vec![3, 0]);
        assert!(surplus(&peers, &[0, 3], 0).is_empty());
    }
}
