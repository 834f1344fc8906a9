//! What a person sees from a text-mode `peer get`: one summary line per file on stdout, a
//! progress bar per file on a terminal, and no bars with `--quiet` (which promises only
//! that: the summary stays). Bars are drawn only when stderr is a terminal, so these runs
//! give `peer` a pseudo-terminal through `script(1)` (util-linux); stdout stays a file.
//! Real tracker, real `peer` processes on 127.0.0.1.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use ::common::units::format_size;
use anyhow::{Context, bail};
use tokio::process::Command;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// What one run printed: stdout, and what reached the terminal (its stderr).
struct TermOut {
    stdout: String,
    terminal: String,
}

/// Quotes a word for `sh -c`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `peer ARGS` in `p`'s home with stderr on a pseudo-terminal and stdout in a file;
/// fails unless it exits 0.
async fn get_on_terminal(p: &TestPeer, args: &[&str]) -> anyhow::Result<TermOut> {
    let tmp = tempfile::tempdir()?;
    let stdout_file = tmp.path().join("stdout");
    let home = p.home.path().to_str().context("utf-8")?;
    let mut words = vec![peer_bin(), "--home", home, "--tracker", &p.tracker_url];
    words.extend_from_slice(args);
    let line: Vec<String> = words.iter().map(|w| sh_quote(w)).collect();
    let script = format!(
        "exec {} > {}",
        line.join(" "),
        sh_quote(stdout_file.to_str().context("utf-8")?)
    );
    let run = Command::new("script")
        .args(["--quiet", "--return", "--command", &script, "/dev/null"])
        .env_remove("RUST_LOG")
        .env_remove("PEER_LOG_FORMAT")
        .env_remove("PEER_HOME")
        .env_remove("PEER_TRACKER")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .context("peer get did not finish")?
        .context("cannot run script(1) from util-linux, which gives peer a terminal")?;
    let terminal = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "peer {args:?} failed ({}): {terminal}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(TermOut {
        stdout: std::fs::read_to_string(&stdout_file)?,
        terminal,
    })
}

/// Checks `line` is `NAME  SIZE  in SECSs at RATE from 1 source -> DIR/NAME`.
fn assert_fetched_summary(line: &str, name: &str, size: usize, dir: &Path) {
    let head = format!("{name}  {}  in ", format_size(size as u64));
    let tail = format!(
        " from 1 source -> {}",
        dir.join(name).to_str().expect("utf-8")
    );
    let middle = line
        .strip_prefix(&head)
        .and_then(|l| l.strip_suffix(&tail))
        .unwrap_or_else(|| panic!("{line:?} is not {head}…{tail}"));
    let (secs, rate) = middle
        .split_once("s at ")
        .unwrap_or_else(|| panic!("no time and rate in {line:?}"));
    assert!(secs.parse::<f64>().is_ok_and(|s| s >= 0.0), "{line:?}");
    assert!(
        rate.ends_with("B/s")
            && rate
                .split(' ')
                .next()
                .is_some_and(|n| n.parse::<f64>().is_ok()),
        "{line:?}"
    );
}

/// The summary is the whole of what `get` prints for a person: it must name each file
/// once, in order, with its size, the time, the rate, the sources and where it went.
/// `--quiet` must silence the bars a terminal otherwise shows, and only them.
#[tokio::test(flavor = "multi_thread")]
async fn should_print_one_summary_line_per_file_and_no_bars_with_quiet() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let mut ids = Vec::new();
        let files = [("first.bin", 3 * CHUNK + 5), ("second.dat", 2 * CHUNK)];
        for (name, size) in files {
            let (path, _) = random_file(src.path(), name, size)?;
            let id = alice.index(&path).await?[0]["id"]
                .as_str()
                .context("id")?
                .to_string();
            ids.push(id);
        }

        // On a terminal: bars on stderr, then one line per file on stdout, in order.
        let out = tempfile::tempdir()?;
        let dir = out.path().to_str().context("utf-8")?;
        let both = get_on_terminal(&bob, &["get", &ids[0], &ids[1], "--output", dir]).await?;
        let lines: Vec<&str> = both.stdout.lines().collect();
        assert_eq!(lines.len(), 2, "{:?}", both.stdout);
        for (line, (name, size)) in lines.iter().zip(files) {
            assert_fetched_summary(line, name, size, out.path());
        }
        for name in ["first.bin", "second.dat"] {
            assert!(
                both.terminal.contains(name) && both.terminal.contains("1 source"),
                "no bar for {name} on the terminal: {:?}",
                both.terminal
            );
        }

        // --quiet: nothing at all on the terminal, the same summary on stdout.
        let quiet_out = tempfile::tempdir()?;
        let quiet_dir = quiet_out.path().to_str().context("utf-8")?;
        let quiet =
            get_on_terminal(&bob, &["--quiet", "get", &ids[0], "--output", quiet_dir]).await?;
        assert_eq!(quiet.terminal, "", "--quiet drew on the terminal");
        let lines: Vec<&str> = quiet.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{:?}", quiet.stdout);
        assert_fetched_summary(lines[0], files[0].0, files[0].1, quiet_out.path());

        // A file already there is not fetched again, and the summary says so.
        let again = get_on_terminal(&bob, &["-q", "get", &ids[0], "--output", quiet_dir]).await?;
        assert_eq!(again.terminal, "", "-q drew on the terminal");
        assert_eq!(
            again.stdout,
            format!(
                "first.bin  {}  already complete -> {}\n",
                format_size(files[0].1 as u64),
                quiet_out.path().join("first.bin").display()
            )
        );
        Ok(())
    })
    .await
}
