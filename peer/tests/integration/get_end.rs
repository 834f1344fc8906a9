//! The end of a `get`, whichever way it comes: Ctrl-C says what is kept and how to resume,
//! exits 130 and the same command finishes the file; a finished `get` stops counting as an
//! active transfer at the tracker at once, not when its last Locate ages out.
//! Real tracker, real `peer` processes on 127.0.0.1; every wait is on an event, with a
//! generous bound, and the sources are rate-capped so a download cannot end before the
//! test has looked at it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::*;
use anyhow::{Context, bail};

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

/// A user sharing one random file of `size` bytes, `shared.bin`, from a node started with
/// `serve_args`; returns the peer, the source dir, the file id and the SHA-256.
async fn sharer(
    tracker: &TestTracker,
    size: usize,
    serve_args: &[&str],
) -> anyhow::Result<(TestPeer, tempfile::TempDir, String, ::common::Sha256Digest)> {
    let src = tempfile::tempdir()?;
    let (path, sha) = random_file(src.path(), "shared.bin", size)?;
    let mut p = TestPeer::register(tracker, "alice").await?;
    let files = p.index(&path).await?;
    let id = files[0]["id"].as_str().context("id")?.to_string();
    p.serve(serve_args).await?;
    Ok((p, src, id, sha))
}

/// Ctrl-C in the middle of a download: one line on stderr saying how much of the file is
/// kept where and that the same command resumes it, nothing on stdout, exit 130, the part
/// file kept and no final file; the same command then finishes it byte for byte, saying
/// what it resumed.
#[tokio::test(flavor = "multi_thread")]
async fn should_say_what_ctrl_c_kept_exit_130_and_resume() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        // 32 MiB at 2 MB/s: 16 s, far longer than it takes to see a few chunks land.
        let (mut alice, _src, id, sha) =
            sharer(&tracker, 32 * CHUNK, &["--max-upload-rate", "2M"]).await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let out = tempfile::tempdir()?;
        let dir = out.path().to_str().context("utf-8")?;
        let args = ["get", id.as_str(), "--output", dir];
        let child = bob.spawn_with(&[], &args)?;
        let pid = child.id().context("the get's pid")?;
        wait_until(Duration::from_secs(60), "a few chunks", || {
            bob.held_chunks(&id) >= 2
        })
        .await?;
        let kill = tokio::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .stdin(Stdio::null())
            .status()
            .await?;
        assert!(kill.success(), "kill -INT {pid}");
        let done = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .context("peer get did not stop on SIGINT")??;
        let (stdout, stderr) = (
            String::from_utf8_lossy(&done.stdout),
            String::from_utf8_lossy(&done.stderr),
        );
        assert_eq!(done.status.code(), Some(130), "exit 130: {stderr}");
        assert_eq!(stdout, "", "nothing on stdout");
        let part = out.path().join("shared.bin.tessera-part");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line on stderr: {stderr:?}");
        let tail = format!(
            "% of shared.bin kept in {}; run the same command to resume",
            part.display()
        );
        let percent = lines[0]
            .strip_prefix("interrupted: ")
            .and_then(|l| l.strip_suffix(&tail))
            .and_then(|p| p.parse::<u32>().ok())
            .with_context(|| format!("{:?} is not 'interrupted: N{tail}'", lines[0]))?;
        assert!((1..100).contains(&percent), "{percent}% of the file kept");
        assert!(part.is_file(), "the part file is kept");
        assert!(!out.path().join("shared.bin").exists(), "no final file yet");

        // The same command, with the cap lifted so the rest comes quickly.
        alice.kill_node().await?;
        alice.serve(&[]).await?;
        let again = bob.run(&args).await?.ok()?;
        let line = again.stdout.trim_end();
        assert!(
            line.starts_with("shared.bin  32 MiB  in ")
                && line.contains(" resumed -> ")
                && line.ends_with(&format!("{}", out.path().join("shared.bin").display())),
            "a summary saying what was resumed: {line:?}"
        );
        assert_eq!(sha256_of(&out.path().join("shared.bin"))?, sha);
        assert_eq!(files_below(out.path()).len(), 1, "the part file is gone");
        eprintln!("interrupted at {percent}%, then: {line}");
        Ok(())
    })
    .await
}

/// Two users' gets of one file: both count as active transfers while they run, and
/// neither once both have exited (the first look after they ended, not 10 s later).
#[tokio::test(flavor = "multi_thread")]
async fn should_stop_counting_gets_as_active_transfers_once_they_end() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        // Two getters of 8 MiB from one node capped at 4 MB/s: about 4 s together.
        let (_alice, _src, id, sha) =
            sharer(&tracker, 8 * CHUNK, &["--max-upload-rate", "4M"]).await?;
        let mut getters = Vec::new();
        for name in ["bob", "carol"] {
            let p = TestPeer::register(&tracker, name).await?;
            let out = tempfile::tempdir()?;
            let child = p.spawn_get(&id, out.path())?;
            getters.push((p, out, child));
        }
        let active = || async {
            let s = tracker.get_json("/api/v1/stats").await?;
            s["active_transfers"]
                .as_u64()
                .with_context(|| format!("no active_transfers in {s}"))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while active().await? < 2 {
            if Instant::now() > deadline {
                bail!("the two gets never counted as active transfers");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for (_, out, child) in getters {
            let done = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
                .await
                .context("peer get did not finish")??;
            assert_got(&done, &out.path().join("shared.bin"), &sha)?;
        }
        // Each get waited for its last Locate, then reported the whole file, before it
        // exited: nothing is left to age out of the 10 s window.
        assert_eq!(active().await?, 0, "active transfers once both gets ended");
        Ok(())
    })
    .await
}
