//! What operators and new users see: the node's Prometheus endpoint, JSON log lines that
//! never carry a secret, a default log without a line per chunk, shell completions and the
//! hints of `peer status`. Real tracker, real `peer` processes on 127.0.0.1.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// `peer --home HOME --tracker URL ARGS` with the harness's settings and `envs` on top.
fn peer_cmd(p: &TestPeer, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(peer_bin());
    c.arg("--home")
        .arg(p.home.path())
        .arg("--tracker")
        .arg(&p.tracker_url)
        .args(args)
        .env_remove("PEER_HOME")
        .env_remove("PEER_TRACKER")
        .env_remove("PEER_LOG_FORMAT")
        .env_remove("RUST_LOG")
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a command to completion with `input` on stdin.
async fn run(
    p: &TestPeer,
    args: &[&str],
    envs: &[(&str, &str)],
    input: &str,
) -> anyhow::Result<Out> {
    let mut child = peer_cmd(p, args, envs).spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let _ = stdin.write_all(format!("{input}\n").as_bytes()).await;
    drop(stdin);
    let out = child.wait_with_output().await?;
    Ok(Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A running `peer serve` whose stderr (its log) is kept for the test to read.
struct Node {
    _child: Child,
    log: Arc<Mutex<String>>,
    metrics_url: Option<String>,
}

impl Node {
    /// Starts `peer serve --listen 127.0.0.1:0 EXTRA` and waits for its ready line (and the
    /// metrics line when `--metrics-addr` is among `extra`).
    async fn start(p: &TestPeer, extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = peer_cmd(p, &args, envs).stdin(Stdio::null()).spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = BufReader::new(child.stderr.take().context("stderr")?).lines();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                let mut s = sink.lock().unwrap();
                s.push_str(&l);
                s.push('\n');
            }
        });
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let mut next = async || -> anyhow::Result<String> {
            tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .context("peer serve did not get ready")??
                .context("peer serve exited before it was ready")
        };
        let ready = next().await?;
        if !ready.contains(" serving on ") {
            bail!("unexpected ready line {ready:?}");
        }
        let metrics_url = if extra.contains(&"--metrics-addr") {
            let line = next().await?;
            Some(
                line.strip_prefix("metrics on ")
                    .with_context(|| format!("unexpected metrics line {line:?}"))?
                    .to_string(),
            )
        } else {
            None
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            _child: child,
            log,
            metrics_url,
        })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

/// Parses a text exposition: every sample line is `NAME{LABELS} VALUE`; returns (name with
/// labels, value) pairs. Fails on anything else, so the format is checked: OpenMetrics ends
/// with `# EOF`, Prometheus text 0.0.4 has none and types counters as `NAME_total`.
fn parse_metrics(text: &str, openmetrics: bool) -> anyhow::Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').context("no value")?;
        let name = series.split('{').next().unwrap_or_default();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        {
            bail!("bad metric name in {line:?}");
        }
        if series.contains('{') && !series.ends_with('}') {
            bail!("bad labels in {line:?}");
        }
        let v: f64 = value
            .parse()
            .with_context(|| format!("bad value in {line:?}"))?;
        out.push((series.to_string(), v));
    }
    let eof = text.lines().last() == Some("# EOF");
    if eof != openmetrics {
        bail!("# EOF at the end: {eof}, in OpenMetrics: {openmetrics}");
    }
    if !openmetrics && !text.contains("# TYPE tessera_peer_chunks_served_total counter") {
        bail!("a counter family not named NAME_total in 0.0.4:\n{text}");
    }
    Ok(out)
}

/// Scrapes as curl does (Prometheus text 0.0.4) and as Prometheus does (OpenMetrics);
/// both must carry the same series. Returns the OpenMetrics samples.
async fn scrape(url: &str) -> anyhow::Result<Vec<(String, f64)>> {
    let mut series = Vec::new();
    let mut last = Vec::new();
    for (accept, want) in [
        ("*/*", "text/plain; version=0.0.4"),
        (
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
            "application/openmetrics-text",
        ),
    ] {
        let resp = reqwest::Client::new()
            .get(url)
            .header("accept", accept)
            .send()
            .await?;
        anyhow::ensure!(resp.status().is_success(), "GET {url}: {}", resp.status());
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        anyhow::ensure!(ctype.starts_with(want), "{ctype}");
        last = parse_metrics(&resp.text().await?, want.starts_with("application"))?;
        let mut names: Vec<String> = last.iter().map(|(s, _)| s.clone()).collect();
        names.sort();
        series.push(names);
    }
    anyhow::ensure!(series[0] == series[1], "the two formats differ: {series:?}");
    Ok(last)
}

