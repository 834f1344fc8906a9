//! `status`: where this peer stands, and what to do next (log in, start the node).

use serde::Serialize;

use super::Ctx;
use crate::error::Result;
use crate::home::Kind;
use crate::output::{self, safe};
use crate::tracker_client::TrackerClient;

#[derive(Serialize)]
struct TrackerJson {
    url: String,
    reachable: bool,
}

#[derive(Serialize, Default)]
struct NodeJson {
    running: bool,
    addr: Option<String>,
    pid: Option<u32>,
    files: Option<u32>,
    active_uploads: Option<u32>,
    bytes_sent: Option<u64>,
    /// Replica storage in use and offered, and whether the tracker's task stream is open,
    /// as the node last wrote them to node.json (every few seconds while it runs).
    storage_used: Option<u64>,
    storage_quota: Option<u64>,
    tasks_connected: Option<bool>,
}

#[derive(Serialize)]
struct DownloadJson {
    id: String,
    name: String,
    held_chunks: u32,
    chunks: u32,
    path: String,
}

#[derive(Serialize)]
struct WaitingJson {
    id: String,
    output: String,
    queued_at: Option<String>,
    last_error: Option<String>,
}

#[derive(Serialize)]
struct StatusJson {
    home: String,
    peer_id: String,
    logged_in: bool,
    user: Option<String>,
    session_expires_at: Option<String>,
    trackers: Vec<TrackerJson>,
    node: NodeJson,
    downloads: Vec<DownloadJson>,
    /// Gets queued by `get --wait` until a holder is back.
    waiting: Vec<WaitingJson>,
    /// The one thing to do next, for a new user (none when all is set up).
    next: Option<String>,
}

/// What a user should do next, most pressing first: reach a tracker, log in, start the
/// node, share something.
fn next_step(st: &StatusJson, shares: bool) -> Option<String> {
    if !st.trackers.iter().any(|t| t.reachable) {
        let urls: Vec<String> = st.trackers.iter().map(|t| safe(&t.url)).collect();
        return Some(format!(
            "start the tracker at {} or point --tracker (PEER_TRACKER) at one that runs",
            urls.join(", ")
        ));
    }
    if !st.logged_in {
        return Some(match &st.user {
            Some(u) => format!("run `peer login --user {}`", safe(u)),
            None => {
                "run `peer login --user NAME` (or `peer register --user NAME` for a new account)"
                    .into()
            }
        });
    }
    if !st.node.running {
        return Some("run `peer serve` so other peers can fetch from this one".into());
    }
    if !shares {
        return Some("run `peer index PATH` to share files, or `peer search` to find some".into());
    }
    None
}

/// Asks the node named by node.json for its status.
async fn node_status(cx: &Ctx, peer_id: &str) -> NodeJson {
    let Ok(Some(node)) = cx.home.node() else {
        return NodeJson::default();
    };
    let target = if node.local_addr.is_empty() {
        node.addr.clone()
    } else {
        node.local_addr.clone()
    };
    match crate::transport::node_status(&target, &cx.tls).await {
        Some(s) if s.peer_id == peer_id => NodeJson {
            running: true,
            addr: Some(s.addr),
            pid: Some(node.pid),
            files: Some(s.files),
            active_uploads: Some(s.active_uploads),
            bytes_sent: Some(s.bytes_sent),
            storage_used: node.storage_used,
            storage_quota: node.storage_quota,
            tasks_connected: node.tasks_connected,
        },
        _ => NodeJson::default(),
    }
}

