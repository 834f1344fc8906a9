//! A guesser cannot lock a user out: failed logins slow down the address that sends them
//! (the socket's, plain or TLS), not the account they name. The attacker speaks from
//! 127.0.0.2, the user from 127.0.0.1, other guessers from further loopback addresses.

use std::net::IpAddr;

use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use reqwest::StatusCode;
use serde_json::json;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::common::{TestTracker, register, within};

const ALICE: &str = "127.0.0.1";
const EVE: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A gRPC client whose connection leaves from `from`.
async fn grpc_from(t: &TestTracker, from: &str) -> TrackerClient<Channel> {
    let channel = Endpoint::from_shared(t.url(""))
        .unwrap()
        .local_address(Some(ip(from)))
        .connect()
        .await
        .unwrap();
    TrackerClient::new(channel)
}

async fn login(
    c: &mut TrackerClient<Channel>,
    user: &str,
    password: &str,
) -> Result<(), tonic::Status> {
    c.login(pb::Credentials {
        user: user.into(),
        password: password.into(),
    })
    .await
    .map(drop)
}

/// A REST login from `from`; the status and the `Retry-After` header, if any.
async fn rest_login(
    t: &TestTracker,
    from: &str,
    user: &str,
    password: &str,
) -> (StatusCode, Option<u64>) {
    let r = reqwest::Client::builder()
        .local_address(ip(from))
        .build()
        .unwrap()
        .post(t.url("/api/v1/sessions"))
        .json(&json!({"user": user, "password": password}))
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (r.status(), retry)
}

#[tokio::test(flavor = "multi_thread")]
async fn should_slow_the_guesser_and_let_the_user_in_at_once() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        register(&mut t.grpc().await, "alice").await;
        let mut eve = grpc_from(&t, EVE).await;

        let mut answers = Vec::new();
        for _ in 0..30 {
            answers.push(login(&mut eve, "alice", "guess-1234").await.unwrap_err());
        }
        let codes: Vec<Code> = answers.iter().map(tonic::Status::code).collect();
        assert_eq!(codes[..5], [Code::Unauthenticated; 5], "{answers:?}");
        assert!(
            codes[5..].iter().all(|c| *c == Code::ResourceExhausted),
            "{answers:?}"
        );
        assert!(
            answers[5]
                .message()
                .starts_with("too many login attempts, retry in "),
            "{}",
            answers[5]
        );

        // Alice, from her own address, gets in at once, over gRPC and REST.
        let mut alice = grpc_from(&t, ALICE).await;
        login(&mut alice, "alice", "pw-of-alice")
            .await
            .expect("alice logs in while eve guesses");
        let (status, _) = rest_login(&t, ALICE, "alice", "pw-of-alice").await;
        assert_eq!(status, StatusCode::OK);

        // Eve stays throttled, even with the right password, on both adapters.
        let err = login(&mut eve, "alice", "pw-of-alice").await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        let (status, retry) = rest_login(&t, EVE, "alice", "pw-of-alice").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
        t.stop().await;
    })
    .await
}

/// Concurrent guesses cannot all slip past the check before the first one fails: only as
/// many passwords are checked (answered "invalid") as the limit allows; the rest are
/// refused before any password work.
#[tokio::test(flavor = "multi_thread")]
async fn should_check_no_more_passwords_than_the_limit_for_a_burst() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        register(&mut t.grpc().await, "alice").await;
        let eve = grpc_from(&t, EVE).await;
        let burst = (0..40).map(|i| {
            let mut c = eve.clone();
            async move { login(&mut c, "alice", &format!("guess-{i:04}")).await }
        });
        let answers = futures::future::join_all(burst).await;
        let checked = answers
            .iter()
            .filter(|r| r.as_ref().unwrap_err().code() == Code::Unauthenticated)
            .count();
        let refused = answers
            .iter()
            .filter(|r| r.as_ref().unwrap_err().code() == Code::ResourceExhausted)
            .count();
        assert_eq!((checked, refused), (5, 35), "{answers:?}");
        login(&mut grpc_from(&t, ALICE).await, "alice", "pw-of-alice")
            .await
            .expect("alice logs in after the burst");
        t.stop().await;
    })
    .await
}

/// Guessers spread over many addresses get one try each per minute once the user has 20
/// failures; an address that has not been failing still gets in.
#[tokio::test(flavor = "multi_thread")]
async fn should_give_a_spread_guesser_one_try_per_address() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        register(&mut t.grpc().await, "alice").await;
        let guessers: Vec<String> = (10..30).map(|i| format!("127.0.0.{i}")).collect();
        for g in &guessers {
            let err = login(&mut grpc_from(&t, g).await, "alice", "guess-1234")
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{g}: {err}");
        }
        let (status, retry) = rest_login(&t, &guessers[3], "alice", "guess-5678").await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "a second try from one of them"
        );
        assert!(retry.is_some());
        // Another user is not affected from there.
        let (status, _) = rest_login(&t, &guessers[3], "bob", "guess-5678").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = rest_login(&t, ALICE, "alice", "pw-of-alice").await;
        assert_eq!(status, StatusCode::OK, "alice from her own address");
        t.stop().await;
    })
    .await
}

/// Behind the tracker's own TLS the address is still the socket's.
#[tokio::test(flavor = "multi_thread")]
async fn should_throttle_by_the_socket_address_over_tls() {
    within(async {
        let dir = TempDir::new().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let t = TestTracker::start_with(tracker::Config {
            tls: Some(tracker::config::TlsFiles {
                cert: cert_path,
                key: key_path,
            }),
            ..tracker::Config::ephemeral(dir.path())
        })
        .await;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(cert.pem()))
            .domain_name("localhost");
        let connect = |from: &str| {
            let endpoint = Endpoint::from_shared(format!("https://{}", t.addr))
                .unwrap()
                .tls_config(tls.clone())
                .unwrap()
                .local_address(Some(ip(from)));
            async move { endpoint.connect().await }
        };
        let mut alice = TrackerClient::new(connect(ALICE).await.unwrap());
        alice
            .register(pb::Credentials {
                user: "alice".into(),
                password: "pw-of-alice".into(),
            })
            .await
            .unwrap();
        let mut eve = TrackerClient::new(connect(EVE).await.unwrap());
        for _ in 0..5 {
            let err = login(&mut eve, "alice", "guess-1234").await.unwrap_err();
            assert_eq!(err.code(), Code::Unauthenticated, "{err}");
        }
        let err = login(&mut eve, "alice", "guess-1234").await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
        login(&mut alice, "alice", "pw-of-alice")
            .await
            .expect("alice over TLS from her own address");
        t.stop().await;
    })
    .await
}
