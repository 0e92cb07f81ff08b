//! `ETag`, `If-Match` and `If-None-Match` (RFC 9110) for the store's opaque ETags.

use actix_web::HttpRequest;
use actix_web::http::header;

use crate::error::{ApiError, ErrorCode};
use crate::store::ETag;

/// The value of an `ETag` header for a stored version.
pub fn etag_header_value(etag: &ETag) -> String {
    format!("\"{}\"", etag.as_str())
}

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Absent,
    Any,
    /// One of these versions; the store checks the first, so several tags are refused.
    Tag(ETag),
}

impl IfMatch {
    pub fn etag(&self) -> Option<&ETag> {
        match self {
            IfMatch::Tag(etag) => Some(etag),
            _ => None,
        }
    }
}

fn strip_quotes(raw: &str) -> Option<&str> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    raw.strip_prefix('"')?.strip_suffix('"')
}

/// Parses `If-Match`; a malformed value is a 400, not a silent mismatch.
pub fn if_match(req: &HttpRequest) -> Result<IfMatch, ApiError> {
    let Some(value) = req.headers().get(header::IF_MATCH) else {
        return Ok(IfMatch::Absent);
    };
    let malformed = || {
        ApiError::new(
            ErrorCode::MalformedRequest,
            "If-Match must be \"*\" or one quoted ETag",
        )
    };
    let text = value.to_str().map_err(|_| malformed())?.trim();
    // An empty list names no version: RFC 9110 lets list fields be empty, and such a header
    // is sent by clients that fill it from an unset variable; it sets no condition.
    if text.is_empty() {
        return Ok(IfMatch::Absent);
    }
    if text == "*" {
        return Ok(IfMatch::Any);
    }
    let tag = strip_quotes(text)
        .filter(|tag| !tag.contains('"'))
        .ok_or_else(malformed)?;
    Ok(IfMatch::Tag(ETag::new(tag)))
}

/// True when `If-None-Match` names the current version (or `*`): answer 304.
pub fn if_none_match_hits(req: &HttpRequest, current: &ETag) -> bool {
    let Some(text) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    text.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || strip_quotes(candidate) == Some(current.as_str())
    })
}
