//! Unit tests of the node: ticket checks, holdings and chunk reads.

use super::*;
use crate::home::{Home, Kind, StoreRecord, len_and_mtime};
use crate::replica::{FileMeta, ReplicaStore};
use common::Bitfield;
use common::{Manifest, Sha256Digest, TicketClaims, TicketSigner};
use futures::StreamExt;

const MIB: u64 = 1 << 20;

fn tracker_signer() -> TicketSigner {
    TicketSigner::from_secret(&[5; 32])
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
    )
}

fn ticket(signer: &TicketSigner, id: &FileId, expires_at_ms: i64) -> pb::Ticket {
    pb::Ticket::from(&signer.sign(TicketClaims {
        file_id: *id,
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
