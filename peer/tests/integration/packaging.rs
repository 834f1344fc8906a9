//! The packaging starts `peer` with flags and variables that no compiler checks: the peer
//! script of `docker-compose.yml` and the units in `packaging/systemd/`. Every `peer`
//! command they hold runs here for real, in their order, with the environment they set,
//! against a test tracker. Only what cannot work on a test machine changes: listen
//! addresses become free ports on 127.0.0.1, `PEER_HOME` a temp dir and `PEER_TRACKER` the
//! test tracker. A renamed flag or variable, or a value the CLI no longer takes, fails
//! here. (Appending `--help` would not do: clap stops at the first `--help`, so it checks
//! only the flags before it and none of the environment.)

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use anyhow::{Context, bail, ensure};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tracker::testing::packaging::{self, Cmd, Env, Service, Stdin, free_addr};

/// The arguments with every IP listen address (`0.0.0.0:7000`) swapped for a free local one.
fn localize(args: &[String]) -> anyhow::Result<Vec<String>> {
    args.iter()
        .map(|a| match a.parse::<std::net::SocketAddr>() {
            Ok(_) => free_addr(),
            Err(_) => Ok(a.clone()),
        })
        .collect()
}

/// The environment the file gives `svc`, on this machine.
fn local_env(svc: &Service, home: &Path, tracker: &TestTracker) -> anyhow::Result<Env> {
    let mut env = svc.env.clone();
    env.insert("PEER_HOME".into(), home.display().to_string());
    env.insert("PEER_TRACKER".into(), tracker.url());
    if env.contains_key("PEER_LISTEN") {
        env.insert("PEER_LISTEN".into(), free_addr()?);
    }
    Ok(env)
}

fn command(c: &Cmd, args: &[String], env: &Env) -> Command {
    let mut cmd = Command::new(peer_bin());
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd.stdin(match c.stdin {
        Some(_) => Stdio::piped(),
        None => Stdio::null(),
    });
    cmd
}

