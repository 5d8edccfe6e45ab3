//! How failures become HTTP answers. The policy, in one place:
//!
//! | error | status | when |
//! | --- | --- | --- |
//! | `BadRequest` | 400 | the request cannot be read at all (bad query string, wrong content type) |
//! | `Unauthorized` | 401 | no, a wrong, an expired or a revoked bearer token, and no valid session |
//! | `LoginFailed` | 401 | a wrong user name or password at login, with the tries left before the lockout |
//! | `Forbidden` | 403 | the caller sees the object but the permission matrix does not let them do this (see `authz`); a read-only token on a change; a missing or wrong CSRF token |
//! | `NotFound` | 404 | the pipeline, run, task or version does not exist, or the caller may not see it (`authz`: existence does not leak) |
//! | `Conflict` | 409 | the request clashes with the current state (name taken, run in progress, already finished) |
//! | `Quota` | 403 | the licence's pipeline limit is reached (the message says the limit and how to raise it) |
//! | `Timeout` | 408 | the request body did not arrive within the server's `header_timeout` (the connection is closed) |
//! | `TooLarge` | 413 | the body is over the route's limit (the message says the limit) |
//! | `TooManyRequests` | 429 | too many failed logins for this user from this address, or too many requests of a throttled kind from it; `Retry-After` says when to try again |
//! | `Unavailable` | 503 | the server is saturated for this kind of request (login: every password-hashing slot busy); `Retry-After` says when to try again |
//! | `Invalid` | 422 | the body was read but is wrong; `details` lists each problem with its field path (and line/column for pipeline YAML) |
//! | `BadGateway` | 502 | a code host or registry the server called refused or failed the call; the message says what it answered (never a secret) |
//! | `Internal` | 500 | our fault (database, disk); the context and the error behind it are logged, the answer says only that it happened |
//!
//! The body is always `{"error": {"status", "message", "details": [...]}}`; answers
//! that axum makes itself (a rejected extractor, 405, a body over the limit) are put
//! into the same shape by [`json_errors`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use wharf_store::StoreError;

/// One problem of an `Invalid` answer: the contract's type.
pub use wharf_api::Detail;

#[derive(Debug)]
pub enum AppError {
    BadRequest(String),
    Unauthorized,
    /// A login with a wrong user name or password: 401 with how many tries are left.
    LoginFailed(String),
    Forbidden(String),
    /// A licence limit: 403 with the message.
    Quota(String),
    TooLarge(String),
    /// The request body was too slow: 408, and the connection closes.
    Timeout(String),
    TooManyRequests {
        message: String,
        retry_after_secs: u64,
    },
    Unavailable {
        message: String,
        retry_after_secs: u64,
    },
    NotFound(String),
    Conflict(String),
    Invalid {
        message: String,
        details: Vec<Detail>,
    },
    /// A service the server called (a code host, a registry) refused or failed.
    BadGateway(String),
    /// Our fault: what failed, and the error behind it when there is one (logged with
    /// its whole chain, never shown).
    Internal {
        context: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::LoginFailed(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) | AppError::Quota(_) => StatusCode::FORBIDDEN,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            AppError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Our fault, because of `source`: `context` says what we were doing.
    pub fn internal(context: impl Into<String>, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError::Internal { context: context.into(), source: Some(Box::new(source)) }
    }

    /// Our fault, with no error value behind it (an impossible state, a failure
    /// already described in words).
    pub fn bug(context: impl Into<String>) -> Self {
        AppError::Internal { context: context.into(), source: None }
    }

    pub fn invalid(message: impl Into<String>, path: &str, problem: impl Into<String>) -> Self {
        AppError::Invalid {
            message: message.into(),
            details: vec![Detail { path: path.to_owned(), line: None, column: None, message: problem.into() }],
        }
    }

    /// A pipeline that does not validate: every diagnostic as a detail.
    pub fn pipeline(diags: wharf_pipeline::Diagnostics) -> Self {
        let details: Vec<Detail> = diags
            .0
            .iter()
            .map(|d| Detail {
                path: d.path.clone(),
                line: Some(d.pos.line),
                column: Some(d.pos.col),
                message: d.message.clone(),
            })
            .collect();
        AppError::Invalid { message: format!("the pipeline is not valid ({} problem(s))", details.len()), details }
    }
}

/// The error in one line, for places that record it as text (a webhook delivery's
/// notes): the answer's message, with each detail's message after it.
impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::BadRequest(m)
            | AppError::Conflict(m)
            | AppError::BadGateway(m)
            | AppError::Forbidden(m)
            | AppError::Quota(m)
            | AppError::TooLarge(m)
            | AppError::Timeout(m)
            | AppError::LoginFailed(m) => f.write_str(m),
            AppError::TooManyRequests { message, .. } | AppError::Unavailable { message, .. } => f.write_str(message),
            AppError::Unauthorized => f.write_str("unauthorized"),
            AppError::NotFound(what) => write!(f, "{what} not found"),
            AppError::Invalid { message, details } => {
                f.write_str(message)?;
                details.iter().try_for_each(|d| write!(f, "; {}", d.message))
            }
            AppError::Internal { context, source: None } => f.write_str(context),
            AppError::Internal { context, source: Some(source) } => write!(f, "{context}: {source}"),
        }
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::Internal { source: Some(source), .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => AppError::NotFound(what),
            StoreError::Conflict(why) => AppError::Conflict(why),
            other => AppError::internal("the store failed", other),
        }
    }
}

