//! Unit tests of the replica store, and the fixtures the task tests share.

use super::*;
use common::Sha256Digest;
use std::sync::atomic::Ordering;

pub(crate) const MIB: u32 = 1 << 20;

/// A file of 2.5 MiB: chunks of 1 MiB, 1 MiB and 0.5 MiB.
pub(crate) fn meta(tag: &[u8]) -> FileMeta {
    FileMeta {
        file_id: FileId(Sha256Digest::of(tag)),
        name: "movie.mkv".into(),
        layout: ChunkLayout::new(2 * MIB as u64 + MIB as u64 / 2, MIB).unwrap(),
    }
}

pub(crate) fn chunk(m: &FileMeta, i: u32) -> Vec<u8> {
    vec![i as u8 + 1; m.layout.chunk_len(i).unwrap() as usize]
}

fn home() -> (tempfile::TempDir, Home) {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    (tmp, home)
}

fn put(s: &Arc<ReplicaStore>, m: &FileMeta, i: u32) -> Stored {
    let data = chunk(m, i);
    let res = s.reserve(data.len() as u64).unwrap();
    s.store_chunk(m, i, &data, res).unwrap()
}

#[test]
fn chunk_lengths_follow_the_layout() {
    let m = meta(b"a");
    assert_eq!(m.layout.chunk_count(), 3);
    assert_eq!(m.layout.chunk_len(0), Some(MIB as u64));
    assert_eq!(m.layout.chunk_len(2), Some(MIB as u64 / 2));
    assert_eq!(m.layout.chunk_len(3), None);
    assert_eq!(chunk_len(0, MIB, 0), None);
    assert_eq!(chunk_len(5, MIB, 0), Some(5));
    assert_eq!(
        chunk_len(5, 0, 0),
        None,
        "a record with a broken layout has no chunks"
    );
}

#[test]
fn should_write_read_and_drop_replica_chunks() {
    let (_t, home) = home();
    let s = ReplicaStore::open(home.clone(), 10 * MIB as u64).unwrap();
    let m = meta(b"a");
    assert_eq!(s.holding(&m.file_id, 2).unwrap(), Holding::Nothing);
    assert_eq!(put(&s, &m, 2), Stored::New);
    assert_eq!(put(&s, &m, 0), Stored::New);
    assert_eq!(put(&s, &m, 0), Stored::AlreadyHeld);
    assert_eq!(s.used(), MIB as u64 + MIB as u64 / 2);
    assert_eq!(s.reserved(), 0);
    assert_eq!(s.holding(&m.file_id, 2).unwrap(), Holding::Replica);
    assert_eq!(s.holding(&m.file_id, 1).unwrap(), Holding::Nothing);

    let rec = home.record(&m.file_id).unwrap().unwrap();
    assert_eq!(rec.kind, Kind::Replica);
    assert_eq!(rec.chunk_count(), 3);
    assert_eq!(rec.have_bits().iter_ones().collect::<Vec<_>>(), [0, 2]);
    assert_eq!(rec.path, home.replica_dir(&m.file_id));
    assert!(!rec.complete);
    assert!(rec.manifest().is_err(), "a replica has no manifest");
    let bytes = fs::read(home.replica_chunk_path(&m.file_id, 2)).unwrap();
    assert_eq!(bytes, chunk(&m, 2));
    let names: Vec<_> = fs::read_dir(home.replica_dir(&m.file_id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "no temp files left: {names:?}");

    assert_eq!(
        s.drop_chunks(&m.file_id, &[2, 1, 99]).unwrap(),
        MIB as u64 / 2
    );
    assert_eq!(s.used(), MIB as u64);
    assert!(!home.replica_chunk_path(&m.file_id, 2).exists());
    assert_eq!(s.drop_chunks(&m.file_id, &[0]).unwrap(), MIB as u64);
    assert_eq!(s.used(), 0);
    assert!(home.record(&m.file_id).unwrap().is_none());
    assert!(!home.replica_dir(&m.file_id).exists());
}

#[test]
fn should_refuse_chunks_of_the_wrong_length() {
    let (_t, home) = home();
    let s = ReplicaStore::open(home, 10 * MIB as u64).unwrap();
    let m = meta(b"a");
    let res = s.reserve(MIB as u64).unwrap();
    assert!(s.store_chunk(&m, 2, &chunk(&m, 0), res).is_err());
    assert_eq!((s.used(), s.reserved()), (0, 0));
}

#[test]
fn should_never_pass_the_quota_under_concurrent_reservations() {
    let (_t, home) = home();
    let quota = 5 * MIB as u64;
    let s = ReplicaStore::open(home, quota).unwrap();
    let granted = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        for _ in 0..16 {
            sc.spawn(|| {
                if let Some(r) = s.reserve(MIB as u64) {
                    granted.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    std::mem::forget(r);
                }
            });
        }
    });
    assert_eq!(granted.load(Ordering::SeqCst), 5);
    assert_eq!(s.reserved(), quota);
    assert!(s.reserve(1).is_none());
}

