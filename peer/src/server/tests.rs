//! Unit tests of the node: ticket checks, holdings and chunk reads.

use super::upload::ChunkStream;
use super::*;
use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::replica::{FileMeta, ReplicaStore};
use common::Bitfield;
use common::{Manifest, NodeKey, Sha256Digest, TicketClaims, TicketSigner};
use futures::StreamExt;

const MIB: u64 = 1 << 20;

fn tracker_signer() -> TicketSigner {
    TicketSigner::from_secret(&[5; 32])
}

/// The key of the getter these tests play.
fn getter() -> NodeKey {
    NodeKey::from_secret(&[9; 32])
}

fn store_source(home: &Home) -> Arc<dyn ChunkSource> {
    Arc::new(StoreSource::new(
        home.clone(),
        PeerId::from_random([1; 16]),
        None,
    ))
}

fn service(home: &Home) -> PeerService {
    let key = TrackerKey::default();
    key.set(&tracker_signer().public_key()).unwrap();
    PeerService::new(
        store_source(home),
        PeerId::from_random([1; 16]),
        "127.0.0.1:1".into(),
        None,
        key,
        TrackerReach::default(),
    )
}

fn ticket(signer: &TicketSigner, id: &FileId, expires_at_ms: i64) -> pb::Ticket {
    pb::Ticket::from(&signer.sign(TicketClaims {
        file_id: *id,
        key: getter().public_key(),
        peer_id: None,
        user: "alice".into(),
        expires_at_ms,
    }))
}

async fn fetch(svc: &PeerService, id: &FileId, indices: Vec<u32>) -> Result<Vec<Bytes>, Status> {
    let t = ticket(&tracker_signer(), id, crate::now_ms() + 60_000);
    fetch_with(svc, id, indices, Some(t)).await
}

async fn fetch_with(
    svc: &PeerService,
    id: &FileId,
    indices: Vec<u32>,
    ticket: Option<pb::Ticket>,
) -> Result<Vec<Bytes>, Status> {
    let req = pb::GetChunksRequest {
        file_id: id.to_string(),
        indices,
        ticket,
        pick: 0,
        proof: Some((&getter().prove(Method::GetChunks, id, crate::now_ms())).into()),
        certificate: None,
    };
    let mut stream = svc.get_chunks(Request::new(req)).await?.into_inner();
    let mut out = Vec::new();
    while let Some(c) = stream.next().await {
        out.push(c?.data);
    }
    Ok(out)
}

#[tokio::test]
async fn should_serve_only_the_replica_chunks_it_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let store = ReplicaStore::open(home.clone(), 10 * MIB).unwrap();
    let m = FileMeta {
        file_id: FileId(Sha256Digest::of(b"r")),
        name: "r.bin".into(),
        layout: common::ChunkLayout::new(2 * MIB + 5, MIB as u32).unwrap(),
    };
    let last = vec![9u8; 5];
    let res = store.reserve(5).unwrap();
    store.store_chunk(&m, 2, &last, res).unwrap();
    let svc = service(&home);
    let got = fetch(&svc, &m.file_id, vec![2]).await.unwrap();
    assert_eq!(got, [Bytes::from(last)]);
    let err = fetch(&svc, &m.file_id, vec![0]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    // Dropped meanwhile: refused (not a crash), whatever the cache says.
    store.drop_chunks(&m.file_id, &[2]).unwrap();
    let err = fetch(&svc, &m.file_id, vec![2]).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
}

