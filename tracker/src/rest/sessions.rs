//! `/api/v1/sessions`: log in (POST) and out (DELETE) over HTTP.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::openapi::ErrorJson;
use super::{ApiError, rfc3339};
use crate::app::TrackerService;

/// Credentials.
#[derive(Deserialize, ToSchema)]
#[schema(as = Login)]
pub struct LoginJson {
    user: String,
    password: String,
}

/// A new session; send the token as `Authorization: Bearer TOKEN`.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionJson {
    /// 64 hex digits, shown once.
    token: String,
    user: String,
    /// When the token stops working (RFC 3339).
    expires_at: Option<String>,
}

/// Logs in.
#[utoipa::path(
    post,
    path = "/api/v1/sessions",
    tag = "sessions",
    request_body = LoginJson,
    responses(
        (status = 200, description = "Logged in", body = SessionJson),
        (status = 400, description = "The body is not JSON", body = ErrorJson),
        (status = 401, description = "Invalid user or password", body = ErrorJson),
        (status = 415, description = "The body is not `application/json`", body = ErrorJson),
        (status = 422, description = "The JSON lacks `user` or `password` strings", body = ErrorJson),
        (status = 429, description = "Too many failed attempts from this address", body = ErrorJson,
         headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
)]
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

/// Logs out the session named by `Authorization: Bearer TOKEN`.
#[utoipa::path(
    delete,
    path = "/api/v1/sessions",
    tag = "sessions",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "No token, or an unknown, expired or revoked one", body = ErrorJson,
         headers(("WWW-Authenticate" = String, description = "`Bearer`"))),
    ),
)]
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