fn value(samples: &[(String, f64)], series: &str) -> anyhow::Result<f64> {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .with_context(|| format!("no {series} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn should_count_uploads_on_the_metrics_endpoint_when_another_peer_gets_a_file()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let node = Node::start(
            &alice,
            &["--metrics-addr", "127.0.0.1:0", "--storage-quota", "50M"],
            &[],
        )
        .await?;
        let url = node.metrics_url.clone().context("metrics url")?;

        let before = scrape(&url).await?;
        assert_eq!(value(&before, "tessera_peer_uploaded_bytes_total")?, 0.0);
        assert_eq!(value(&before, "tessera_peer_storage_quota_bytes")?, 50e6);
        for series in [
            "tessera_peer_downloaded_bytes_total",
            "tessera_peer_chunks_fetched_total",
            "tessera_peer_verification_failures_total",
            "tessera_peer_active_transfers{direction=\"upload\"}",
            "tessera_peer_active_transfers{direction=\"download\"}",
            "tessera_peer_replication_tasks_total{outcome=\"done\"}",
            "tessera_peer_replication_tasks_total{outcome=\"failed\"}",
            "tessera_peer_storage_used_bytes",
        ] {
            value(&before, series)?;
        }

        let src = tempfile::tempdir()?;
        let size = 3 * CHUNK + 100;
        let (path, sha) = random_file(src.path(), "data.bin", size)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let out = tempfile::tempdir()?;
        bob.get(&id, out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("data.bin"))?, sha);

        let after = scrape(&url).await?;
        let uploaded = value(&after, "tessera_peer_uploaded_bytes_total")?;
        assert!(
            uploaded >= size as f64,
            "{uploaded} bytes counted for a {size}-byte get"
        );
        assert!(value(&after, "tessera_peer_chunks_served_total")? >= 4.0);
        assert_eq!(
            value(&after, "tessera_peer_verification_failures_total")?,
            0.0
        );

        let other = reqwest::get(url.replace("/metrics", "/other")).await?;
        assert_eq!(other.status(), 404);

        // A second node with room is given replicas: its fetches are counted there.
        let carol = TestPeer::register(&tracker, "carol").await?;
        let carol_node = Node::start(
            &carol,
            &["--metrics-addr", "127.0.0.1:0", "--storage-quota", "50M"],
            &[],
        )
        .await?;
        let carol_url = carol_node.metrics_url.clone().context("metrics url")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let m = scrape(&carol_url).await?;
            let done = value(&m, "tessera_peer_replication_tasks_total{outcome=\"done\"}")?;
            if done >= 4.0 {
                assert_eq!(
                    value(&m, "tessera_peer_downloaded_bytes_total")?,
                    size as f64
                );
                assert_eq!(value(&m, "tessera_peer_chunks_fetched_total")?, 4.0);
                assert_eq!(value(&m, "tessera_peer_storage_used_bytes")?, size as f64);
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("carol's node replicated nothing: {m:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_write_json_log_lines_without_tokens_or_passwords() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::new(&tracker, "alice")?;
        let bob = TestPeer::new(&tracker, "bob")?;
        let debug = [("RUST_LOG", "debug"), ("PEER_LOG_FORMAT", "json")];
        let mut logs = Vec::new();
        for p in [&alice, &bob] {
            let out = run(
                p,
                &["register", "--user", &p.name, "--password-stdin"],
                &debug,
                PASSWORD,
            )
            .await?
            .ok()?;
            logs.push(out.stderr);
        }
        // The flag works as well as the environment variable.
        let node = Node::start(&alice, &["--log-format", "json"], &[("RUST_LOG", "debug")]).await?;
        let src = tempfile::tempdir()?;
        let (path, _) = random_file(src.path(), "secret-free.bin", 2 * CHUNK)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let out = tempfile::tempdir()?;
        let got = run(
            &bob,
            &[
                "get",
                &id,
                "--output",
                out.path().to_str().context("utf-8")?,
            ],
            &debug,
            "",
        )
        .await?
        .ok()?;
        logs.push(got.stderr);
        // A login writes a new token; its log must not show it either.
        let login = run(
            &bob,
            &["login", "--user", "bob", "--password-stdin"],
            &debug,
            PASSWORD,
        )
        .await?
        .ok()?;
        logs.push(login.stderr);
        logs.push(node.log());

        let secrets = [
            alice.session_token()?,
            bob.session_token()?,
            PASSWORD.to_string(),
        ];
        let mut lines = 0;
        for log in &logs {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("not a JSON log line: {line}"))?;
                assert!(
                    v["level"].is_string() && v["timestamp"].is_string(),
                    "{line}"
                );
                for s in &secrets {
                    assert!(!line.contains(s.as_str()), "a secret is logged: {line}");
                }
                lines += 1;
            }
        }
        assert!(lines > 10, "debug logging wrote only {lines} lines");
        assert!(
            node.log().contains("\"node up\""),
            "the node logs its start: {}",
            node.log()
        );
        Ok(())
    })
    .await
}

/// The lines a log holds, blank ones aside.
fn log_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| !l.trim().is_empty()).collect()
}

