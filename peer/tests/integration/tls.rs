//! TLS end to end: a certificate authority made inside the test (rcgen), a tracker serving
//! gRPC and HTTP over TLS on its one port, and real `peer` processes that trust the CA with
//! `--ca` and serve chunks over TLS with `--tls-cert`/`--tls-key`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracker::config::TlsFiles;

const MIB: usize = 1 << 20;

/// A CA and two certificates it signed (one for the tracker, one for the nodes), for
/// `localhost` and 127.0.0.1, as PEM files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tessera test CA");
        let ca_cert = ca_params.self_signed(&ca_key)?;
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem())?;
        let issuer = Issuer::new(ca_params, ca_key);
        for name in ["tracker", "node"] {
            let key = KeyPair::generate()?;
            let mut params =
                CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
            params
                .distinguished_name
                .push(DnType::CommonName, format!("tessera test {name}"));
            let cert = params.signed_by(&key, &issuer)?;
            std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem())?;
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem())?;
        }
        Ok(Self { dir })
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles {
            cert: self.path(&format!("{name}.crt")),
            key: self.path(&format!("{name}.key")),
        }
    }

    /// `peer serve` arguments for a TLS node.
    fn node_args(&self) -> Vec<String> {
        let f = self.files("node");
        vec![
            "--ca".into(),
            self.ca(),
            "--tls-cert".into(),
            f.cert.display().to_string(),
            "--tls-key".into(),
            f.key.display().to_string(),
        ]
    }
}

/// A new home registered on `tracker` with `--ca`.
async fn register(pki: &Pki, tracker: &TestTracker, name: &str) -> anyhow::Result<TestPeer> {
    let p = TestPeer::new(tracker, name)?;
    p.run_stdin(
        &[
            "--ca",
            &pki.ca(),
            "register",
            "--user",
            name,
            "--password-stdin",
        ],
        PASSWORD,
    )
    .await?
    .ok()?;
    Ok(p)
}

