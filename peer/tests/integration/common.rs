//! The end-to-end harness: a real tracker (in-process, on a real socket, with a real SQLite
//! file) and real `peer` processes with their own temp homes, talking over 127.0.0.1 on
//! ephemeral ports. Every process is killed when its handle drops, so a failing test leaves
//! nothing running. What the tracker's tests need too (the in-process tracker, logging,
//! bearer requests) comes from `tracker::testing`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use ::common::Sha256Digest;
use anyhow::{Context, bail};
use rand::RngExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tracker::testing::{InProcessTracker, authed, init_logging};

/// Bound on every end-to-end test.
pub const E2E_TIMEOUT: Duration = Duration::from_secs(150);
/// The tracker's peer timeout in tests: short, so a killed peer is soon `down`.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(3);
pub const PASSWORD: &str = "correct horse battery staple";

/// Runs a test body with the e2e time bound.
pub async fn bounded<F: std::future::Future<Output = anyhow::Result<()>>>(
    f: F,
) -> anyhow::Result<()> {
    init_logging();
    tokio::time::timeout(E2E_TIMEOUT, f)
        .await
        .context("test timed out")?
}

/// An in-process tracker on a real socket with a SQLite file in its own temp dir.
pub struct TestTracker {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// Applied to the test config at every (re)start.
    tweak: fn(&mut tracker::Config),
    /// Certificate and key when the tracker serves TLS.
    pub tls: Option<tracker::config::TlsFiles>,
    /// A database URL that replaces the SQLite file (a PostgreSQL database of its own).
    database_url: Option<String>,
    /// The CA of TLS nodes, for audits.
    peer_ca: Option<PathBuf>,
    /// The tracker while it runs (not between `stop` and `restart_after_stop`).
    running: Option<InProcessTracker>,
}

impl TestTracker {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a tracker whose test config is changed by `tweak` (at every restart too).
    pub async fn start_with(tweak: fn(&mut tracker::Config)) -> anyhow::Result<Self> {
        Self::start_tls(tweak, None, None).await
    }

    /// Like [`TestTracker::start_with`], serving TLS with `tls` when given.
    /// `peer_ca` is the CA of TLS nodes, for the tracker's audits (`--peer-ca`).
    pub async fn start_tls(
        tweak: fn(&mut tracker::Config),
        tls: Option<tracker::config::TlsFiles>,
        peer_ca: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut t = Self {
            dir,
            addr,
            tweak,
            tls,
            database_url: None,
            peer_ca,
            running: None,
        };
        t.spawn(listener)?;
        Ok(t)
    }

    fn config(&self) -> tracker::Config {
        let mut cfg = tracker::Config::ephemeral(self.dir.path());
        cfg.peer_timeout = PEER_TIMEOUT;
        cfg.tls = self.tls.clone();
        if let Some(url) = &self.database_url {
            cfg.database_url = url.clone();
        }
        cfg.peer_ca.clone_from(&self.peer_ca);
        (self.tweak)(&mut cfg);
        cfg
    }

    fn spawn(&mut self, listener: TcpListener) -> anyhow::Result<()> {
        self.running = Some(InProcessTracker::serve(self.config(), listener)?);
        Ok(())
    }

    /// Like [`TestTracker::start_with`] on a fresh PostgreSQL database of its own when
    /// `TRACKER_TEST_DATABASE_URL` names a server (drop it with `TempPostgres::drop_db`);
    /// `None` without one.
    pub async fn start_on_postgres(
        tweak: fn(&mut tracker::Config),
    ) -> anyhow::Result<Option<(Self, tracker::testing::TempPostgres)>> {
        let Some(admin) = tracker::testing::postgres_admin_url() else {
            eprintln!("TRACKER_TEST_DATABASE_URL is not set: skipping the PostgreSQL run");
            return Ok(None);
        };
        let pg = tracker::testing::TempPostgres::create(&admin).await;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut t = Self {
            dir: tempfile::tempdir()?,
            addr: listener.local_addr()?,
            tweak,
            tls: None,
            database_url: Some(pg.url.clone()),
            peer_ca: None,
            running: None,
        };
        t.spawn(listener)?;
        Ok(Some((t, pg)))
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops the tracker and waits until it has flushed and closed its port.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(t) = self.running.take() {
            t.stop()
                .await
                .map_err(|e| anyhow::anyhow!("tracker failed: {e:#}"))?;
        }
        Ok(())
    }

