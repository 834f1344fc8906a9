//! Tickets as the tracker hands them out: Locate signs one for the caller's user and the
//! getter's own key (required), the key to check it with comes with sessions and
//! heartbeats, and every tracker on one database (and a restarted one) signs with the same
//! key.

use common::{NodeKey, Ticket, TicketVerifier};
use proto::peer::v1 as peer_pb;
use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tonic::Code;
use tracker::Config;

use crate::common::{
    TestTracker, announce, authed, backend_url, heartbeat, manifest, not_a_key, peer_id, register,
    within,
};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn parse(t: &peer_pb::Ticket) -> Ticket {
    Ticket::try_from(t).unwrap()
}

/// Locate of `file` by `token`'s user with `key` as the requester's key.
async fn locate_with(
    c: &mut proto::tracker::v1::tracker_client::TrackerClient<tonic::transport::Channel>,
    token: &str,
    file: &str,
    key: Vec<u8>,
) -> Result<pb::LocateResponse, tonic::Status> {
    let req = pb::LocateRequest {
        file_id: file.into(),
        have_manifest: true,
        requester_key: key.into(),
    };
    c.locate(authed(req, token)).await.map(|r| r.into_inner())
}

async fn login_key(t: &TestTracker, user: &str) -> Vec<u8> {
    let mut c = t.grpc().await;
    c.login(pb::Credentials {
        user: user.into(),
        password: format!("pw-of-{user}"),
    })
    .await
    .unwrap()
    .into_inner()
    .ticket_public_key
    .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_sign_locate_tickets_for_the_caller_with_the_advertised_key() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.ticket_ttl = std::time::Duration::from_secs(120);
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p = peer_id(1);
        let hb = c
            .heartbeat(authed(
                pb::HeartbeatRequest {
                    peer_id: p.clone(),
                    addr: "127.0.0.1:9001".into(),
                    storage_quota: 0,
                    storage_used: 0,
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(hb.ticket_public_key.len(), 32);
        assert_eq!(hb.ticket_public_key.to_vec(), login_key(&t, "alice").await);
        let f = announce(&mut c, &alice, &p, manifest("a.bin", 2, 1)).await;
        let before = now_ms();
        let getter = NodeKey::generate();
        let l = locate_with(&mut c, &alice, &f.id, getter.public_key().to_vec())
            .await
            .unwrap();
        let ticket = parse(l.ticket.as_ref().expect("locate carries a ticket"));
        let key = TicketVerifier::from_public(&hb.ticket_public_key).unwrap();
        let claims = key
            .verify(&ticket, &f.id.parse().unwrap(), now_ms())
            .unwrap();
        assert_eq!(claims.user, "alice");
        assert_eq!(claims.peer_id, None, "a Locate ticket is the user's");
        assert_eq!(claims.key, getter.public_key(), "it names the getter's key");
        let ttl = claims.expires_at_ms - before;
        assert!((119_000..=121_000).contains(&ttl), "ttl {ttl} ms");
        t.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn should_share_one_key_between_trackers_on_one_database_and_across_restarts() {
    within(async {
        let dir = TempDir::new().unwrap();
        let a = TestTracker::start(&dir).await;
        let mut c = a.grpc().await;
        register(&mut c, "alice").await;
        let key_a = login_key(&a, "alice").await;
        // A second tracker on the same database reads the key the first one made.
        let b = TestTracker::start(&dir).await;
        assert_eq!(login_key(&b, "alice").await, key_a);
        b.stop().await;
        a.stop().await;
        let again = TestTracker::start(&dir).await;
        assert_eq!(login_key(&again, "alice").await, key_a);
        let url = backend_url(&Config::ephemeral(dir.path()).database_url).await;
        let minted = tracker::admin::ticket_signer(&url).await.unwrap();
        assert_eq!(minted.public_key().to_vec(), key_a);
        again.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn locate_should_require_the_getters_key_and_name_each_key_in_its_ticket() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p = peer_id(1);
        heartbeat(&mut c, &alice, &p, "127.0.0.1:9001").await;
        let f = announce(&mut c, &alice, &p, manifest("a.bin", 2, 1)).await;

        let missing = locate_with(&mut c, &alice, &f.id, Vec::new())
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::InvalidArgument);
        assert_eq!(
            missing.message(),
            "requester_key: the getter's 32-byte Ed25519 public key is required"
        );
        for bad in [vec![1; 31], vec![1; 33], not_a_key()] {
            let n = bad.len();
            let e = locate_with(&mut c, &alice, &f.id, bad).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{n} bytes: {e:?}");
            assert!(e.message().starts_with("requester_key: "), "{e:?}");
        }

        // Two nodes of one user: each ticket names the key that asked, and a cached ticket
        // is reused only for that key.
        let tracker_key = TicketVerifier::from_public(&login_key(&t, "alice").await).unwrap();
        let file = f.id.parse().unwrap();
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let mut seen = Vec::new();
        for k in [&a, &b, &a, &b] {
            let l = locate_with(&mut c, &alice, &f.id, k.public_key().to_vec())
                .await
                .unwrap();
            let ticket = parse(l.ticket.as_ref().unwrap());
            let claims = tracker_key.verify(&ticket, &file, now_ms()).unwrap();
            assert_eq!(claims.key, k.public_key());
            assert_eq!(claims.user, "alice");
            seen.push(ticket);
        }
        assert_eq!(seen[0], seen[2], "the ticket for a key is cached");
        assert_eq!(seen[1], seen[3]);
        assert_ne!(seen[0], seen[1]);
        t.stop().await;
    })
    .await;
}
