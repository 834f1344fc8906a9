//! `/api/v1/peers`: every peer, up and down, a page at a time.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::openapi::ErrorJson;
use super::{ApiError, rfc3339};
use crate::Error;
use crate::app::TrackerService;

/// Default and largest page: peers are many when accounts are free to make.
const MAX_LIMIT: u32 = 1000;

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
    /// While a failed audit keeps it demoted (not handed out, its copies not counted): until
    /// when (RFC 3339); `null` otherwise.
    demoted_until: Option<String>,
}

/// A page of peers.
#[derive(Serialize, ToSchema)]
#[schema(as = PeerList)]
pub struct PeerListJson {
    items: Vec<PeerJson>,
    /// Peers in all pages.
    total: u64,
}

/// Query of `GET /api/v1/peers`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeerParams {
    /// Page size (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    limit: Option<String>,
    /// Peers to skip.
    #[param(value_type = Option<u64>, maximum = 4294967295_u64)]
    offset: Option<String>,
}

/// Known peers, up and down, by id, a page at a time.
#[utoipa::path(
    get,
    path = "/api/v1/peers",
    tag = "peers",
    params(PeerParams),
    responses(
        (status = 200, description = "One page of peers", body = PeerListJson),
        (status = 400, description = "A parameter is not valid", body = ErrorJson),
    ),
)]
pub async fn h_peers_list(
    State(svc): State<TrackerService>,
    params: Result<Query<PeerParams>, QueryRejection>,
) -> Result<Json<PeerListJson>, ApiError> {
    let Query(p) = params?;
    let limit = super::files::number("limit", p.limit.as_deref())?.unwrap_or(MAX_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(Error::invalid(format!("limit must be between 1 and {MAX_LIMIT}")).into());
    }
    let offset = super::files::number("offset", p.offset.as_deref())?.unwrap_or(0);
    let peers = svc.list_peers();
    let total = peers.len() as u64;
    let items: Vec<PeerJson> = peers
        .into_iter()
        .skip(offset as usize)
        .take(limit as usize)
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
            demoted_until: p.demoted_until_ms.and_then(rfc3339),
        })
        .collect();
    Ok(Json(PeerListJson { items, total }))
}