/// An operator reads the default log to follow a node; a line per chunk would bury the
/// events in noise (a 1 GB file is a thousand chunks). Every process runs with the
/// defaults (no RUST_LOG, text): the uploader, a node that fetches the file as a
/// replica, and the getter.
#[tokio::test(flavor = "multi_thread")]
async fn should_log_fewer_lines_than_chunks_at_the_default_level() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let carol = TestPeer::register(&tracker, "carol").await?;
        let uploader = Node::start(&alice, &["--storage-quota", "100M"], &[]).await?;

        let chunks = 17;
        let size = 16 * CHUNK + 100;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "big.bin", size)?;
        let file = &alice.index(&path).await?[0];
        assert_eq!(file["chunks"], chunks, "{file}");
        let id = file["id"].as_str().context("id")?.to_string();

        let out = tempfile::tempdir()?;
        let dir = out.path().to_str().context("utf-8")?;
        let got = run(&bob, &["get", &id, "--output", dir], &[], "")
            .await?
            .ok()?;
        assert_eq!(sha256_of(&out.path().join("big.bin"))?, sha);

        // A second node with room fetches every chunk as a replica.
        let replica = Node::start(&carol, &["--storage-quota", "100M"], &[]).await?;
        wait_until(Duration::from_secs(60), "carol's replica", || {
            carol.held_chunks(&id) == chunks
        })
        .await?;

        let (up, rep) = (uploader.log(), replica.log());
        assert!(up.contains("node up"), "info is on by default: {up}");
        for (who, log) in [
            ("uploader", &up),
            ("replica", &rep),
            ("getter", &got.stderr),
        ] {
            let lines = log_lines(log);
            assert!(
                (lines.len() as u32) < chunks,
                "the {who} wrote {} lines for {chunks} chunks:\n{log}",
                lines.len()
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_print_completion_scripts_without_touching_the_home() -> anyhow::Result<()> {
    bounded(async {
        let tmp = tempfile::tempdir()?;
        let home = tmp.path().join("never-created");
        for shell in ["bash", "zsh", "fish"] {
            let out = Command::new(peer_bin())
                .arg("--home")
                .arg(&home)
                .args(["completions", shell])
                .output()
                .await?;
            assert!(out.status.success(), "{shell}: {out:?}");
            let script = String::from_utf8(out.stdout)?;
            assert!(script.len() > 200, "{shell}: {script}");
            assert!(script.contains("get"), "{shell} completes get");
            assert!(script.contains("serve"), "{shell} completes serve");
        }
        assert!(!home.exists(), "completions need no home");
        let bad = Command::new(peer_bin())
            .args(["completions", "cmd.exe"])
            .output()
            .await?;
        assert_eq!(bad.status.code(), Some(2));
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_tell_a_new_user_what_to_do_next_in_status() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;

        // Tracker unreachable: a port nobody listens on any more.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            format!("http://{}", l.local_addr()?)
        };
        let mut lost = TestPeer::new(&tracker, "lost")?;
        lost.tracker_url = dead.clone();
        let out = run(&lost, &["status"], &[], "").await?.ok()?;
        assert!(
            out.stdout.contains(&format!("{dead} unreachable")),
            "{}",
            out.stdout
        );
        let next = out
            .stdout
            .lines()
            .find(|l| l.starts_with("next:"))
            .context("a next line")?;
        assert!(next.contains(&dead) && next.contains("--tracker"), "{next}");

        // Not logged in.
        let mut alice = TestPeer::new(&tracker, "alice")?;
        let out = run(&alice, &["status"], &[], "").await?.ok()?;
        assert!(out.stdout.contains("not logged in"), "{}", out.stdout);
        assert!(out.stdout.contains("run `peer login --user NAME`"));
        assert!(out.stdout.contains(&format!("{} reachable", tracker.url())));
        let v = run(&alice, &["--json", "status"], &[], "")
            .await?
            .ok()?
            .json()?;
        assert_eq!(v["logged_in"], false);
        assert!(
            v["next"]
                .as_str()
                .unwrap_or_default()
                .contains("peer login")
        );

        // Logged in, no node.
        run(
            &alice,
            &["register", "--user", "alice", "--password-stdin"],
            &[],
            PASSWORD,
        )
        .await?
        .ok()?;
        let out = run(&alice, &["status"], &[], "").await?.ok()?;
        assert!(out.stdout.contains("logged in as alice"), "{}", out.stdout);
        assert!(
            out.stdout.contains("next:      run `peer serve`"),
            "{}",
            out.stdout
        );

        // Serving, nothing shared yet; then all set.
        alice.serve(&[]).await?;
        let out = run(&alice, &["status"], &[], "").await?.ok()?;
        assert!(
            out.stdout.contains("node:      running on"),
            "{}",
            out.stdout
        );
        assert!(out.stdout.contains("peer index PATH"), "{}", out.stdout);
        let src = tempfile::tempdir()?;
        let (path, _) = random_file(src.path(), "a.txt", 10)?;
        alice.index(&path).await?;
        let v = run(&alice, &["--json", "status"], &[], "")
            .await?
            .ok()?
            .json()?;
        assert_eq!(v["node"]["running"], true);
        assert!(v["next"].is_null(), "{v}");
        Ok(())
    })
    .await
}