#[tokio::test]
async fn should_refuse_requests_without_a_valid_ticket_for_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let store = ReplicaStore::open(home.clone(), 10 * MIB).unwrap();
    let m = FileMeta {
        file_id: FileId(Sha256Digest::of(b"t")),
        name: "t.bin".into(),
        layout: common::ChunkLayout::new(5, MIB as u32).unwrap(),
    };
    let res = store.reserve(5).unwrap();
    store.store_chunk(&m, 0, &[1; 5], res).unwrap();
    let id = m.file_id;
    let other = FileId(Sha256Digest::of(b"other"));
    let now = crate::now_ms();
    let good = tracker_signer();
    let forger = TicketSigner::from_secret(&[6; 32]);
    let mut altered = ticket(&good, &id, now + 60_000);
    altered.user = "mallory".into();
    let cases = [
        ("none", None, tonic::Code::Unauthenticated),
        (
            "expired",
            Some(ticket(&good, &id, now - 60_000)),
            tonic::Code::Unauthenticated,
        ),
        (
            "forged",
            Some(ticket(&forger, &id, now + 60_000)),
            tonic::Code::Unauthenticated,
        ),
        ("altered", Some(altered), tonic::Code::Unauthenticated),
        (
            "another file",
            Some(ticket(&good, &other, now + 60_000)),
            tonic::Code::PermissionDenied,
        ),
    ];
    let svc = service(&home);
    // A good ticket first: its verdict is remembered, and the altered copy below (same
    // signature, other claims) must still be refused.
    let good_ticket = ticket(&good, &id, now + 60_000);
    for _ in 0..2 {
        let got = fetch_with(&svc, &id, vec![0], Some(good_ticket.clone())).await;
        assert_eq!(got.unwrap().len(), 1);
    }
    let err = fetch_with(&svc, &other, vec![0], Some(good_ticket))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    for (what, t, code) in cases {
        let err = fetch_with(&svc, &id, vec![0], t).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    // Within the clock skew an expired ticket still passes.
    let late = ticket(&good, &id, now - 10_000);
    assert_eq!(
        fetch_with(&svc, &id, vec![0], Some(late))
            .await
            .unwrap()
            .len(),
        1
    );

    // A node that does not know the key yet is not ready.
    let keyless = PeerService::new(
        store_source(&home),
        PeerId::from_random([1; 16]),
        "127.0.0.1:1".into(),
        None,
        TrackerKey::default(),
        TrackerReach::default(),
    );
    let t = ticket(&good, &id, now + 60_000);
    let err = fetch_with(&keyless, &id, vec![0], Some(t))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn should_withdraw_shared_files_that_changed_on_the_periodic_check() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let path = tmp.path().join("a.txt");
    std::fs::write(&path, b"abc").unwrap();
    let d = Sha256Digest::of(b"abc");
    let m = Manifest::from_parts("a.txt".into(), 3, d, MIB as u32, &d.0).unwrap();
    let mut rec = StoreRecord::new(&m, Kind::Shared, path.clone(), &Bitfield::full(1));
    let (len, mtime) = len_and_mtime(&std::fs::metadata(&path).unwrap());
    (rec.file_len, rec.mtime_ns) = (Some(len), Some(mtime));
    home.save_record(&rec).unwrap();
    let svc = StoreSource::new(home.clone(), PeerId::from_random([1; 16]), None);
    assert_eq!(svc.check_shared_files(), 0);
    assert!(!home.record(&m.id()).unwrap().unwrap().changed);
    std::fs::write(&path, b"abcd").unwrap();
    assert_eq!(svc.check_shared_files(), 1);
    assert!(home.record(&m.id()).unwrap().unwrap().changed);
    assert_eq!(svc.check_shared_files(), 0, "once");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"abcd",
        "the user's file stays"
    );
}

/// A download in progress of `m` holding `have`, recorded in `home`.
fn record_download(home: &Home, m: &Manifest, have: &[u32]) {
    let mut bits = Bitfield::new(m.chunk_count());
    for &i in have {
        bits.set(i);
    }
    let rec = StoreRecord::new(m, Kind::Downloaded, "/nonexistent/d.bin".into(), &bits);
    home.save_record(&rec).unwrap();
}

/// A file of 100 chunks: its holding takes 13 bytes, a list of a few new chunks less.
fn hundred_chunks() -> Manifest {
    let hashes = [7u8; 100 * 32];
    let d = Sha256Digest::of(b"d");
    Manifest::from_parts("d.bin".into(), 100 * MIB, d, MIB as u32, &hashes).unwrap()
}

async fn open_holdings(
    svc: &PeerService,
    id: &FileId,
    ticket: Option<pb::Ticket>,
) -> Result<holdings::UpdateStream, Status> {
    let req = pb::HoldingsRequest {
        file_id: id.to_string(),
        ticket,
        proof: Some((&getter().prove(Method::Holdings, id, crate::now_ms())).into()),
        certificate: None,
    };
    Ok(svc.holdings(Request::new(req)).await?.into_inner())
}

fn good_ticket(id: &FileId) -> Option<pb::Ticket> {
    Some(ticket(&tracker_signer(), id, crate::now_ms() + 60_000))
}

/// The next message, within a bound far above the poll and reload periods.
async fn next_update(s: &mut holdings::UpdateStream) -> Option<pb::HoldingsUpdate> {
    tokio::time::timeout(std::time::Duration::from_secs(10), s.next())
        .await
        .expect("an update or the end within 10 s")
        .map(|r| r.expect("an update, not an error"))
}

fn ones(have: &Bytes, n: u32) -> Vec<u32> {
    Bitfield::from_bytes(have, n).unwrap().iter_ones().collect()
}

