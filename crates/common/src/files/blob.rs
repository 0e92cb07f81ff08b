//! Files in an Azure Blob Storage container, through the official `azure_storage_blob` crate.
//!
//! A file is a block blob. It is written as staged blocks and appears only when the block
//! list is committed, so a reader never sees half of it and a failed write leaves nothing
//! (uncommitted blocks are collected by the service). Blob storage has no rename: a rename
//! is a server-side copy, awaited, then the delete of the source.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{RequestContent, StatusCode, Url};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders,
    BlobContainerClientListBlobsOptions, BlockLookupList, CopyStatus, HttpRange,
};
use azure_storage_blob::{BlobClient, BlobContainerClient};
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use time::OffsetDateTime;

use super::{ByteStream, FileError, FileInfo, FileStore, check_name};
use crate::store::Cause;

/// Bytes staged per block: a 1 GB feed is 256 blocks, well under the 50,000 a blob may have.
const BLOCK_BYTES: usize = 4 * 1024 * 1024;
/// How often a pending copy (a rename of a large blob) is looked at.
const COPY_POLL: Duration = Duration::from_millis(200);

/// How the adapter signs in to the storage account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlobCredentialKind {
    /// The managed identity of the Function app or container (production).
    ManagedIdentity,
    /// `az login` and the other developer tools' sign-in.
    DeveloperTools,
    /// A shared access signature, from the environment (Azurite, or an account that allows
    /// no Entra ID sign-in).
    Sas,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BlobSettings {
    /// The account's blob endpoint: `https://<account>.blob.core.windows.net`, or Azurite's
    /// `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: String,
    pub container: String,
    pub credential: BlobCredentialKind,
    /// The SAS token (query string, with or without `?`). From the environment only.
    #[serde(default)]
    pub sas: Option<SecretString>,
}

pub struct BlobFiles {
    container: BlobContainerClient,
}

impl BlobFiles {
    /// Connects to the container, creating it when missing.
    pub async fn connect(settings: &BlobSettings) -> Result<Self, FileError> {
        let mut url = Url::parse(settings.endpoint.trim_end_matches('/')).map_err(|e| {
            FileError::Backend(Cause::new(ConfigProblem(format!(
                "files.blob.endpoint {:?} is not a URL: {e}",
                settings.endpoint
            ))))
        })?;
        url.path_segments_mut()
            .map_err(|()| {
                FileError::Backend(Cause::new(ConfigProblem(format!(
                    "files.blob.endpoint {:?} cannot hold a container name",
                    settings.endpoint
                ))))
            })?
            .push(&settings.container);
        let credential: Option<Arc<dyn TokenCredential>> = match settings.credential {
            BlobCredentialKind::Sas => {
                let sas = settings.sas.as_ref().ok_or_else(|| {
                    FileError::Backend(Cause::new(ConfigProblem(
                        "files.blob.credential is `sas` but files.blob.sas is not set".into(),
                    )))
                })?;
                url.set_query(Some(sas.expose_secret().trim_start_matches('?')));
                None
            }
            BlobCredentialKind::ManagedIdentity => Some(
                azure_identity::ManagedIdentityCredential::new(None)
                    .map_err(|e| FileError::Backend(Cause::new(e)))?,
            ),
            BlobCredentialKind::DeveloperTools => Some(
                azure_identity::DeveloperToolsCredential::new(None)
                    .map_err(|e| FileError::Backend(Cause::new(e)))?,
            ),
        };
        let container = BlobContainerClient::new(url, credential, None).map_err(backend)?;
        let files = Self { container };
        files.create_container().await?;
        Ok(files)
    }

    async fn create_container(&self) -> Result<(), FileError> {
        match self.container.create(None).await {
            Ok(_) => Ok(()),
            Err(error) if error.http_status() == Some(StatusCode::Conflict) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }

    fn blob(&self, name: &str) -> Result<BlobClient, FileError> {
        check_name(name)?;
        Ok(self.container.blob_client(name))
    }

    /// Waits for a copy into `target` to finish; a failed or aborted copy is an error.
    async fn await_copy(&self, target: &BlobClient) -> Result<(), FileError> {
        loop {
            let properties = target.get_properties(None).await.map_err(backend)?;
            match properties.copy_status().map_err(backend)? {
                None | Some(CopyStatus::Success) => return Ok(()),
                Some(CopyStatus::Pending) => tokio::time::sleep(COPY_POLL).await,
                Some(status) => {
                    let description = properties
                        .copy_status_description()
                        .ok()
                        .flatten()
                        .unwrap_or_default();
                    return Err(FileError::Backend(Cause::new(ConfigProblem(format!(
                        "the copy ended {status:?}: {description}"
                    )))));
                }
            }
        }
    }
}

/// A setting or outcome that makes the store unusable, said in words.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigProblem(String);

fn backend(error: azure_core::Error) -> FileError {
    if error.http_status() == Some(StatusCode::InsufficientStorage) {
        return FileError::Full;
    }
    FileError::Backend(Cause::new(error))
}

fn is_not_found(error: &azure_core::Error) -> bool {
    error.http_status() == Some(StatusCode::NotFound)
}

fn not_found_or(name: &str) -> impl FnOnce(azure_core::Error) -> FileError + '_ {
    move |error| {
        if is_not_found(&error) {
            FileError::NotFound(name.to_owned())
        } else {
            backend(error)
        }
    }
}

