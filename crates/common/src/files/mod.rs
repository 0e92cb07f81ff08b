//! The file port: named files (feeds dropped in by other systems or uploaded), written from a
//! stream and read back from any byte offset, so that a file of any size passes through
//! without being held in memory and a long read can resume where it stopped.
//!
//! Adapters: a folder on the embedded default ([`folder::FolderFiles`]), an Azure Blob
//! Storage container on Azure. Names are `/`-separated relative paths of plain segments.

pub mod blob;
pub mod folder;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use time::OffsetDateTime;

/// A stream of a file's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, FileError>>;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file {0} was not found")]
    NotFound(String),
    #[error("{0:?} is not a file name: {1}")]
    InvalidName(String, &'static str),
    /// The body being written failed (the client went away, or sent too much).
    #[error("the content could not be read: {0}")]
    Source(String),
    /// The content did not arrive in time.
    #[error("the content did not arrive in time")]
    SourceTimedOut,
    #[error("the content is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the file store is full")]
    Full,
    #[error("the file store failed: {0}")]
    Backend(#[source] crate::store::Cause),
}

/// What is known of a stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
    pub modified: OffsetDateTime,
}

#[async_trait]
pub trait FileStore: Send + Sync {
    /// Writes `name` from `content`, replacing a file of that name. Readers never see a
    /// partly written file: it appears whole or not at all. Returns the size written.
    async fn put(&self, name: &str, content: ByteStream) -> Result<u64, FileError>;

    /// The bytes of `name` from `offset` on.
    async fn read_from(&self, name: &str, offset: u64) -> Result<ByteStream, FileError>;

    /// The file's size and time of last change, if it exists.
    async fn info(&self, name: &str) -> Result<Option<FileInfo>, FileError>;

    /// The files whose names start with `prefix`, by name.
    async fn list(&self, prefix: &str) -> Result<Vec<FileInfo>, FileError>;

    /// Gives `from` the name `to` (replacing it); both stay whole throughout.
    async fn rename(&self, from: &str, to: &str) -> Result<(), FileError>;

    /// Removes `name`; removing a missing file is not an error.
    async fn delete(&self, name: &str) -> Result<(), FileError>;
}

pub type SharedFiles = Arc<dyn FileStore>;

impl From<FileError> for crate::ApiError {
    fn from(error: FileError) -> Self {
        use crate::error::{ApiError, ErrorCode};
        match error {
            FileError::NotFound(name) => ApiError::not_found(format!("file {name}")),
            FileError::InvalidName(..) => {
                ApiError::new(ErrorCode::MalformedRequest, error.to_string())
            }
            FileError::Source(_) => ApiError::new(ErrorCode::MalformedRequest, error.to_string()),
            FileError::SourceTimedOut => {
                ApiError::new(ErrorCode::RequestTimeout, error.to_string())
            }
            FileError::TooLarge { .. } => {
                ApiError::new(ErrorCode::PayloadTooLarge, error.to_string())
            }
            FileError::Full => ApiError::new(
                ErrorCode::InsufficientStorage,
                "the service cannot store the file until space is freed; nothing was kept",
            )
            .with_retry_after(30),
            FileError::Backend(_) => {
                tracing::error!(error = %crate::error::chain(&error), "file store failed");
                ApiError::bare(ErrorCode::Unavailable).with_retry_after(1)
            }
        }
    }
}

/// Checks a name: `/`-separated, each segment 1-255 of letters, digits, `.`, `_`, `-`,
/// ` `, `(`, `)`, and not `.` or `..`; at most 1,024 bytes in all.
pub fn check_name(name: &str) -> Result<(), FileError> {
    let invalid = |why| Err(FileError::InvalidName(name.to_owned(), why));
    if name.is_empty() || name.len() > 1024 {
        return invalid("must be 1 to 1,024 bytes");
    }
    for segment in name.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return invalid("has an empty, `.` or `..` segment");
        }
        if segment.len() > 255 {
            return invalid("has a segment longer than 255 bytes");
        }
        let plain = segment
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | ' ' | '(' | ')'));
        if !plain {
            return invalid("may hold only letters, digits and . _ - ( ) and spaces");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_store() {
        for good in [
            "a.csv",
            "incoming/feed 2026-11-26 (1).csv",
            "uploads/01a2-b3",
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/a", "a/", "../a", "a/../b", "a//b", "./a", "a\\b", "a\0b", "a:b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