    /// Starts it again on the same address and database file.
    pub async fn restart_after_stop(&mut self) -> anyhow::Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        self.spawn(listener)
    }

    /// GET a REST route and parse its JSON.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let resp = reqwest::get(format!("{}{}", self.url(), path)).await?;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }
}

impl TestTracker {
    /// The tracker's ticket signing key, read from its database (to mint tickets the
    /// tracker would not issue, such as expired ones).
    pub async fn ticket_signer(&self) -> anyhow::Result<::common::TicketSigner> {
        let url = tracker::Config::ephemeral(self.dir.path()).database_url;
        tracker::admin::ticket_signer(&url)
            .await
            .map_err(|e| anyhow::anyhow!("reading the ticket key: {e:#}"))
    }
}

/// What a finished `peer` command left behind.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(self) -> anyhow::Result<Self> {
        if !self.status.success() {
            bail!(
                "peer failed ({}): {}{}",
                self.status,
                self.stderr,
                self.stdout
            );
        }
        Ok(self)
    }

    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.stdout).with_context(|| format!("not JSON: {}", self.stdout))
    }
}

/// A peer home and the commands that run the real `peer` binary on it.
pub struct TestPeer {
    pub name: String,
    pub home: tempfile::TempDir,
    pub tracker_url: String,
    pub peer_id: Option<String>,
    pub addr: Option<String>,
    /// The node's metrics URL, when it was started with `--metrics-addr`.
    pub metrics_url: Option<String>,
    node: Option<Child>,
}

pub fn peer_bin() -> &'static str {
    env!("CARGO_BIN_EXE_peer")
}

