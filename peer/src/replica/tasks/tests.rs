//! Unit tests of fetch and drop tasks, run by a `Runner` against a fake transport.

use super::super::tests::{MIB, chunk, meta};
use super::*;
use crate::home::{Home, Kind};
use crate::tracker_client::DropTask;
use crate::transport::ChunkStream;
use common::{FileId, Ticket};
use std::collections::HashMap;

/// A transport serving canned answers per address, counting calls.
#[derive(Default)]
struct Fake {
    answers: HashMap<String, Result<Vec<u8>, String>>,
    calls: Mutex<Vec<String>>,
}

impl ChunkTransport for Fake {
    async fn fetch(
        &self,
        addr: &str,
        _file_id: &FileId,
        indices: &[u32],
        _ticket: Option<&Ticket>,
    ) -> Result<ChunkStream, FetchError> {
        self.calls.lock().unwrap().push(addr.to_string());
        match self.answers.get(addr) {
            Some(Ok(d)) => {
                let item = Ok((indices[0], Bytes::from(d.clone())));
                Ok(Box::pin(futures::stream::iter([item])))
            }
            Some(Err(e)) => Err(FetchError::Refused(e.clone())),
            None => Err(FetchError::Connect("connection refused".into())),
        }
    }

    fn forget(&self, _addr: &str) {}
}

fn me() -> PeerId {
    PeerId::from_random([7; 16])
}

fn fetch_task(i: u32, addrs: &[&str]) -> FetchTask {
    let m = meta(b"file");
    let data = chunk(&m, i);
    FetchTask {
        chunk: i,
        sha256: Sha256Digest::of(&data),
        len: data.len() as u64,
        file: m,
        sources: addrs
            .iter()
            .map(|a| Source {
                peer_id: format!("peer-{a}"),
                addr: a.to_string(),
            })
            .collect(),
        ticket: None,
    }
}

fn runner(
    tmp: &tempfile::TempDir,
    quota: u64,
    answers: &[(&str, Result<Vec<u8>, String>)],
) -> (Runner<Fake>, Arc<Fake>, Home) {
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let store = ReplicaStore::open(home.clone(), quota).unwrap();
    let fake = Arc::new(Fake {
        answers: answers
            .iter()
            .map(|(a, r)| (a.to_string(), r.clone()))
            .collect(),
        calls: Mutex::default(),
    });
    let r = Runner::new(store, fake.clone(), me(), "me:1".into());
    (r, fake, home)
}

#[tokio::test]
async fn should_try_the_next_source_after_a_bad_hash() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let mut bad = chunk(&m, 1);
    bad[0] ^= 0xff;
    let (r, fake, home) = runner(
        &tmp,
        10 * MIB as u64,
        &[("bad:1", Ok(bad)), ("good:1", Ok(chunk(&m, 1)))],
    );
    let t = fetch_task(1, &["bad:1", "good:1"]);
    assert_eq!(
        r.run(Work::Fetch(t.clone())).await,
        Ok(Done::Fetched(MIB as u64))
    );
    assert_eq!(r.store().used(), MIB as u64);
    assert_eq!(r.store().reserved(), 0);
    let on_disk = std::fs::read(home.replica_chunk_path(&m.file_id, 1)).unwrap();
    assert_eq!(on_disk, chunk(&m, 1));
    let rec = home.record(&m.file_id).unwrap().unwrap();
    assert_eq!((rec.kind, rec.name.as_str()), (Kind::Replica, "movie.mkv"));
    assert!(rec.have_bits().get(1));

    // Asked again: answered from the store, no source is contacted.
    let calls = fake.calls.lock().unwrap().len();
    assert_eq!(r.run(Work::Fetch(t)).await, Ok(Done::Held));
    assert_eq!(fake.calls.lock().unwrap().len(), calls);
}

#[tokio::test]
async fn should_fail_with_the_reasons_when_every_source_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let (r, fake, home) = runner(
        &tmp,
        10 * MIB as u64,
        &[
            ("short:1", Ok(vec![1; 10])),
            ("refuses:1", Err("no such chunk".into())),
        ],
    );
    let mut t = fetch_task(0, &["short:1", "refuses:1", "down:1", "me:1"]);
    t.sources.push(Source {
        peer_id: me().to_string(),
        addr: "elsewhere:1".into(),
    });
    let err = r.run(Work::Fetch(t)).await.unwrap_err();
    assert!(err.contains("every source failed"), "{err}");
    assert!(err.contains("SHA-256 or length"), "{err}");
    assert!(err.contains("no such chunk"), "{err}");
    assert!(err.contains("connection refused"), "{err}");
    let mut calls = fake.calls.lock().unwrap().clone();
    calls.sort();
    assert_eq!(calls, ["down:1", "refuses:1", "short:1"], "never itself");
    assert_eq!((r.store().used(), r.store().reserved()), (0, 0));
    assert!(home.record(&m.file_id).unwrap().is_none());

    let only_me = fetch_task(0, &["me:1"]);
    let err = r.run(Work::Fetch(only_me)).await.unwrap_err();
    assert!(err.contains("no source"), "{err}");
}

