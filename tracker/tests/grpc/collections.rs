//! Collections (shared folders): an announce carrying a listing makes its file a collection
//! once the tracker has checked the listing against the manifest and parsed it. Search
//! finds it by type, by its name and by the paths inside it; REST lists it and serves its
//! listing byte for byte; a listing that is not the file's content, or not a valid
//! listing, is refused with nothing stored; and a restart keeps it a collection. Runs on
//! SQLite, and on PostgreSQL under `TRACKER_TEST_BACKEND=postgres`.

use common::collection::{Collection, Entry, MAX_LISTING, RelPath};
use common::manifest::hash_bytes;
use proto::tracker::v1 as pb;
use proto::tracker::v1::tracker_client::TrackerClient;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::Value;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;
use tracker::Config;

use crate::common::{
    TestTracker, announce, authed, backend_url, heartbeat, manifest, peer_id, register, within,
};

/// A listing of `paths` as files (each of one made-up id and size) and `dirs`.
pub fn listing(files: &[&str], dirs: &[&str]) -> Vec<u8> {
    let id = common::FileId(common::Sha256Digest([0x5a; 32]));
    let entries = (files.iter())
        .map(|p| Entry::File {
            path: RelPath::parse(p).unwrap(),
            id,
            size: 7,
        })
        .chain(dirs.iter().map(|p| Entry::Dir(RelPath::parse(p).unwrap())))
        .collect();
    Collection::new(entries).unwrap().encode()
}

/// The photos collection: a folder with `holiday/a.jpg`, `holiday/b.jpg` and an empty
/// directory.
pub fn photos() -> Vec<u8> {
    listing(&["holiday/a.jpg", "holiday/b.jpg"], &["holiday", "empty"])
}

/// Announces `bytes` as the collection `name` from `peer`.
pub async fn announce_collection(
    c: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    name: &str,
    bytes: &[u8],
) -> Result<pb::FileInfo, tonic::Status> {
    let m = pb::Manifest::from(&hash_bytes(bytes, name.into()));
    announce_with(c, token, peer, m, bytes).await
}

async fn announce_with(
    c: &mut TrackerClient<Channel>,
    token: &str,
    peer: &str,
    m: pb::Manifest,
    listing: &[u8],
) -> Result<pb::FileInfo, tonic::Status> {
    let req = pb::AnnounceRequest {
        peer_id: peer.into(),
        manifest: Some(m),
        listing: listing.to_vec().into(),
    };
    let r = c.announce(authed(req, token)).await?;
    Ok(r.into_inner().file.unwrap())
}