impl TestPeer {
    /// A new home, registered as user `name` on `tracker`.
    pub async fn register(tracker: &TestTracker, name: &str) -> anyhow::Result<Self> {
        let p = Self::new(tracker, name)?;
        p.run_stdin(&["register", "--user", name, "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        Ok(p)
    }

    /// A new home, registered as user `name` on the trackers at `urls`.
    pub async fn register_at(urls: &str, name: &str) -> anyhow::Result<Self> {
        let p = Self::with_tracker_urls(urls, name)?;
        p.run_stdin(&["register", "--user", name, "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        Ok(p)
    }

    pub fn new(tracker: &TestTracker, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            home: tempfile::tempdir()?,
            tracker_url: tracker.url(),
            peer_id: None,
            addr: None,
            metrics_url: None,
            node: None,
        })
    }

    /// A new home talking to trackers by URL (`--tracker`, e.g. `http://A,http://B`).
    pub fn with_tracker_urls(urls: &str, name: &str) -> anyhow::Result<Self> {
        Ok(Self {
            name: name.to_string(),
            home: tempfile::tempdir()?,
            tracker_url: urls.to_string(),
            peer_id: None,
            addr: None,
            metrics_url: None,
            node: None,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(peer_bin());
        c.arg("--home")
            .arg(self.home.path())
            .arg("--tracker")
            .arg(&self.tracker_url)
            .args(args)
            .env("PEER_STALL_TIMEOUT", "3s")
            .env("PEER_GIVE_UP_AFTER", "60s")
            .env_remove("PEER_HOME")
            .env_remove("PEER_TRACKER")
            .kill_on_drop(true);
        c
    }

    /// Runs `peer ARGS` to completion.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<Out> {
        self.run_stdin(args, "").await
    }

    /// Runs `peer ARGS` with `input` on stdin.
    pub async fn run_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<Out> {
        run_to_end(self.command(args), input).await
    }

    /// Starts `peer serve` on 127.0.0.1 with an ephemeral port and waits for its ready line.
    pub async fn serve(&mut self, extra: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = self
            .command(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("peer serve did not get ready")??
            .context("peer serve exited before it was ready")?;
        // "peer PEER_ID serving on ADDR"
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() != 5 || words[0] != "peer" || words[2] != "serving" {
            bail!("unexpected ready line from peer serve: {line:?}");
        }
        self.peer_id = Some(words[1].to_string());
        self.addr = Some(words[4].to_string());
        if extra.contains(&"--metrics-addr") {
            let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .context("no metrics line")??
                .context("peer serve exited before its metrics line")?;
            let url = line.strip_prefix("metrics on ").context("a metrics line")?;
            self.metrics_url = Some(url.to_string());
        }
        // Keep draining stdout so the node never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.node = Some(child);
        Ok(())
    }

    /// Stops the node with SIGTERM, as an operator would, and waits for it to exit
    /// successfully; an error when it does not within 30 s.
    pub async fn stop_node(&mut self) -> anyhow::Result<()> {
        let Some(mut c) = self.node.take() else {
            return Ok(());
        };
        let pid = c.id().context("the node's pid")?;
        let kill = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .stdin(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(kill.success(), "kill -TERM {pid}");
        let status = match tokio::time::timeout(Duration::from_secs(30), c.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                c.kill().await?;
                bail!("the node did not stop within 30 s of SIGTERM");
            }
        };
        anyhow::ensure!(status.success(), "the node stopped with {status}");
        Ok(())
    }

    /// Kills the node with SIGKILL, as a crash or a pulled cable would.
    pub async fn kill_node(&mut self) -> anyhow::Result<()> {
        if let Some(mut c) = self.node.take() {
            c.kill().await?;
        }
        Ok(())
    }

    /// Indexes one path and returns the file objects printed with `--json`.
    pub async fn index(&self, path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self
            .run(&["--json", "index", path.to_str().context("utf-8 path")?])
            .await?
            .ok()?;
        Ok(out
            .json()?
            .as_array()
            .context("index --json prints an array")?
            .clone())
    }

    /// `peer get --json ID --output DIR`, returning the one result object.
    pub async fn get(
        &self,
        id: &str,
        output: &Path,
        extra: &[&str],
    ) -> anyhow::Result<serde_json::Value> {
        let mut args = vec![
            "--json",
            "get",
            id,
            "--output",
            output.to_str().context("utf-8")?,
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args).await?.ok()?;
        let v = out.json()?;
        v.as_array()
            .and_then(|a| a.first())
            .cloned()
            .context("get --json prints an array")
    }

    /// Starts `peer --json get ID --output DIR` without waiting for it.
    pub fn spawn_get(&self, id: &str, output: &Path) -> anyhow::Result<Child> {
        let out = output.to_str().context("utf-8")?;
        Ok(self
            .command(&["--json", "get", id, "--output", out])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// Starts `peer ARGS` with `envs` on top of the harness's, without waiting for it;
    /// stdout and stderr are piped.
    pub fn spawn_with(&self, envs: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Child> {
        Ok(self
            .command(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?)
    }

    /// The session token `register`/`login` saved in this home.
    pub fn session_token(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.home.path().join("session.json"))?;
        let v: serde_json::Value = serde_json::from_str(&text)?;
        v["token"]
            .as_str()
            .map(str::to_string)
            .context("session.json has no token")
    }

    /// The chunks this home's store says it has verified of `file_id` (0 if no record yet).
    pub fn held_chunks(&self, file_id: &str) -> u32 {
        let path = self
            .home
            .path()
            .join("store")
            .join(format!("{file_id}.json"));
        let Ok(text) = std::fs::read_to_string(path) else {
            return 0;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return 0;
        };
        match &v["have"] {
            serde_json::Value::String(hex) => hex
                .chars()
                .filter_map(|c| c.to_digit(16))
                .map(|d| d.count_ones())
                .sum(),
            _ => 0,
        }
    }
}

/// Writes `size` random bytes to `dir/name` and returns the path and its SHA-256.
pub fn random_file(dir: &Path, name: &str, size: usize) -> anyhow::Result<(PathBuf, Sha256Digest)> {
    let mut data = vec![0u8; size];
    rand::rng().fill(&mut data[..]);
    let path = dir.join(name);
    std::fs::write(&path, &data)?;
    Ok((path, Sha256Digest::of(&data)))
}

/// Asserts that a spawned `get` exited 0 and wrote `file` with SHA-256 `sha`; returns what
/// it printed on stdout.
pub fn assert_got(
    done: &std::process::Output,
    file: &Path,
    sha: &Sha256Digest,
) -> anyhow::Result<Vec<u8>> {
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(&sha256_of(file)?, sha, "{}", file.display());
    Ok(done.stdout.clone())
}

/// SHA-256 of a whole file.
pub fn sha256_of(path: &Path) -> anyhow::Result<Sha256Digest> {
    Ok(Sha256Digest::of(
        &std::fs::read(path).with_context(|| path.display().to_string())?,
    ))
}

/// Polls `cond` every 50 ms until it holds or `limit` passes.
pub async fn wait_until(
    limit: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Every regular file below `dir`, relative to it.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap_or(&p).to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// How [`TestPeer::run_with`] runs a command beyond the usual harness settings.
#[derive(Default)]
pub struct RunOpts<'a> {
    /// A program (and its arguments) that runs `peer`, e.g. `["prlimit", "--fsize=N", "--"]`.
    pub wrapper: &'a [&'a str],
    /// Extra environment variables, applied after the harness's own.
    pub envs: &'a [(&'a str, &'a str)],
    /// The working directory (so a test can check nothing was written there).
    pub cwd: Option<&'a Path>,
}

impl TestPeer {
    /// Runs `peer ARGS` to completion like [`TestPeer::run`], with `opts` on top.
    pub async fn run_with(&self, opts: RunOpts<'_>, args: &[&str]) -> anyhow::Result<Out> {
        let base = self.command(args);
        let std = base.as_std();
        let mut c = match opts.wrapper.split_first() {
            Some((prog, rest)) => {
                let mut c = Command::new(prog);
                c.args(rest).arg(std.get_program()).args(std.get_args());
                for (k, v) in std.get_envs() {
                    match v {
                        Some(v) => c.env(k, v),
                        None => c.env_remove(k),
                    };
                }
                c
            }
            None => base,
        };
        c.envs(opts.envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = opts.cwd {
            c.current_dir(dir);
        }
        let out = c.spawn()?.wait_with_output().await?;
        Ok(Out {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The one `error:` line of a failed command (asserting there is exactly one line).
pub fn one_error_line(out: &Out) -> String {
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line on stderr: {:?}", out.stderr);
    assert!(lines[0].starts_with("error: "), "{:?}", out.stderr);
    lines[0].to_string()
}

/// How many chunks of the part file `part` hash right against `m`.
pub fn good_chunks(part: &Path, m: &common::Manifest) -> anyhow::Result<u32> {
    let bytes = std::fs::read(part)?;
    Ok((0..m.chunk_count())
        .filter(|&i| {
            let r = m.chunk_range(i);
            bytes
                .get(r.start as usize..r.end as usize)
                .is_some_and(|c| m.check_chunk(i, c))
        })
        .count() as u32)
}

/// The key that tests calling a node directly prove: the tickets of [`locate_ticket`]
/// name it, and [`raw_proof`] signs with it.
pub fn raw_key() -> ::common::NodeKey {
    ::common::NodeKey::from_secret(&[42; 32])
}

/// A fresh proof of [`raw_key`] for one request on `file`.
pub fn raw_proof(method: ::common::Method, file: &str) -> Option<proto::peer::v1::Proof> {
    let id: ::common::FileId = file.parse().expect("a file id");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Some((&raw_key().prove(method, &id, now)).into())
}

/// Locate over gRPC with `token`; returns the ticket it carries (naming [`raw_key`]).
pub async fn locate_ticket(
    tracker: &TestTracker,
    token: &str,
    file: &str,
) -> anyhow::Result<proto::peer::v1::Ticket> {
    let mut c = proto::tracker::v1::tracker_client::TrackerClient::connect(tracker.url()).await?;
    let req = proto::tracker::v1::LocateRequest {
        file_id: file.into(),
        requester_key: raw_key().public_key().to_vec().into(),
        ..Default::default()
    };
    c.locate(authed(req, token))
        .await?
        .into_inner()
        .ticket
        .context("locate carries a ticket")
}

/// Runs `cmd` to completion with `input` (and a newline) on stdin, capturing its output.
pub async fn run_to_end(mut cmd: Command, input: &str) -> anyhow::Result<Out> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    // A command that needs no input may exit before it is written: not an error.
    match stdin.write_all(format!("{input}\n").as_bytes()).await {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    drop(stdin);
    let out = child.wait_with_output().await?;
    Ok(Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The `tracker` binary cargo built next to the `peer` binary, if it did.
pub fn tracker_bin() -> Option<PathBuf> {
    let dir = Path::new(peer_bin()).parent()?;
    let bin = dir.join(format!("tracker{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// A `tracker` process on `127.0.0.1:0`; killed when dropped.
pub struct TrackerProcess {
    pub child: Child,
    pub url: String,
}

impl TrackerProcess {
    pub async fn start(bin: &Path, database_url: &str) -> anyhow::Result<Self> {
        Self::start_on(bin, database_url, "127.0.0.1:0").await
    }

    pub async fn start_on(bin: &Path, database_url: &str, listen: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(bin)
            .args(["--database-url", database_url, "--listen", listen])
            .args(["--peer-timeout", "3s"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the tracker did not get ready")??
            .context("the tracker exited before it was ready")?;
        let Some(addr) = line.trim().strip_prefix("tracker listening on http://") else {
            bail!("unexpected first line from the tracker: {line:?}");
        };
        let url = format!("http://{addr}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self { child, url })
    }
}
