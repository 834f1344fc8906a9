//! End to end: a real tracker and real `peer` processes on 127.0.0.1, real files compared
//! byte for byte. Each test states one promise of docs/reference.md.

use std::time::Duration;

use crate::common::*;
use anyhow::Context;
use proto::tracker::v1 as pb;
use rand::RngExt;
use tracker::testing::authed;

const CHUNK: usize = ::common::manifest::MIN_CHUNK_SIZE as usize;

fn id_of(file: &serde_json::Value) -> String {
    file["id"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn should_register_login_logout_and_refuse_a_wrong_password() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        alice.run(&["search"]).await?.ok()?;

        let again = alice
            .run_stdin(&["register", "--user", "alice", "--password-stdin"], "x")
            .await?;
        assert_eq!(again.status.code(), Some(1), "{}", again.stderr);

        alice.run(&["logout"]).await?.ok()?;
        let out = alice.run(&["search"]).await?;
        assert_eq!(
            out.status.code(),
            Some(1),
            "a logged-out peer cannot search"
        );
        assert_eq!(
            out.stderr.lines().count(),
            1,
            "one clear line: {}",
            out.stderr
        );

        for (user, pw) in [("alice", "wrong password"), ("mallory", PASSWORD)] {
            let out = alice
                .run_stdin(&["login", "--user", user, "--password-stdin"], pw)
                .await?;
            assert_eq!(out.status.code(), Some(1));
            assert_eq!(out.stderr, "error: invalid user or password\n");
        }

        alice
            .run_stdin(&["login", "--user", "alice", "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        alice.run(&["search"]).await?.ok()?;
        let session = std::fs::metadata(alice.home.path().join("session.json"))?;
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            session.permissions().mode() & 0o777,
            0o600,
            "the token file is private"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_index_search_and_get_every_size_byte_identical() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        alice.serve(&[]).await?;

        let src = tempfile::tempdir()?;
        let sizes = [
            ("empty.txt", 0),
            ("one.txt", 1),
            ("below.mp3", CHUNK - 1),
            ("exact.mkv", CHUNK),
            ("above.flac", CHUNK + 1),
            ("big.tar", 64 * CHUNK + 12_345),
        ];
        let mut expected = Vec::new();
        for (name, size) in sizes {
            expected.push((name, size, random_file(src.path(), name, size)?.1));
        }
        let indexed = alice.index(src.path()).await?;
        assert_eq!(
            indexed.len(),
            sizes.len() + 1,
            "the files, then their folder"
        );
        assert_eq!(indexed[sizes.len()]["type"], "collection");

        let audio = bob
            .run(&["--json", "search", "--type", "audio"])
            .await?
            .ok()?
            .json()?;
        let mut names: Vec<&str> = audio
            .as_array()
            .context("array")?
            .iter()
            .filter_map(|f| f["name"].as_str())
            .collect();
        names.sort();
        assert_eq!(names, ["above.flac", "below.mp3"]);

        let out = tempfile::tempdir()?;
        for (name, size, sha) in expected {
            // A holder counts once the tracker's audit has seen it serve (a few ms here).
            let mut found;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                found = bob.run(&["--json", "search", name]).await?.ok()?.json()?;
                let counted = found.as_array().is_some_and(|a| {
                    a.iter()
                        .any(|f| f["type"] != "collection" && f["holders"] == 1)
                });
                if counted || tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The folder they were indexed from is found too, by the name inside it.
            let found: Vec<&serde_json::Value> = found
                .as_array()
                .context("array")?
                .iter()
                .filter(|f| f["type"] != "collection")
                .collect();
            assert_eq!(found.len(), 1, "search {name}: {found:?}");
            assert_eq!(found[0]["size"], size as u64);
            assert_eq!(
                found[0]["sha256"],
                sha.to_string(),
                "the tracker lists sha256sum's digest"
            );
            assert_eq!(found[0]["holders"], 1);

            let got = bob.get(&id_of(found[0]), out.path(), &[]).await?;
            let path = out.path().join(name);
            assert_eq!(
                got["path"].as_str().map(std::path::PathBuf::from),
                Some(path.clone())
            );
            assert_eq!(got["sha256"], sha.to_string());
            assert_eq!(sha256_of(&path)?, sha, "{name} is byte-identical");
            assert_eq!(std::fs::metadata(&path)?.len(), size as u64);
        }
        let left: Vec<_> = files_below(out.path());
        assert_eq!(
            left.len(),
            sizes.len(),
            "no partial files left behind: {left:?}"
        );

        // Getting by name works too, and a second get of a complete file changes nothing.
        let again = bob.get("big.tar", out.path(), &[]).await?;
        assert_eq!(again["sha256"], expected_sha(&indexed, "big.tar"));
        Ok(())
    })
    .await
}

fn expected_sha(indexed: &[serde_json::Value], name: &str) -> serde_json::Value {
    indexed
        .iter()
        .find(|f| f["name"] == name)
        .map(|f| f["sha256"].clone())
        .unwrap_or_default()
}

/// Starts `n` serving peers that each share their own copy of the same random file.
async fn seeders(
    tracker: &TestTracker,
    n: usize,
    size: usize,
    serve_args: &[&str],
) -> anyhow::Result<(
    Vec<TestPeer>,
    tempfile::TempDir,
    String,
    ::common::Sha256Digest,
)> {
    let src = tempfile::tempdir()?;
    let (path, sha) = random_file(src.path(), "shared.bin", size)?;
    let mut peers = Vec::new();
    let mut id = String::new();
    for i in 0..n {
        let mut p = TestPeer::register(tracker, &format!("seed{i}")).await?;
        let dir = src.path().join(format!("copy{i}"));
        std::fs::create_dir(&dir)?;
        std::fs::copy(&path, dir.join("shared.bin"))?;
        let files = p.index(&dir.join("shared.bin")).await?;
        id = id_of(&files[0]);
        p.serve(serve_args).await?;
        peers.push(p);
    }
    Ok((peers, src, id, sha))
}

#[tokio::test(flavor = "multi_thread")]
async fn should_finish_from_the_others_when_a_source_dies_mid_transfer() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let (mut seeds, _src, id, sha) =
            seeders(&tracker, 3, 48 * CHUNK, &["--max-upload-rate", "4M"]).await?;
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let child = getter.spawn_get(&id, out.path())?;
        wait_until(Duration::from_secs(30), "a few chunks", || {
            getter.held_chunks(&id) >= 6
        })
        .await?;
        seeds[0].kill_node().await?;

        let done = child.wait_with_output().await?;
        let stdout = assert_got(&done, &out.path().join("shared.bin"), &sha)?;
        let json: serde_json::Value = serde_json::from_slice(&stdout)?;
        assert!(json[0]["sources"].as_u64() >= Some(2), "{json}");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fetch_elsewhere_when_a_holder_serves_bad_bytes() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let (seeds, src, id, sha) = seeders(&tracker, 2, 16 * CHUNK, &[]).await?;
        // Seed 0's file changes on disk after indexing, with its mtime put back, so the node
        // cannot tell from metadata: it serves wrong bytes for every chunk.
        let path = src.path().join("copy0").join("shared.bin");
        let mtime = std::fs::metadata(&path)?.modified()?;
        let mut data = std::fs::read(&path)?;
        for b in data.iter_mut().step_by(4096) {
            *b ^= 0xff;
        }
        std::fs::write(&path, &data)?;
        std::fs::File::options()
            .write(true)
            .open(&path)?
            .set_modified(mtime)?;

        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let got = getter.get(&id, out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("shared.bin"))?, sha);
        assert_eq!(
            got["sources"], 1,
            "only the honest holder supplied verified chunks: {got}"
        );
        drop(seeds);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_resume_an_interrupted_get_without_refetching() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let (_seeds, _src, id, sha) =
            seeders(&tracker, 1, 32 * CHUNK, &["--max-upload-rate", "4M"]).await?;
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let mut child = getter.spawn_get(&id, out.path())?;
        wait_until(Duration::from_secs(30), "some chunks", || {
            getter.held_chunks(&id) >= 6
        })
        .await?;
        child.kill().await?;
        assert!(
            !out.path().join("shared.bin").exists(),
            "no final name before it is complete"
        );

        let got = getter.get(&id, out.path(), &[]).await?;
        assert_eq!(sha256_of(&out.path().join("shared.bin"))?, sha);
        let reused = got["chunks_reused"].as_u64().context("chunks_reused")?;
        let fetched = got["chunks_fetched"].as_u64().context("chunks_fetched")?;
        assert!(reused >= 6, "verified chunks were kept: {got}");
        assert_eq!(
            reused + fetched,
            32,
            "nothing verified was fetched again: {got}"
        );
        assert_eq!(files_below(out.path()).len(), 1, "the partial file is gone");
        Ok(())
    })
    .await
}

