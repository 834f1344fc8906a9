//! Folders end to end: `peer index DIR` shares the directory as one collection as well as
//! its files, search finds it by its name and by the names inside, and `peer get` of it
//! writes `--output/NAME/` with every path, empty directories and empty files included;
//! a second get keeps what is there, a deleted file is fetched again, a different file in
//! the way is never overwritten, and `peer unindex PATH` stops sharing the folder.
//!
//! Paths from the network are hostile: behind a lying tracker (a proxy that calls any file
//! a collection) a getter is handed listings with `..`, absolute paths, control characters
//! and names that differ only in case, and finds symlinks already in its output; nothing is
//! ever written outside `--output` (or its home), and each refusal says why.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::common::*;
use crate::lying_tracker::{Lie, start_proxy};
use anyhow::Context;

const MIB: usize = 1 << 20;

/// A small tree with what tends to get lost: nesting, an empty directory, an empty file, a
/// dotfile, a name with spaces, a file of several chunks.
fn album(root: &Path) -> anyhow::Result<PathBuf> {
    let dir = root.join("album");
    std::fs::create_dir_all(dir.join("cd 1"))?;
    std::fs::create_dir_all(dir.join("deep/a/b"))?;
    std::fs::create_dir_all(dir.join("empty dir"))?;
    random_file(&dir.join("cd 1"), "01 intro.flac", 2 * MIB + 5)?;
    random_file(&dir.join("cd 1"), "02 song.flac", 40_000)?;
    random_file(&dir.join("deep/a/b"), "c.bin", 1234)?;
    random_file(&dir, ".cover.jpg", 10)?;
    std::fs::write(dir.join("empty.txt"), b"")?;
    Ok(dir)
}

/// The tree under `dir`: every directory and file (relative, `/` for directories) with
/// the SHA-256 of each file.
fn tree(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir)?.to_string_lossy().into_owned();
            if e.file_type()?.is_dir() {
                out.push((format!("{rel}/"), String::new()));
                stack.push(p);
            } else {
                out.push((rel, sha256_of(&p)?.to_hex()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn folder_item(items: &[serde_json::Value]) -> anyhow::Result<&serde_json::Value> {
    items
        .iter()
        .find(|v| v["type"] == "collection")
        .context("a collection among the shared items")
}

#[tokio::test(flavor = "multi_thread")]
async fn should_round_trip_a_folder_as_a_tree() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let dir = album(src.path())?;
        let shared = alice.index(&dir).await?;
        assert_eq!(shared.len(), 6, "5 files and the folder: {shared:?}");
        let folder = folder_item(&shared)?;
        assert_eq!(folder["name"], "album");
        let id = folder["id"].as_str().context("id")?.to_string();

        let bob = TestPeer::register(&tracker, "bob").await?;
        let found = bob
            .run(&["--json", "search", "--type", "collection"])
            .await?
            .ok()?
            .json()?;
        assert_eq!(found[0]["id"], id.as_str(), "{found}");
        let inside = bob
            .run(&["--json", "search", "intro"])
            .await?
            .ok()?
            .json()?;
        let ids: Vec<&str> = inside
            .as_array()
            .context("array")?
            .iter()
            .filter_map(|v| v["id"].as_str())
            .collect();
        assert!(
            ids.contains(&id.as_str()),
            "found by a name inside: {inside}"
        );

        let out = tempfile::tempdir()?;
        let got = bob.get("album", out.path(), &[]).await?;
        let root = out.path().join("album");
        assert_eq!(got["type"], "collection", "{got}");
        assert_eq!(got["path"], root.to_str().context("utf-8")?);
        assert_eq!(got["files"]["count"], 5, "{got}");
        assert_eq!(
            got["files"]["fetched"], 4,
            "the empty file needs no fetch: {got}"
        );
        assert_eq!(tree(&root)?, tree(&dir)?);
        let listed = std::fs::read_dir(out.path())?.count();
        assert_eq!(listed, 1, "only the folder in --output");

        // Again: everything is there and kept.
        let again = bob.get(&id, out.path(), &[]).await?;
        assert_eq!(again["files"]["kept"], 5, "{again}");
        assert_eq!(again["files"]["fetched"], 0, "{again}");

        // A deleted file is fetched again; a different file in the way is left alone.
        std::fs::remove_file(root.join("cd 1/01 intro.flac"))?;
        std::fs::write(root.join("deep/a/b/c.bin"), b"mine, not the folder's")?;
        let third = bob
            .run(&[
                "--json",
                "get",
                &id,
                "--output",
                out.path().to_str().context("utf-8")?,
            ])
            .await?;
        assert_eq!(third.status.code(), Some(1), "{}", third.stderr);
        assert!(
            third.stderr.contains("album/deep/a/b/c.bin"),
            "the failure names the path: {}",
            third.stderr
        );
        let v = third.json()?;
        assert_eq!(v[0]["files"]["fetched"], 1, "{v}");
        assert_eq!(v[0]["files"]["failed"], 1, "{v}");
        assert_eq!(
            sha256_of(&root.join("cd 1/01 intro.flac"))?,
            sha256_of(&dir.join("cd 1/01 intro.flac"))?
        );
        assert_eq!(
            std::fs::read(root.join("deep/a/b/c.bin"))?,
            b"mine, not the folder's"
        );

        // The text summary names the folder and where it went.
        std::fs::remove_file(root.join("deep/a/b/c.bin"))?;
        let text = bob
            .run(&[
                "get",
                &id,
                "--output",
                out.path().to_str().context("utf-8")?,
            ])
            .await?
            .ok()?;
        assert!(
            text.stdout.starts_with("album/  5 files, ")
                && text.stdout.contains("(1 fetched, 4 kept)")
                && text
                    .stdout
                    .trim_end()
                    .ends_with(&format!("-> {}", root.display())),
            "{}",
            text.stdout
        );

        // One file of a folder that stays shared cannot go alone (the node would share it
        // again); the folder can, by path, with its files.
        let song = shared
            .iter()
            .find(|v| v["name"] == "02 song.flac")
            .and_then(|v| v["id"].as_str())
            .context("song id")?;
        let alone = alice.run(&["unindex", song]).await?;
        assert_eq!(alone.status.code(), Some(1), "{}", alone.stderr);
        assert!(
            one_error_line(&alone).contains("is in the shared folder"),
            "{}",
            alone.stderr
        );

        let gone = alice
            .run(&["--json", "unindex", dir.to_str().context("utf-8")?])
            .await?
            .ok()?
            .json()?;
        assert_eq!(gone.as_array().map(Vec::len), Some(6), "{gone}");
        assert_eq!(gone[0]["id"], id.as_str(), "the folder goes first: {gone}");
        Ok(())
    })
    .await
}

