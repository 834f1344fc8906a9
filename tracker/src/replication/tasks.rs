//! The task table: every replication task the tracker has planned and not yet seen done,
//! kept in memory with the indexes the planner and the delivery need (by peer, by file,
//! pending fetch bytes per peer, and one timer queue for back-offs and leases). The
//! database holds the same rows; the caller queues the writes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::{FileId, PeerId};

use crate::model::{TaskKind, TaskRecord, TaskState};

/// Failures after which a task is given up (and its peer avoided for that chunk).
pub const MAX_ATTEMPTS: u32 = 5;
/// Longest back-off between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a peer that gave up on a chunk is not asked to fetch it again.
pub const AVOID_FOR: Duration = Duration::from_secs(600);

/// The wait before attempt `attempts + 1`, after `attempts` failures: 1 s, 2 s, 4 s … 60 s.
pub fn backoff(attempts: u32) -> Duration {
    let shift = attempts.saturating_sub(1).min(6);
    (Duration::from_secs(1) * (1u32 << shift)).min(MAX_BACKOFF)
}

/// One task in memory.
#[derive(Clone, Debug)]
pub struct Task {
    pub rec: TaskRecord,
    /// For a fetch, the chunk's length (counted against the target's quota).
    pub bytes: u64,
    /// Whether its row is committed; only durable tasks are pushed.
    pub durable: bool,
}

/// What a failure did to a task.
#[derive(Debug)]
pub enum Failed {
    /// Queued again after a back-off; the updated row.
    Retry(TaskRecord),
    /// Removed after [`MAX_ATTEMPTS`] failures.
    GaveUp(Task),
}

/// Every live task with its indexes.
#[derive(Debug, Default)]
pub struct TaskTable {
    tasks: HashMap<u64, Task>,
    by_peer: HashMap<PeerId, BTreeSet<u64>>,
    by_file: HashMap<FileId, BTreeSet<u64>>,
    /// Bytes of pending fetches per target peer.
    fetch_bytes: HashMap<PeerId, u64>,
    /// (when, task): a queued task's next attempt or a delivered task's lease end. Entries
    /// whose time no longer matches the task are stale and skipped.
    timers: BTreeSet<(i64, u64)>,
    /// (file, chunk, peer) → Unix ms until which the peer is not asked to fetch the chunk.
    avoid: HashMap<(FileId, u32, PeerId), i64>,
    delivered: usize,
    next_id: u64,
    /// Removed task ids → Unix ms of removal, so a late update of a removed task from
    /// another tracker (through the change feed) does not bring it back.
    tombstones: HashMap<u64, i64>,
}

/// How long a removed task's id is remembered.
const TOMBSTONE_FOR: Duration = Duration::from_secs(600);

