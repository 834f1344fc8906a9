//! `/api/v1/peers`: every peer, up and down.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::rfc3339;
use crate::app::TrackerService;

#[derive(Serialize)]
pub struct PeerJson {
    id: String,
    user: String,
    addr: String,
    state: &'static str,
    last_seen: Option<String>,
    storage_quota: u64,
    storage_used: u64,
}

#[derive(Serialize)]
pub struct PeerListJson {
    items: Vec<PeerJson>,
    total: u64,
}

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
        })
        .collect();
    Json(PeerListJson {
        total: items.len() as u64,
        items,
    })
}
