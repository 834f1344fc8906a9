//! `serve`: the node. It binds, works out the address other peers should dial, serves
//! chunks (`server`), and keeps the tracker informed: heartbeats at the interval the
//! tracker asks for, and a full SyncHoldings at start and whenever the tracker answers again
//! after an outage (so a restarted tracker relearns what this peer holds). Tracker failures
//! are logged once per outage and never stop the node.
//!
//! The tracker's ticket key, which the node checks every `GetChunks` ticket with, is read
//! from the home at start (saved there by register/login) and taken from every heartbeat
//! answer; a new one is saved to the home. Until the node has a key it serves nothing.
//!
//! Next to the heartbeat loop, under the same cancellation token:
//! - the replication task stream (`replica::tasks::task_stream`), opened once the first
//!   heartbeat succeeds and reopened at once whenever the tracker answers again;
//! - a periodic check (every 30 s, env `PEER_RESCAN_EVERY`) that withdraws shared files
//!   that changed or vanished and reconciles the replica store with the disk;
//! - node.json refreshes with the replica storage in use and the task stream state, read
//!   by `peer status` and `peer files`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use common::PeerId;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Ctx;
use crate::cli::ServeArgs;
use crate::home::{Home, Kind, NodeFile};
use crate::output;
use crate::ratelimit::RateLimiter;
use crate::replica::ReplicaStore;
use crate::replica::tasks::{Runner, task_stream};
use crate::server::{self, PeerService, TrackerKey};
use crate::tracker_client::{HoldingIn, TrackerClient, TrackerError};
use crate::transport::GrpcTransport;

/// How often shared files and the replica store are checked against the disk.
pub const RESCAN_EVERY: Duration = Duration::from_secs(30);
/// Env override of [`RESCAN_EVERY`] (humantime: `10s`, `2m`).
pub const RESCAN_ENV: &str = "PEER_RESCAN_EVERY";
/// How often node.json is refreshed (when something in it changed).
const NODE_FILE_EVERY: Duration = Duration::from_secs(2);

/// The rescan period: `PEER_RESCAN_EVERY` if set, else [`RESCAN_EVERY`].
///
/// # Errors
/// When the variable is set but is not a duration.
pub fn rescan_every() -> anyhow::Result<Duration> {
    match std::env::var(RESCAN_ENV) {
        Ok(v) if !v.trim().is_empty() => {
            let d = humantime::parse_duration(v.trim())
                .with_context(|| format!("{RESCAN_ENV}={v:?} is not a duration (e.g. 30s)"))?;
            Ok(d.max(Duration::from_millis(100)))
        }
        _ => Ok(RESCAN_EVERY),
    }
}

/// The advertised address when none is given: the listen IP if it is a specific one, else
/// the IP of the interface that routes to the tracker, else loopback.
pub fn choose_advertise(listen: IpAddr, port: u16, route: Option<IpAddr>) -> SocketAddr {
    if !listen.is_unspecified() {
        return SocketAddr::new(listen, port);
    }
    match route.filter(|ip| !ip.is_unspecified()) {
        Some(ip) => SocketAddr::new(ip, port),
        None => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
    }
}

/// The local IP used to reach `url`'s host: connect a UDP socket (no packet is sent) and
/// read its local address.
pub async fn route_ip(url: &str) -> Option<IpAddr> {
    let uri: tonic::transport::Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let target = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    sock.connect(target).await.ok()?;
    Some(sock.local_addr().ok()?.ip())
}

/// Checks that `--advertise` is `HOST:PORT`.
pub fn check_advertise(s: &str) -> anyhow::Result<String> {
    let s = s.trim();
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(s.to_string())
        }
        _ => bail!("--advertise must be HOST:PORT, got '{}'", output::safe(s)),
    }
}

