//! Error handlers for actix's extractors, so that a malformed body, a wrong type, an
//! oversized body or a bad path or query parameter is a problem+json answer.

use actix_web::error::{JsonPayloadError, PathError, QueryPayloadError};
use actix_web::{HttpRequest, web};

use crate::error::{ApiError, ErrorCode, FieldError};

pub fn json_config(max_body_bytes: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(max_body_bytes)
        .error_handler(|error, _req: &HttpRequest| json_error(error).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the body may be at most {limit} bytes"),
        ),
        JsonPayloadError::ContentType => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ),
        JsonPayloadError::Deserialize(error)
            if error
                .to_string()
                .starts_with(crate::validation::DUPLICATE_KEY) =>
        {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!("the body is ambiguous: {error}"),
            )
        }
        JsonPayloadError::Deserialize(error) if error.is_data() => {
            ApiError::validation(vec![FieldError::new("", error.to_string())])
        }
        JsonPayloadError::Deserialize(error) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body is not valid JSON: {error}"),
        ),
        JsonPayloadError::Payload(actix_web::error::PayloadError::Io(error))
            if error.kind() == std::io::ErrorKind::TimedOut =>
        {
            ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time; send it whole",
            )
        }
        JsonPayloadError::Payload(error) => ApiError::new(
            ErrorCode::MalformedRequest,
            format!("the body could not be read: {error}"),
        ),
        other => ApiError::new(ErrorCode::MalformedRequest, other.to_string()),
    }
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|error, _req| {
        let detail = match error {
            PathError::Deserialize(error) => format!("a path parameter is invalid: {error}"),
            other => other.to_string(),
        };
        ApiError::new(ErrorCode::MalformedRequest, detail).into()
    })
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|error, _req| {
        let detail = match error {
            QueryPayloadError::Deserialize(error) => {
                format!("a query parameter is invalid: {error}")
            }
            other => other.to_string(),
        };
        ApiError::new(ErrorCode::MalformedRequest, detail).into()
    })
}
