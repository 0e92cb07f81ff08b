//! One table of error codes, and the single mapping from errors to RFC 9457
//! `application/problem+json` responses.
//!
//! Modules report failures with their own `thiserror` enums; the HTTP layer turns them into
//! an [`ApiError`] exactly once. Internal failures are logged with their cause chain and
//! answered with a bare problem that carries only the trace id.

use std::fmt;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

macro_rules! error_codes {
    ($($variant:ident => ($slug:literal, $status:ident, $title:literal)),+ $(,)?) => {
        /// Every problem the platform answers with. `type` is `urn:problem:<slug>`, documented
        /// in `docs/problems.md`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ErrorCode { $($variant),+ }

        impl ErrorCode {
            pub fn slug(self) -> &'static str {
                match self { $(ErrorCode::$variant => $slug),+ }
            }
            pub fn status(self) -> StatusCode {
                match self { $(ErrorCode::$variant => StatusCode::$status),+ }
            }
            pub fn title(self) -> &'static str {
                match self { $(ErrorCode::$variant => $title),+ }
            }
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];
        }
    };
}

error_codes! {
    MalformedRequest => ("malformed-request", BAD_REQUEST, "The request could not be parsed"),
    ValidationFailed => ("validation-failed", UNPROCESSABLE_ENTITY, "The request has invalid fields"),
    Unauthenticated => ("unauthenticated", UNAUTHORIZED, "A valid bearer token is required"),
    Forbidden => ("forbidden", FORBIDDEN, "The token lacks the required scope"),
    NotFound => ("not-found", NOT_FOUND, "The resource does not exist"),
    MethodNotAllowed => ("method-not-allowed", METHOD_NOT_ALLOWED, "The method is not allowed on this resource"),
    NotAcceptable => ("not-acceptable", NOT_ACCEPTABLE, "No acceptable representation"),
    Conflict => ("conflict", CONFLICT, "The request conflicts with the resource's current state"),
    PreconditionFailed => ("precondition-failed", PRECONDITION_FAILED, "The resource was changed by someone else"),
    PreconditionRequired => ("precondition-required", PRECONDITION_REQUIRED, "An If-Match header is required"),
    PayloadTooLarge => ("payload-too-large", PAYLOAD_TOO_LARGE, "The request body is too large"),
    HeadersTooLarge => ("headers-too-large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request headers are too large"),
    RequestTimeout => ("request-timeout", REQUEST_TIMEOUT, "The request was not received in time"),
    UnsupportedMediaType => ("unsupported-media-type", UNSUPPORTED_MEDIA_TYPE, "The request body must be application/json"),
    RateLimited => ("rate-limited", TOO_MANY_REQUESTS, "Too many requests"),
    Internal => ("internal", INTERNAL_SERVER_ERROR, "An internal error occurred"),
    DependencyFailed => ("dependency-failed", FAILED_DEPENDENCY, "A service this request depends on failed"),
    Unavailable => ("unavailable", SERVICE_UNAVAILABLE, "The service is temporarily unavailable"),
    InsufficientStorage => ("insufficient-storage", INSUFFICIENT_STORAGE, "The service's storage is full"),
}

impl ErrorCode {
    pub fn type_uri(self) -> String {
        format!("urn:problem:{}", self.slug())
    }

    /// The code a bare status maps to, for responses produced outside our handlers.
    pub fn from_status(status: StatusCode) -> ErrorCode {
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|code| code.status() == status)
            .unwrap_or(if status.is_server_error() {
                ErrorCode::Internal
            } else {
                ErrorCode::MalformedRequest
            })
    }
}

