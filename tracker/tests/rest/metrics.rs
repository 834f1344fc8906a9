//! `GET /metrics`: well-formed Prometheus text (0.0.4 by default, OpenMetrics when the
//! scraper asks for it as Prometheus does) whose levels match the directory and whose
//! counters move with real requests (locates, chunk reports, replica fetches, REST calls).

use std::collections::HashMap;
use std::time::Duration;

use proto::tracker::v1 as pb;
use tempfile::TempDir;
use tracker::Config;

use crate::common::{
    TestTracker, announce, authed, heartbeat, locate, manifest, node_key, peer_id, register, within,
};

/// What Prometheus 3 sends as `Accept`.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0;\
    escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,\
    text/plain;version=0.0.4;q=0.3,*/*;q=0.2";

/// Every sample of a scrape by its series (`name{labels}`), scraped twice: as Prometheus
/// does (OpenMetrics) and as curl does (no `Accept`: Prometheus text 0.0.4). Each text is
/// checked line by line, and both must hold the same series.
pub(super) async fn scrape(t: &TestTracker) -> HashMap<String, f64> {
    let get = |accept: Option<&'static str>| async move {
        let mut req = reqwest::Client::new().get(t.url("/metrics"));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::OK);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (ct, r.text().await.unwrap())
    };
    let (ct, open) = get(Some(PROMETHEUS_ACCEPT)).await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let open = parse(&open, true);
    let (ct, plain) = get(None).await;
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let plain = parse(&plain, false);
    // The first scrape itself adds the `/metrics` route's series.
    let series = |m: &HashMap<String, f64>| {
        let mut k: Vec<String> = m
            .keys()
            .filter(|k| !k.contains("route=\"/metrics\""))
            .cloned()
            .collect();
        k.sort();
        k
    };
    assert_eq!(
        series(&plain),
        series(&open),
        "both formats carry the same series"
    );
    open
}

/// Checks one scrape: comments are `HELP` or `TYPE` of a family (and `UNIT` in
/// OpenMetrics, which also ends with `# EOF`; in 0.0.4 a counter family is named with its
/// `_total`), and every sample belongs to a typed family.
fn parse(text: &str, openmetrics: bool) -> HashMap<String, f64> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    let body = if openmetrics {
        text.strip_suffix("# EOF\n").expect("ends with # EOF")
    } else {
        assert!(!text.contains("# EOF"), "no # EOF in 0.0.4");
        text
    };
    for line in body.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(valid_name(name), "bad family name in {line:?}");
            match kind {
                "TYPE" => {
                    let ty = parts.next().unwrap();
                    assert!(["counter", "gauge", "histogram"].contains(&ty), "{line:?}");
                    assert_eq!(
                        ty == "counter" && !openmetrics,
                        name.ends_with("_total") && !openmetrics,
                        "{line:?}"
                    );
                    types.insert(name.to_string(), ty.to_string());
                }
                "HELP" => {}
                "UNIT" if openmetrics => {}
                _ => panic!("unexpected comment {line:?}"),
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(valid_name(name), "bad metric name in {line:?}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in {line:?}"));
            for pair in split_labels(inner) {
                let (k, v) = pair.split_once('=').expect("label k=v");
                assert!(
                    valid_name(k) && v.starts_with('"') && v.ends_with('"'),
                    "{line:?}"
                );
            }
        }
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| types.contains_key(*f)))
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample of an untyped family: {line:?}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate {series}"
        );
    }
    samples
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Splits `a="x",b="y, z"` at the commas between pairs.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut out, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

pub(super) fn value(m: &HashMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn should_expose_levels_and_move_counters_with_real_requests() {
    within(async {
        let dir = TempDir::new().unwrap();
        let t = TestTracker::start(&dir).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let bob = register(&mut c, "bob").await;
        let (p1, p2) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &p1, "127.0.0.1:9001").await;
        heartbeat(&mut c, &bob, &p2, "127.0.0.1:9002").await;
        let f = announce(&mut c, &alice, &p1, manifest("film.mkv", 2, 1)).await;

        let before = scrape(&t).await;
        assert_eq!(value(&before, "tessera_users"), 2.0);
        assert_eq!(value(&before, "tessera_peers_up"), 2.0);
        assert_eq!(value(&before, "tessera_peers_down"), 0.0);
        assert_eq!(value(&before, "tessera_files"), 1.0);
        assert_eq!(value(&before, "tessera_chunks"), 2.0);
        assert_eq!(value(&before, "tessera_under_replicated_chunks"), 2.0);
        assert_eq!(value(&before, "tessera_pending_tasks"), 0.0);
        assert_eq!(value(&before, "tessera_locates_total"), 0.0);

        locate(&mut c, &bob, f.id.clone()).await;
        let missing = c
            .locate(authed(
                pb::LocateRequest {
                    file_id: "0".repeat(64),
                    requester_key: node_key(),
                    ..Default::default()
                },
                &bob,
            ))
            .await
            .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::NotFound);
        let report = |chunks: Vec<u32>| pb::ReportChunksRequest {
            peer_id: p2.clone(),
            file_id: f.id.clone(),
            kind: 2,
            chunks,
        };
        c.report_chunks(authed(report(vec![0]), &bob)).await.unwrap();
        // Chunks already held are not counted twice.
        c.report_chunks(authed(report(vec![0]), &bob)).await.unwrap();
        let unknown = reqwest::get(t.url(&format!("/api/v1/files/{}", "a".repeat(64))))
            .await
            .unwrap();
        assert_eq!(unknown.status(), reqwest::StatusCode::NOT_FOUND);
        reqwest::get(t.url("/no/such/page")).await.unwrap();

        let after = scrape(&t).await;
        assert_eq!(value(&after, "tessera_locates_total"), 1.0);
        let report = "{source=\"report\"}";
        assert_eq!(value(&after, &format!("tessera_chunks_reported_total{report}")), 1.0);
        assert_eq!(
            value(&after, &format!("tessera_bytes_reported_total{report}")),
            f64::from(1u32 << 20)
        );
        assert_eq!(value(&after, "tessera_under_replicated_chunks"), 2.0);
        assert_eq!(value(&after, "tessera_active_transfers"), 1.0);
        let grpc = |method: &str, status: &str| {
            format!(
                "tessera_requests_total{{protocol=\"grpc\",route=\"/tracker.v1.Tracker/{method}\",status=\"{status}\"}}"
            )
        };
        assert_eq!(value(&after, &grpc("Locate", "0")), 1.0);
        assert_eq!(value(&after, &grpc("Locate", "5")), 1.0, "not found");
        assert_eq!(value(&after, &grpc("ReportChunks", "0")), 2.0);
        assert_eq!(value(&after, &grpc("Heartbeat", "0")), 2.0);
        let http = |route: &str, status: u16| {
            format!("tessera_requests_total{{protocol=\"http\",route=\"{route}\",status=\"{status}\"}}")
        };
        assert_eq!(value(&after, &http("/api/v1/files/{id}", 404)), 1.0);
        assert_eq!(value(&after, &http("unmatched", 404)), 1.0);
        assert_eq!(
            value(&after, &http("/metrics", 200)),
            2.0,
            "the first scrape, in both formats"
        );
        let latency = "tessera_request_duration_seconds_count{protocol=\"grpc\",route=\"/tracker.v1.Tracker/Locate\"}";
        assert_eq!(value(&after, latency), 2.0);
        let inf = "tessera_request_duration_seconds_bucket{le=\"+Inf\",protocol=\"grpc\",route=\"/tracker.v1.Tracker/Locate\"}";
        assert_eq!(value(&after, inf), 2.0);
        // No raw URI becomes a label.
        assert!(after.keys().all(|k| !k.contains("aaaaaa") && !k.contains("/no/such")));
        t.stop().await;
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn should_count_chunks_fetched_by_replication() {
    within(async {
        let dir = TempDir::new().unwrap();
        let mut cfg = Config::ephemeral(dir.path());
        cfg.replication = 2;
        let t = TestTracker::start_with(cfg).await;
        let mut c = t.grpc().await;
        let alice = register(&mut c, "alice").await;
        let (sharer, node) = (peer_id(1), peer_id(2));
        heartbeat(&mut c, &alice, &sharer, "127.0.0.1:9001").await;
        c.heartbeat(authed(
            pb::HeartbeatRequest {
                peer_id: node.clone(),
                addr: "127.0.0.1:9002".into(),
                storage_quota: 1 << 30,
                storage_used: 0,
            },
            &alice,
        ))
        .await
        .unwrap();
        let mut tasks = c
            .tasks(authed(
                pb::TasksRequest {
                    peer_id: node.clone(),
                    node_key: node_key(),
                },
                &alice,
            ))
            .await
            .unwrap()
            .into_inner();
        announce(&mut c, &alice, &sharer, manifest("one.bin", 1, 7)).await;
        let task = tokio::time::timeout(Duration::from_secs(20), tasks.message())
            .await
            .expect("a task within 20 s")
            .unwrap()
            .expect("stream open");
        assert!(matches!(task.work, Some(pb::task::Work::Fetch(_))));
        c.complete_task(authed(
            pb::CompleteTaskRequest {
                peer_id: node.clone(),
                task_id: task.id,
                ok: true,
                error: String::new(),
            },
            &alice,
        ))
        .await
        .unwrap();
        let m = scrape(&t).await;
        let repl = "{source=\"replication\"}";
        assert_eq!(value(&m, &format!("tessera_chunks_reported_total{repl}")), 1.0);
        assert_eq!(
            value(&m, &format!("tessera_bytes_reported_total{repl}")),
            f64::from(1u32 << 20)
        );
        assert_eq!(value(&m, "tessera_under_replicated_chunks"), 0.0);
        let tasks_opened = "tessera_requests_total{protocol=\"grpc\",route=\"/tracker.v1.Tracker/Tasks\",status=\"0\"}";
        assert_eq!(value(&m, tasks_opened), 1.0);
        drop(tasks);
        t.stop().await;
    })
    .await
}