/// How the lifecycle's refusals are answered: a run that cannot start is 422 with each
/// problem as a detail, a clash with the run's state 409, a stored version that no
/// longer reads is our fault.
impl From<wharf_lifecycle::RunError> for AppError {
    fn from(e: wharf_lifecycle::RunError) -> Self {
        use wharf_lifecycle::RunError;
        match e {
            RunError::Invalid { message, problems } => AppError::Invalid {
                message,
                details: problems
                    .into_iter()
                    .map(|p| Detail { path: p.path, line: None, column: None, message: p.message })
                    .collect(),
            },
            RunError::Conflict(why) => AppError::Conflict(why),
            RunError::Store(e) => e.into(),
            other => AppError::internal("the run lifecycle failed", other),
        }
    }
}

impl From<wharf_lifecycle::approvals::DecideError> for AppError {
    fn from(e: wharf_lifecycle::approvals::DecideError) -> Self {
        use wharf_lifecycle::approvals::DecideError;
        match e {
            DecideError::NotFound(why) => AppError::NotFound(why),
            DecideError::NotWaiting(why) => AppError::Conflict(why),
            DecideError::Refused(why) => AppError::Forbidden(why.to_string()),
            DecideError::Store(e) => e.into(),
        }
    }
}

/// The body every error answer has (the contract's [`wharf_api::Error`]).
fn error_body(status: StatusCode, message: String, details: Vec<Detail>) -> axum::Json<wharf_api::Error> {
    axum::Json(wharf_api::Error { error: wharf_api::ErrorInfo { status: status.as_u16(), message, details } })
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (message, details) = match &self {
            AppError::BadRequest(m) | AppError::TooLarge(m) | AppError::Timeout(m) | AppError::LoginFailed(m) => {
                (m.as_str(), &[][..])
            }
            AppError::Unauthorized => (
                "missing, wrong, expired or revoked bearer token (Authorization: Bearer <token>), and no login session",
                &[][..],
            ),
            AppError::Forbidden(why) | AppError::Quota(why) => (why.as_str(), &[][..]),
            AppError::TooManyRequests { message, .. } | AppError::Unavailable { message, .. } => {
                (message.as_str(), &[][..])
            }
            AppError::NotFound(what) => (what.as_str(), &[][..]),
            AppError::Conflict(why) | AppError::BadGateway(why) => (why.as_str(), &[][..]),
            AppError::Invalid { message, details } => (message.as_str(), details.as_slice()),
            AppError::Internal { .. } => {
                tracing::error!(error = %self, "internal error");
                ("internal error; the server log has the details", &[][..])
            }
        };
        let message =
            if let AppError::NotFound(what) = &self { format!("{what} not found") } else { message.to_owned() };
        let mut response = (status, error_body(status, message, details.to_vec())).into_response();
        if let AppError::TooManyRequests { retry_after_secs, .. } | AppError::Unavailable { retry_after_secs, .. } =
            &self
        {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, (*retry_after_secs).into());
        }
        response
    }
}

pub type ApiResult<T> = Result<T, AppError>;

/// How much of a non-JSON error body [`json_errors`] reads to make its message.
const PLAIN_ERROR_MAX: usize = 4096;

/// Middleware for the whole router: an error answer (4xx, 5xx) that is not JSON — made
/// by axum itself for a rejected extractor (a path that is not UTF-8, a body over the
/// limit, a bad query), 405, or a plain-text 404 of the UI's files — is answered in the
/// documented shape, its text as the message. JSON answers pass untouched.
pub async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, PLAIN_ERROR_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut answer = (status, error_body(status, message, Vec::new())).into_response();
    for name in [axum::http::header::RETRY_AFTER, axum::http::header::ALLOW] {
        if let Some(value) = parts.headers.get(&name) {
            answer.headers_mut().insert(name, value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_internal_error_keeps_its_source_for_the_log_and_never_shows_it() {
        let source = std::io::Error::other("/var/lib/wharf/secret.key: permission denied");
        let error = AppError::internal("cannot read the key file", source);
        assert_eq!(error.to_string(), "cannot read the key file: /var/lib/wharf/secret.key: permission denied");
        assert!(std::error::Error::source(&error).is_some(), "the source is kept");
        let response = error.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: wharf_api::Error = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error.message, "internal error; the server log has the details");
        assert!(body.error.details.is_empty());
    }

    #[tokio::test]
    async fn a_refusal_of_a_service_called_is_a_bad_gateway_saying_what_it_answered() {
        let response = AppError::BadGateway("registry `main`: answered 500".into()).into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = axum::body::to_bytes(response.into_body(), 4096).await.unwrap();
        let body: wharf_api::Error = serde_json::from_slice(&body).unwrap();
        assert_eq!((body.error.status, body.error.message.as_str()), (502, "registry `main`: answered 500"));
    }
}