impl TaskTable {
    /// An empty table whose first new id is `last_id + 1`. Trackers sharing a database
    /// start from disjoint blocks (see `app::follow`), so their ids never collide.
    pub fn new(last_id: u64) -> Self {
        Self {
            next_id: last_id + 1,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Tasks pushed and not yet completed.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    pub fn get(&self, id: u64) -> Option<&Task> {
        self.tasks.get(&id)
    }

    /// Adds a stored task (at start) or a new one.
    pub fn insert(&mut self, rec: TaskRecord, bytes: u64, durable: bool) {
        let id = rec.id;
        self.by_peer
            .entry(rec.peer_id.clone())
            .or_default()
            .insert(id);
        self.by_file.entry(rec.file_id).or_default().insert(id);
        if rec.kind == TaskKind::Fetch {
            *self.fetch_bytes.entry(rec.peer_id.clone()).or_default() += bytes;
        }
        match rec.state {
            TaskState::Queued => {
                self.timers.insert((rec.next_attempt_at_ms, id));
            }
            TaskState::Delivered => {
                self.delivered += 1;
                self.timers.insert((rec.lease_until_ms.unwrap_or(0), id));
            }
        }
        if let Some(old) = self.tasks.insert(
            id,
            Task {
                rec,
                bytes,
                durable,
            },
        ) {
            // Never happens (ids are unique); keep the counters right if it does.
            if old.rec.state == TaskState::Delivered {
                self.delivered -= 1;
            }
        }
    }

    /// Plans a new queued task, not yet durable; returns its row.
    pub fn create(
        &mut self,
        peer: &PeerId,
        kind: TaskKind,
        file: FileId,
        chunks: Vec<u32>,
        bytes: u64,
        now_ms: i64,
    ) -> TaskRecord {
        let rec = self.draft(peer, kind, file, chunks, now_ms);
        self.insert(rec.clone(), bytes, false);
        rec
    }

    /// A new queued task's row with a fresh id, not in the table: a write plans it before
    /// its commit and [`TaskTable::insert`]s it after.
    pub fn draft(
        &mut self,
        peer: &PeerId,
        kind: TaskKind,
        file: FileId,
        chunks: Vec<u32>,
        now_ms: i64,
    ) -> TaskRecord {
        let id = self.next_id;
        self.next_id += 1;
        TaskRecord {
            id,
            peer_id: peer.clone(),
            kind,
            file_id: file,
            chunks,
            state: TaskState::Queued,
            attempts: 0,
            next_attempt_at_ms: now_ms,
            lease_until_ms: None,
            last_error: None,
            created_at_ms: now_ms,
        }
    }

    /// Removes a task for good: later updates of it from other trackers are ignored.
    pub fn remove(&mut self, id: u64) -> Option<Task> {
        let t = self.unlink(id)?;
        self.bury(id);
        Some(t)
    }

    fn bury(&mut self, id: u64) {
        let now = crate::model::now_ms();
        self.tombstones.insert(id, now);
        if self.tombstones.len() > 10_000 {
            let keep = now - ms(TOMBSTONE_FOR);
            self.tombstones.retain(|_, at| *at > keep);
        }
    }

    /// Applies another tracker's row for a task: inserts or replaces it, unless the task
    /// was removed here. Returns whether it changed anything.
    pub fn upsert_remote(&mut self, rec: TaskRecord, bytes: u64) -> bool {
        if self.tombstones.contains_key(&rec.id) {
            return false;
        }
        if self.tasks.get(&rec.id).is_some_and(|t| t.rec == rec) {
            return false;
        }
        self.unlink(rec.id);
        self.insert(rec, bytes, true);
        true
    }

    /// Another tracker removed a task. Task ids are never reused, so the removal is
    /// remembered even for a task this tracker never saw (say, its row was skipped for a
    /// file not known here yet): a stray later update must not bring it to life.
    pub fn remove_remote(&mut self, id: u64) -> Option<Task> {
        let t = self.unlink(id);
        self.bury(id);
        t
    }

    /// Takes a task out of the table and its indexes.
    fn unlink(&mut self, id: u64) -> Option<Task> {
        let t = self.tasks.remove(&id)?;
        let peer = &t.rec.peer_id;
        if let Some(s) = self.by_peer.get_mut(peer) {
            s.remove(&id);
            if s.is_empty() {
                self.by_peer.remove(peer);
            }
        }
        if let Some(s) = self.by_file.get_mut(&t.rec.file_id) {
            s.remove(&id);
            if s.is_empty() {
                self.by_file.remove(&t.rec.file_id);
            }
        }
        if t.rec.kind == TaskKind::Fetch
            && let Some(b) = self.fetch_bytes.get_mut(peer)
        {
            *b = b.saturating_sub(t.bytes);
            if *b == 0 {
                self.fetch_bytes.remove(peer);
            }
        }
        if t.rec.state == TaskState::Delivered {
            self.delivered -= 1;
        }
        Some(t)
    }

    /// A peer's task ids, oldest first.
    pub fn of_peer(&self, peer: &PeerId) -> Vec<u64> {
        self.by_peer
            .get(peer)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A file's task ids, oldest first.
    pub fn of_file(&self, file: &FileId) -> Vec<u64> {
        self.by_file
            .get(file)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }

    /// `peer`'s waiting gets (tasks of kind get), oldest first.
    pub fn gets_of(&self, peer: &PeerId) -> impl Iterator<Item = &TaskRecord> {
        (self.by_peer.get(peer).into_iter().flatten())
            .filter_map(|id| self.tasks.get(id))
            .map(|t| &t.rec)
            .filter(|r| r.kind == TaskKind::Get)
    }

    /// Bytes of `peer`'s pending fetches.
    pub fn fetch_bytes(&self, peer: &PeerId) -> u64 {
        self.fetch_bytes.get(peer).copied().unwrap_or(0)
    }

    pub fn mark_durable(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some(t) = self.tasks.get_mut(id) {
                t.durable = true;
            }
        }
    }

    /// Whether a queued task may be pushed now.
    pub fn is_due(&self, id: u64, now_ms: i64) -> bool {
        self.tasks.get(&id).is_some_and(|t| {
            t.durable && t.rec.state == TaskState::Queued && t.rec.next_attempt_at_ms <= now_ms
        })
    }

    /// Marks a task delivered until `lease_until_ms`; returns the updated row.
    pub fn deliver(&mut self, id: u64, lease_until_ms: i64) -> Option<TaskRecord> {
        let t = self.tasks.get_mut(&id)?;
        if t.rec.state != TaskState::Delivered {
            self.delivered += 1;
        }
        t.rec.state = TaskState::Delivered;
        t.rec.lease_until_ms = Some(lease_until_ms);
        self.timers.insert((lease_until_ms, id));
        Some(t.rec.clone())
    }

    /// Queues a task again, to be pushed from `at_ms`; returns the updated row.
    pub fn requeue(&mut self, id: u64, at_ms: i64) -> Option<TaskRecord> {
        let t = self.tasks.get_mut(&id)?;
        if t.rec.state == TaskState::Delivered {
            self.delivered -= 1;
        }
        t.rec.state = TaskState::Queued;
        t.rec.lease_until_ms = None;
        t.rec.next_attempt_at_ms = at_ms;
        self.timers.insert((at_ms, id));
        Some(t.rec.clone())
    }

    /// The row [`TaskTable::fail`] would leave, without changing anything: `Some(row)` for
    /// a retry, `None` when the task would be given up (or is unknown).
    pub fn failed_row(&self, id: u64, error: String, now_ms: i64) -> Option<TaskRecord> {
        let mut rec = self.tasks.get(&id)?.rec.clone();
        rec.attempts += 1;
        if gives_up(&rec) {
            return None;
        }
        rec.last_error = Some(error);
        rec.state = TaskState::Queued;
        rec.lease_until_ms = None;
        rec.next_attempt_at_ms = now_ms + ms(backoff(rec.attempts));
        Some(rec)
    }

    /// Records a failure: back-off and retry, or give up after [`MAX_ATTEMPTS`] (a fetch's
    /// peer is then avoided for that chunk for [`AVOID_FOR`]). A waiting get is never given
    /// up: it waits for its user, who cancels it.
    pub fn fail(&mut self, id: u64, error: String, now_ms: i64) -> Option<Failed> {
        let t = self.tasks.get_mut(&id)?;
        t.rec.attempts += 1;
        t.rec.last_error = Some(error);
        let attempts = t.rec.attempts;
        if gives_up(&t.rec) {
            let t = self.remove(id)?;
            if t.rec.kind == TaskKind::Fetch {
                let until = now_ms + ms(AVOID_FOR);
                for &c in &t.rec.chunks {
                    self.avoid
                        .insert((t.rec.file_id, c, t.rec.peer_id.clone()), until);
                }
            }
            return Some(Failed::GaveUp(t));
        }
        self.requeue(id, now_ms + ms(backoff(attempts)))
            .map(Failed::Retry)
    }

    /// Queues again `peer`'s delivered tasks whose lease has run out (their timers may
    /// have fired while another tracker held the node's stream); returns the changed rows.
    pub fn expire_leases(&mut self, peer: &PeerId, now_ms: i64) -> Vec<TaskRecord> {
        let ids = self.of_peer(peer);
        let mut out = Vec::new();
        for id in ids {
            let expired = self.tasks.get(&id).is_some_and(|t| {
                t.rec.state == TaskState::Delivered
                    && t.rec.lease_until_ms.is_some_and(|l| l <= now_ms)
            });
            if expired && let Some(rec) = self.requeue(id, now_ms) {
                out.push(rec);
            }
        }
        out
    }

    /// Whether `peer` recently gave up fetching this chunk.
    pub fn is_avoided(&self, file: &FileId, chunk: u32, peer: &PeerId, now_ms: i64) -> bool {
        self.avoid
            .get(&(*file, chunk, peer.clone()))
            .is_some_and(|&until| until > now_ms)
    }

    /// Pops the timers that are due: delivered tasks whose lease ran out are queued again
    /// (their rows are returned to persist), and queued tasks whose back-off ended are due.
    /// Returns the peers that have due tasks now, and the changed rows.
    ///
    /// Only tasks of peers for which `owns` is true are touched: with several trackers,
    /// the one holding a node's task stream runs its timers (another one would requeue a
    /// task that is being worked on). Timers of other peers are dropped; `expire_leases`
    /// catches up when their stream opens here.
    pub fn fire_timers(
        &mut self,
        now_ms: i64,
        owns: impl Fn(&PeerId) -> bool,
    ) -> (Vec<PeerId>, Vec<TaskRecord>) {
        let mut peers = Vec::new();
        let mut changed = Vec::new();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now_ms {
                break;
            }
            self.timers.pop_first();
            let Some(t) = self.tasks.get(&id) else {
                continue;
            };
            let peer = t.rec.peer_id.clone();
            if !owns(&peer) {
                continue;
            }
            match t.rec.state {
                TaskState::Delivered if t.rec.lease_until_ms == Some(at) => {
                    if let Some(rec) = self.requeue(id, now_ms) {
                        changed.push(rec);
                    }
                }
                TaskState::Queued if t.rec.next_attempt_at_ms == at => {}
                _ => continue,
            }
            if !peers.contains(&peer) {
                peers.push(peer);
            }
        }
        if self.avoid.len() > 10_000 {
            self.avoid.retain(|_, until| *until > now_ms);
        }
        (peers, changed)
    }
}

/// Whether a task that has failed `rec.attempts` times is given up.
fn gives_up(rec: &TaskRecord) -> bool {
    rec.kind != TaskKind::Get && rec.attempts >= MAX_ATTEMPTS
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId::from_random([n; 16])
    }

