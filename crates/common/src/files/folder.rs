//! Files in a folder: the embedded default's file store, and the watched folder users drop
//! feeds into. A file is written beside its final name and renamed into place, so a reader
//! never sees half of it.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use time::OffsetDateTime;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{ByteStream, FileError, FileInfo, FileStore, check_name};
use crate::store::Cause;

/// Where a file is written before it is renamed into place; listings skip it.
const PARTIAL_SUFFIX: &str = ".partial";

pub struct FolderFiles {
    root: PathBuf,
}

impl FolderFiles {
    /// The files under `root`, created (owner-only) when missing.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, FileError> {
        let root = root.into();
        crate::private_files::create_private_dir(&root).map_err(backend)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, FileError> {
        check_name(name)?;
        Ok(name
            .split('/')
            .fold(self.root.clone(), |path, segment| path.join(segment)))
    }
}

fn backend(error: io::Error) -> FileError {
    if error.raw_os_error() == Some(28) {
        // ENOSPC
        return FileError::Full;
    }
    FileError::Backend(Cause::new(error))
}

fn not_found_or(name: &str) -> impl FnOnce(io::Error) -> FileError + '_ {
    move |error| match error.kind() {
        io::ErrorKind::NotFound => FileError::NotFound(name.to_owned()),
        _ => backend(error),
    }
}

fn info_of(name: String, metadata: &std::fs::Metadata) -> FileInfo {
    let modified = metadata
        .modified()
        .ok()
        .map_or(OffsetDateTime::UNIX_EPOCH, OffsetDateTime::from);
    FileInfo {
        name,
        size: metadata.len(),
        modified,
    }
}

#[async_trait]
impl FileStore for FolderFiles {
    async fn put(&self, name: &str, mut content: ByteStream) -> Result<u64, FileError> {
        let path = self.path(name)?;
        if let Some(parent) = path.parent() {
            crate::private_files::create_private_dir(parent).map_err(backend)?;
        }
        let partial = path.with_file_name(format!(
            "{}.{}{PARTIAL_SUFFIX}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
            uuid::Uuid::new_v4().simple()
        ));
        let mut options = tokio::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        options.mode(0o600);
        let mut file = options.open(&partial).await.map_err(backend)?;
        let written = async {
            let mut size = 0u64;
            while let Some(chunk) = content.next().await {
                let chunk = chunk?;
                file.write_all(&chunk).await.map_err(backend)?;
                size += chunk.len() as u64;
            }
            file.sync_all().await.map_err(backend)?;
            Ok::<_, FileError>(size)
        }
        .await;
        let outcome = match written {
            Ok(size) => tokio::fs::rename(&partial, &path)
                .await
                .map(|()| size)
                .map_err(backend),
            Err(error) => Err(error),
        };
        if outcome.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
        }
        outcome
    }

    async fn read_from(&self, name: &str, offset: u64) -> Result<ByteStream, FileError> {
        let path = self.path(name)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(not_found_or(name))?;
        file.seek(SeekFrom::Start(offset)).await.map_err(backend)?;
        Ok(ReaderStream::with_capacity(file, 64 * 1024)
            .map_err(backend)
            .boxed())
    }

    async fn info(&self, name: &str) -> Result<Option<FileInfo>, FileError> {
        let path = self.path(name)?;
        match tokio::fs::metadata(&path).await {
            Ok(metadata) if metadata.is_file() => Ok(Some(info_of(name.to_owned(), &metadata))),
            Ok(_) => Ok(None),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(backend(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<FileInfo>, FileError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        let mut found = tokio::task::spawn_blocking(move || walk(&root, &prefix))
            .await
            .map_err(|e| FileError::Backend(Cause::new(e)))??;
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), FileError> {
        let source = self.path(from)?;
        let target = self.path(to)?;
        if let Some(parent) = target.parent() {
            crate::private_files::create_private_dir(parent).map_err(backend)?;
        }
        tokio::fs::rename(&source, &target)
            .await
            .map_err(not_found_or(from))
    }

    async fn delete(&self, name: &str) -> Result<(), FileError> {
        let path = self.path(name)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }
}

/// Every whole file under `root` whose name starts with `prefix`.
fn walk(root: &Path, prefix: &str) -> Result<Vec<FileInfo>, FileError> {
    let mut found = Vec::new();
    let mut folders = vec![(root.to_path_buf(), String::new())];
    while let Some((folder, name_prefix)) = folders.pop() {
        let entries = match std::fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(backend(error)),
        };
        for entry in entries {
            let entry = entry.map_err(backend)?;
            let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let name = format!("{name_prefix}{file_name}");
            let file_type = entry.file_type().map_err(backend)?;
            if file_type.is_dir() {
                // Only folders that can hold a match are walked.
                let folder_name = format!("{name}/");
                if folder_name.starts_with(prefix) || prefix.starts_with(&folder_name) {
                    folders.push((entry.path(), folder_name));
                }
            } else if file_type.is_file()
                && name.starts_with(prefix)
                && !file_name.ends_with(PARTIAL_SUFFIX)
                && check_name(&name).is_ok()
            {
                let metadata = entry.metadata().map_err(backend)?;
                found.push(info_of(name, &metadata));
            }
        }
    }
    Ok(found)
}
