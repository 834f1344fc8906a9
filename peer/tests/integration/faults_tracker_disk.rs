//! Faults from outside the swarm, with real `peer` processes: a tracker that lies about a
//! file's chunk map, tickets that expire while a long download runs, and an output disk
//! that really fills up (a small tmpfs). Each test checks the final bytes and that nothing
//! was written outside `--output` and `--home`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use ::common::{FileId, Manifest};
use anyhow::Context;
use bytes::Bytes;
use proto::tracker::v1 as tpb;
use proto::tracker::v1::tracker_server::{Tracker, TrackerServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

const MIB: usize = 1 << 20;

/// A tracker (tracker.v1 over gRPC) that answers Locate with a chunk map that does not hash
/// to the file id it was asked for, and names a holder that counts connections.
struct LyingTracker {
    requested: FileId,
    manifest: Manifest,
    holder: String,
}

fn file_info(id: &FileId, m: &Manifest) -> tpb::FileInfo {
    tpb::FileInfo {
        id: id.to_string(),
        name: m.name.clone(),
        size: m.size,
        sha256: m.sha256.to_hex(),
        r#type: "other".into(),
        chunk_size: m.chunk_size,
        chunks: m.chunk_count(),
        holders: 1,
        created_at_ms: 0,
    }
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in this fake"))
}

#[tonic::async_trait]
impl Tracker for LyingTracker {
    type TasksStream = futures::stream::Empty<Result<tpb::Task, Status>>;

    async fn register(
        &self,
        r: Request<tpb::Credentials>,
    ) -> Result<Response<tpb::Session>, Status> {
        Ok(Response::new(tpb::Session {
            token: "fake-token".into(),
            user: r.into_inner().user,
            expires_at_ms: 0,
            ticket_public_key: Bytes::new(),
        }))
    }
    async fn login(&self, r: Request<tpb::Credentials>) -> Result<Response<tpb::Session>, Status> {
        self.register(r).await
    }
    async fn logout(
        &self,
        _: Request<tpb::LogoutRequest>,
    ) -> Result<Response<tpb::LogoutResponse>, Status> {
        unimplemented()
    }
    async fn certify(
        &self,
        _: Request<tpb::CertifyRequest>,
    ) -> Result<Response<tpb::CertifyResponse>, Status> {
        unimplemented()
    }
    async fn queue_get(
        &self,
        _: Request<tpb::QueueGetRequest>,
    ) -> Result<Response<tpb::QueueGetResponse>, Status> {
        unimplemented()
    }
    async fn cancel_get(
        &self,
        _: Request<tpb::CancelGetRequest>,
    ) -> Result<Response<tpb::CancelGetResponse>, Status> {
        unimplemented()
    }
    async fn heartbeat(
        &self,
        _: Request<tpb::HeartbeatRequest>,
    ) -> Result<Response<tpb::HeartbeatResponse>, Status> {
        unimplemented()
    }
    async fn sync_holdings(
        &self,
        _: Request<tpb::SyncHoldingsRequest>,
    ) -> Result<Response<tpb::SyncHoldingsResponse>, Status> {
        unimplemented()
    }
    async fn announce(
        &self,
        _: Request<tpb::AnnounceRequest>,
    ) -> Result<Response<tpb::AnnounceResponse>, Status> {
        unimplemented()
    }
    async fn report_chunks(
        &self,
        _: Request<tpb::ReportChunksRequest>,
    ) -> Result<Response<tpb::ReportChunksResponse>, Status> {
        unimplemented()
    }
    async fn unindex(
        &self,
        _: Request<tpb::UnindexRequest>,
    ) -> Result<Response<tpb::UnindexResponse>, Status> {
        unimplemented()
    }
    async fn search(
        &self,
        _: Request<tpb::SearchRequest>,
    ) -> Result<Response<tpb::SearchResponse>, Status> {
        unimplemented()
    }
    async fn resolve(
        &self,
        _: Request<tpb::ResolveRequest>,
    ) -> Result<Response<tpb::ResolveResponse>, Status> {
        Ok(Response::new(tpb::ResolveResponse {
            files: vec![file_info(&self.requested, &self.manifest)],
        }))
    }
    async fn locate(
        &self,
        _: Request<tpb::LocateRequest>,
    ) -> Result<Response<tpb::LocateResponse>, Status> {
        let m = &self.manifest;
        Ok(Response::new(tpb::LocateResponse {
            file: Some(file_info(&self.requested, m)),
            manifest: Some(tpb::Manifest {
                name: m.name.clone(),
                size: m.size,
                sha256: Bytes::copy_from_slice(&m.sha256.0),
                chunk_size: m.chunk_size,
                chunk_hashes: m.packed_hashes().into(),
            }),
            holders: vec![tpb::Holder {
                peer_id: ::common::PeerId::from_random(rand::random()).to_string(),
                addr: self.holder.clone(),
                have: Bytes::new(),
            }],
            ticket: None,
        }))
    }
    async fn list_peers(
        &self,
        _: Request<tpb::ListPeersRequest>,
    ) -> Result<Response<tpb::ListPeersResponse>, Status> {
        unimplemented()
    }
    async fn tasks(
        &self,
        _: Request<tpb::TasksRequest>,
    ) -> Result<Response<Self::TasksStream>, Status> {
        unimplemented()
    }
    async fn complete_task(
        &self,
        _: Request<tpb::CompleteTaskRequest>,
    ) -> Result<Response<tpb::CompleteTaskResponse>, Status> {
        unimplemented()
    }
    async fn report_source(
        &self,
        _: Request<tpb::ReportSourceRequest>,
    ) -> Result<Response<tpb::ReportSourceResponse>, Status> {
        unimplemented()
    }
}

/// Serves `tracker` on 127.0.0.1 until the token is cancelled; returns its URL.
async fn serve_fake(tracker: LyingTracker, stop: CancellationToken) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TrackerServer::new(tracker))
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned()),
    );
    Ok(format!("http://{addr}"))
}

