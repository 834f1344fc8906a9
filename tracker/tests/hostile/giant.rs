//! A giant manifest and slow readers of its chunk map: a real `tracker` process, whose
//! resident memory (`VmRSS` in `/proc/PID/status`) is sampled while ten clients read
//! `GET /api/v1/files/{id}` of a 200,000-chunk file a kilobyte at a time. The chunk map
//! comes in pages, so the answers are small whatever the file, and the memory they took is
//! given back when the readers leave; so is what the announce took beyond the file's own
//! data (the binary keeps big buffers out of glibc's heap).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use proto::tracker::v1::tracker_client::TrackerClient;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

use crate::common::{announce, heartbeat, manifest, peer_id, register, within};

const CHUNKS: u32 = 200_000;
const READERS: usize = 10;
/// How long each reader trickles its answer in.
const READING: Duration = Duration::from_secs(3);
/// The bounds, in MiB: what the announce may leave resident (the file's hashes twice and
/// its holding are 13 MiB; the copies made on the way must have been given back), what ten
/// slow readers may add at most while they read, and what may be left of that once they
/// have gone.
const ANNOUNCE_MIB: u64 = 40;
const READERS_PEAK_MIB: u64 = 48;
const LEFT_AFTER_MIB: u64 = 8;

/// A `tracker` process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `VmRSS` of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// Samples `pid`'s RSS every 10 ms into `peak` until `stop`.
fn sample_peak(pid: u32, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// RSS once it has stopped falling (it is read every 200 ms, for at most 5 s).
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..25 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(pid);
        if now >= last {
            return now;
        }
        last = now;
    }
    last
}

fn mib(kib: u64) -> u64 {
    kib / 1024
}

/// One client reading `path` 1 KiB every 10 ms through a 4 KiB receive buffer, then
/// hanging up whether or not the answer is in.
async fn slow_reader(addr: std::net::SocketAddr, path: String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let end = tokio::time::Instant::now() + READING;
    while tokio::time::Instant::now() < end {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn should_answer_slow_readers_of_a_giant_file_in_bounded_memory() {
    within(async {
        let dir = TempDir::new().unwrap();
        let db = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracker"))
            .env_remove("TRACKER_CONFIG")
            .env("RUST_LOG", "warn")
            .args(["--database-url", &db, "--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the tracker binary");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let proc = Proc(child);
        let pid = proc.0.id();
        let url = line
            .trim()
            .strip_prefix("tracker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        let addr: std::net::SocketAddr = url.trim_start_matches("http://").parse().unwrap();

        // Warm up what every tracker has once it serves: argon2's memory, both protocols.
        let mut c = TrackerClient::connect(url.clone())
            .await
            .unwrap()
            .max_encoding_message_size(64 << 20);
        let token = register(&mut c, "mallory").await;
        let p = peer_id(1);
        heartbeat(&mut c, &token, &p, "127.0.0.1:9").await;
        reqwest::get(format!("{url}/api/v1/stats")).await.unwrap();
        let base = settled_rss(pid).await;

        let f = announce(&mut c, &token, &p, manifest("giant.bin", CHUNKS, 7)).await;
        let announced = settled_rss(pid).await;

        // A page is bounded whatever the file: the largest is 1,024 chunks.
        let page = reqwest::get(format!("{url}/api/v1/files/{}?chunk_limit=1024", f.id))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let detail: Value = serde_json::from_slice(&page).unwrap();
        assert_eq!(detail["chunks"], CHUNKS);
        assert_eq!(detail["chunk_map"].as_array().unwrap().len(), 1024);
        assert_eq!(detail["next_chunk_offset"], 1024);
        assert!(page.len() < 512 << 10, "a page of {} bytes", page.len());

        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        sample_peak(pid, peak.clone(), stop.clone());
        let readers = (0..READERS).map(|i| {
            // Half read the default page, half the largest, from all over the file.
            let query = if i % 2 == 0 {
                String::new()
            } else {
                format!("?chunk_limit=1024&chunk_offset={}", i as u32 * 19_000)
            };
            slow_reader(addr, format!("/api/v1/files/{}{query}", f.id))
        });
        futures::future::join_all(readers).await;
        stop.store(true, Ordering::Relaxed);
        let peak = peak.load(Ordering::Relaxed).max(announced);
        let after = settled_rss(pid).await;
        eprintln!(
            "tracker RSS (MiB): {} at start, {} after announcing {CHUNKS} chunks, \
             {} at most with {READERS} slow readers, {} after they closed",
            mib(base),
            mib(announced),
            mib(peak),
            mib(after)
        );
        assert!(
            mib(announced.saturating_sub(base)) <= ANNOUNCE_MIB,
            "the announce kept {} MiB",
            mib(announced.saturating_sub(base))
        );
        assert!(
            mib(peak.saturating_sub(announced)) <= READERS_PEAK_MIB,
            "the readers took {} MiB",
            mib(peak - announced)
        );
        assert!(
            mib(after.saturating_sub(announced)) <= LEFT_AFTER_MIB,
            "{} MiB kept after the readers left",
            mib(after.saturating_sub(announced))
        );
        drop(proc);
    })
    .await
}
