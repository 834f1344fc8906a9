//! How errors look over HTTP: always JSON `{"error": "message"}` with a status chosen here,
//! in one place. Bad input is a 4xx; a 503 means the database is unavailable (the call had
//! no effect; try again), a 500 a bug; their details go to the log, not to the client.

use super::openapi::ErrorJson;
use crate::Error;
use crate::error::DB_UNAVAILABLE;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error on its way to an HTTP client.
#[derive(Debug)]
pub enum ApiError {
    /// Anything the domain refused.
    Domain(Error),
    /// A request axum could not parse (bad JSON, query string or path), with axum's status.
    Rejected(StatusCode, String),
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError::Domain(e)
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(r: axum::extract::rejection::JsonRejection) -> Self {
        ApiError::Rejected(client_status(r.status()), r.body_text())
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::Rejected(client_status(r.status()), r.body_text())
    }
}

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(r: axum::extract::rejection::PathRejection) -> Self {
        ApiError::Rejected(client_status(r.status()), r.body_text())
    }
}

/// Keeps a rejection in the 4xx range whatever axum said.
fn client_status(s: StatusCode) -> StatusCode {
    if s.is_client_error() {
        s
    } else {
        StatusCode::BAD_REQUEST
    }
}

/// A JSON error body with a status.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    let body = ErrorJson {
        error: message.to_string(),
    };
    (status, Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = match self {
            ApiError::Rejected(status, msg) => return json_error(status, &msg),
            ApiError::Domain(e) => e,
        };
        let status = match &e {
            Error::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::AlreadyExists(_) => StatusCode::CONFLICT,
            // RESOURCE_EXHAUSTED on gRPC; 429 is its HTTP counterpart.
            Error::Throttled { .. } | Error::LimitReached(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Database(_) => {
                crate::error::log_unavailable(&e);
                return json_error(StatusCode::SERVICE_UNAVAILABLE, DB_UNAVAILABLE);
            }
            Error::Io { .. } | Error::Config(_) | Error::Internal(_) => {
                tracing::error!(cause = %e, "request failed");
                return json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        let mut resp = json_error(status, &e.to_string());
        if let Error::Throttled { retry_after } = &e {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if let Error::Unauthenticated(_) = &e {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// The answer for any path no route serves.
pub async fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not found")
}

/// The answer for a known path with the wrong method.
pub async fn method_not_allowed() -> Response {
    json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}