/// A listener that only counts the connections made to it.
async fn counting_holder() -> anyhow::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Ok((addr, n))
}

/// Runs `peer get` with `cwd` and `TMPDIR` inside `scratch`, so strays are seen.
async fn get_in(
    p: &TestPeer,
    scratch: &Path,
    out: &Path,
    id: &str,
    envs: &[(&str, &str)],
    extra: &[&str],
) -> anyhow::Result<Out> {
    let tmp = scratch.to_str().context("utf-8")?;
    let mut all = vec![("TMPDIR", tmp)];
    all.extend_from_slice(envs);
    let mut args = vec![
        "--json",
        "get",
        id,
        "--output",
        out.to_str().context("utf-8")?,
    ];
    args.extend_from_slice(extra);
    p.run_with(
        RunOpts {
            wrapper: &[],
            envs: &all,
            cwd: Some(scratch),
        },
        &args,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_refuse_a_chunk_map_that_does_not_hash_to_the_id() -> anyhow::Result<()> {
    bounded(async {
        let src = tempfile::tempdir()?;
        let (path, _) = random_file(src.path(), "real.bin", 3 * MIB + 5)?;
        let real = ::common::manifest::hash_file(&path, "real.bin".into())?;
        let requested = real.id();
        // The same layout with one chunk's hash changed: a consistent map, another id.
        let mut hashes = real.packed_hashes();
        hashes[0] ^= 0xff;
        let forged = Manifest::from_parts(
            "real.bin".into(),
            real.size,
            real.sha256,
            real.chunk_size,
            &hashes,
        )?;
        assert_ne!(forged.id(), requested);
        let (holder, dialled) = counting_holder().await?;
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        let url = serve_fake(
            LyingTracker {
                requested,
                manifest: forged,
                holder: holder.to_string(),
            },
            stop,
        )
        .await?;

        let real_tracker = TestTracker::start().await?;
        let mut p = TestPeer::new(&real_tracker, "bob")?;
        p.tracker_url = url;
        p.run_stdin(&["register", "--user", "bob", "--password-stdin"], PASSWORD)
            .await?
            .ok()?;
        let (scratch, out) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let id = requested.to_string();
        let got = get_in(&p, scratch.path(), out.path(), &id, &[], &[]).await?;
        assert_eq!(got.status.code(), Some(1), "{}", got.stderr);
        let line = one_error_line(&got);
        assert!(line.contains("does not match file id"), "{line}");
        assert!(line.contains(&id), "names the id: {line}");
        assert!(files_below(out.path()).is_empty(), "nothing written");
        assert!(files_below(scratch.path()).is_empty(), "nothing stray");
        assert_eq!(dialled.load(Ordering::SeqCst), 0, "no holder was asked");
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_finish_a_get_that_outlives_its_first_ticket() -> anyhow::Result<()> {
    const TTL: Duration = Duration::from_secs(2);
    bounded(async {
        let tracker = TestTracker::start_with(|cfg| cfg.ticket_ttl = TTL).await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "long.bin", 36 * MIB)?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let bob = TestPeer::register(&tracker, "bob").await?;
        let (scratch, out) = (tempfile::tempdir()?, tempfile::tempdir()?);
        let started = Instant::now();
        // 36 MiB at 1 MB/s: longer than the ticket plus the clock skew nodes allow.
        let got = get_in(
            &bob,
            scratch.path(),
            out.path(),
            &id,
            &[("PEER_STALL_TIMEOUT", "10s")],
            &["--max-download-rate", "1M"],
        )
        .await?
        .ok()?;
        let took = started.elapsed();
        let skew = Duration::from_millis(::common::ticket::CLOCK_SKEW_MS as u64);
        assert!(
            took > TTL + skew,
            "the get outlived its first ticket ({took:?})"
        );
        let v = got.json()?;
        assert_eq!(v[0]["sha256"].as_str(), Some(sha.to_hex().as_str()));
        assert_eq!(sha256_of(&out.path().join("long.bin"))?, sha);
        assert_eq!(files_below(out.path()), [PathBuf::from("long.bin")]);
        assert!(files_below(scratch.path()).is_empty(), "nothing stray");
        eprintln!("a {TTL:?} ticket, a get of {took:?}: byte-identical");
        Ok(())
    })
    .await
}

/// A tmpfs mounted on a temp dir, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason) when mounting is not possible here.
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tessera-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed (needs root): {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Self { dir })
    }

    fn resize(&self, size: &str) -> anyhow::Result<()> {
        let out = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .output()?;
        anyhow::ensure!(out.status.success(), "remount failed: {out:?}");
        Ok(())
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_fail_clearly_on_a_full_disk_and_resume_once_there_is_room() -> anyhow::Result<()> {
    let disk = match Tmpfs::mount("16m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("skipped: {why}");
            return Ok(());
        }
    };
    bounded(async {
        let tracker = TestTracker::start().await?;
        let mut alice = TestPeer::register(&tracker, "alice").await?;
        alice.serve(&[]).await?;
        let src = tempfile::tempdir()?;
        let (path, sha) = random_file(src.path(), "big.bin", 40 * MIB)?;
        let manifest: Manifest = ::common::manifest::hash_file(&path, "big.bin".into())?;
        let id = alice.index(&path).await?[0]["id"]
            .as_str()
            .context("id")?
            .to_string();
        let bob = TestPeer::register(&tracker, "bob").await?;
        let scratch = tempfile::tempdir()?;
        let got = get_in(&bob, scratch.path(), disk.path(), &id, &[], &[]).await?;
        assert_eq!(got.status.code(), Some(1), "{}", got.stderr);
        let line = one_error_line(&got);
        eprintln!("disk full: {line}");
        assert!(line.contains("No space left on device"), "{line}");
        assert!(
            line.contains("big.bin.tessera-part"),
            "names the file: {line}"
        );
        let part = disk.path().join("big.bin.tessera-part");
        assert_eq!(
            files_below(disk.path()),
            [PathBuf::from("big.bin.tessera-part")]
        );
        let kept = good_chunks(&part, &manifest)?;
        assert!(
            kept > 0,
            "the chunks written before the disk filled are kept"
        );

        disk.resize("64m")?;
        let got = get_in(&bob, scratch.path(), disk.path(), &id, &[], &[])
            .await?
            .ok()?;
        let v = &got.json()?[0];
        assert_eq!(sha256_of(&disk.path().join("big.bin"))?, sha);
        assert_eq!(v["chunks_reused"].as_u64(), Some(kept as u64), "{v}");
        assert_eq!(files_below(disk.path()), [PathBuf::from("big.bin")]);
        assert!(files_below(scratch.path()).is_empty(), "nothing stray");
        Ok(())
    })
    .await
}