/// Waits until the tracker lists a collection named `name` whose id is not `old`; its id.
async fn new_listing(tracker: &TestTracker, name: &str, old: &str) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = tracker.get_json("/api/v1/files?type=collection").await?;
        let items = v["items"].as_array().or_else(|| v.as_array()).cloned();
        let found = items.into_iter().flatten().find_map(|f| {
            (f["name"] == name && f["id"] != old).then(|| f["id"].as_str().map(str::to_string))
        });
        if let Some(Some(id)) = found {
            return Ok(id);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no new listing of {name}: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_share_a_changed_folder_again_from_the_running_node() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&["--rescan-every", "1s"]).await?;
        let src = tempfile::tempdir()?;
        let dir = album(src.path())?;
        let first = alice.index(&dir).await?;
        let first = folder_item(&first)?["id"]
            .as_str()
            .context("id")?
            .to_string();

        // A file added, one removed, one changed, a directory made: one new listing.
        random_file(&dir.join("deep"), "new.bin", 5000)?;
        std::fs::remove_file(dir.join("cd 1/02 song.flac"))?;
        std::fs::write(dir.join(".cover.jpg"), b"another cover")?;
        std::fs::create_dir(dir.join("later"))?;
        let second = new_listing(&tracker, "album", &first).await?;
        let listing = reqwest::get(format!("{}/api/v1/files/{second}/listing", tracker.url()))
            .await?
            .text()
            .await?;
        assert!(listing.contains("\tdeep/new.bin\n"), "{listing}");
        assert!(listing.contains("d\tlater\n"), "{listing}");
        assert!(!listing.contains("02 song.flac"), "{listing}");

        // The old listing is withdrawn, and the new one fetches as the folder is now.
        let old = tracker.get_json(&format!("/api/v1/files/{first}")).await;
        assert!(
            old.is_err() || old?["holders"] == 0,
            "the old listing is withdrawn"
        );
        let bob = TestPeer::register(&tracker, "bob").await?;
        let out = tempfile::tempdir()?;
        // The tracker may still be auditing the new files: the getter waits for sources.
        bob.get(&second, out.path(), &[]).await?;
        assert_eq!(tree(&out.path().join("album"))?, tree(&dir)?);
        Ok(())
    })
    .await
}

/// A seed sharing `files` (name, bytes) as plain files through the real tracker, and a
/// getter behind a proxy that calls every file a collection.
struct Lying {
    seed_ids: Vec<String>,
    getter: TestPeer,
    /// Holds the getter's home and outputs, and a directory outside them both.
    root: tempfile::TempDir,
    _keep: (
        TestPeer,
        tokio_util::sync::DropGuard,
        TestTracker,
        tempfile::TempDir,
    ),
}

fn as_collection() -> Lie {
    Arc::new(|r| {
        if let Some(f) = r.file.as_mut() {
            f.r#type = "collection".into();
        }
    })
}