    fn file(n: u8) -> FileId {
        FileId(common::Sha256Digest([n; 32]))
    }

    #[test]
    fn should_preview_the_row_a_failure_leaves() {
        let mut t = TaskTable::new(0);
        let a = t.create(&peer(1), TaskKind::Fetch, file(1), vec![0], 100, 0);
        for n in 1..MAX_ATTEMPTS {
            let preview = t.failed_row(a.id, format!("e{n}"), 1000);
            match t.fail(a.id, format!("e{n}"), 1000) {
                Some(Failed::Retry(rec)) => assert_eq!(preview, Some(rec)),
                other => panic!("attempt {n}: {other:?}"),
            }
        }
        assert_eq!(t.failed_row(a.id, "last".into(), 1000), None, "given up");
        assert!(matches!(
            t.fail(a.id, "last".into(), 1000),
            Some(Failed::GaveUp(_))
        ));
    }

    #[test]
    fn a_waiting_get_is_never_given_up_and_costs_no_quota() {
        let mut t = TaskTable::new(0);
        t.create(&peer(1), TaskKind::Fetch, file(1), vec![0], 100, 0);
        let g = t.create(&peer(1), TaskKind::Get, file(2), Vec::new(), 0, 0);
        assert_eq!(t.fetch_bytes(&peer(1)), 100);
        for n in 1..=3 * MAX_ATTEMPTS {
            assert!(t.failed_row(g.id, format!("e{n}"), 1000).is_some());
            assert!(matches!(
                t.fail(g.id, format!("e{n}"), 1000),
                Some(Failed::Retry(_))
            ));
        }
        let gets: Vec<u64> = t.gets_of(&peer(1)).map(|r| r.id).collect();
        assert_eq!(gets, vec![g.id]);
        assert_eq!(t.gets_of(&peer(2)).count(), 0);
    }

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn should_keep_indexes_and_counters_in_step() {
        let mut t = TaskTable::new(41);
        let a = t.create(&peer(1), TaskKind::Fetch, file(1), vec![0], 100, 0);
        let b = t.create(&peer(1), TaskKind::Fetch, file(2), vec![3], 50, 0);
        let c = t.create(&peer(2), TaskKind::Drop, file(1), vec![0, 1], 0, 0);
        assert_eq!((a.id, b.id, c.id), (42, 43, 44));
        assert_eq!(t.fetch_bytes(&peer(1)), 150);
        assert_eq!(t.fetch_bytes(&peer(2)), 0);
        assert_eq!(t.of_peer(&peer(1)), vec![42, 43]);
        assert_eq!(t.of_file(&file(1)), vec![42, 44]);
        assert!(!t.is_due(42, 0), "not durable yet");
        t.mark_durable(&[42, 43, 44]);
        assert!(t.is_due(42, 0));
        t.deliver(42, 1000);
        assert_eq!(t.delivered(), 1);
        assert!(!t.is_due(42, 0));
        t.remove(42);
        assert_eq!((t.len(), t.delivered()), (2, 0));
        assert_eq!(t.fetch_bytes(&peer(1)), 50);
        assert_eq!(t.of_file(&file(1)), vec![44]);
    }