#[tokio::test]
async fn should_stream_holdings_as_the_record_grows_and_end_when_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let m = hundred_chunks();
    let id = m.id();
    record_download(&home, &m, &[0, 1]);
    let svc = service(&home);
    let mut s = open_holdings(&svc, &id, good_ticket(&id)).await.unwrap();

    // At once: the whole holding.
    let first = next_update(&mut s).await.unwrap();
    assert_eq!(ones(&first.have, 100), [0, 1]);
    assert!(first.added.is_empty());

    // The record grows: only the new chunk is sent.
    record_download(&home, &m, &[0, 1, 5]);
    let grew = next_update(&mut s).await.unwrap();
    assert!(grew.have.is_empty(), "{grew:?}");
    assert_eq!(grew.added, [5]);

    // Complete: the rest (whole, being shorter than a list of 97), then the end.
    record_download(&home, &m, &(0..100).collect::<Vec<_>>());
    let done = next_update(&mut s).await.unwrap();
    assert_eq!(ones(&done.have, 100), (0..100).collect::<Vec<_>>());
    assert!(next_update(&mut s).await.is_none(), "the stream ends");

    // A complete holding is one message.
    let mut s = open_holdings(&svc, &id, good_ticket(&id)).await.unwrap();
    assert_eq!(next_update(&mut s).await.unwrap().have.len(), 13);
    assert!(next_update(&mut s).await.is_none());
}

#[tokio::test]
async fn should_refuse_holdings_without_a_valid_ticket_or_a_holding() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let m = hundred_chunks();
    let id = m.id();
    record_download(&home, &m, &[3]);
    let svc = service(&home);
    let other = FileId(Sha256Digest::of(b"other"));
    let forger = TicketSigner::from_secret(&[6; 32]);
    let now = crate::now_ms();
    let cases = [
        ("none", None, tonic::Code::Unauthenticated),
        (
            "expired",
            Some(ticket(&tracker_signer(), &id, now - 60_000)),
            tonic::Code::Unauthenticated,
        ),
        (
            "forged",
            Some(ticket(&forger, &id, now + 60_000)),
            tonic::Code::Unauthenticated,
        ),
        (
            "another file",
            good_ticket(&other),
            tonic::Code::PermissionDenied,
        ),
    ];
    for (what, t, code) in cases {
        let err = open_holdings(&svc, &id, t).await.unwrap_err();
        assert_eq!(err.code(), code, "{what}: {err:?}");
    }
    let err = open_holdings(&svc, &other, good_ticket(&other))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
}

#[tokio::test]
async fn should_cap_holdings_streams_and_end_them_on_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let m = hundred_chunks();
    let id = m.id();
    record_download(&home, &m, &[3]);
    let svc = service(&home);
    let mut open = Vec::new();
    // Every ticket here is alice's: her cap is reached first.
    for _ in 0..StreamLimits::default().holdings.per_client {
        open.push(open_holdings(&svc, &id, good_ticket(&id)).await.unwrap());
    }
    let err = open_holdings(&svc, &id, good_ticket(&id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("user 'alice'"), "{err:?}");

    // A reader that goes away frees its slot.
    open.pop();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut s = loop {
        match open_holdings(&svc, &id, good_ticket(&id)).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => panic!("the slot was not freed: {e:?}"),
        }
    };
    assert_eq!(ones(&next_update(&mut s).await.unwrap().have, 100), [3]);

    // Shutdown ends every stream (after what it had sent).
    svc.followers.stop.cancel();
    assert!(next_update(&mut s).await.is_none());
    for mut s in open {
        while next_update(&mut s).await.is_some() {}
    }
}

#[test]
fn holdings_changes_are_new_chunks_or_the_whole_holding() {
    let bits = |ones: &[u32]| {
        let mut b = Bitfield::new(100);
        for &i in ones {
            b.set(i);
        }
        b
    };
    assert!(holdings::change(&bits(&[1]), &bits(&[1])).is_none());
    let c = holdings::change(&bits(&[1]), &bits(&[1, 9, 99])).unwrap();
    assert_eq!((c.have.len(), c.added), (0, vec![9, 99]));
    // A chunk dropped: the whole holding.
    let c = holdings::change(&bits(&[1, 9]), &bits(&[9])).unwrap();
    assert_eq!(ones(&c.have, 100), [9]);
    // Many new chunks: the whole holding is shorter.
    let c = holdings::change(&bits(&[]), &bits(&(0..50).collect::<Vec<_>>())).unwrap();
    assert_eq!(c.have.len(), 13);
    assert!(c.added.is_empty());
}

