//! The gRPC contract (`tracker.v1.Tracker`), as a peer sees it.

use std::time::Duration;

use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tonic::Code;
use tracker::Config;

mod audits;
mod certificates;
pub(crate) mod collections;
pub(crate) mod gets;
mod introspect;
mod names;
mod persistence;
mod replication;
mod sessions;
mod tickets;

use crate::common::{
    TestTracker, announce, authed, heartbeat, locate, manifest, node_key, peer_id, register, within,
};

fn search(query: &str, kind: &str) -> pb::SearchRequest {
    pb::SearchRequest {
        query: query.into(),
        r#type: kind.into(),
        limit: 0,
        offset: 0,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_register_login_and_logout() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let first = register(&mut c, "alice").await;
        assert_eq!(first.len(), 64);
        let dup = c
            .register(pb::Credentials {
                user: "alice".into(),
                password: "another-password".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(dup.code(), Code::AlreadyExists);
        for (user, pw) in [
            ("bad name", "long-enough"),
            ("bob", ""),
            ("bob", "seven-7"),
            ("", "long-enough"),
        ] {
            let err = c
                .register(pb::Credentials {
                    user: user.into(),
                    password: pw.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{user:?}/{pw:?}");
        }
        let s = c
            .login(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(s.user, "alice");
        assert!(s.expires_at_ms > 0);
        c.logout(authed(pb::LogoutRequest {}, &s.token))
            .await
            .unwrap();
        let revoked = c
            .search(authed(search("", ""), &s.token))
            .await
            .unwrap_err();
        assert_eq!(revoked.code(), Code::Unauthenticated);
        let again = c
            .logout(authed(pb::LogoutRequest {}, &s.token))
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::Unauthenticated);
        let missing = c.search(search("", "")).await.unwrap_err();
        assert_eq!(missing.code(), Code::Unauthenticated);
        c.search(authed(search("", ""), &first)).await.unwrap();
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_unknown_user_and_wrong_password_alike() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        register(&mut c, "alice").await;
        let wrong = c
            .login(pb::Credentials {
                user: "alice".into(),
                password: "nope".into(),
            })
            .await
            .unwrap_err();
        let unknown = c
            .login(pb::Credentials {
                user: "mallory".into(),
                password: "nope".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert_eq!(wrong.code(), unknown.code());
        assert_eq!(wrong.message(), "invalid user or password");
        assert_eq!(wrong.message(), unknown.message());
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_registration_when_closed() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start_with(Config {
            open_registration: false,
            ..Config::ephemeral(dir.path())
        })
        .await;
        let mut c = t.grpc().await;
        let err = c
            .register(pb::Credentials {
                user: "alice".into(),
                password: "pw".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_announce_search_resolve_and_locate() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (pa, pb_) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &pa, "127.0.0.1:9001").await;
        let f = announce(&mut c, &alice, &pa, manifest("Abbey Road.flac", 3, 1)).await;
        assert_eq!(f.id.len(), 64);
        assert_eq!((f.chunks, f.holders, f.r#type.as_str()), (3, 1, "audio"));
        // Same content again under another name: same file, the sharer's listing renamed
        // (and named back; `names` checks the rest).
        let again = announce(&mut c, &alice, &pa, manifest("other.flac", 3, 1)).await;
        assert_eq!(
            (again.id.as_str(), again.name.as_str()),
            (f.id.as_str(), "other.flac")
        );
        announce(&mut c, &alice, &pa, manifest("Abbey Road.flac", 3, 1)).await;
        announce(&mut c, &alice, &pa, manifest("movie.mkv", 1, 2)).await;

        let hits = c
            .search(authed(search("ROAD abbey", ""), &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hits.total, 1);
        assert_eq!(hits.items[0].id, f.id);
        let audio = c
            .search(authed(search("", "audio"), &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(audio.total, 1);
        let all = c
            .search(authed(search("", ""), &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.total, 2);
        assert_eq!(all.items[0].name, "Abbey Road.flac");
        let bad_type = c
            .search(authed(search("", "movies"), &alice))
            .await
            .unwrap_err();
        assert_eq!(bad_type.code(), Code::InvalidArgument);

        for term in [&f.id[..], &f.id[..8], "Abbey Road.flac"] {
            let r = c
                .resolve(authed(pb::ResolveRequest { term: term.into() }, &alice))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.files.len(), 1, "{term}");
            assert_eq!(r.files[0].id, f.id);
        }
        let none = c
            .resolve(authed(
                pb::ResolveRequest {
                    term: "abbey".into(),
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(none.files.is_empty());

        // Bob's peer gets chunk 1 of it.
        heartbeat(&mut c, &bob, &pb_, "127.0.0.1:9002").await;
        c.report_chunks(authed(
            pb::ReportChunksRequest {
                peer_id: pb_.clone(),
                file_id: f.id.clone(),
                kind: pb::HoldingKind::Downloaded as i32,
                chunks: vec![1],
            },
            &bob,
        ))
        .await
        .unwrap();
        let l = locate(&mut c, &bob, f.id.clone()).await;
        let m = l.manifest.unwrap();
        assert_eq!(
            (m.name.as_str(), m.chunk_hashes.len()),
            ("Abbey Road.flac", 96)
        );
        assert_eq!(l.file.unwrap().holders, 2);
        assert_eq!(l.holders.len(), 2);
        let a = l.holders.iter().find(|h| h.peer_id == pa).unwrap();
        assert!(a.have.is_empty(), "a full holder sends no bitfield");
        assert_eq!(a.addr, "127.0.0.1:9001");
        let b = l.holders.iter().find(|h| h.peer_id == pb_).unwrap();
        assert_eq!(b.have.as_ref(), &[0b0100_0000]);

        let peers = c
            .list_peers(authed(pb::ListPeersRequest {}, &bob))
            .await
            .unwrap()
            .into_inner()
            .peers;
        assert_eq!(peers.len(), 2);
        assert!(peers.iter().all(|p| p.state == "up"));
        assert!(peers.iter().any(|p| p.user == "bob" && p.id == pb_));

        // Bob cannot speak for Alice's peer.
        let stolen = c
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    peer_id: pa.clone(),
                    addr: "evil:1".into(),
                    ..Default::default()
                },
                &bob,
            ))
            .await
            .unwrap_err();
        assert_eq!(stolen.code(), Code::PermissionDenied);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_not_hand_out_a_down_peer_until_it_heartbeats_again() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start_with(Config {
            peer_timeout: Duration::from_millis(300),
            ..Config::ephemeral(dir.path())
        })
        .await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p = peer_id(1);
        let interval = c
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    peer_id: p.clone(),
                    addr: "127.0.0.1:9001".into(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner()
            .interval_ms;
        assert_eq!(interval, 100);
        let f = announce(&mut c, &alice, &p, manifest("a.txt", 1, 1)).await;
        assert_eq!(f.holders, 1);
        tokio::time::sleep(Duration::from_millis(450)).await;
        let l = locate(&mut c, &alice, f.id.clone()).await;
        assert!(l.holders.is_empty());
        assert_eq!(l.file.unwrap().holders, 0);
        let peers = c
            .list_peers(authed(pb::ListPeersRequest {}, &alice))
            .await
            .unwrap()
            .into_inner()
            .peers;
        assert_eq!(peers[0].state, "down");
        heartbeat(&mut c, &alice, &p, "127.0.0.1:9001").await;
        let l = locate(&mut c, &alice, f.id.clone()).await;
        assert_eq!(l.holders.len(), 1);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_bad_reports_manifests_and_unknown_files() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p = peer_id(1);
        let f = announce(&mut c, &alice, &p, manifest("a.bin", 2, 1)).await;
        let report = |file: &str, chunk: u32| {
            authed(
                pb::ReportChunksRequest {
                    peer_id: p.clone(),
                    file_id: file.into(),
                    kind: 0,
                    chunks: vec![chunk],
                },
                &alice,
            )
        };
        let past = c.report_chunks(report(&f.id, 2)).await.unwrap_err();
        assert_eq!(past.code(), Code::InvalidArgument);
        let unknown_id = "ab".repeat(32);
        let unknown = c.report_chunks(report(&unknown_id, 0)).await.unwrap_err();
        assert_eq!(unknown.code(), Code::NotFound);
        let not_an_id = c.report_chunks(report("xyz", 0)).await.unwrap_err();
        assert_eq!(not_an_id.code(), Code::InvalidArgument);
        let locate = c
            .locate(authed(
                pb::LocateRequest {
                    file_id: unknown_id,
                    requester_key: node_key(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .unwrap_err();
        assert_eq!(locate.code(), Code::NotFound);

        let mut wrong_count = manifest("b.bin", 2, 2);
        wrong_count.size += 5 << 20;
        let mut bad_chunk_size = manifest("c.bin", 1, 3);
        bad_chunk_size.chunk_size = 1000;
        let mut short_sha = manifest("d.bin", 1, 4);
        short_sha.sha256 = vec![0; 31].into();
        let mut ragged = manifest("e.bin", 1, 5);
        ragged.chunk_hashes = vec![0; 33].into();
        let no_name = manifest("", 1, 6);
        for (what, m) in [
            ("chunk count", Some(wrong_count)),
            ("chunk size", Some(bad_chunk_size)),
            ("sha256", Some(short_sha)),
            ("ragged", Some(ragged)),
            ("name", Some(no_name)),
            ("missing", None),
        ] {
            let err = c
                .announce(authed(
                    pb::AnnounceRequest {
                        peer_id: p.clone(),
                        manifest: m,
                        ..Default::default()
                    },
                    &alice,
                ))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::InvalidArgument,
                "{what}: {}",
                err.message()
            );
        }
        let bad_peer = c
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    peer_id: "../../etc".into(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_peer.code(), Code::InvalidArgument);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_forget_a_file_when_its_last_holder_unindexes_it() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let (p1, p2) = (peer_id(1), peer_id(2));
        let f = announce(&mut c, &alice, &p1, manifest("a.bin", 1, 1)).await;
        announce(&mut c, &alice, &p2, manifest("a.bin", 1, 1)).await;
        let unindex = |peer: &str| {
            authed(
                pb::UnindexRequest {
                    peer_id: peer.into(),
                    file_id: f.id.clone(),
                },
                &alice,
            )
        };
        c.unindex(unindex(&p1)).await.unwrap();
        let twice = c.unindex(unindex(&p1)).await.unwrap_err();
        assert_eq!(twice.code(), Code::NotFound);
        c.locate(authed(
            pb::LocateRequest {
                file_id: f.id.clone(),
                requester_key: node_key(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .unwrap();
        c.unindex(unindex(&p2)).await.unwrap();
        let gone = c
            .locate(authed(
                pb::LocateRequest {
                    file_id: f.id.clone(),
                    requester_key: node_key(),
                    ..Default::default()
                },
                &alice,
            ))
            .await
            .unwrap_err();
        assert_eq!(gone.code(), Code::NotFound);
        let found = c
            .search(authed(search("", ""), &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.total, 0);
        t.stop().await;

        // Forgotten for good: not back after a restart.
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let found = c
            .search(authed(search("", ""), &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.total, 0);
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_replace_holdings_on_sync_and_report_unknown_files() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let (p1, p2) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &p1, "h:1").await;
        heartbeat(&mut c, &alice, &p2, "h:2").await;
        let a = announce(&mut c, &alice, &p1, manifest("a.bin", 2, 1)).await;
        let b = announce(&mut c, &alice, &p1, manifest("b.bin", 2, 2)).await;
        let unknown = "cd".repeat(32);
        let res = c
            .sync_holdings(authed(
                pb::SyncHoldingsRequest {
                    peer_id: p2.clone(),
                    holdings: vec![
                        pb::Holding {
                            file_id: a.id.clone(),
                            kind: pb::HoldingKind::Replica as i32,
                            have: vec![0x80].into(),
                        },
                        pb::Holding {
                            file_id: unknown.clone(),
                            kind: pb::HoldingKind::Downloaded as i32,
                            have: Default::default(),
                        },
                    ],
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(res.unknown_file_ids, vec![unknown]);
        // Peer 1 restarts having lost file b.
        c.sync_holdings(authed(
            pb::SyncHoldingsRequest {
                peer_id: p1.clone(),
                holdings: vec![pb::Holding {
                    file_id: a.id.clone(),
                    kind: pb::HoldingKind::Shared as i32,
                    have: Default::default(),
                }],
            },
            &alice,
        ))
        .await
        .unwrap();
        let la = locate(&mut c, &alice, a.id.clone()).await;
        assert_eq!(la.holders.len(), 2);
        let lb = locate(&mut c, &alice, b.id.clone()).await;
        assert!(lb.holders.is_empty());
        let bad_bits = c
            .sync_holdings(authed(
                pb::SyncHoldingsRequest {
                    peer_id: p2.clone(),
                    holdings: vec![pb::Holding {
                        file_id: a.id.clone(),
                        kind: 2,
                        have: vec![0, 0, 0].into(),
                    }],
                },
                &alice,
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_bits.code(), Code::InvalidArgument);
        t.stop().await;
    })
    .await
}

/// A getter locates again every second while it downloads; once it holds the verified
/// manifest the answer carries only holders and a ticket, not 32 bytes per chunk.
#[tokio::test(flavor = "multi_thread")]
async fn should_leave_out_the_manifest_when_the_caller_has_it() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p1 = peer_id(1);
        heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
        let f = announce(&mut c, &alice, &p1, manifest("big.bin", 1000, 7)).await;
        let ask = |have_manifest| {
            authed(
                pb::LocateRequest {
                    file_id: f.id.clone(),
                    requester_key: node_key(),
                    have_manifest,
                },
                &alice,
            )
        };
        let full = c.locate(ask(false)).await.unwrap().into_inner();
        let lean = c.locate(ask(true)).await.unwrap().into_inner();
        assert_eq!(
            full.manifest.as_ref().unwrap().chunk_hashes.len(),
            32 * 1000
        );
        assert!(lean.manifest.is_none());
        assert_eq!(lean.holders, full.holders);
        assert_eq!(lean.holders.len(), 1);
        assert_eq!(lean.file, full.file);
        let ticket = lean.ticket.as_ref().expect("a ticket");
        assert_eq!(ticket.file_id, f.id);
        assert!(
            prost::Message::encoded_len(&lean) < 1024,
            "lean answer of {} bytes",
            prost::Message::encoded_len(&lean)
        );
        t.stop().await;
    })
    .await
}
