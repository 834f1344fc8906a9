//! The packaging starts `tracker` with flags and variables that no compiler checks: the
//! compose file's tracker service (the Dockerfile's `ENTRYPOINT` and `ENV` plus its
//! `command:` and `environment:`) and the units in `packaging/systemd/`. Each `tracker`
//! command they hold runs here for real with the environment they set. Only what cannot
//! work on a test machine changes: the listen address becomes a free port on 127.0.0.1 and
//! the SQLite file moves to a temp dir. A renamed flag or variable, or a value the CLI no
//! longer takes, fails here. The file reader, `tracker::testing::packaging`, is shared with
//! the peer's packaging test, which runs the `peer` commands of the same files.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use tracker::testing::packaging::{self, Cmd, Env, Service, free_addr};

/// Kills the tracker when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every `TRACKER_*` variable the file sets is one the tracker reads (its help lists
/// `[env: NAME]`), or one the file itself uses as `$NAME`.
fn assert_every_variable_is_read(svc: &Service, file: &str) -> anyhow::Result<()> {
    let help = Command::new(env!("CARGO_BIN_EXE_tracker"))
        .arg("--help")
        .output()?;
    svc.ensure_every_variable_is_read(file, "TRACKER_", &String::from_utf8_lossy(&help.stdout))
}

/// Runs one tracker command until it serves, and checks it serves where and how the file
/// says: on `TRACKER_LISTEN`, in the `TRACKER_DATABASE_URL` file, with the replication
/// target of `--replication` (or the default, 3).
async fn serve_as_written(svc: &Service, c: &Cmd) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut env: Env = svc.env.clone();
    let listen = free_addr()?;
    let db = dir.path().join("tracker.db");
    let url = env
        .get("TRACKER_DATABASE_URL")
        .with_context(|| format!("{} sets no TRACKER_DATABASE_URL", svc.origin))?;
    ensure!(url.starts_with("sqlite://"), "{}: {url}", svc.origin);
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    env.insert(
        "TRACKER_DATABASE_URL".into(),
        format!("sqlite://{}?{query}", db.display()),
    );
    ensure!(
        env.insert("TRACKER_LISTEN".into(), listen.clone())
            .is_some(),
        "{} sets no TRACKER_LISTEN",
        svc.origin
    );
    let child = Command::new(env!("CARGO_BIN_EXE_tracker"))
        .args(&c.args)
        .env_clear()
        .envs(&env)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut tracker = Running(child);
    let stdout = tracker.0.stdout.take().context("stdout")?;
    let mut stderr = tracker.0.stderr.take().context("stderr")?;
    // Its log, read all along so the pipe never fills; whole once the tracker is gone.
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let first_line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), first_line)
        .await
        .with_context(|| format!("{}: tracker {:?} did not start", svc.origin, c.args))???;
    if line.trim() != format!("tracker listening on http://{listen}") {
        drop(tracker);
        bail!(
            "{}: tracker {:?} printed {line:?}, not its TRACKER_LISTEN {listen}; log: {}",
            svc.origin,
            c.args,
            log.join().unwrap_or_default()
        );
    }

    let base = format!("http://{listen}");
    let health = reqwest::get(format!("{base}/healthz")).await?;
    ensure!(health.status().is_success(), "{}: {health:?}", svc.origin);
    let stats: Value = reqwest::get(format!("{base}/api/v1/stats"))
        .await?
        .json()
        .await?;
    let flag = c.args.iter().position(|a| a == "--replication");
    let want: u64 = match flag.and_then(|i| c.args.get(i + 1)) {
        Some(n) => n.parse()?,
        None => 3,
    };
    assert_eq!(stats["replication"], want, "{}: {:?}", svc.origin, c.args);
    ensure!(
        db.exists(),
        "{}: no database at {}",
        svc.origin,
        db.display()
    );
    Ok(())
}

/// The compose file's tracker service and every unit running `tracker` start it, and it
/// serves as they configure it.
#[tokio::test(flavor = "multi_thread")]
async fn should_serve_as_the_compose_file_and_the_systemd_unit_start_the_tracker()
-> anyhow::Result<()> {
    let compose = packaging::compose()?;
    // The peer's unit loads a credential; its commands are read, not run, here.
    let creds = tempfile::tempdir()?;
    let extra = Env::from([(
        "CREDENTIALS_DIRECTORY".to_string(),
        creds.path().display().to_string(),
    )]);
    let units = packaging::units(&extra)?;
    let mut ran = Vec::new();
    for (file, svc) in compose
        .iter()
        .map(|s| ("docker-compose.yml".to_string(), s))
        .chain(
            units
                .iter()
                .map(|s| (format!("packaging/systemd/{}", s.origin), s)),
        )
    {
        let cmds = svc.of("tracker");
        if cmds.is_empty() {
            continue;
        }
        ensure!(
            cmds.len() == svc.commands.len(),
            "{}: {:?}",
            svc.origin,
            svc.commands
        );
        for c in cmds {
            serve_as_written(svc, c).await?;
            ran.push(format!("{}: tracker {}", c.origin, c.args.join(" ")));
        }
        assert_every_variable_is_read(svc, &file)?;
    }
    assert_eq!(
        ran,
        [
            "docker-compose.yml, service tracker: tracker --replication 2",
            "tracker.service ExecStart: tracker serve",
        ]
        .map(str::to_string),
        "the tracker commands of the packaging files"
    );
    Ok(())
}