#[tokio::test]
async fn should_end_holdings_when_the_ticket_runs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let m = hundred_chunks();
    let id = m.id();
    record_download(&home, &m, &[3]);
    let svc = service(&home);
    // Expired, but within the clock skew for one more second.
    let t = ticket(&tracker_signer(), &id, crate::now_ms() - 29_000);
    let mut s = open_holdings(&svc, &id, Some(t)).await.unwrap();
    assert_eq!(ones(&next_update(&mut s).await.unwrap().have, 100), [3]);
    assert!(next_update(&mut s).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn should_serve_a_chunk_recorded_just_after_the_record_was_read() {
    let tmp = tempfile::tempdir().unwrap();
    let home = Home::open(Some(tmp.path().join("h"))).unwrap();
    let hashes = [7u8; 3 * 32];
    let d = Sha256Digest::of(b"p");
    let m = Manifest::from_parts("p.bin".into(), 3 * MIB, d, MIB as u32, &hashes).unwrap();
    let path = tmp.path().join("p.bin");
    std::fs::write(crate::home::part_path(&path), vec![4u8; 3 * MIB as usize]).unwrap();
    let record = |have: &[u32]| {
        let mut bits = Bitfield::new(3);
        have.iter().for_each(|&i| bits.set(i));
        let rec = StoreRecord::new(&m, Kind::Downloaded, path.clone(), &bits);
        home.save_record(&rec).unwrap();
    };
    record(&[0]);
    let svc = service(&home);
    assert_eq!(fetch(&svc, &m.id(), vec![0]).await.unwrap().len(), 1);
    // The getter records chunk 1 (and tells the tracker) right after the node read the
    // record: a request for it is served, not refused.
    record(&[0, 1]);
    let got = fetch(&svc, &m.id(), vec![1]).await.unwrap();
    assert_eq!(got, [Bytes::from(vec![4u8; MIB as usize])]);
}

/// A service with `uploads` caps over a download in progress of three 1 MiB chunks.
fn three_chunks(tmp: &std::path::Path, uploads: StreamCaps) -> (PeerService, FileId) {
    let home = Home::open(Some(tmp.join("h"))).unwrap();
    let hashes = [7u8; 3 * 32];
    let d = Sha256Digest::of(b"c");
    let m = Manifest::from_parts("c.bin".into(), 3 * MIB, d, MIB as u32, &hashes).unwrap();
    let path = tmp.join("c.bin");
    std::fs::write(&path, vec![4u8; 3 * MIB as usize]).unwrap();
    let rec = StoreRecord::new(&m, Kind::Downloaded, path, &Bitfield::full(3));
    home.save_record(&rec).unwrap();
    let limits = StreamLimits {
        uploads,
        ..StreamLimits::default()
    };
    (service(&home).with_limits(limits), m.id())
}

async fn open_chunks(svc: &PeerService, id: &FileId, user: &str) -> Result<ChunkStream, Status> {
    let t = tracker_signer().sign(TicketClaims {
        file_id: *id,
        key: getter().public_key(),
        peer_id: None,
        user: user.into(),
        expires_at_ms: crate::now_ms() + 60_000,
    });
    let req = pb::GetChunksRequest {
        file_id: id.to_string(),
        indices: vec![0, 1, 2],
        ticket: Some(pb::Ticket::from(&t)),
        pick: 0,
        proof: Some((&getter().prove(Method::GetChunks, id, crate::now_ms())).into()),
        certificate: None,
    };
    Ok(svc.get_chunks(Request::new(req)).await?.into_inner())
}

#[tokio::test]
async fn should_cap_chunk_streams_per_user_and_in_total_and_free_them_when_they_end() {
    let tmp = tempfile::tempdir().unwrap();
    let caps = StreamCaps {
        total: 3,
        per_client: 2,
        per_connection: 2,
    };
    let (svc, id) = three_chunks(tmp.path(), caps);
    let mut alice = vec![
        open_chunks(&svc, &id, "alice").await.unwrap(),
        open_chunks(&svc, &id, "alice").await.unwrap(),
    ];
    let busy = |r: Result<ChunkStream, Status>, who: &str| {
        let err = r.err().expect("refused");
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains(who), "{err:?}");
        assert!(err.message().contains("try again later"), "{err:?}");
    };
    busy(open_chunks(&svc, &id, "alice").await, "user 'alice'");
    let bob = open_chunks(&svc, &id, "bob").await.unwrap();
    busy(open_chunks(&svc, &id, "bob").await, "this node");

    // A stream read to its end frees its slot; so does one dropped unread.
    let mut first = alice.pop().unwrap();
    let mut n = 0;
    while let Some(c) = first.next().await {
        assert_eq!(c.unwrap().data.len(), MIB as usize);
        n += 1;
    }
    assert_eq!(n, 3);
    drop(first);
    let again = open_chunks(&svc, &id, "bob").await.unwrap();
    drop((bob, again));
    alice.push(open_chunks(&svc, &id, "alice").await.unwrap());
    drop(alice);
    for user in ["carol", "dave", "erin"] {
        let _ = open_chunks(&svc, &id, user).await.unwrap();
    }
}
