//! What a new user trips on in the first minutes, each said plainly: a mistyped or relative
//! `--home`, an id prefix that is too short, a name with a leading space, a second `serve`
//! on one home, an `index` with no node to serve the files, a one-letter password, and a
//! demo that builds for minutes in silence. Real tracker, real `peer` processes on
//! 127.0.0.1.

use std::ffi::OsStr;
use std::path::Path;

use crate::common::*;
use anyhow::Context;
use tokio::process::Command;

/// Runs `peer --home HOME --tracker URL ARGS` in `cwd` with `input` on stdin, outside the
/// harness's homes (so a home can be missing or relative).
async fn peer_at(
    home: &OsStr,
    tracker: &TestTracker,
    cwd: &Path,
    args: &[&str],
    input: &str,
) -> anyhow::Result<Out> {
    let mut cmd = Command::new(peer_bin());
    cmd.arg("--home")
        .arg(home)
        .arg("--tracker")
        .arg(tracker.url())
        .args(args)
        .current_dir(cwd)
        .env_remove("PEER_HOME")
        .env_remove("PEER_TRACKER")
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    run_to_end(cmd, input).await
}

fn missing_home_line(abs: &Path) -> String {
    format!(
        "error: no peer home at {}; run `peer register` or `peer login` first, or check --home",
        abs.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_missing_home_for_every_command_but_register_and_login()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let cwd = tempfile::tempdir()?;
        let typo = cwd.path().join("typo");
        for args in [
            &["status"][..],
            &["files"],
            &["logout"],
            &["search"],
            &["get", "abcdef"],
            &["serve", "--listen", "127.0.0.1:0"],
            &["unindex", "abcdef"],
        ] {
            let out = peer_at(typo.as_os_str(), &tracker, cwd.path(), args, "").await?;
            assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stderr);
            assert_eq!(one_error_line(&out), missing_home_line(&typo), "{args:?}");
            assert!(!typo.exists(), "{args:?} created the home");
        }

        // A relative home is named by its absolute path, before and after it exists (the
        // working directory as the process sees it: symbolic links resolved).
        let rel = cwd.path().canonicalize()?.join("rel");
        let out = peer_at("rel".as_ref(), &tracker, cwd.path(), &["status"], "").await?;
        assert_eq!(one_error_line(&out), missing_home_line(&rel));
        peer_at(
            "rel".as_ref(),
            &tracker,
            cwd.path(),
            &["register", "--user", "alice", "--password-stdin"],
            PASSWORD,
        )
        .await?
        .ok()?;
        let out = peer_at("rel".as_ref(), &tracker, cwd.path(), &["status"], "")
            .await?
            .ok()?;
        let home_line = format!("home:      {}", rel.display());
        assert!(out.stdout.lines().any(|l| l == home_line), "{}", out.stdout);
        let v = peer_at(
            "rel".as_ref(),
            &tracker,
            cwd.path(),
            &["--json", "status"],
            "",
        )
        .await?
        .ok()?
        .json()?;
        assert_eq!(v["home"], rel.display().to_string());
        assert_eq!(v["logged_in"], true);

        // Login makes a missing home too (a second machine of the same user).
        let other = cwd.path().join("laptop");
        peer_at(
            other.as_os_str(),
            &tracker,
            cwd.path(),
            &["login", "--user", "alice", "--password-stdin"],
            PASSWORD,
        )
        .await?
        .ok()?;
        assert!(other.join("session.json").is_file());
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_say_why_a_short_hex_term_matches_nothing_and_match_names_exactly()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let (spaced, spaced_sha) = random_file(src.path(), " leading space.txt", 1000)?;
        let (hexy, hexy_sha) = random_file(src.path(), "0211", 1000)?;
        let spaced_id = alice.index(&spaced).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        alice.index(&hexy).await?;

        // Search lists the name with its space; get takes it as given.
        let found = bob.run(&["--json", "search", "leading"]).await?.ok()?.json()?;
        assert_eq!(found[0]["name"], " leading space.txt", "{found}");
        let out = tempfile::tempdir()?;
        let got = bob.get(" leading space.txt", out.path(), &[]).await?;
        assert_eq!(got["id"], spaced_id.as_str());
        let path = got["path"].as_str().context("path")?;
        assert_eq!(sha256_of(Path::new(path))?, spaced_sha);
        // Without the space it is another name, which no file has.
        let miss = bob.run(&["get", "leading space.txt"]).await?;
        assert_eq!(
            one_error_line(&miss),
            "error: no file matches 'leading space.txt'"
        );
        // An id keeps working with spaces around it.
        let padded = format!(" {} ", &spaced_id[..10]);
        let got = bob.get(&padded, out.path(), &[]).await?;
        assert_eq!(got["id"], spaced_id.as_str());

        // A name made of hex digits is still a name.
        let got = bob.get("0211", out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("0211"))?, hexy_sha, "{got}");
        // Too few digits for a prefix, and no such name: say so.
        let short = bob.run(&["get", "02a1"]).await?;
        assert_eq!(short.status.code(), Some(1));
        assert_eq!(
            one_error_line(&short),
            "error: no file is named '02a1', and 4 hex digits are too few for a file id prefix, which takes 6 to 64"
        );
        // Six digits are a prefix; one that matches nothing is just that.
        let six = bob.run(&["get", "ffffff"]).await?;
        assert_eq!(one_error_line(&six), "error: no file matches 'ffffff'");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_second_node_on_one_home_and_free_the_home_when_the_first_dies()
-> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let node: serde_json::Value =
            serde_json::from_slice(&std::fs::read(alice.home.path().join("node.json"))?)?;
        let pid = node["pid"].as_u64().context("pid in node.json")?;

        let second = alice.run(&["serve", "--listen", "127.0.0.1:0"]).await?;
        assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
        assert_eq!(
            one_error_line(&second),
            format!(
                "error: a node is already serving the peer home {} (pid {pid}); stop it first, or give this one its own --home",
                alice.home.path().display()
            )
        );
        let still: serde_json::Value =
            serde_json::from_slice(&std::fs::read(alice.home.path().join("node.json"))?)?;
        assert_eq!(still["pid"], pid, "the refused node left node.json alone");

        // SIGKILL leaves node.json behind but no lock: a new node starts.
        alice.kill_node().await?;
        alice.serve(&[]).await?;
        Ok(())
    })
    .await
}

/// Writes a small file `dir/name` and runs `peer index` on it in `p`'s home.
async fn index_new_file(p: &TestPeer, dir: &Path, name: &str) -> anyhow::Result<Out> {
    let (path, _) = random_file(dir, name, 100)?;
    p.run(&["index", path.to_str().context("utf-8")?])
        .await?
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_warn_at_index_when_no_node_serves_the_home() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        let src = tempfile::tempdir()?;
        let serve_hint = format!("`peer --home {} serve`", alice.home.path().display());

        let out = index_new_file(&alice, src.path(), "a.txt").await?;
        assert!(out.stdout.contains("a.txt"), "{}", out.stdout);
        let warning = out
            .stderr
            .lines()
            .find(|l| l.starts_with("warning: "))
            .with_context(|| format!("no warning: {:?}", out.stderr))?;
        assert!(
            warning.contains("no node is serving this home") && warning.contains("HOLDERS 0"),
            "{warning}"
        );
        assert!(warning.ends_with(&serve_hint), "{warning}");

        alice.serve(&[]).await?;
        let out = index_new_file(&alice, src.path(), "b.txt").await?;
        assert!(!out.stderr.contains("warning"), "{}", out.stderr);

        // A killed node leaves node.json with a dead pid: that is no node either.
        alice.kill_node().await?;
        assert!(alice.home.path().join("node.json").exists());
        let out = index_new_file(&alice, src.path(), "c.txt").await?;
        assert!(out.stderr.contains(&serve_hint), "{}", out.stderr);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_password_shorter_than_eight_characters() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let eve = TestPeer::new(&tracker, "eve")?;
        let register = ["register", "--user", "eve", "--password-stdin"];
        let short = eve.run_stdin(&register, "1234567").await?;
        assert_eq!(short.status.code(), Some(1));
        assert_eq!(
            one_error_line(&short),
            "error: cannot register: password must have at least 8 characters"
        );
        eve.run_stdin(&register, "12345678").await?.ok()?;

        let help = eve.run(&["register", "--help"]).await?.ok()?;
        assert!(
            help.stdout.contains("at least 8 characters"),
            "{}",
            help.stdout
        );
        Ok(())
    })
    .await
}

#[test]
fn the_demo_shows_cargo_s_progress_while_it_builds() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo.sh");
    let text = std::fs::read_to_string(&script).expect("scripts/demo.sh is readable");
    let builds: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && l.contains("cargo build"))
        .collect();
    assert!(!builds.is_empty(), "the demo builds its binaries");
    for line in builds {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            !words.iter().any(|w| *w == "--quiet" || *w == "-q"),
            "a first build takes minutes; cargo's progress must show: {line}"
        );
    }
}
