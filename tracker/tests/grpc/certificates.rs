//! Certify: the tracker certifies a peer's own key for the session's user, for
//! `--cert-ttl`, under the key it signs tickets with; never for another user's peer id.

use std::time::Duration;

use common::{Certificate, NodeKey, TicketVerifier};
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;
use tracker::Config;

use crate::common::{TestTracker, authed, heartbeat, not_a_key, peer_id, register, within};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn request(peer: &str, key: &[u8]) -> pb::CertifyRequest {
    pb::CertifyRequest {
        peer_id: peer.into(),
        key: key.to_vec().into(),
    }
}

async fn certify(
    c: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    key: &[u8],
) -> Result<pb::CertifyResponse, tonic::Status> {
    c.certify(authed(request(peer, key), token))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_certify_the_callers_key_for_cert_ttl_under_the_ticket_key() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.cert_ttl = Duration::from_secs(2 * 3600);
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await;
        let session = c
            .register(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let alice = session.token;
        let owned = peer_id(1);
        heartbeat(&mut c, &alice, &owned, "127.0.0.1:9001").await;
        // A peer id she owns, and one nobody has used yet (a node certifies at login,
        // before its first heartbeat).
        for peer in [owned, peer_id(2)] {
            let key = NodeKey::generate();
            let before = now_ms();
            let r = certify(&mut c, &alice, &peer, &key.public_key())
                .await
                .unwrap();
            let after = now_ms();
            assert_eq!(r.ticket_public_key, session.ticket_public_key);
            let cert = Certificate::try_from(&r.certificate.expect("a certificate")).unwrap();
            let verifier = TicketVerifier::from_public(&session.ticket_public_key).unwrap();
            let claims = verifier.verify_certificate(&cert, after).unwrap();
            assert_eq!(claims.peer_id.as_str(), peer);
            assert_eq!(claims.user, "alice");
            assert_eq!(claims.key, key.public_key());
            let ttl = 2 * 3600 * 1000;
            assert!(
                (before + ttl..=after + ttl).contains(&claims.expires_at_ms),
                "expires at {}, asked between {before} and {after}",
                claims.expires_at_ms
            );
        }
        // Certifying stores nothing: the new peer id is not a peer until it heartbeats.
        let peers = c
            .list_peers(authed(pb::ListPeersRequest {}, &alice))
            .await
            .unwrap()
            .into_inner()
            .peers;
        assert_eq!(peers.len(), 1);
        t.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_another_users_peer_bad_input_and_no_session() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let hers = peer_id(1);
        heartbeat(&mut c, &alice, &hers, "127.0.0.1:9001").await;
        let key = NodeKey::generate().public_key();

        let stolen = certify(&mut c, &bob, &hers, &key).await.unwrap_err();
        assert_eq!(stolen.code(), Code::PermissionDenied, "{stolen:?}");
        certify(&mut c, &bob, &peer_id(2), &key).await.unwrap();

        let not_hex = "g".repeat(32);
        for bad in ["", "xyz", not_hex.as_str(), &hers[..31]] {
            let e = certify(&mut c, &alice, bad, &key).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "peer id {bad:?}: {e:?}");
        }
        for bad in [Vec::new(), vec![1; 31], vec![1; 33], not_a_key()] {
            let e = certify(&mut c, &alice, &hers, &bad).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "key {bad:?}: {e:?}");
            assert!(e.message().starts_with("key: "), "{e:?}");
        }

        let anonymous = c.certify(request(&hers, &key)).await.unwrap_err();
        assert_eq!(anonymous.code(), Code::Unauthenticated);
        let forged = c
            .certify(authed(request(&hers, &key), &"0".repeat(64)))
            .await
            .unwrap_err();
        assert_eq!(forged.code(), Code::Unauthenticated);
        t.stop().await;
    })
    .await;
}