pub async fn status(cx: &Ctx) -> Result<()> {
    let peer_id = cx.home.peer_id()?.to_string();
    let session = cx.home.session()?;
    let now = crate::now_ms();
    let live = session
        .as_ref()
        .filter(|s| s.expires_at_ms <= 0 || s.expires_at_ms > now);
    let mut trackers = Vec::new();
    for url in &cx.trackers {
        trackers.push(TrackerJson {
            url: url.clone(),
            reachable: TrackerClient::probe(url, &cx.tls).await,
        });
    }
    let node = node_status(cx, &peer_id).await;
    let records = cx.home.records()?;
    let shares = !records.is_empty();
    let downloads: Vec<DownloadJson> = records
        .into_iter()
        .filter(|r| r.kind == Kind::Downloaded && !r.complete)
        .map(|r| DownloadJson {
            id: r.file_id.to_string(),
            name: r.name.clone(),
            held_chunks: r.have_bits().count(),
            chunks: r.chunk_count(),
            path: r.path.to_string_lossy().into_owned(),
        })
        .collect();
    let mut st = StatusJson {
        home: cx.home.dir().to_string_lossy().into_owned(),
        peer_id,
        logged_in: live.is_some(),
        user: session.as_ref().map(|s| s.user.clone()),
        session_expires_at: session
            .as_ref()
            .and_then(|s| crate::rfc3339_ms(s.expires_at_ms)),
        trackers,
        node,
        downloads,
        waiting: crate::waiting::Waiting::new(&cx.home)
            .list()
            .into_iter()
            .map(|w| WaitingJson {
                id: w.file_id.to_string(),
                output: w.output.to_string_lossy().into_owned(),
                queued_at: crate::rfc3339_ms(w.queued_at_ms),
                last_error: w.last_error,
            })
            .collect(),
        next: None,
    };
    st.next = next_step(&st, shares);
    if cx.json {
        return Ok(output::json(&st)?);
    }
    let mut out = String::new();
    out += &format!("home:      {}\n", safe(&st.home));
    out += &format!("peer id:   {}\n", st.peer_id);
    match (&session, live) {
        (Some(s), Some(_)) => {
            let until = st
                .session_expires_at
                .clone()
                .unwrap_or_else(|| "no expiry".into());
            out += &format!(
                "session:   logged in as {} (until {until})\n",
                safe(&s.user)
            );
        }
        (Some(s), None) => {
            out += &format!(
                "session:   expired for {}: run `peer login --user {}`\n",
                safe(&s.user),
                safe(&s.user)
            );
        }
        _ => {
            out += "session:   not logged in: run `peer login --user NAME` (or `peer register --user NAME`)\n"
        }
    }
    for t in &st.trackers {
        let state = if t.reachable {
            "reachable"
        } else {
            "unreachable (is the tracker running there? set --tracker or PEER_TRACKER)"
        };
        out += &format!("tracker:   {} {state}\n", safe(&t.url));
    }
    if st.node.running {
        out += &format!(
            "node:      running on {} (pid {}, {} files, {} uploads, {} sent)\n",
            safe(st.node.addr.as_deref().unwrap_or("?")),
            st.node.pid.unwrap_or(0),
            st.node.files.unwrap_or(0),
            st.node.active_uploads.unwrap_or(0),
            common::units::format_size(st.node.bytes_sent.unwrap_or(0)),
        );
        if let (Some(used), Some(quota)) = (st.node.storage_used, st.node.storage_quota) {
            out += &format!(
                "storage:   {} of {} used by replicas\n",
                common::units::format_size(used),
                common::units::format_size(quota),
            );
        }
        if let Some(c) = st.node.tasks_connected {
            let state = if c { "connected" } else { "not connected" };
            out += &format!("tasks:     replication task stream {state}\n");
        }
    } else {
        out += "node:      not running: run `peer serve` to share with other peers\n";
    }
    if st.downloads.is_empty() {
        out += "downloads: none in progress\n";
    }
    for d in &st.downloads {
        let pct = (d.held_chunks as u64 * 100)
            .checked_div(d.chunks as u64)
            .unwrap_or(100);
        let dir = std::path::Path::new(&d.path)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".".into());
        out += &format!(
            "downloads: {} {pct}% -> {} (resume: peer get {} --output {})\n",
            safe(&d.name),
            safe(&d.path),
            &d.id[..12],
            safe(&dir)
        );
    }
    for w in &st.waiting {
        let err = w
            .last_error
            .as_ref()
            .map(|e| format!("; last try: {}", safe(e)))
            .unwrap_or_default();
        out += &format!(
            "waiting:   {} -> {} (the node fetches it once a holder is back; cancel: peer get --cancel {}){err}\n",
            &w.id[..12],
            safe(&w.output),
            &w.id[..12]
        );
    }
    if let Some(next) = &st.next {
        out += &format!("next:      {next}\n");
    }
    output::print(&out);
    Ok(())
}
