//! Names belong to sharers, end to end. A hostile account announces alice's content first
//! under a path-like name (over gRPC, as any client can); alice's own commands still show
//! her name, search finds the file under each sharer's name and drops the hostile one when
//! its sharer leaves, and other users' `get` by name saves the content under that name,
//! byte for byte.

use crate::common::*;
use anyhow::Context;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use rand::RngExt;
use tonic::transport::Channel;
use tracker::testing::authed;

const HOSTILE: &str = "../../../tmp/x";

/// A client of `tracker` logged in as `user` (registered with the harness's password),
/// with a peer id of its own that no node serves.
struct Hostile {
    client: TrackerClient<Channel>,
    token: String,
    peer_id: String,
}

impl Hostile {
    async fn login(tracker: &TestTracker, user: &str) -> anyhow::Result<Self> {
        let mut client = TrackerClient::connect(tracker.url()).await?;
        let creds = pb::Credentials {
            user: user.into(),
            password: PASSWORD.into(),
        };
        let token = client.login(creds).await?.into_inner().token;
        let mut id = [0u8; 16];
        rand::rng().fill(&mut id);
        let peer_id = ::common::PeerId::from_random(id).to_string();
        Ok(Self {
            client,
            token,
            peer_id,
        })
    }

    async fn announce(&mut self, m: &::common::Manifest) -> anyhow::Result<pb::FileInfo> {
        let req = pb::AnnounceRequest {
            listing: Default::default(),
            peer_id: self.peer_id.clone(),
            manifest: Some(pb::Manifest::from(m)),
        };
        let r = self.client.announce(authed(req, &self.token)).await?;
        r.into_inner().file.context("announce answered no file")
    }

    async fn unindex(&mut self, id: &str) -> anyhow::Result<()> {
        let req = pb::UnindexRequest {
            peer_id: self.peer_id.clone(),
            file_id: id.into(),
        };
        self.client.unindex(authed(req, &self.token)).await?;
        Ok(())
    }
}

/// The names `peer --json search QUERY` lists.
async fn search(p: &TestPeer, query: &str) -> anyhow::Result<Vec<String>> {
    let out = p.run(&["--json", "search", query]).await?.ok()?;
    let items = out.json()?;
    let items = items.as_array().context("search --json prints an array")?;
    Ok(items
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn should_show_each_sharer_its_own_name_and_find_files_by_any() -> anyhow::Result<()> {
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        TestPeer::register(&tracker, "mallory").await?;
        let carol = TestPeer::register(&tracker, "carol").await?;
        let dave = TestPeer::register(&tracker, "dave").await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "holiday.mkv", 2 << 20 | 12345)?;

        // Mallory announces alice's content first, under a name of her choosing.
        let mut mallory = Hostile::login(&tracker, "mallory").await?;
        let bait = ::common::manifest::hash_file(&path, HOSTILE.into())?;
        assert_eq!(mallory.announce(&bait).await?.name, HOSTILE);

        let p = path.to_str().context("utf-8 path")?;
        let indexed = alice.run(&["index", p]).await?.ok()?;
        assert!(indexed.stdout.contains("holiday.mkv"), "{}", indexed.stdout);
        assert!(!indexed.stdout.contains("tmp/x"), "{}", indexed.stdout);
        let id = bait.id().to_string();
        assert!(
            indexed.stdout.starts_with(&id[..12]),
            "the same content: {}",
            indexed.stdout
        );
        let again = alice.index(&path).await?;
        assert_eq!(again[0]["name"], "holiday.mkv");
        let files = alice.run(&["files"]).await?.ok()?;
        assert!(files.stdout.contains("holiday.mkv"), "{}", files.stdout);
        assert!(!files.stdout.contains("tmp/x"), "{}", files.stdout);
        let table = carol.run(&["search", "holiday"]).await?.ok()?;
        assert!(table.stdout.contains("holiday.mkv"), "{}", table.stdout);

        assert_eq!(search(&carol, "holiday").await?, ["holiday.mkv"]);
        assert_eq!(search(&carol, HOSTILE).await?, [HOSTILE]);
        assert_eq!(search(&carol, "").await?.len(), 1, "one row per file");

        // Asked for by alice's name, it is saved under it, though mallory's is as used.
        let out = tempfile::tempdir()?;
        let got = carol.get("holiday.mkv", out.path(), &[]).await?;
        assert_eq!(got["name"], "holiday.mkv");
        assert_got_file(out.path(), &sha)?;

        // Mallory leaves: her name leaves with her.
        mallory.unindex(&id).await?;
        assert!(search(&carol, HOSTILE).await?.is_empty());
        assert!(search(&carol, "tmp").await?.is_empty());
        assert_eq!(search(&carol, "holiday").await?, ["holiday.mkv"]);

        let out = tempfile::tempdir()?;
        let got = dave.get("holiday.mkv", out.path(), &[]).await?;
        assert_eq!(got["name"], "holiday.mkv");
        assert_got_file(out.path(), &sha)?;
        Ok(())
    })
    .await
}

/// `dir` holds `holiday.mkv` alone, with SHA-256 `sha`.
fn assert_got_file(dir: &std::path::Path, sha: &::common::Sha256Digest) -> anyhow::Result<()> {
    assert_eq!(files_below(dir), [std::path::PathBuf::from("holiday.mkv")]);
    assert_eq!(&sha256_of(&dir.join("holiday.mkv"))?, sha);
    Ok(())
}