#[test]
fn should_give_reserved_bytes_back_when_a_fetch_fails() {
    let (_t, home) = home();
    let s = ReplicaStore::open(home, 2 * MIB as u64).unwrap();
    let m = meta(b"a");
    let a = s.reserve(MIB as u64).unwrap();
    let b = s.reserve(MIB as u64).unwrap();
    assert!(s.reserve(1).is_none());
    drop(a);
    assert_eq!(s.reserved(), MIB as u64);
    s.store_chunk(&m, 0, &chunk(&m, 0), b).unwrap();
    assert_eq!((s.used(), s.reserved()), (MIB as u64, 0));
    assert!(s.reserve(MIB as u64).is_some());
    assert!(s.reserve(MIB as u64 + 1).is_none());
    let zero = ReplicaStore::open(Home::open(Some(_t.path().join("z"))).unwrap(), 0).unwrap();
    assert!(zero.reserve(1).is_none());
}

#[test]
fn should_count_used_bytes_at_startup_and_clean_up_leftovers() {
    let (_t, home) = home();
    let (a, b) = (meta(b"a"), meta(b"b"));
    {
        let s = ReplicaStore::open(home.clone(), 100 * MIB as u64).unwrap();
        for i in 0..3 {
            put(&s, &a, i);
        }
        put(&s, &b, 1);
        put(&s, &b, 2);
    }
    // A chunk vanished, one was truncated, a temp file and a stray directory remain.
    fs::remove_file(home.replica_chunk_path(&a.file_id, 1)).unwrap();
    fs::write(home.replica_chunk_path(&b.file_id, 1), b"short").unwrap();
    fs::write(home.replica_dir(&a.file_id).join(".0.chunk.1.2.tmp"), b"x").unwrap();
    let stray = home.replica_dir(&FileId(Sha256Digest::of(b"stray")));
    fs::create_dir_all(&stray).unwrap();
    fs::write(stray.join("0.chunk"), b"x").unwrap();

    let s = ReplicaStore::open(home.clone(), 100 * MIB as u64).unwrap();
    assert_eq!(s.used(), 2 * MIB as u64);
    let ra = home.record(&a.file_id).unwrap().unwrap();
    assert_eq!(ra.have_bits().iter_ones().collect::<Vec<_>>(), [0, 2]);
    let rb = home.record(&b.file_id).unwrap().unwrap();
    assert_eq!(rb.have_bits().iter_ones().collect::<Vec<_>>(), [2]);
    assert!(!stray.exists());
    assert_eq!(
        fs::read_dir(home.replica_dir(&a.file_id)).unwrap().count(),
        2
    );
}

#[test]
fn should_reconcile_while_running_without_breaking_fetches() {
    let (_t, home) = home();
    let s = ReplicaStore::open(home.clone(), 100 * MIB as u64).unwrap();
    let m = meta(b"a");
    put(&s, &m, 0);
    put(&s, &m, 2);
    // A fetch in progress has its temp file written; the periodic rescan leaves it.
    let tmp = home.replica_dir(&m.file_id).join(".1.chunk.9.9.tmp");
    fs::write(&tmp, b"partial").unwrap();
    let fresh = meta(b"new");
    fs::create_dir_all(home.replica_dir(&fresh.file_id)).unwrap();
    let fresh_tmp = home.replica_dir(&fresh.file_id).join(".0.chunk.9.9.tmp");
    fs::write(&fresh_tmp, b"partial").unwrap();
    assert_eq!(s.rescan().unwrap(), MIB as u64 + MIB as u64 / 2);
    assert!(tmp.exists() && fresh_tmp.exists());

    // A `peer get` took the file over: its replica chunks go, and so do their bytes.
    let mut rec = home.record(&m.file_id).unwrap().unwrap();
    rec.kind = Kind::Downloaded;
    rec.path = _t.path().join("movie.mkv");
    home.save_record(&rec).unwrap();
    assert_eq!(s.rescan().unwrap(), 0);
    assert_eq!(s.used(), 0);
    assert!(!home.replica_chunk_path(&m.file_id, 0).exists());
    assert_eq!(home.record(&m.file_id).unwrap(), Some(rec));
}

#[test]
fn should_never_touch_a_users_own_file() {
    let (_t, home) = home();
    let s = ReplicaStore::open(home.clone(), 100 * MIB as u64).unwrap();
    let m = meta(b"own");
    let mut rec = new_record(&home, &m);
    rec.kind = Kind::Shared;
    rec.path = _t.path().join("mine.mkv");
    rec.have = hex::encode(Bitfield::full(3).as_bytes());
    rec.complete = true;
    fs::write(&rec.path, b"mine").unwrap();
    home.save_record(&rec).unwrap();

    assert_eq!(s.holding(&m.file_id, 0).unwrap(), Holding::OwnFile);
    assert_eq!(put(&s, &m, 0), Stored::OwnFile);
    assert_eq!(s.used(), 0);
    assert_eq!(s.drop_chunks(&m.file_id, &[0, 1, 2]).unwrap(), 0);
    assert_eq!(s.forget(&m.file_id).unwrap(), 0);
    assert_eq!(s.rescan().unwrap(), 0);
    assert_eq!(home.record(&m.file_id).unwrap(), Some(rec.clone()));
    assert_eq!(fs::read(&rec.path).unwrap(), b"mine");
}
