//! The one error shape of the API: `{"error": {"code", "message", "details", "request_id"}}`.
//!
//! Client mistakes map to 4xx with a message that says what to change; anything the client cannot
//! fix is a 500 whose message reveals nothing, logged in full under the request id.

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::middleware::current_request_id;

/// An API error: a status, a stable machine-readable code, a readable message and optional details.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Value,
    retry_after: Option<Duration>,
}

/// The error body, as documented in the OpenAPI document.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorBody {
    error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: `not_found`, `forbidden`, `unauthenticated`, `invalid_input`,
    /// `bad_request`, `conflict`, `payload_too_large`, `rate_limited`, `unavailable`, `internal`, ...
    code: &'static str,
    /// Human-readable explanation.
    message: String,
    /// Structured details (the field that failed, the limit that was hit), or null.
    #[schema(value_type = Object)]
    details: serde_json::Value,
    /// The request's id (also in the `X-Request-Id` response header), for support and logs.
    request_id: Option<String>,
}

/// The result type of handlers.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: serde_json::Value::Null, retry_after: None }
    }

    /// Adds structured details.
    pub(crate) fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Adds a `Retry-After` header.
    pub(crate) fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// 400: the request could not be read.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 422: the request was read but a value is not acceptable.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
    }

    /// 401: no usable credentials.
    pub(crate) fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 404 for `kind`.
    pub(crate) fn not_found(kind: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{kind} not found"))
    }

    /// 503: a dependency is down; try again later.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 with a message that reveals nothing; the cause is logged under the request id.
    pub(crate) fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(request_id = current_request_id().as_deref(), error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the request id identifies it")
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<aicd_core::Error> for ApiError {
    fn from(error: aicd_core::Error) -> Self {
        use aicd_core::Error as E;
        match error {
            E::NotFound { kind } => Self::not_found(kind),
            E::Forbidden { permission } => Self::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("your role does not allow `{permission}` in this organization"),
            )
            .with_details(serde_json::json!({ "permission": permission.as_str() })),
            E::Unauthenticated(message) => Self::unauthenticated(message),
            E::InvalidInput(message) => Self::invalid(message),
            E::Conflict(message) => Self::new(StatusCode::CONFLICT, "conflict", message),
            e @ E::IllegalTransition { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            e @ E::LeaseLost { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            E::Unavailable { service, message, retry_after } => {
                tracing::warn!(service, %message, "dependency unavailable");
                let error = Self::unavailable(format!("{service} is unavailable; try again shortly"));
                error.with_retry_after(retry_after.unwrap_or(Duration::from_secs(5)))
            }
            E::PaymentRequired { code, message } => Self::new(StatusCode::PAYMENT_REQUIRED, code, message),
            E::Rejected { service, message } => {
                Self::new(StatusCode::BAD_GATEWAY, "upstream_rejected", format!("{service} refused: {message}"))
            }
            other => Self::internal(&other),
        }
    }
}

impl From<aicd_github::Error> for ApiError {
    fn from(error: aicd_github::Error) -> Self {
        use aicd_github::Error as E;
        match error {
            E::Core(error) => error.into(),
            E::SetupNotConfigured(message) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "github_setup_unavailable",
                format!("linking GitHub App installations is not available here: {message}"),
            ),
            E::InvalidSetupState(message) => Self::new(StatusCode::BAD_REQUEST, "invalid_state", message),
            E::InvalidSetupRequest(message) => Self::bad_request(message),
            e @ E::InstallationNotVerified => {
                Self::new(StatusCode::FORBIDDEN, "installation_not_verified", e.to_string())
            }
            e @ (E::MalformedPayload(_) | E::MalformedDelivery(_)) => Self::bad_request(e.to_string()),
            e @ (E::MissingSignature | E::MalformedSignature | E::BadSignature) => {
                Self::new(StatusCode::UNAUTHORIZED, "invalid_signature", e.to_string())
            }
            other => Self::internal(&other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::invalid(format!("invalid request body: {}", body_text(&e))),
            JsonRejection::JsonSyntaxError(e) => Self::bad_request(format!("malformed JSON: {}", body_text(&e))),
            JsonRejection::MissingJsonContentType(_) => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => payload_too_large(),
            other => Self::bad_request(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        // A malformed id can never name an existing resource.
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no such resource: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::invalid(format!("invalid query string: {}", rejection.body_text()))
    }
}

/// 413: the body is over the configured limit.
pub(crate) fn payload_too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", "the request body is too large")
}

/// The innermost message of a serde error, which names the field and what was wrong.
fn body_text(error: &dyn std::error::Error) -> String {
    let mut source: &dyn std::error::Error = error;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
                request_id: current_request_id(),
            },
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = self.retry_after {
            let secs = after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
