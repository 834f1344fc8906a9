//! The tracker client's unit tests: how answers and transport failures are classified,
//! and fail-over.

use tokio_rustls::rustls;
use tonic::{Code, Status};

use super::*;

#[test]
fn urls_get_a_scheme() {
    assert_eq!(normalize_url("127.0.0.1:7070"), "http://127.0.0.1:7070");
    assert_eq!(normalize_url("https://t.example/"), "https://t.example");
}

#[tokio::test]
async fn unreachable_trackers_fail_over_and_then_say_so() {
    // Two closed ports: both are tried, and the error names them.
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let urls = vec![
        a.local_addr().unwrap().to_string(),
        b.local_addr().unwrap().to_string(),
    ];
    drop((a, b));
    let c = TrackerClient::new(&urls, Some("t".into())).unwrap();
    let err = c.search("", "").await.unwrap_err();
    assert!(matches!(err, TrackerError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&urls[1]), "{err}");
    let no_token = TrackerClient::new(&urls, None).unwrap();
    assert!(matches!(
        no_token.search("", "").await,
        Err(TrackerError::NotLoggedIn)
    ));
}

#[test]
fn should_sort_the_trackers_answers_by_code() {
    let url = "http://t:1";
    let answer = |code, auth| classify(url, &Status::new(code, "m"), auth);
    assert!(matches!(
        answer(Code::Unauthenticated, true),
        TrackerError::NotLoggedIn
    ));
    assert!(matches!(
        answer(Code::Unauthenticated, false),
        TrackerError::InvalidCredentials
    ));
    assert!(matches!(
        answer(Code::NotFound, true),
        TrackerError::NotFound { message } if message == "m"
    ));
    assert!(matches!(
        answer(Code::AlreadyExists, false),
        TrackerError::AlreadyExists { .. }
    ));
    assert!(matches!(
        answer(Code::PermissionDenied, true),
        TrackerError::PermissionDenied { .. }
    ));
    for code in [
        Code::InvalidArgument,
        Code::OutOfRange,
        Code::FailedPrecondition,
    ] {
        assert!(
            matches!(answer(code, true), TrackerError::InvalidInput { .. }),
            "{code:?}"
        );
    }
    assert!(matches!(
        answer(Code::ResourceExhausted, false),
        TrackerError::Throttled { .. }
    ));
    for code in [Code::Unavailable, Code::Cancelled, Code::DeadlineExceeded] {
        let e = answer(code, true);
        assert!(
            matches!(&e, TrackerError::Unavailable { urls, .. } if urls == url),
            "{code:?}: {e:?}"
        );
        assert!(e.try_next() && e.affects_every_call());
    }
    for code in [
        Code::Ok,
        Code::Unknown,
        Code::Internal,
        Code::Unimplemented,
        Code::Aborted,
        Code::DataLoss,
    ] {
        assert!(
            matches!(answer(code, true), TrackerError::Protocol(_)),
            "{code:?}"
        );
    }
    // The tracker's words are shown as they are, whatever they say.
    let e = classify(
        url,
        &Status::not_found("transport error: certificate"),
        true,
    );
    assert_eq!(
        e.to_string(),
        "tracker refused: transport error: certificate"
    );
    let e = classify(url, &Status::internal(""), true);
    assert!(
        matches!(&e, TrackerError::Protocol(m) if !m.is_empty()),
        "{e}"
    );
}

#[test]
fn should_sort_transport_failures_by_their_sources() {
    use std::io::{Error as IoError, ErrorKind};
    let local = |e: Box<dyn std::error::Error + Send + Sync>| {
        Status::from_error(Box::new(tonic::ConnectError(e)))
    };
    let refused = local(Box::new(IoError::from(ErrorKind::ConnectionRefused)));
    let e = classify("http://t:1", &refused, true);
    assert!(
        matches!(&e, TrackerError::Unreachable { reason, .. } if !reason.contains("TLS")),
        "{e:?}"
    );
    let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    let tls = local(Box::new(IoError::new(ErrorKind::InvalidData, bad_cert)));
    let e = classify("https://t:1", &tls, false);
    assert!(matches!(e, TrackerError::Tls { .. }), "{e:?}");
    assert!(e.to_string().contains("--ca"), "{e}");
    // Another TLS failure is no certificate problem.
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
    let tls = local(Box::new(IoError::new(ErrorKind::InvalidData, alert)));
    let e = classify("https://t:1", &tls, false);
    assert!(matches!(e, TrackerError::Unreachable { .. }), "{e:?}");
    // Even a local status whose code is NOT_FOUND is a failure to reach the tracker.
    let mut odd = Status::not_found("x");
    odd.set_source(std::sync::Arc::new(IoError::from(ErrorKind::NotFound)));
    let e = classify("http://t:1", &odd, true);
    assert!(matches!(e, TrackerError::Unreachable { .. }), "{e:?}");
    // Connected, then closed before any HTTP/2 answer (a TLS port spoken to in plain
    // text loses this race or the protocol-error one): the hint either way.
    let mut closed = Status::cancelled("connection closed");
    closed.set_source(std::sync::Arc::new(IoError::other("connection closed")));
    let e = classify("http://t:1", &closed, true);
    assert!(e.to_string().contains("use https://"), "{e}");
    // A working connection that broke (a tracker restarting) is no TLS mistake.
    let mut reset = Status::unknown("h2 protocol error");
    reset.set_source(std::sync::Arc::new(IoError::from(ErrorKind::BrokenPipe)));
    let e = classify("http://t:1", &reset, true);
    assert!(!e.to_string().contains("https://"), "{e}");
    // A call that timed out is no TLS mistake.
    let mut slow = Status::cancelled("timeout expired");
    slow.set_source(std::sync::Arc::new(tonic::TimeoutExpired(())));
    let e = classify("http://t:1", &slow, true);
    assert!(!e.to_string().contains("https://"), "{e}");
}

#[tokio::test]
async fn should_name_the_certificate_when_the_tracker_is_not_trusted() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![key.cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = acceptor.accept(tcp).await;
        }
    });
    // No --ca: nothing is trusted.
    let c = TrackerClient::new(&[format!("https://{addr}")], None).unwrap();
    let err = c.login("u", "p").await.unwrap_err();
    assert!(matches!(err, TrackerError::Tls { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("--ca"),
        "{text}"
    );
}

#[tokio::test]
async fn should_suggest_https_when_plain_http_meets_a_tls_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // What the tracker's TLS port answers to plain text.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let url = format!("http://{addr}");
    let c = TrackerClient::new(std::slice::from_ref(&url), None).unwrap();
    let err = c.login("u", "p").await.unwrap_err();
    assert!(matches!(err, TrackerError::Unreachable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&url) && text.contains("https://"), "{text}");
}