#[tokio::test]
async fn should_refuse_when_the_quota_is_full() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let (r, fake, _home) = runner(
        &tmp,
        MIB as u64 + 10,
        &[("a:1", Ok(chunk(&m, 0))), ("b:1", Ok(chunk(&m, 1)))],
    );
    assert!(r.run(Work::Fetch(fetch_task(0, &["a:1"]))).await.is_ok());
    let err = r
        .run(Work::Fetch(fetch_task(1, &["b:1"])))
        .await
        .unwrap_err();
    assert_eq!(err, "storage quota full");
    assert_eq!(fake.calls.lock().unwrap().as_slice(), ["a:1"]);
    assert_eq!(r.store().used(), MIB as u64);

    let tmp0 = tempfile::tempdir().unwrap();
    let (none, _, _) = runner(&tmp0, 0, &[("a:1", Ok(chunk(&m, 0)))]);
    let err = none.run(Work::Fetch(fetch_task(0, &["a:1"]))).await;
    assert_eq!(err, Err("storage quota full".into()));
}

#[tokio::test]
async fn should_keep_concurrent_fetches_within_the_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let (r, _, _) = runner(
        &tmp,
        2 * MIB as u64,
        &[
            ("a:1", Ok(chunk(&m, 0))),
            ("b:1", Ok(chunk(&m, 1))),
            ("c:1", Ok(chunk(&m, 2))),
        ],
    );
    let r = Arc::new(r);
    let mut set = tokio::task::JoinSet::new();
    for (i, a) in [(0, "a:1"), (1, "b:1"), (2, "c:1")] {
        let r = r.clone();
        set.spawn(async move { r.run(Work::Fetch(fetch_task(i, &[a]))).await });
    }
    let results = set.join_all().await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    // Whatever the order, two of the three fit and the third does not.
    assert_eq!(ok, 2, "{results:?}");
    assert!(r.store().used() <= 2 * MIB as u64);
    assert_eq!(r.store().reserved(), 0);
}

#[tokio::test]
async fn should_answer_ok_for_the_users_own_files_and_never_touch_them() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let (r, fake, home) = runner(&tmp, 10 * MIB as u64, &[("a:1", Ok(chunk(&m, 0)))]);
    let own = tmp.path().join("movie.mkv");
    std::fs::write(&own, b"the user's bytes").unwrap();
    let mut rec = crate::home::StoreRecord {
        file_id: m.file_id,
        name: m.name.clone(),
        size: m.layout.size(),
        sha256: String::new(),
        chunk_size: m.layout.chunk_size(),
        chunk_hashes: vec![String::new(); 3],
        kind: Kind::Shared,
        path: own.clone(),
        complete: true,
        have: hex::encode(common::Bitfield::full(3).as_bytes()),
        file_len: None,
        mtime_ns: None,
        changed: false,
        folder: None,
    };
    for kind in [Kind::Shared, Kind::Downloaded] {
        rec.kind = kind;
        home.save_record(&rec).unwrap();
        let fetch = Work::Fetch(fetch_task(0, &["a:1"]));
        assert_eq!(r.run(fetch).await, Ok(Done::Held));
        let drop = Work::Drop(DropTask {
            file_id: m.file_id,
            chunks: vec![0, 1, 2],
        });
        assert_eq!(r.run(drop).await, Ok(Done::Dropped(0)));
        assert_eq!(home.record(&m.file_id).unwrap(), Some(rec.clone()));
    }
    assert_eq!(std::fs::read(&own).unwrap(), b"the user's bytes");
    assert!(fake.calls.lock().unwrap().is_empty());
    assert!(!home.replica_dir(&m.file_id).exists());
}

#[tokio::test]
async fn should_drop_replica_chunks_and_refuse_invalid_tasks() {
    let tmp = tempfile::tempdir().unwrap();
    let m = meta(b"file");
    let (r, _, home) = runner(&tmp, 10 * MIB as u64, &[("a:1", Ok(chunk(&m, 2)))]);
    r.run(Work::Fetch(fetch_task(2, &["a:1"]))).await.unwrap();
    let drop = Work::Drop(DropTask {
        file_id: m.file_id,
        chunks: vec![2],
    });
    assert_eq!(r.run(drop).await, Ok(Done::Dropped(MIB as u64 / 2)));
    assert_eq!(r.store().used(), 0);
    assert!(home.record(&m.file_id).unwrap().is_none());
    let err = r.run(Work::Invalid("chunk 9 of 3".into())).await;
    assert_eq!(err, Err("bad task: chunk 9 of 3".into()));
}