    #[test]
    fn should_never_revive_a_task_removed_elsewhere() {
        let mut here = TaskTable::new(0);
        let mut there = TaskTable::new(100);
        let rec = there.create(&peer(1), TaskKind::Fetch, file(1), vec![0], 1, 0);
        let delivered = there.deliver(rec.id, 500).unwrap();
        // Known here, removed there, then a stale update arrives.
        assert!(here.upsert_remote(rec.clone(), 1));
        assert!(here.remove_remote(rec.id).is_some());
        assert!(!here.upsert_remote(delivered.clone(), 1));
        // Never seen here (its row was skipped), removed there, then the stale update.
        let other = there.create(&peer(2), TaskKind::Fetch, file(1), vec![1], 1, 0);
        assert!(here.remove_remote(other.id).is_none());
        assert!(!here.upsert_remote(other, 1));
        assert_eq!((here.len(), here.delivered()), (0, 0));
    }

    #[test]
    fn should_requeue_when_a_lease_runs_out() {
        let mut t = TaskTable::new(0);
        let id = t
            .create(&peer(1), TaskKind::Fetch, file(1), vec![0], 1, 0)
            .id;
        t.mark_durable(&[id]);
        assert_eq!(t.fire_timers(0, |_| true).0, vec![peer(1)], "due at once");
        t.deliver(id, 500);
        assert!(t.fire_timers(499, |_| true).0.is_empty());
        let (peers, changed) = t.fire_timers(500, |_| true);
        assert_eq!(peers, vec![peer(1)]);
        assert_eq!(changed[0].state, TaskState::Queued);
        assert!(t.is_due(id, 500));
        assert_eq!(t.delivered(), 0);
    }

