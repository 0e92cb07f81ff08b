//! `/v1/imports`: upload a feed, follow its import, list imports.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use common::auth::Principal;
use common::error::Problem;
use common::files::FileError;
use common::{ApiError, ErrorCode, FieldError};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ADMIN_SCOPE;
use crate::domain::feed::{FeedFormat, RowError};
use crate::domain::import::ImportJob;
use crate::imports::Imports;

/// The limit on an upload, as app data.
#[derive(Clone, Copy)]
pub struct MaxUpload(pub u64);

/// A bad row, by line (1-based; a CSV header is line 1) and field.
#[derive(Serialize, ToSchema)]
pub struct RowErrorView {
    line: u64,
    field: String,
    reason: String,
}

/// An import job.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    id: String,
    /// `queued`, `running`, `completed` or `failed`.
    state: &'static str,
    /// `upload` or `folder`.
    source: &'static str,
    file_name: String,
    /// `csv` or `jsonlines`.
    #[serde(skip_serializing_if = "Option::is_none")]
    format: Option<&'static str>,
    /// Bytes.
    size: u64,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<String>,
    /// Rows in the feed, once counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    processed: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    failed: u64,
    /// The first 1,000 bad rows; `failed` is the exact count.
    errors: Vec<RowErrorView>,
    /// Why a failed import stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<String>,
}

fn timestamp(ms: i64) -> String {
    common::clock::rfc3339(ms).unwrap_or_default()
}

fn view(job: &ImportJob) -> ImportView {
    ImportView {
        id: job.id.clone(),
        state: job.state.as_str(),
        source: match job.source {
            crate::domain::import::ImportSource::Upload => "upload",
            crate::domain::import::ImportSource::Folder => "folder",
        },
        file_name: job.file_name.clone(),
        format: job.format.map(|format| match format {
            FeedFormat::Csv => "csv",
            FeedFormat::JsonLines => "jsonlines",
        }),
        size: job.size,
        created_at: timestamp(job.created_at),
        started_at: job.started_at.map(timestamp),
        finished_at: job.finished_at.map(timestamp),
        total: job.total,
        processed: job.counts.processed,
        created: job.counts.created,
        updated: job.counts.updated,
        unchanged: job.counts.unchanged,
        failed: job.counts.failed,
        errors: job
            .errors
            .iter()
            .map(
                |RowError {
                     line,
                     field,
                     reason,
                 }| RowErrorView {
                    line: *line,
                    field: field.clone(),
                    reason: reason.clone(),
                },
            )
            .collect(),
        failure: job.failure.clone(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// The feed's name, as the import shows it (default `upload`).
    #[param(min_length = 1, max_length = 255)]
    name: Option<String>,
}

/// Upload a feed: the body is the file (`text/csv` with a header row, or
/// `application/x-ndjson`), streamed to storage; its import is queued.
#[utoipa::path(post, path = "/v1/imports", tag = "imports", params(UploadParams),
    request_body(content((String = "text/csv"), (String = "application/x-ndjson")),
        description = "The feed file"),
    responses((status = 202, description = "Queued; `Location` names the import", body = ImportView),
        (status = 413, body = Problem), (status = 415, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn upload(
    req: HttpRequest,
    principal: Principal,
    imports: web::Data<Imports>,
    limit: web::Data<MaxUpload>,
    params: web::Query<UploadParams>,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let format = FeedFormat::from_content_type(content_type).ok_or_else(|| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the feed as text/csv (with a header row) or application/x-ndjson",
        )
    })?;
    let name = params.into_inner().name.unwrap_or_else(|| "upload".into());
    if name.trim().is_empty() || name.chars().count() > 255 {
        return Err(ApiError::validation(vec![FieldError::new(
            "name",
            "must be 1 to 255 characters",
        )]));
    }
    // The request body is bound to this worker thread; the file store takes a stream it
    // may move, fed from here through a short queue.
    let limit = limit.0;
    let (sender, receiver) = tokio::sync::mpsc::channel::<Result<Bytes, FileError>>(8);
    let pump = async move {
        let mut body = body;
        let mut received = 0u64;
        while let Some(chunk) = body.next().await {
            let item = match chunk {
                Ok(bytes) => {
                    received += bytes.len() as u64;
                    if received > limit {
                        Err(FileError::TooLarge { limit })
                    } else {
                        Ok(bytes)
                    }
                }
                Err(actix_web::error::PayloadError::Io(error))
                    if error.kind() == std::io::ErrorKind::TimedOut =>
                {
                    Err(FileError::SourceTimedOut)
                }
                Err(error) => Err(FileError::Source(error.to_string())),
            };
            let failed = item.is_err();
            if sender.send(item).await.is_err() || failed {
                break;
            }
        }
    };
    let content = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed();
    let ((), job) = futures::join!(pump, imports.accept_upload(name, format, content));
    let job = job?;
    Ok(HttpResponse::Accepted()
        .insert_header((header::LOCATION, format!("/v1/imports/{}", job.id)))
        .json(view(&job)))
}

/// An import and how far it got.
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "imports",
    responses((status = 200, body = ImportView), (status = 404, body = Problem)),
    security(("bearer" = ["sync.admin"])))]
pub async fn get(
    principal: Principal,
    imports: web::Data<Imports>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let id = id.into_inner();
    if uuid::Uuid::parse_str(&id).is_err() {
        return Err(ApiError::not_found(format!("import {id}")));
    }
    let job = imports.job(&id).await?;
    Ok(HttpResponse::Ok().json(view(&job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    #[param(min_length = 1)]
    continuation: Option<String>,
}

/// A page of imports, newest first; `continuation` is present while more may follow.
#[derive(Serialize, ToSchema)]
pub struct ImportPage {
    items: Vec<ImportView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

/// Imports, newest first.
#[utoipa::path(get, path = "/v1/imports", tag = "imports", params(ListParams),
    responses((status = 200, body = ImportPage)),
    security(("bearer" = ["sync.admin"])))]
pub async fn list(
    principal: Principal,
    imports: web::Data<Imports>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let ListParams {
        limit,
        continuation,
    } = params.into_inner();
    let limit = common::validation::page_limit(limit)?;
    let page = imports.list(limit, continuation).await?;
    Ok(HttpResponse::Ok().json(ImportPage {
        items: page.jobs.iter().map(view).collect(),
        continuation: page.continuation,
    }))
}