async fn serve_tls(pki: &Pki, p: &mut TestPeer, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = pki.node_args();
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    p.serve(&args).await?;
    let addr = p.addr.clone().unwrap_or_default();
    anyhow::ensure!(
        addr.starts_with("https://127.0.0.1:"),
        "a TLS node advertises https://, got {addr}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_register_share_and_fetch_over_tls_byte_identical() -> anyhow::Result<()> {
    bounded(async {
        let pki = Pki::new()?;
        let tracker =
            TestTracker::start_tls(|_| {}, Some(pki.files("tracker")), Some(pki.path("ca.pem")))
                .await?;
        assert!(tracker.url().starts_with("https://"));
        let ca = pki.ca();

        let mut alice = register(&pki, &tracker, "alice").await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "tls.bin", 16 * MIB + 77)?;
        let files = {
            let out = alice
                .run(&[
                    "--ca",
                    &ca,
                    "--json",
                    "index",
                    path.to_str().context("utf-8")?,
                ])
                .await?
                .ok()?;
            out.json()?
        };
        let id = files[0]["id"].as_str().context("id")?.to_string();
        serve_tls(&pki, &mut alice, &["--max-upload-rate", "8M"]).await?;

        // bob logs out and in again (login over TLS too), fetches from alice, then serves.
        let mut bob = register(&pki, &tracker, "bob").await?;
        bob.run(&["--ca", &ca, "logout"]).await?.ok()?;
        bob.run_stdin(
            &["--ca", &ca, "login", "--user", "bob", "--password-stdin"],
            PASSWORD,
        )
        .await?
        .ok()?;
        let bob_out = tempfile::tempdir()?;
        let got = bob.get(&id, bob_out.path(), &["--ca", &ca]).await?;
        assert_eq!(got["sha256"].as_str(), Some(sha.to_string().as_str()));
        assert_eq!(sha256_of(&bob_out.path().join("tls.bin"))?, sha);
        serve_tls(&pki, &mut bob, &["--max-upload-rate", "8M"]).await?;

        // carol fetches from both TLS nodes at once.
        let carol = register(&pki, &tracker, "carol").await?;
        let out = tempfile::tempdir()?;
        let got = carol.get(&id, out.path(), &["--ca", &ca]).await?;
        assert_eq!(sha256_of(&out.path().join("tls.bin"))?, sha);
        assert!(got["sources"].as_u64() >= Some(2), "{got}");
        assert_eq!(files_below(out.path()), [PathBuf::from("tls.bin")]);

        // `status` reaches the local TLS node.
        let st = alice.run(&["--ca", &ca, "--json", "status"]).await?.ok()?;
        let st = st.json()?;
        assert_eq!(st["node"]["running"], true, "{st}");

        // The tracker audits TLS nodes with --peer-ca: both copies count.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let found = carol
                .run(&["--ca", &ca, "--json", "search", "tls.bin"])
                .await?
                .ok()?
                .json()?;
            let file = &found[0];
            if file["holders"] == 2 {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "TLS nodes' copies never counted: {file}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // The tracker lists both nodes with their https:// addresses.

        let peers = carol.run(&["--ca", &ca, "--json", "peers"]).await?.ok()?;
        let text = peers.stdout;
        for p in [&alice, &bob] {
            let addr = p.addr.as_deref().context("addr")?;
            assert!(text.contains(addr), "{addr} not in {text}");
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_with_one_clear_line_without_the_ca_or_with_plain_http() -> anyhow::Result<()> {
    bounded(async {
        let pki = Pki::new()?;
        let tracker =
            TestTracker::start_tls(|_| {}, Some(pki.files("tracker")), Some(pki.path("ca.pem")))
                .await?;
        let p = TestPeer::new(&tracker, "mallory")?;

        let out = p
            .run_stdin(
                &["register", "--user", "mallory", "--password-stdin"],
                PASSWORD,
            )
            .await?;
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        let line = one_error_line(&out);
        eprintln!("without --ca: {line}");
        assert!(
            line.contains("certificate"),
            "names the certificate: {line}"
        );
        assert!(line.contains("--ca"), "says what to do: {line}");

        // A CA that did not sign the tracker's certificate is no better.
        let other = Pki::new()?;
        let out = p
            .run_stdin(
                &[
                    "--ca",
                    &other.ca(),
                    "register",
                    "--user",
                    "mallory",
                    "--password-stdin",
                ],
                PASSWORD,
            )
            .await?;
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(
            one_error_line(&out).contains("certificate"),
            "{}",
            out.stderr
        );

        // A --ca file that holds no certificate is refused before anything is sent.
        let out = p
            .run(&[
                "--ca",
                pki.path("node.key").to_str().context("utf-8")?,
                "search",
            ])
            .await?;
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        assert!(
            one_error_line(&out).contains("no PEM certificate"),
            "{}",
            out.stderr
        );

        // Plain http:// to the TLS port.
        let plain = format!("http://{}", tracker.addr);
        let mut p = TestPeer::new(&tracker, "plain")?;
        p.tracker_url = plain.clone();
        let out = p
            .run_stdin(
                &["register", "--user", "mallory", "--password-stdin"],
                PASSWORD,
            )
            .await?;
        assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
        let line = one_error_line(&out);
        eprintln!("plain http: {line}");
        assert!(line.contains(&plain), "{line}");
        assert!(line.contains("https://"), "suggests https: {line}");

        // A plain HTTP client is told in HTTP what is wrong.
        let mut tcp = TcpStream::connect(tracker.addr).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await?;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("https://"), "{answer}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_serve_rest_over_tls_with_http1_alpn() -> anyhow::Result<()> {
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};

    bounded(async {
        let pki = Pki::new()?;
        let tracker =
            TestTracker::start_tls(|_| {}, Some(pki.files("tracker")), Some(pki.path("ca.pem")))
                .await?;
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(pki.path("ca.pem"))?)?;
        let mut cfg = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(tracker.addr).await?;
        let mut tls = TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
            .await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(
            b"GET /api/v1/stats HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
        )
        .await?;
        let mut answer = Vec::new();
        // The server may close without a TLS close_notify; what was read counts.
        let _ = tls.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"peers_up\""), "{answer}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_tls_node_whose_certificate_it_cannot_check() -> anyhow::Result<()> {
    bounded(async {
        let pki = Pki::new()?;
        // A plain tracker, a TLS node: the getter needs --ca for the node alone.
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "node.bin", 2 * MIB + 3)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        serve_tls(&pki, &mut alice, &[]).await?;

        let bob = TestPeer::register(&tracker, "bob").await?;
        let out = tempfile::tempdir()?;
        let dir = out.path().to_str().context("utf-8")?;
        let refused = bob
            .run_with(
                RunOpts {
                    envs: &[("PEER_GIVE_UP_AFTER", "3s")],
                    ..RunOpts::default()
                },
                &["get", &id, "--output", dir],
            )
            .await?;
        assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
        let line = one_error_line(&refused);
        eprintln!("without --ca for a TLS node: {line}");
        assert!(line.contains("certificate"), "{line}");
        assert!(!out.path().join("node.bin").exists());

        bob.get(&id, out.path(), &["--ca", &pki.ca()]).await?;
        assert_eq!(sha256_of(&out.path().join("node.bin"))?, sha);
        Ok(())
    })
    .await
}
