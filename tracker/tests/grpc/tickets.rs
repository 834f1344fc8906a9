//! Tickets as the tracker hands them out: Locate signs one for the caller's user, the key
//! to check it with comes with sessions and heartbeats, and every tracker on one database
//! (and a restarted one) signs with the same key.

use common::{Ticket, TicketVerifier};
use proto::peer::v1 as peer_pb;
use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tracker::Config;

use crate::common::{
    TestTracker, announce, authed, backend_url, locate, manifest, peer_id, register, within,
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
        let l = locate(&mut c, &alice, f.id.clone()).await;
        let ticket = parse(l.ticket.as_ref().expect("locate carries a ticket"));
        let key = TicketVerifier::from_public(&hb.ticket_public_key).unwrap();
        let claims = key
            .verify(&ticket, &f.id.parse().unwrap(), now_ms())
            .unwrap();
        assert_eq!(claims.user, "alice");
        assert_eq!(claims.peer_id, None, "a Locate ticket is the user's");
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