/// Runs a command that ends, with the stdin its file gives it.
async fn run_to_end(c: &Cmd, env: &Env) -> anyhow::Result<Out> {
    let mut child = command(c, &localize(&c.args)?, env).spawn()?;
    if let Some(stdin) = &c.stdin {
        let text = match stdin {
            Stdin::Text(t) => t.clone(),
            Stdin::File(f) => std::fs::read_to_string(f).with_context(|| format!("reading {f}"))?,
        };
        let mut pipe = child.stdin.take().context("stdin")?;
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .with_context(|| format!("{}: peer {:?} did not end", c.origin, c.args))??;
    Ok(Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Starts `peer serve …` and returns it with the address it serves on and its metrics URL.
async fn start_node(c: &Cmd, env: &Env) -> anyhow::Result<(Child, String, String)> {
    let args = localize(&c.args)?;
    let metrics_at = args
        .iter()
        .position(|a| a == "--metrics-addr")
        .and_then(|i| args.get(i + 1))
        .with_context(|| format!("{}: the node serves no metrics", c.origin))?
        .clone();
    let mut child = command(c, &args, env).spawn()?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut next = async || -> anyhow::Result<String> {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("no ready line in time")??
            .context("exited")
    };
    let (ready, metrics) = match (next().await, next().await) {
        (Ok(r), Ok(m)) => (r, m),
        (Err(e), _) | (_, Err(e)) => {
            let _ = child.start_kill();
            let out = child.wait_with_output().await?;
            bail!(
                "{}: peer {args:?} did not start ({e:#}): {}",
                c.origin,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let served = ready
        .split(" serving on ")
        .nth(1)
        .with_context(|| format!("unexpected ready line {ready:?}"))?
        .to_string();
    let url = metrics
        .strip_prefix("metrics on ")
        .with_context(|| format!("unexpected metrics line {metrics:?}"))?
        .to_string();
    ensure!(url.contains(&metrics_at), "{url} is not {metrics_at}");
    Ok((child, served, url))
}

/// The node's storage quota, read from its metrics endpoint.
async fn scraped_quota(url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(url).await?.error_for_status()?.text().await?;
    text.lines()
        .find_map(|l| l.strip_prefix("tessera_peer_storage_quota_bytes "))
        .context("no quota metric")?
        .parse()
        .context("a number")
}

/// The subcommand of each `peer` command.
fn subcommands(cmds: &[&Cmd]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| c.args.iter().find(|a| !a.starts_with('-')).cloned())
        .collect()
}

/// Every `PEER_*` variable the file sets is read: by the shell (`$NAME` in the file) or
/// by `peer` itself (its help for the subcommands run lists `[env: NAME=]`).
async fn assert_every_variable_is_read(
    svc: &Service,
    file: &str,
    subcommands: &[String],
) -> anyhow::Result<()> {
    let mut help = String::new();
    for sub in subcommands {
        let out = Command::new(peer_bin())
            .args([sub, "--help"])
            .output()
            .await?;
        help.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    svc.ensure_every_variable_is_read(file, "PEER_", &help)
}

/// Each peer container of the compose file: on its first start `peer login` fails and
/// `peer register` creates the account; after a restart `peer login` works; then the node
/// serves with the advertised name, quota and metrics address of the file.
#[tokio::test(flavor = "multi_thread")]
async fn should_run_the_compose_peer_script_against_a_tracker() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let services = packaging::compose()?;
        let peers: Vec<&Service> = services
            .iter()
            .filter(|s| !s.of("peer").is_empty())
            .collect();
        ensure!(peers.len() == 3, "alice, bob and carol: {services:#?}");
        for svc in peers {
            let cmds = svc.of("peer");
            let subs = subcommands(&cmds);
            ensure!(
                subs == ["login", "register", "serve"],
                "{}: {subs:?}",
                svc.origin
            );
            let home = tempfile::tempdir()?;
            let env = local_env(svc, home.path(), &tracker)?;
            let user = env.get("PEER_USER").context("PEER_USER")?;
            let password = format!("{}\n", env.get("PEER_PASSWORD").context("PEER_PASSWORD")?);
            for c in &cmds[..2] {
                ensure!(c.stdin == Some(Stdin::Text(password.clone())), "{c:?}");
            }

            let first = run_to_end(cmds[0], &env).await?;
            assert_eq!(
                first.status.code(),
                Some(1),
                "{}: login before register: {}",
                svc.origin,
                first.stderr
            );
            run_to_end(cmds[1], &env).await?.ok()?;
            run_to_end(cmds[0], &env).await?.ok()?;

            let (_node, served, metrics) = start_node(cmds[2], &env).await?;
            assert_eq!(
                served,
                format!("{user}:7000"),
                "{}: --advertise",
                svc.origin
            );
            let quota: f64 = ::common::units::parse_size(&env["PEER_STORAGE_QUOTA"])? as f64;
            assert_eq!(
                scraped_quota(&metrics).await?,
                quota,
                "{}: --storage-quota",
                svc.origin
            );
            // The node announces itself right after its ready line.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let row = loop {
                let peers = tracker.get_json("/api/v1/peers").await?;
                let row = peers["items"]
                    .as_array()
                    .and_then(|p| p.iter().find(|p| p["user"] == user.as_str()))
                    .cloned();
                match row {
                    Some(row) => break row,
                    None if tokio::time::Instant::now() > deadline => {
                        bail!("{user}'s node is not known to the tracker: {peers}")
                    }
                    None => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            assert_eq!(row["addr"], served.as_str(), "{}", svc.origin);
            assert_every_variable_is_read(svc, "docker-compose.yml", &subs).await?;
        }
        Ok(())
    })
    .await
}

/// Each unit running `peer`: on a fresh home, its ExecStartPre logs in with the password
/// from the credential it loads, then ExecStart serves on the `PEER_LISTEN` address with
/// the `PEER_STORAGE_QUOTA` of its environment.
#[tokio::test(flavor = "multi_thread")]
async fn should_run_the_systemd_peer_unit_against_a_tracker() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let creds = tempfile::tempdir()?;
        let extra = Env::from([(
            "CREDENTIALS_DIRECTORY".to_string(),
            creds.path().display().to_string(),
        )]);
        let units = packaging::units(&extra)?;
        let peers: Vec<&Service> = units.iter().filter(|s| !s.of("peer").is_empty()).collect();
        ensure!(!peers.is_empty(), "no unit runs peer: {units:#?}");
        for svc in peers {
            let cmds = svc.of("peer");
            ensure!(
                cmds.len() == svc.commands.len(),
                "{}: {:?}",
                svc.origin,
                svc.commands
            );
            for name in &svc.credentials {
                std::fs::write(creds.path().join(name), format!("{PASSWORD}\n"))?;
            }
            let home = tempfile::tempdir()?;
            let env = local_env(svc, home.path(), &tracker)?;
            // "The account must exist": made from another home, so this one starts empty.
            let user = env
                .get("PEER_USER")
                .with_context(|| format!("{} sets no PEER_USER", svc.origin))?;
            TestPeer::register(&tracker, user).await?;

            let (last, before) = cmds.split_last().context("commands")?;
            for c in before {
                run_to_end(c, &env).await?.ok()?;
            }
            let (_node, served, metrics) = start_node(last, &env).await?;
            let listen = env
                .get("PEER_LISTEN")
                .with_context(|| format!("{} sets no PEER_LISTEN", svc.origin))?;
            let port = listen.rsplit(':').next().unwrap_or_default();
            if !served.ends_with(&format!(":{port}")) {
                bail!(
                    "{}: serves on {served}, not on PEER_LISTEN {listen}",
                    svc.origin
                );
            }
            let quota: f64 = ::common::units::parse_size(&env["PEER_STORAGE_QUOTA"])? as f64;
            assert_eq!(
                scraped_quota(&metrics).await?,
                quota,
                "{}: PEER_STORAGE_QUOTA",
                svc.origin
            );
            let file = format!("packaging/systemd/{}", svc.origin);
            assert_every_variable_is_read(svc, &file, &subcommands(&cmds)).await?;
        }
        Ok(())
    })
    .await
}

/// The compose file's image exists only once built from this repository: a service that
/// tried to pull it would fail with "pull access denied" (older Compose did, when a peer
/// started before the tracker's build). The one service that builds it must build, the
/// others must never pull.
#[test]
fn should_build_the_compose_image_and_never_pull_it() -> anyhow::Result<()> {
    let services = packaging::compose()?;
    let builders: Vec<&Service> = services.iter().filter(|s| s.build.is_some()).collect();
    ensure!(
        builders.len() == 1,
        "one service builds the image: {services:#?}"
    );
    let image = builders[0]
        .image
        .clone()
        .context("the built image has a name")?;
    assert_eq!(
        builders[0].pull_policy.as_deref(),
        Some("build"),
        "{}",
        builders[0].origin
    );
    for s in services.iter().filter(|s| s.build.is_none()) {
        assert_eq!(s.image.as_ref(), Some(&image), "{}", s.origin);
        assert_eq!(s.pull_policy.as_deref(), Some("never"), "{}", s.origin);
    }
    Ok(())
}

/// The image must build with a toolchain the workspace supports: Cargo.toml's
/// `rust-version` is the oldest.
#[test]
fn should_build_the_image_with_a_toolchain_the_workspace_supports() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(packaging::repo().join("Dockerfile"))?;
    let image = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .context("no ARG RUST_VERSION in the Dockerfile")?;
    let version = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    let oldest = env!("CARGO_PKG_RUST_VERSION");
    ensure!(
        version(image) >= version(oldest),
        "the image builds with Rust {image}, older than rust-version {oldest}"
    );
    Ok(())
}
