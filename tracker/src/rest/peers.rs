//! `/api/v1/peers`: every peer, up and down.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::rfc3339;
use crate::app::TrackerService;

/// A peer's node as the tracker knows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Peer)]
pub struct PeerJson {
    id: String,
    /// The user who runs it.
    user: String,
    /// Where its node listens (`host:port`); empty before its first heartbeat.
    addr: String,
    /// `up` while its last heartbeat is younger than the peer timeout.
    #[schema(value_type = super::files::PeerStateDoc)]
    state: &'static str,
    /// Last heartbeat (RFC 3339); `null` before the first.
    last_seen: Option<String>,
    /// Bytes it offers for replicas.
    storage_quota: u64,
    /// Bytes of replicas it stores, as it reports.
    storage_used: u64,
    /// Total size of the files it shares.
    shared_bytes: u64,
    /// Bytes of every chunk it holds: shared, downloaded and replica.
    held_bytes: u64,
}

/// Every peer.
#[derive(Serialize, ToSchema)]
#[schema(as = PeerList)]
pub struct PeerListJson {
    items: Vec<PeerJson>,
    total: u64,
}

/// Every known peer, up and down, by id.
#[utoipa::path(
    get,
    path = "/api/v1/peers",
    tag = "peers",
    responses((status = 200, description = "The peers", body = PeerListJson)),
)]
pub async fn h_peers_list(State(svc): State<TrackerService>) -> Json<PeerListJson> {
    let items: Vec<PeerJson> = svc
        .list_peers()
        .into_iter()
        .map(|p| PeerJson {
            id: p.id.to_string(),
            user: p.user,
            addr: p.addr,
            state: if p.up { "up" } else { "down" },
            last_seen: p.last_seen_ms.and_then(rfc3339),
            storage_quota: p.storage_quota,
            storage_used: p.storage_used,
            shared_bytes: p.shared_bytes,
            held_bytes: p.held_bytes,
        })
        .collect();
    Json(PeerListJson {
        total: items.len() as u64,
        items,
    })
}