    #[test]
    fn should_back_off_then_give_up_and_avoid_the_peer() {
        let mut t = TaskTable::new(0);
        let id = t
            .create(&peer(1), TaskKind::Fetch, file(1), vec![7], 1, 0)
            .id;
        t.mark_durable(&[id]);
        let mut now = 0;
        for attempt in 1..MAX_ATTEMPTS {
            t.deliver(id, now + 60_000);
            match t.fail(id, "boom".into(), now) {
                Some(Failed::Retry(rec)) => {
                    assert_eq!(rec.attempts, attempt);
                    assert_eq!(rec.next_attempt_at_ms, now + ms(backoff(attempt)));
                }
                other => panic!("attempt {attempt}: {other:?}"),
            }
            assert!(!t.is_due(id, now));
            now += ms(backoff(attempt));
            assert!(t.is_due(id, now));
        }
        assert!(matches!(
            t.fail(id, "boom".into(), now),
            Some(Failed::GaveUp(_))
        ));
        assert_eq!(t.len(), 0);
        assert!(t.is_avoided(&file(1), 7, &peer(1), now));
        assert!(!t.is_avoided(&file(1), 6, &peer(1), now));
        assert!(!t.is_avoided(&file(1), 7, &peer(1), now + ms(AVOID_FOR)));
    }
}