/// Block ids must all have the same length within a blob; a random prefix per write keeps
/// two writers of one name from committing each other's blocks.
fn block_id(write: &uuid::Uuid, index: u32) -> Vec<u8> {
    let mut id = write.as_bytes().to_vec();
    id.extend_from_slice(&index.to_be_bytes());
    id
}

#[async_trait]
impl FileStore for BlobFiles {
    async fn put(&self, name: &str, mut content: ByteStream) -> Result<u64, FileError> {
        let blob = self.blob(name)?.block_blob_client();
        let write = uuid::Uuid::new_v4();
        let mut blocks = Vec::new();
        let mut pending = BytesMut::with_capacity(BLOCK_BYTES);
        let mut size = 0u64;
        let mut stage = |bytes: Bytes| {
            let id = block_id(&write, blocks.len() as u32);
            blocks.push(id.clone());
            let blob = &blob;
            async move {
                blob.stage_block(&id, bytes.len() as u64, bytes.into(), None)
                    .await
                    .map(|_| ())
                    .map_err(backend)
            }
        };
        loop {
            match content.next().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    size += chunk.len() as u64;
                    pending.extend_from_slice(&chunk);
                    while pending.len() >= BLOCK_BYTES {
                        stage(pending.split_to(BLOCK_BYTES).freeze()).await?;
                    }
                }
                None => {
                    if !pending.is_empty() {
                        stage(pending.split().freeze()).await?;
                    }
                    break;
                }
            }
        }
        let list = BlockLookupList {
            latest: Some(blocks),
            ..Default::default()
        };
        let list = RequestContent::try_from(list).map_err(backend)?;
        blob.commit_block_list(list, None).await.map_err(backend)?;
        Ok(size)
    }

    async fn read_from(&self, name: &str, offset: u64) -> Result<ByteStream, FileError> {
        let blob = self.blob(name)?;
        let info = self.info(name).await?;
        let Some(info) = info else {
            return Err(FileError::NotFound(name.to_owned()));
        };
        // A range that starts at the end is refused by the service (416): nothing is left.
        if offset >= info.size {
            return Ok(futures::stream::empty().boxed());
        }
        let options = BlobClientDownloadOptions {
            range: Some(HttpRange::from_offset(offset)),
            ..Default::default()
        };
        let download = blob
            .download(Some(options))
            .await
            .map_err(not_found_or(name))?;
        Ok(download.body.map_err(backend).boxed())
    }

    async fn info(&self, name: &str) -> Result<Option<FileInfo>, FileError> {
        let blob = self.blob(name)?;
        match blob.get_properties(None).await {
            Ok(properties) => Ok(Some(FileInfo {
                name: name.to_owned(),
                size: properties.content_length().map_err(backend)?.unwrap_or(0),
                modified: properties
                    .last_modified()
                    .map_err(backend)?
                    .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            })),
            Err(error) if is_not_found(&error) => Ok(None),
            Err(error) => Err(backend(error)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<FileInfo>, FileError> {
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            ..Default::default()
        };
        let mut pages = self
            .container
            .list_blobs(Some(options))
            .map_err(backend)?
            .into_pages();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(backend)?.into_model().map_err(backend)?;
            for item in page.blob_items {
                let Some(name) = item.name.clone() else {
                    continue;
                };
                if check_name(&name).is_err() {
                    continue;
                }
                let properties = item.properties.unwrap_or_default();
                found.push(FileInfo {
                    name,
                    size: properties.content_length.unwrap_or(0),
                    modified: properties
                        .last_modified
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                });
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), FileError> {
        let source = self.blob(from)?;
        let target = self.blob(to)?;
        // Within one account the copy is authorised by the request's own sign-in; with a
        // SAS the source URL carries it.
        target
            .start_copy_from_url(source.url().to_string(), None)
            .await
            .map_err(not_found_or(from))?;
        self.await_copy(&target).await?;
        self.delete(from).await
    }

    async fn delete(&self, name: &str) -> Result<(), FileError> {
        let blob = self.blob(name)?;
        match blob.delete(None).await {
            Ok(_) => Ok(()),
            Err(error) if is_not_found(&error) => Ok(()),
            Err(error) => Err(backend(error)),
        }
    }
}