/// The node's TLS certificate chain and key (`--tls-cert`, `--tls-key`), checked to hold a
/// PEM certificate and a PEM private key (whether they fit each other is checked when the
/// server starts).
///
/// # Errors
/// When a file cannot be read or does not hold what it should.
pub fn tls_identity(
    cert: Option<&std::path::Path>,
    key: Option<&std::path::Path>,
) -> anyhow::Result<Option<tonic::transport::Identity>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |flag: &str, p: &std::path::Path| {
        std::fs::read(p).with_context(|| {
            format!(
                "cannot read {flag} {}",
                output::safe(&p.display().to_string())
            )
        })
    };
    let (cert_pem, key_pem) = (read("--tls-cert", cert)?, read("--tls-key", key)?);
    if !CertificateDer::pem_slice_iter(&cert_pem).any(|c| c.is_ok()) {
        bail!(
            "--tls-cert {} holds no PEM certificate",
            output::safe(&cert.display().to_string())
        );
    }
    if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
        bail!(
            "--tls-key {} holds no PEM private key",
            output::safe(&key.display().to_string())
        );
    }
    Ok(Some(tonic::transport::Identity::from_pem(
        cert_pem, key_pem,
    )))
}

pub async fn serve(cx: &Ctx, a: ServeArgs) -> anyhow::Result<()> {
    // Before the "serving on" line: a SIGTERM right after it must stop us cleanly.
    let mut signals = common::signals::StopSignals::register();
    let peer_id = cx.home.peer_id()?;
    let live = cx
        .home
        .session()?
        .is_some_and(|s| s.expires_at_ms <= 0 || s.expires_at_ms > crate::now_ms());
    if !live {
        return Err(TrackerError::NotLoggedIn.into());
    }
    let client = cx.client()?;
    let advertise = a.advertise.as_deref().map(check_advertise).transpose()?;
    let tls = tls_identity(a.tls_cert.as_deref(), a.tls_key.as_deref())?;
    let scheme = if tls.is_some() { "https://" } else { "" };
    let rescan = rescan_every()?;
    let home = cx.home.clone();
    let quota = a.storage_quota;
    let replicas = tokio::task::spawn_blocking(move || ReplicaStore::open(home, quota))
        .await
        .context("replica store task failed")??;
    let listener = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let metrics_listener = match a.metrics_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen for metrics on {addr}"))?,
        ),
        None => None,
    };
    let bound = listener.local_addr()?;
    let advertise = match advertise {
        Some(s) => s,
        None => {
            let route = match cx.trackers.first() {
                Some(u) if bound.ip().is_unspecified() => route_ip(u).await,
                _ => None,
            };
            choose_advertise(bound.ip(), bound.port(), route).to_string()
        }
    };
    // A TLS node says so in its address, so getters know to connect with TLS.
    let advertise = match (tls.is_some(), advertise.strip_prefix("https://")) {
        (true, plain) => format!("https://{}", plain.unwrap_or(&advertise)),
        (false, Some(_)) => bail!("--advertise https://… needs --tls-cert and --tls-key"),
        (false, None) => advertise,
    };
    let local = if bound.ip().is_unspecified() {
        let lo = if bound.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        };
        SocketAddr::new(lo, bound.port())
    } else {
        bound
    };

    let limiter = a.max_upload_rate.map(|r| Arc::new(RateLimiter::new(r)));
    let key = TrackerKey::default();
    match cx.home.tracker_key() {
        Ok(Some(k)) => {
            if let Err(e) = key.set(&k) {
                tracing::warn!("ignoring the saved tracker key: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("cannot read the saved tracker key: {e:#}"),
    }
    let svc = Arc::new(PeerService::new(
        cx.home.clone(),
        peer_id.clone(),
        advertise.clone(),
        limiter,
        Some(client.clone()),
        key.clone(),
    ));
    let token = CancellationToken::new();
    let mut server = tokio::spawn(server::run(listener, svc.clone(), tls, token.clone()));
    let node = NodeFile {
        pid: std::process::id(),
        addr: advertise.clone(),
        local_addr: format!("{scheme}{local}"),
        peer_id: peer_id.clone(),
        started_at_ms: crate::now_ms(),
        storage_quota: Some(quota),
        storage_used: Some(replicas.used()),
        tasks_connected: Some(false),
    };
    cx.home.save_node(&node)?;
    output::println(&format!("peer {peer_id} serving on {advertise}"));
    if let Some(l) = metrics_listener {
        let url = crate::metrics::url(l.local_addr()?);
        output::println(&format!("metrics on {url}"));
        tracing::info!(url = %url, "metrics endpoint up");
        let (store, token) = (replicas.clone(), token.clone());
        tokio::spawn(async move {
            if let Err(e) = crate::metrics::serve(l, store, token).await {
                tracing::warn!("the metrics endpoint failed: {e}");
            }
        });
    }
    tracing::info!(
        peer = %peer_id,
        addr = %advertise,
        listen = %bound,
        storage_quota = quota,
        storage_used = replicas.used(),
        "node up"
    );

    let (tracker_up, tracker_up_rx) = watch::channel(0u64);
    let connected = Arc::new(AtomicBool::new(false));
    let runner = Arc::new(Runner::new(
        replicas.clone(),
        Arc::new(GrpcTransport::new(cx.tls.clone())),
        peer_id.clone(),
        advertise.clone(),
    ));
    let mut background = tokio::task::JoinSet::new();
    background.spawn(heartbeats(
        client.clone(),
        cx.home.clone(),
        peer_id.clone(),
        advertise,
        replicas.clone(),
        key,
        tracker_up,
        token.clone(),
    ));
    background.spawn(task_stream(
        client,
        peer_id,
        runner,
        tracker_up_rx,
        connected.clone(),
        token.clone(),
    ));
    background.spawn(rescans(svc, replicas.clone(), rescan, token.clone()));
    background.spawn(node_file(
        cx.home.clone(),
        node,
        replicas,
        connected,
        token.clone(),
    ));

    let result = tokio::select! {
        r = &mut server => {
            Some(match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow::Error::from(e).context("the node's server failed")),
                Err(e) => Err(anyhow::anyhow!("the node's server task failed: {e}")),
            })
        }
        () = signals.recv() => None,
    };
    tracing::info!("shutting down");
    token.cancel();
    tokio::spawn(async move {
        signals.interrupted().await;
        std::process::exit(130);
    });
    while background.join_next().await.is_some() {}
    if result.is_none() {
        let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    }
    cx.home.delete_node()?;
    result.unwrap_or(Ok(()))
}

/// Heartbeats forever (until cancelled); SyncHoldings at start and after each outage.
/// Takes the ticket key from every answer into `key` (and the home when it changed).
/// `tracker_up` is bumped on the first answer and each time the tracker answers again
/// after an outage (the task stream reopens then).
#[allow(clippy::too_many_arguments)]
async fn heartbeats(
    client: TrackerClient,
    home: Home,
    peer_id: PeerId,
    addr: String,
    replicas: Arc<ReplicaStore>,
    key: TrackerKey,
    tracker_up: watch::Sender<u64>,
    token: CancellationToken,
) {
    let mut healthy: Option<bool> = None;
    let mut need_sync = true;
    let mut interval = Duration::from_secs(10);
    loop {
        let (quota, used) = (replicas.quota(), replicas.used());
        match client.heartbeat(&peer_id, &addr, quota, used).await {
            Ok(beat) => {
                learn_key(&key, &home, &beat.ticket_public_key);
                let iv = beat.interval;
                if !iv.is_zero() {
                    interval = iv.clamp(Duration::from_millis(200), Duration::from_secs(60));
                }
                if healthy == Some(false) {
                    tracing::info!("tracker answers again");
                    need_sync = true;
                }
                if healthy != Some(true) {
                    tracker_up.send_modify(|e| *e += 1);
                }
                healthy = Some(true);
                if need_sync {
                    match sync(&client, &home, &peer_id, &replicas).await {
                        Ok(n) => {
                            need_sync = false;
                            tracing::info!(holdings = n, "holdings synced with the tracker");
                        }
                        Err(e) => tracing::warn!("cannot sync holdings (will retry): {e:#}"),
                    }
                }
            }
            Err(e) => {
                if healthy != Some(false) {
                    tracing::warn!("heartbeat failed (retrying until the tracker answers): {e}");
                }
                healthy = Some(false);
            }
        }
        let wait = if healthy == Some(true) && !need_sync {
            interval
        } else {
            interval.min(Duration::from_secs(2))
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = token.cancelled() => return,
        }
    }
}

/// Takes the tracker's ticket key from a heartbeat answer; a new one is saved to the home.
fn learn_key(key: &TrackerKey, home: &Home, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    match key.set(bytes) {
        Ok(true) => {
            tracing::info!("learnt the tracker's ticket key");
            if let Err(e) = home.save_tracker_key(bytes) {
                tracing::warn!("cannot save the tracker key: {e:#}");
            }
        }
        Ok(false) => {}
        Err(e) => tracing::warn!("the tracker sent a bad ticket key: {e}"),
    }
}

/// Sends every store record to the tracker (replicas as REPLICA); re-announces shared files
/// it has forgotten and deletes replicas of files it does not know.
async fn sync(
    client: &TrackerClient,
    home: &Home,
    peer_id: &PeerId,
    replicas: &Arc<ReplicaStore>,
) -> anyhow::Result<usize> {
    let records: Vec<_> = home.records()?.into_iter().filter(|r| !r.changed).collect();
    let holdings: Vec<HoldingIn> = records
        .iter()
        .map(|r| HoldingIn {
            file_id: r.file_id,
            kind: r.kind,
            have: (!r.complete).then(|| r.have_bits()),
        })
        .collect();
    let unknown = client.sync_holdings(peer_id, &holdings).await?;
    for id in unknown {
        let Some(r) = records.iter().find(|r| r.file_id.to_string() == id) else {
            continue;
        };
        if r.kind == Kind::Replica {
            let (store, file) = (replicas.clone(), r.file_id);
            match tokio::task::spawn_blocking(move || store.forget(&file)).await {
                Ok(Ok(freed)) => {
                    tracing::info!(file = %file, freed_bytes = freed, "the tracker no longer knows a replicated file; its replica is deleted");
                }
                Ok(Err(e)) => tracing::warn!(file = %file, "cannot delete replica: {e:#}"),
                Err(e) => tracing::warn!(file = %file, "replica task failed: {e}"),
            }
            continue;
        }
        if r.kind != Kind::Shared || !r.complete {
            continue;
        }
        match r.manifest() {
            Ok(m) => {
                if let Err(e) = client.announce(peer_id, &m).await {
                    tracing::warn!(file = %r.file_id, "cannot re-announce: {e}");
                }
            }
            Err(e) => tracing::warn!(file = %r.file_id, "bad store record: {e:#}"),
        }
    }
    Ok(holdings.len())
}

/// Every `every`: withdraws shared files that changed or vanished (the node's own on-read
/// check, run over all of them) and reconciles the replica store with the disk.
async fn rescans(
    svc: Arc<PeerService>,
    replicas: Arc<ReplicaStore>,
    every: Duration,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = token.cancelled() => return,
        }
        let (svc, store) = (svc.clone(), replicas.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let withdrawn = svc.check_shared_files();
            (withdrawn, store.rescan())
        })
        .await;
        match checked {
            Ok((_, Err(e))) => tracing::warn!("cannot check the replica store: {e:#}"),
            Ok(_) => {}
            Err(e) => tracing::warn!("rescan task failed: {e}"),
        }
    }
}