/// (name, type) of every file a search answers.
async fn search(
    c: &mut TrackerClient<Channel>,
    token: &str,
    query: &str,
    kind: &str,
) -> Vec<(String, String)> {
    let req = pb::SearchRequest {
        query: query.into(),
        r#type: kind.into(),
        ..Default::default()
    };
    let r = c.search(authed(req, token)).await.unwrap().into_inner();
    assert_eq!(r.total, r.items.len() as u64, "{query:?} {kind:?}");
    let mut out: Vec<(String, String)> = r.items.into_iter().map(|f| (f.name, f.r#type)).collect();
    out.sort();
    out
}

fn pair(name: &str, kind: &str) -> (String, String) {
    (name.to_string(), kind.to_string())
}

fn photos_row() -> (String, String) {
    pair("photos", "collection")
}

async fn rest(t: &TestTracker, path: &str) -> Value {
    let r = reqwest::get(t.url(path)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{path}");
    r.json().await.unwrap()
}

/// The listing endpoint's answer: status, content type and body.
async fn listing_of(t: &TestTracker, id: &str) -> (StatusCode, String, Vec<u8>) {
    let r = reqwest::get(t.url(&format!("/api/v1/files/{id}/listing")))
        .await
        .unwrap();
    let status = r.status();
    let ctype = r.headers()["content-type"].to_str().unwrap().to_string();
    if status == StatusCode::OK {
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    }
    (status, ctype, r.bytes().await.unwrap().to_vec())
}

/// `type` and whether a `collections` row exists, per file id, as the database has them.
async fn stored(url: &str) -> Vec<(String, String, bool)> {
    let db = Database::connect(url).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT f.id, f.type, c.file_id IS NOT NULL AS listed FROM files f \
             LEFT JOIN collections c ON c.file_id = f.id ORDER BY f.id",
        ))
        .await
        .unwrap();
    let out = rows
        .iter()
        .map(|r| {
            let listed: bool = r
                .try_get("", "listed")
                .or_else(|_| r.try_get::<i32>("", "listed").map(|n| n != 0))
                .unwrap();
            (
                r.try_get("", "id").unwrap(),
                r.try_get("", "type").unwrap(),
                listed,
            )
        })
        .collect();
    let orphans = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT file_id FROM collections WHERE file_id NOT IN (SELECT id FROM files)",
        ))
        .await
        .unwrap();
    assert!(orphans.is_empty(), "a listing outlived its file");
    db.close().await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn should_check_list_search_serve_and_keep_a_collection() {
    within(async {
        let dir = TempDir::new().unwrap();
        let cfg = Config::ephemeral(dir.path());
        let url = backend_url(&cfg.database_url).await;
        let t = TestTracker::start_with(cfg.clone()).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (pa, pb_) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &pa, "127.0.0.1:9001").await;
        heartbeat(&mut c, &bob, &pb_, "127.0.0.1:9002").await;
        // A member of the folder, shared as a file of its own.
        let member = announce(&mut c, &alice, &pa, manifest("a.jpg", 1, 3)).await;
        assert_eq!(member.r#type, "image");

        // Refused before anything is written: a listing that is not the manifest's
        // content, one that is not a valid listing, and one that is no listing at all.
        let bytes = photos();
        let other = listing(&["holiday/c.jpg", "holiday/b.jpg"], &["holiday", "empty"]);
        assert_eq!(other.len(), bytes.len());
        let m = pb::Manifest::from(&hash_bytes(&bytes, "photos".into()));
        let err = announce_with(&mut c, &alice, &pa, m.clone(), &other)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(
            err.message().contains("does not match its manifest"),
            "{}",
            err.message()
        );
        let err = announce_with(&mut c, &alice, &pa, m, &bytes[1..])
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        let evil = format!("{}f\t{}\t1\t../x\n", common::collection::HEADER, member.id);
        let err = announce_collection(&mut c, &alice, &pa, "evil", evil.as_bytes())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("not valid"), "{}", err.message());
        let err = announce_collection(&mut c, &alice, &pa, "plain", b"hello\n")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            search(&mut c, &alice, "", "").await,
            [pair("a.jpg", "image")]
        );

        // A valid listing: a collection, found by type, by name, and by the paths inside.
        let f = announce_collection(&mut c, &alice, &pa, "photos", &bytes)
            .await
            .unwrap();
        assert_eq!(
            (f.name.as_str(), f.r#type.as_str()),
            ("photos", "collection")
        );
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(
            search(&mut c, &alice, "", "collection").await,
            [photos_row()]
        );
        assert_eq!(
            search(&mut c, &alice, "a.jpg", "").await,
            [pair("a.jpg", "image"), photos_row()],
            "a member's name finds the member and its folder"
        );
        assert_eq!(search(&mut c, &alice, "HOLIDAY", "").await, [photos_row()]);
        assert_eq!(
            search(&mut c, &alice, "phot b.jpg", "collection").await,
            [photos_row()]
        );
        assert_eq!(
            search(&mut c, &alice, "a.jpg", "image").await,
            [pair("a.jpg", "image")]
        );
        assert!(search(&mut c, &alice, "c.jpg", "").await.is_empty());
        let resolved = c
            .resolve(authed(pb::ResolveRequest { term: f.id.clone() }, &alice))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resolved.files[0].r#type, "collection");

        // REST: the type filter, the file, and its listing byte for byte.
        let list = rest(&t, "/api/v1/files?type=collection").await;
        assert_eq!(list["total"], 1, "{list}");
        assert_eq!(list["items"][0]["id"], f.id.as_str());
        assert_eq!(list["items"][0]["type"], "collection");
        let found = rest(&t, "/api/v1/files?q=holiday").await;
        assert_eq!(found["items"][0]["id"], f.id.as_str(), "{found}");
        let one = rest(&t, &format!("/api/v1/files/{}", f.id)).await;
        assert_eq!(one["type"], "collection");
        let (status, ctype, body) = listing_of(&t, &f.id[..12]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ctype, "text/plain; charset=utf-8");
        assert_eq!(body, bytes, "the listing as announced");
        let (status, _, body) = listing_of(&t, &member.id).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("not a collection"),
            "{body}"
        );
        assert_eq!(
            listing_of(&t, &"ab".repeat(32)).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(listing_of(&t, "xyz").await.0, StatusCode::BAD_REQUEST);

        // Another sharer without the listing: still a collection, under its own name too.
        let again = announce(
            &mut c,
            &bob,
            &pb_,
            pb::Manifest::from(&hash_bytes(&bytes, "Bob's pictures".into())),
        )
        .await;
        assert_eq!(
            (again.id.as_str(), again.r#type.as_str()),
            (f.id.as_str(), "collection")
        );
        assert_eq!(
            search(&mut c, &bob, "pictures", "collection").await,
            [pair("Bob's pictures", "collection")]
        );
        // A file known as plain becomes a collection with its listing.
        let notes = listing(&["notes/todo.txt"], &[]);
        let plain = announce(
            &mut c,
            &bob,
            &pb_,
            pb::Manifest::from(&hash_bytes(&notes, "notes".into())),
        )
        .await;
        assert_eq!(plain.r#type, "other");
        let made = announce_collection(&mut c, &bob, &pb_, "notes", &notes)
            .await
            .unwrap();
        assert_eq!(
            (made.id.as_str(), made.r#type.as_str()),
            (plain.id.as_str(), "collection")
        );
        assert_eq!(
            search(&mut c, &bob, "todo", "").await,
            [pair("notes", "collection")]
        );
        t.stop().await;

        // The database: both collections typed and listed, nothing of the refused ones.
        let mut want = vec![
            (member.id.clone(), "image".to_string(), false),
            (f.id.clone(), "collection".to_string(), true),
            (made.id.clone(), "collection".to_string(), true),
        ];
        want.sort();
        assert_eq!(stored(&url).await, want);

        // A restart keeps them collections, searchable by their paths.
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await;
        assert_eq!(
            search(&mut c, &alice, "", "collection").await,
            [pair("notes", "collection"), photos_row()]
        );
        assert_eq!(
            search(&mut c, &alice, "a.jpg", "").await,
            [pair("a.jpg", "image"), photos_row()]
        );
        assert_eq!(listing_of(&t, &made.id).await.2, notes);
        let list = rest(&t, "/api/v1/files?type=collection").await;
        assert_eq!(list["total"], 2, "{list}");

        // Withdrawn: the listing goes with the file.
        for (token, peer) in [(&alice, &pa), (&bob, &pb_)] {
            let req = pb::UnindexRequest {
                peer_id: peer.clone(),
                file_id: f.id.clone(),
            };
            c.unindex(authed(req, token)).await.unwrap();
        }
        assert_eq!(listing_of(&t, &f.id).await.0, StatusCode::NOT_FOUND);
        assert!(search(&mut c, &alice, "holiday", "").await.is_empty());
        t.stop().await;
        let stored = stored(&url).await;
        assert!(stored.iter().all(|s| s.0 != f.id), "{stored:?}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_take_an_announce_with_the_largest_listing() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let p = peer_id(1);
        heartbeat(&mut c, &alice, &p, "127.0.0.1:9001").await;
        // Directories of 200-byte names, as many as fit.
        let line = 2 + 200 + 1;
        let n = (MAX_LISTING - common::collection::HEADER.len()) / line;
        let names: Vec<String> = (0..n - 1)
            .map(|i| format!("{i:06}-{}", "p".repeat(193)))
            .chain(std::iter::once(format!("needle-{}", "n".repeat(193))))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let bytes = listing(&[], &refs);
        assert!(bytes.len() > MAX_LISTING - line && bytes.len() <= MAX_LISTING);
        let f = announce_collection(&mut c, &alice, &p, "big", &bytes)
            .await
            .unwrap();
        assert_eq!(f.r#type, "collection");
        assert_eq!(
            search(&mut c, &alice, "needle", "").await,
            [pair("big", "collection")]
        );
        let too_big = [
            bytes.as_slice(),
            format!("d\t{}\n", "z".repeat(250)).as_bytes(),
        ]
        .concat();
        assert!(too_big.len() > MAX_LISTING);
        let err = announce_collection(&mut c, &alice, &p, "bigger", &too_big)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains("more than"), "{}", err.message());
        t.stop().await;
    })
    .await
}