/// Logs in over gRPC and announces `manifest` under a hostile name, as a tracker or a
/// malicious peer could.
async fn announce_as(
    tracker: &TestTracker,
    user: &str,
    manifest: &::common::Manifest,
) -> anyhow::Result<()> {
    let mut client = pb::tracker_client::TrackerClient::connect(tracker.url()).await?;
    let session = client
        .login(pb::Credentials {
            user: user.into(),
            password: PASSWORD.into(),
        })
        .await?
        .into_inner();
    let mut id = [0u8; 16];
    rand::rng().fill(&mut id);
    let req = pb::AnnounceRequest {
        listing: Default::default(),
        peer_id: ::common::PeerId::from_random(id).to_string(),
        manifest: Some(pb::Manifest {
            name: manifest.name.clone(),
            size: manifest.size,
            sha256: manifest.sha256.0.to_vec().into(),
            chunk_size: manifest.chunk_size,
            chunk_hashes: manifest.packed_hashes().into(),
        }),
    };
    client.announce(authed(req, &session.token)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_keep_hostile_names_inside_the_output_dir() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let bob = TestPeer::register(&tracker, "bob").await?;
        let root = tempfile::tempdir()?;
        let src = root.path().join("src");
        let out = root.path().join("deep").join("out");
        std::fs::create_dir_all(&src)?;
        std::fs::create_dir_all(&out)?;

        let hostile = [
            "../escaped",
            "/tmp/tessera-absolute",
            "bad\u{1b}[31mred\nline\u{0}.txt",
            "..",
        ];
        for (i, name) in hostile.iter().enumerate() {
            let (path, sha) = random_file(&src, &format!("plain{i}.bin"), 1000 + i)?;
            let mut manifest = ::common::manifest::hash_file(&path, name.to_string())?;
            if name.contains('\0') {
                manifest.name = name.replace('\0', "");
            }
            // The hostile name is announced first, so the tracker keeps it for this content.
            announce_as(&tracker, "alice", &manifest).await?;
            let indexed = alice.index(&path).await?;
            let id = id_of(&indexed[0]);
            assert_eq!(id, manifest.id().to_string());

            let got = bob.get(&id, &out, &[]).await?;
            let written = std::path::PathBuf::from(got["path"].as_str().context("path")?);
            assert_eq!(
                written.parent(),
                Some(out.as_path()),
                "{written:?} is directly in --output"
            );
            assert_eq!(sha256_of(&written)?, sha);
        }
        assert_eq!(files_below(&out).len(), hostile.len());
        assert_eq!(
            files_below(root.path()).len(),
            2 * hostile.len(),
            "nothing written elsewhere"
        );
        assert!(!std::path::Path::new("/tmp/tessera-absolute").exists());

        let table = bob.run(&["search"]).await?.ok()?;
        assert!(
            !table.stdout.contains('\u{1b}'),
            "no raw escape reaches the terminal"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_clearly_for_an_unknown_id_and_an_ambiguous_name() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let alice = TestPeer::register(&tracker, "alice").await?;
        let src = tempfile::tempdir()?;
        for dir in ["a", "b"] {
            std::fs::create_dir(src.path().join(dir))?;
            random_file(&src.path().join(dir), "dup.txt", 10)?;
        }
        let files = alice.index(src.path()).await?;
        assert_eq!(files.len(), 3, "two files and their folder");
        let out = tempfile::tempdir()?;
        let o = out.path().to_str().context("utf-8")?;

        let unknown = alice.run(&["get", &"0".repeat(64), "--output", o]).await?;
        assert_eq!(unknown.status.code(), Some(1));
        assert_eq!(unknown.stderr.lines().count(), 1, "{}", unknown.stderr);
        assert!(unknown.stderr.starts_with("error: "), "{}", unknown.stderr);
        assert!(
            unknown.stderr.contains("no file matches"),
            "a full id needs no Resolve, and an unknown one still reads as no match: {}",
            unknown.stderr
        );

        let ambiguous = alice.run(&["get", "dup.txt", "--output", o]).await?;
        assert_eq!(ambiguous.status.code(), Some(1));
        assert!(
            ambiguous.stderr.contains("matches 2 files"),
            "{}",
            ambiguous.stderr
        );
        for f in files.iter().filter(|f| f["type"] != "collection") {
            assert!(
                ambiguous.stderr.contains(&id_of(f)[..12]),
                "lists the candidates"
            );
        }
        assert!(files_below(out.path()).is_empty());

        let usage = alice.run(&["get"]).await?;
        assert_eq!(usage.status.code(), Some(2), "bad usage is exit 2");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_serve_two_getters_at_once() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let (_seeds, _src, id, sha) = seeders(&tracker, 1, 24 * CHUNK + 5, &[]).await?;
        let a = TestPeer::register(&tracker, "a").await?;
        let b = TestPeer::register(&tracker, "b").await?;
        let (oa, ob) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let (ra, rb) = tokio::join!(a.get(&id, oa.path(), &[]), b.get(&id, ob.path(), &[]));
        ra?;
        rb?;
        assert_eq!(sha256_of(&oa.path().join("shared.bin"))?, sha);
        assert_eq!(sha256_of(&ob.path().join("shared.bin"))?, sha);
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_survive_a_tracker_restart_during_a_get() -> anyhow::Result<()> {
    bounded(async {
        let mut tracker = TestTracker::start().await?;
        let (_seeds, _src, id, sha) =
            seeders(&tracker, 2, 32 * CHUNK, &["--max-upload-rate", "3M"]).await?;
        let getter = TestPeer::register(&tracker, "getter").await?;
        let out = tempfile::tempdir()?;
        let child = getter.spawn_get(&id, out.path())?;
        wait_until(Duration::from_secs(30), "some chunks", || {
            getter.held_chunks(&id) >= 4
        })
        .await?;
        tracker.stop().await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        tracker.restart_after_stop().await?;

        let done = child.wait_with_output().await?;
        assert_got(&done, &out.path().join("shared.bin"), &sha)?;

        // The restarted tracker learns that the getter now holds the file.
        let identity = std::fs::read_to_string(getter.home.path().join("identity.json"))?;
        let identity: serde_json::Value = serde_json::from_str(&identity)?;
        let peer_id = identity["peer_id"].as_str().context("peer_id")?;
        assert!(
            wait_for_report(&tracker, &id, peer_id).await,
            "getter's holding not recorded"
        );
        Ok(())
    })
    .await
}

/// Waits up to 10 s for the tracker to list `peer_id` as a holder of chunk 0.
async fn wait_for_report(tracker: &TestTracker, id: &str, peer_id: &str) -> bool {
    for _ in 0..100 {
        let listed = tracker.get_json(&format!("/api/v1/files/{id}")).await.ok();
        if listed.is_some_and(|d| d["chunk_map"][0]["peers"].to_string().contains(peer_id)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn should_list_files_peers_and_status_as_json() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let (notes, _) = random_file(src.path(), "notes.pdf", 3000)?;
        let indexed = alice.index(&notes).await?;
        assert_eq!(indexed[0]["type"], "document");

        let files = alice.run(&["--json", "files"]).await?.ok()?.json()?;
        assert_eq!(files[0]["id"], indexed[0]["id"]);
        assert_eq!(files[0]["kind"], "shared");

        let peers = alice.run(&["--json", "peers"]).await?.ok()?.json()?;
        let me = peers
            .as_array()
            .context("array")?
            .iter()
            .find(|p| p["user"] == "alice")
            .cloned();
        assert_eq!(me.context("alice listed")?["state"], "up");

        let status = alice.run(&["--json", "status"]).await?.ok()?;
        status.json()?;
        alice.run(&["status"]).await?.ok()?;

        alice.run(&["unindex", &id_of(&indexed[0])]).await?.ok()?;
        let left = alice
            .run(&["--json", "search", "notes"])
            .await?
            .ok()?
            .json()?;
        assert_eq!(
            left.as_array().map(Vec::len),
            Some(0),
            "unindexed files are gone"
        );
        assert!(
            src.path().join("notes.pdf").exists(),
            "unindex never deletes the user's file"
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_at_once_when_every_holder_is_offline() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        // Alice shares but runs no node: the tracker knows the file, nobody can serve it.
        let alice = TestPeer::register(&tracker, "alice").await?;
        let src = tempfile::tempdir()?;
        random_file(src.path(), "lonely.bin", 3 * CHUNK)?;
        let id = id_of(&alice.index(src.path()).await?[0]);

        let bob = TestPeer::register(&tracker, "bob").await?;
        let out = tempfile::tempdir()?;
        let o = out.path().to_str().context("utf-8")?;
        // The harness's give-up time is 60 s; this must not wait for it.
        let got = tokio::time::timeout(
            Duration::from_secs(20),
            bob.run(&["get", &id, "--output", o]),
        )
        .await
        .context("get waited for a source that cannot come")??;
        assert_eq!(got.status.code(), Some(1));
        assert_eq!(got.stderr.lines().count(), 1, "{}", got.stderr);
        assert!(
            got.stderr.contains("no live source for 3 of 3 chunks"),
            "{}",
            got.stderr
        );
        assert!(files_below(out.path()).is_empty(), "nothing written");
        Ok(())
    })
    .await
}