/// Keeps node.json's storage and task stream fields current (written only on change).
async fn node_file(
    home: Home,
    mut node: NodeFile,
    replicas: Arc<ReplicaStore>,
    connected: Arc<AtomicBool>,
    token: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(NODE_FILE_EVERY) => {}
            _ = token.cancelled() => return,
        }
        let now = (
            Some(replicas.used()),
            Some(connected.load(Ordering::Relaxed)),
        );
        if now == (node.storage_used, node.tasks_connected) {
            continue;
        }
        (node.storage_used, node.tasks_connected) = now;
        let (h, n) = (home.clone(), node.clone());
        match tokio::task::spawn_blocking(move || h.save_node(&n)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("cannot update node.json: {e:#}"),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertise_prefers_a_specific_listen_ip_then_the_route() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lan: IpAddr = "192.168.1.5".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert_eq!(
            choose_advertise(lo, 9, Some(lan)).to_string(),
            "127.0.0.1:9"
        );
        assert_eq!(
            choose_advertise(any, 9, Some(lan)).to_string(),
            "192.168.1.5:9"
        );
        assert_eq!(choose_advertise(any, 9, None).to_string(), "127.0.0.1:9");
        assert_eq!(
            choose_advertise(any, 9, Some(any)).to_string(),
            "127.0.0.1:9"
        );
    }

    #[tokio::test]
    async fn the_route_to_a_local_tracker_is_loopback() {
        let ip = route_ip("http://127.0.0.1:7070").await;
        assert_eq!(ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(route_ip("not a url").await, None);
    }

    #[test]
    fn advertise_must_have_a_port() {
        assert!(check_advertise("example.org:7000").is_ok());
        assert!(check_advertise("[::1]:7000").is_ok());
        assert!(check_advertise("example.org").is_err());
        assert!(check_advertise("example.org:0").is_err());
        assert!(check_advertise(":7000").is_err());
    }
}