impl Lying {
    async fn start(files: &[(&str, Vec<u8>)]) -> anyhow::Result<Self> {
        let tracker = TestTracker::start().await?;
        let mut seed = TestPeer::register(&tracker, "alice").await?;
        seed.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let mut seed_ids = Vec::new();
        for (name, bytes) in files {
            let path = src.path().join(name);
            std::fs::write(&path, bytes)?;
            let v = seed.index(&path).await?;
            seed_ids.push(v[0]["id"].as_str().context("id")?.to_string());
        }
        let (url, proxy) = start_proxy(&tracker, Arc::new(Mutex::new(as_collection()))).await?;
        let root = tempfile::tempdir()?;
        let mut getter = TestPeer::with_tracker_urls(&url, "bob")?;
        getter.home = tempfile::Builder::new()
            .prefix("home")
            .tempdir_in(root.path())?;
        getter
            .run_stdin(&["register", "--user", "bob", "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        Ok(Self {
            seed_ids,
            getter,
            root,
            _keep: (seed, proxy, tracker, src),
        })
    }

    /// `peer get ID --output ROOT/out`; checks nothing landed outside `out` and the home.
    async fn get(&self, id: &str) -> anyhow::Result<Out> {
        let out = self.root.path().join("out");
        std::fs::create_dir_all(&out)?;
        let got = self
            .getter
            .run(&["get", id, "--output", out.to_str().context("utf-8")?])
            .await?;
        let all = format!("{}{}", got.stdout, got.stderr);
        assert!(!all.contains("panicked"), "{all}");
        assert!(
            !all.contains(['\u{1b}', '\0']),
            "raw control bytes: {all:?}"
        );
        for e in std::fs::read_dir(self.root.path())?.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            assert!(
                n.starts_with("home") || n == "out" || n == "outside",
                "written outside: {n:?}"
            );
        }
        if let Ok(outside) = std::fs::read_dir(self.root.path().join("outside")) {
            assert_eq!(outside.count(), 0, "written through a symlink");
        }
        Ok(got)
    }
}

fn listing(lines: &[String]) -> Vec<u8> {
    let mut s = String::from("tessera-collection/1\n");
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.into_bytes()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_never_write_outside_the_output_from_a_lying_listing() -> anyhow::Result<()> {
    bounded(async {
        let real = vec![7u8; 3000];
        let real_id = {
            let m = ::common::manifest::hash_bytes(&real, "real.bin".into());
            m.id().to_string()
        };
        let f = |path: &str| format!("f\t{real_id}\t3000\t{path}");
        let hostile = [
            ("dotdot", listing(&[f("../escape.bin")])),
            ("deep-dotdot", listing(&[f("a/../../escape.bin")])),
            ("absolute", listing(&[f("/tmp/escape.bin")])),
            ("control", listing(&[f("x\u{1b}[2J.bin")])),
            ("case", listing(&[f("A.bin"), f("a.bin")])),
            ("through-a-file", listing(&[f("a"), f("a/b")])),
            ("not-a-listing", b"just some bytes\n".to_vec()),
        ];
        let mut files: Vec<(&str, Vec<u8>)> = vec![("real.bin", real.clone())];
        files.extend(hostile.iter().map(|(n, b)| (*n, b.clone())));
        files.push(("good", listing(&[f("sub/real.bin")])));
        let w = Lying::start(&files).await?;
        assert_eq!(w.seed_ids[0], real_id);

        for (i, (name, _)) in hostile.iter().enumerate() {
            let got = w.get(&w.seed_ids[i + 1]).await?;
            assert_eq!(got.status.code(), Some(1), "{name}: {}", got.stderr);
            let line = one_error_line(&got);
            assert!(
                line.contains("is listed as a folder, but its listing is not one"),
                "{name}: {line}"
            );
            let out = w.root.path().join("out");
            assert_eq!(
                std::fs::read_dir(&out)?.count(),
                0,
                "{name}: wrote in --output"
            );
        }

        // A valid listing, but the output holds symlinks where its directories go.
        let good = w.seed_ids.last().context("good")?.clone();
        let outside = w.root.path().join("outside");
        std::fs::create_dir_all(&outside)?;
        let out = w.root.path().join("out");
        std::os::unix::fs::symlink(&outside, out.join("good"))?;
        let got = w.get(&good).await?;
        assert_eq!(got.status.code(), Some(1), "{}", got.stderr);
        assert!(got.stderr.contains("symlink"), "{}", got.stderr);
        std::fs::remove_file(out.join("good"))?;
        std::fs::create_dir_all(out.join("good"))?;
        std::os::unix::fs::symlink(&outside, out.join("good/sub"))?;
        let got = w.get(&good).await?;
        assert_eq!(got.status.code(), Some(1), "{}", got.stderr);
        assert!(
            got.stderr.contains("good/sub/real.bin") && got.stderr.contains("symlink"),
            "{}",
            got.stderr
        );
        // Without the symlink it is an ordinary folder.
        std::fs::remove_file(out.join("good/sub"))?;
        let got = w.get(&good).await?.ok()?;
        assert!(got.stdout.starts_with("good/  1 file"), "{}", got.stdout);
        assert_eq!(std::fs::read(out.join("good/sub/real.bin"))?, real);
        Ok(())
    })
    .await
}