/// One offending field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON pointer-like path of the field, e.g. `price` or `lines/0/sku`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// An error on its way to becoming a problem response.
#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub detail: Option<String>,
    pub errors: Vec<FieldError>,
    pub retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: Some(detail.into()),
            errors: Vec::new(),
            retry_after_seconds: None,
        }
    }

    pub fn bare(code: ErrorCode) -> Self {
        Self {
            code,
            detail: None,
            errors: Vec::new(),
            retry_after_seconds: None,
        }
    }

    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = match errors.len() {
            1 => "1 field is invalid".to_owned(),
            n => format!("{n} fields are invalid"),
        };
        Self {
            code: ErrorCode::ValidationFailed,
            detail: Some(detail),
            errors,
            retry_after_seconds: None,
        }
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} was not found"))
    }

    /// Logs the cause chain here, where it happened, and keeps it out of the answer.
    #[track_caller]
    pub fn internal(cause: impl fmt::Display) -> Self {
        let location = std::panic::Location::caller();
        tracing::error!(error = %cause, at = %location, "internal error");
        Self::bare(ErrorCode::Internal)
    }

    /// An internal error, logged once with its whole chain of causes.
    #[track_caller]
    pub fn internal_error(error: &(dyn std::error::Error + 'static)) -> Self {
        Self::internal(chain(error))
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    pub fn to_problem(&self) -> Problem {
        let trace_id =
            (self.code.status().is_server_error()).then(crate::telemetry::current_trace_id);
        Problem {
            type_uri: self.code.type_uri(),
            title: self.code.title().to_owned(),
            status: self.code.status().as_u16(),
            detail: self.detail.clone(),
            errors: self.errors.clone(),
            trace_id: trace_id.flatten(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Some(detail) => write!(f, "{}: {detail}", self.code.title()),
            None => f.write_str(self.code.title()),
        }
    }
}

impl std::error::Error for ApiError {}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.code.status());
        response.insert_header((header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE));
        if let Some(seconds) = self.retry_after_seconds {
            response.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        if self.code == ErrorCode::Unauthenticated {
            response.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        let body = serde_json::to_vec(&self.to_problem()).unwrap_or_default();
        response.body(body)
    }
}

/// An error and its causes, outermost first: `a: b: c` (a cause already quoted in its
/// parent's message is not repeated).
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let next = cause.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = cause.source();
    }
    text
}

impl From<crate::store::StoreError> for ApiError {
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError;
        match error {
            StoreError::NotFound => ApiError::bare(ErrorCode::NotFound),
            StoreError::Conflict => ApiError::bare(ErrorCode::Conflict),
            StoreError::PreconditionFailed => ApiError::new(
                ErrorCode::PreconditionFailed,
                "the ETag in If-Match is not the resource's current ETag",
            ),
            StoreError::InvalidContinuation => ApiError::new(
                ErrorCode::MalformedRequest,
                "the continuation token is not valid",
            ),
            StoreError::Throttled { retry_after_ms } => ApiError::bare(ErrorCode::Unavailable)
                .with_retry_after(retry_after_ms.div_ceil(1000).max(1)),
            StoreError::Unavailable(_) => {
                tracing::error!(error = %chain(&error), "document store unavailable");
                ApiError::bare(ErrorCode::Unavailable).with_retry_after(1)
            }
            StoreError::TooLarge(detail) => ApiError::new(ErrorCode::PayloadTooLarge, detail),
            StoreError::Full(_) => {
                tracing::error!(error = %chain(&error), "document store out of space; writes refused until there is room");
                ApiError::new(
                    ErrorCode::InsufficientStorage,
                    "the service cannot store anything more until space is freed; nothing was written",
                )
                .with_retry_after(30)
            }
            StoreError::Serialization(_) | StoreError::Backend(_) => {
                ApiError::internal_error(&error)
            }
        }
    }
}

#[cfg(test)]
mod cause_chain {
    use super::*;
    use crate::store::{Cause, StoreError};

    #[derive(Debug, thiserror::Error)]
    #[error("disk I/O error")]
    struct Driver(#[source] std::io::Error);

    #[test]
    fn a_store_error_keeps_and_reports_its_whole_cause_chain() {
        let root = std::io::Error::other("sector 7 unreadable");
        let error = StoreError::Backend(Cause::new(Driver(root)));
        let text = chain(&error);
        assert_eq!(
            text, "store failure: disk I/O error: sector 7 unreadable",
            "{text}"
        );
        let source = std::error::Error::source(&error).expect("a source");
        assert_eq!(source.to_string(), "disk I/O error");
    }
}
