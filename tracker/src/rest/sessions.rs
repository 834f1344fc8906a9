//! `/api/v1/sessions`: log in (POST) and out (DELETE) over HTTP.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};

use super::{ApiError, rfc3339};
use crate::app::TrackerService;

#[derive(Deserialize)]
pub struct LoginJson {
    user: String,
    password: String,
}

#[derive(Serialize)]
pub struct SessionJson {
    token: String,
    user: String,
    expires_at: Option<String>,
}

pub async fn h_session_create(
    State(svc): State<TrackerService>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<LoginJson>, JsonRejection>,
) -> Result<Json<SessionJson>, ApiError> {
    let Json(login) = body?;
    let s = svc
        .login(&login.user, &login.password, Some(peer.ip()))
        .await?;
    Ok(Json(SessionJson {
        token: s.token,
        user: s.user,
        expires_at: rfc3339(s.expires_at_ms),
    }))
}

pub async fn h_session_delete(
    State(svc): State<TrackerService>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    svc.logout(bearer(&headers)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
