//! Imports: feeds accepted (uploaded, or dropped into the watched folder), turned into jobs,
//! and worked through in batches sent to the catalog, with a checkpoint after each batch so
//! that a restart resumes where the last one stopped.
//!
//! Container `imports`: one item per job, id = partition key = job id (jobs are few and
//! written by one instance at a time; listing them is a cross-partition query by time).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use common::clock::now_ms;
use common::files::{ByteStream, FileError, SharedFiles};
use common::store::{ETag, Query, QueryScope, SharedStore, StoreError};
use futures::TryStreamExt;
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::catalog_client::{CatalogCallError, CatalogClient};
use crate::domain::feed::{
    Checkpoint, FeedError, FeedFormat, FeedRows, Row, RowError, count_rows, feed_field,
};
use crate::domain::import::{ImportJob, ImportSource, RowOutcome};
use crate::measure::ImportMetrics;
use crate::settings::ImportSettings;

pub const IMPORTS: &str = "imports";
/// Where dropped feeds are picked up from.
pub const INCOMING: &str = "incoming/";
/// Where accepted feeds are kept while they are imported.
pub const UPLOADS: &str = "uploads/";

/// A batch sent to the catalog, not yet recorded.
struct InFlight {
    answer: tokio::task::JoinHandle<Result<Vec<RowOutcome>, CatalogCallError>>,
    checkpoint: Checkpoint,
    skus: HashSet<String>,
}

/// What recording a batch's answer led to.
enum Recorded {
    /// Saved with the job, now at this version.
    Saved(ETag),
    /// The import stops here: `true` when it is over (ended, or another instance holds
    /// it), `false` when it waits for the catalog.
    Over(bool),
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("import {0} was not found")]
    NotFound(String),
    #[error(transparent)]
    Files(#[from] FileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn to_json(job: &ImportJob) -> Result<Value, ImportError> {
    serde_json::to_value(job).map_err(|e| ImportError::Store(StoreError::Serialization(e.into())))
}

/// A page of jobs, newest first.
pub struct JobPage {
    pub jobs: Vec<ImportJob>,
    pub continuation: Option<String>,
}

#[derive(Clone)]
pub struct Imports {
    store: SharedStore,
    files: SharedFiles,
    catalog: CatalogClient,
    settings: ImportSettings,
    /// This instance, as holder of job leases.
    instance: String,
    /// Wakes the runner when a job is queued.
    queued: Arc<Notify>,
    metrics: ImportMetrics,
}

impl Imports {
    pub fn new(
        store: SharedStore,
        files: SharedFiles,
        catalog: CatalogClient,
        settings: ImportSettings,
        instance: String,
        metrics: ImportMetrics,
    ) -> Self {
        Self {
            metrics,
            store,
            files,
            catalog,
            settings,
            instance,
            queued: Arc::new(Notify::new()),
        }
    }

    /// Keeps an uploaded feed and queues its import.
    pub async fn accept_upload(
        &self,
        file_name: String,
        format: FeedFormat,
        content: ByteStream,
    ) -> Result<ImportJob, ImportError> {
        let id = uuid::Uuid::now_v7().to_string();
        let file = format!("{UPLOADS}{id}");
        let size = self.files.put(&file, content).await?;
        self.queue(ImportJob::queued(
            id,
            ImportSource::Upload,
            file_name,
            file,
            Some(format),
            size,
            now_ms(),
        ))
        .await
    }

    async fn queue(&self, job: ImportJob) -> Result<ImportJob, ImportError> {
        self.store
            .create(IMPORTS, &job.id, &job.id, to_json(&job)?)
            .await?;
        tracing::info!(import = %job.id, file = %job.file_name, "import queued");
        self.queued.notify_one();
        Ok(job)
    }

    pub async fn job(&self, id: &str) -> Result<ImportJob, ImportError> {
        Ok(self.read(id).await?.0)
    }

    async fn read(&self, id: &str) -> Result<(ImportJob, ETag), ImportError> {
        let document = self
            .store
            .read(IMPORTS, id, id)
            .await?
            .ok_or_else(|| ImportError::NotFound(id.to_owned()))?;
        Ok(document.into_model()?)
    }

    pub async fn list(
        &self,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<JobPage, ImportError> {
        let query = Query::new(QueryScope::AllPartitions, limit)
            .order_by("createdAt", true)
            .continue_from(continuation);
        let page = self.store.query(IMPORTS, &query).await?;
        let jobs = page
            .items
            .into_iter()
            .map(|document| document.into_model().map(|(job, _)| job))
            .collect::<Result<Vec<ImportJob>, _>>()?;
        Ok(JobPage {
            jobs,
            continuation: page.continuation,
        })
    }

    /// Queues the feeds dropped into the watched folder that have stopped changing.
    pub async fn take_dropped_files(&self) -> Result<usize, ImportError> {
        let settled_before = now_ms() - i64::try_from(self.settings.settle_ms).unwrap_or(0);
        let mut taken = 0;
        for file in self.files.list(INCOMING).await? {
            let modified_ms =
                i64::try_from(file.modified.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            if modified_ms > settled_before {
                continue;
            }
            let id = uuid::Uuid::now_v7().to_string();
            let stored = format!("{UPLOADS}{id}");
            match self.files.rename(&file.name, &stored).await {
                Ok(()) => {}
                // Another instance took it first.
                Err(FileError::NotFound(_)) => continue,
                Err(error) => return Err(error.into()),
            }
            let file_name = file
                .name
                .strip_prefix(INCOMING)
                .unwrap_or(&file.name)
                .to_owned();
            let format = FeedFormat::from_file_name(&file_name);
            let mut job = ImportJob::queued(
                id,
                ImportSource::Folder,
                file_name,
                stored,
                format,
                file.size,
                now_ms(),
            );
            if format.is_none() {
                job.fail(
                    "not a feed: the file name must end in .csv, .jsonl or .ndjson".into(),
                    now_ms(),
                );
            }
            let finished = job.state.is_finished();
            let job = self.queue(job).await?;
            if finished {
                self.files.delete(&job.file).await?;
            }
            taken += 1;
        }
        Ok(taken)
    }

    /// Works on queued and unfinished jobs, and looks at the watched folder, until `stop`.
    /// Jobs are looked for when one is queued here, after a job ends, and once a lease
    /// period otherwise (to take over what a stopped instance left); idle, it only reads the
    /// watched folder.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let poll = Duration::from_millis(self.settings.poll_interval_ms);
        let lease = Duration::from_secs(self.settings.lease_seconds);
        let mut look_for_jobs = true;
        let mut last_look = tokio::time::Instant::now();
        loop {
            if *stop.borrow() {
                return;
            }
            match self.take_dropped_files().await {
                Ok(0) => {}
                Ok(_) => look_for_jobs = true,
                Err(error) => tracing::warn!(%error, "the watched folder could not be read"),
            }
            if look_for_jobs || last_look.elapsed() >= lease / 2 {
                look_for_jobs = false;
                last_look = tokio::time::Instant::now();
                match self.next_claimable().await {
                    Ok(Some(id)) => match self.work_on(&id, stop.clone()).await {
                        // Over (or someone else's now): the next one may be waiting.
                        Ok(true) => look_for_jobs = true,
                        // Waiting for the catalog: tried again after a pause.
                        Ok(false) => {}
                        Err(error) => {
                            tracing::warn!(import = %id, %error, "import interrupted; it resumes from its checkpoint");
                        }
                    },
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "imports could not be listed"),
                }
                if look_for_jobs {
                    continue;
                }
            }
            tokio::select! {
                _ = stop.changed() => {}
                () = self.queued.notified() => look_for_jobs = true,
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// One pass, as a custom handler's timer or blob trigger runs it: takes the dropped
    /// files, then works on every import this instance may until none is left (or the
    /// catalog asks to wait).
    pub async fn run_once(&self) -> Result<(), ImportError> {
        self.take_dropped_files().await?;
        // Never stopped from outside: the invocation ends when the work does.
        let (_keep, stop) = watch::channel(false);
        while let Some(id) = self.next_claimable().await? {
            if !self.work_on(&id, stop.clone()).await? {
                break;
            }
        }
        Ok(())
    }

    /// The oldest job this instance may work on.
    async fn next_claimable(&self) -> Result<Option<String>, ImportError> {
        let now = now_ms();
        for state in ["running", "queued"] {
            let mut continuation = None;
            loop {
                let query = Query::new(QueryScope::AllPartitions, 50)
                    .filter("state", state)
                    .order_by("createdAt", false)
                    .continue_from(continuation);
                let page = self.store.query(IMPORTS, &query).await?;
                for document in page.items {
                    let (job, _): (ImportJob, ETag) = document.into_model()?;
                    if job.claimable_by(&self.instance, now) {
                        return Ok(Some(job.id));
                    }
                }
                match page.continuation {
                    Some(next) => continuation = Some(next),
                    None => break,
                }
            }
        }
        Ok(None)
    }

    /// Writes `job` over the version `etag`, taking the lease again; `None` when another
    /// instance changed it meanwhile (it holds the job now).
    async fn save(&self, job: &mut ImportJob, etag: &ETag) -> Result<Option<ETag>, ImportError> {
        if !job.state.is_finished() {
            let now = now_ms();
            let lease_ms = i64::try_from(self.settings.lease_seconds * 1000).unwrap_or(i64::MAX);
            job.lease_to(&self.instance, now.saturating_add(lease_ms), now);
        }
        match self
            .store
            .replace(IMPORTS, &job.id, &job.id, to_json(job)?, Some(etag))
            .await
        {
            Ok(document) => Ok(Some(document.etag)),
            Err(StoreError::PreconditionFailed) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Claims the job and imports it from its checkpoint to the end (or until `stop`, or
    /// until the catalog is unavailable: the job then waits, held, and is tried again).
    #[tracing::instrument(name = "import.run", skip(self, stop), fields(import = %id))]
    async fn work_on(&self, id: &str, stop: watch::Receiver<bool>) -> Result<bool, ImportError> {
        let (mut job, etag) = self.read(id).await?;
        if !job.claimable_by(&self.instance, now_ms()) {
            return Ok(true);
        }
        let Some(mut etag) = self.save(&mut job, &etag).await? else {
            return Ok(true);
        };
        let Some(format) = job.format else {
            return Ok(true);
        };
        if job.total.is_none() {
            match self.count(&job, format).await {
                Ok(total) => job.total = Some(total),
                Err(FeedError::NotAFeed(reason)) => {
                    job.fail(reason, now_ms());
                    self.finish(&mut job, &etag).await?;
                    return Ok(true);
                }
                Err(FeedError::Io(error)) => {
                    return Err(ImportError::Files(FileError::Source(error.to_string())));
                }
            }
            etag = match self.save(&mut job, &etag).await? {
                Some(etag) => etag,
                None => return Ok(true),
            };
        }
        let mut batches = self.read_batches(&job, format).await?;
        // Several batches in flight (`imports.batches_in_flight`): the catalog works on some
        // while the answers to others are recorded. Answers are taken in order, so the
        // checkpoint only ever moves past batches that were applied; a batch that shares a
        // SKU with one in flight waits for it, so that the later row still wins.
        let mut in_flight: VecDeque<InFlight> =
            VecDeque::with_capacity(self.settings.batches_in_flight);
        let mut exhausted = false;
        loop {
            if *stop.borrow() {
                return Ok(false);
            }
            if !exhausted && in_flight.len() < self.settings.batches_in_flight {
                match batches.recv().await {
                    Some(Ok((rows, checkpoint))) => {
                        let skus: HashSet<String> =
                            rows.iter().filter_map(|row| row.sku.clone()).collect();
                        // Sent once those before it are answered.
                        if in_flight.iter().any(|batch| !batch.skus.is_disjoint(&skus))
                            && let Some(over) =
                                self.record_all(&mut job, &mut etag, &mut in_flight).await?
                        {
                            return Ok(over);
                        }
                        let imports = self.clone();
                        in_flight.push_back(InFlight {
                            answer: tokio::spawn(async move { imports.apply(rows).await }),
                            checkpoint,
                            skus,
                        });
                        continue;
                    }
                    Some(Err(error)) => {
                        // What was sent is recorded first.
                        if let Some(over) =
                            self.record_all(&mut job, &mut etag, &mut in_flight).await?
                        {
                            return Ok(over);
                        }
                        match error {
                            FeedError::NotAFeed(reason) => {
                                job.fail(reason, now_ms());
                                self.finish(&mut job, &etag).await?;
                                return Ok(true);
                            }
                            FeedError::Io(error) => {
                                return Err(ImportError::Files(FileError::Source(
                                    error.to_string(),
                                )));
                            }
                        }
                    }
                    None => exhausted = true,
                }
            }
            let Some(batch) = in_flight.pop_front() else {
                break;
            };
            match self.record(&mut job, &etag, batch).await? {
                Recorded::Saved(saved) => etag = saved,
                Recorded::Over(over) => return Ok(over),
            }
        }
        job.complete(now_ms());
        self.finish(&mut job, &etag).await?;
        Ok(true)
    }

    /// Takes the catalog's answer to a batch: its rows' outcomes and its checkpoint are
    /// saved with the job.
    async fn record(
        &self,
        job: &mut ImportJob,
        etag: &ETag,
        batch: InFlight,
    ) -> Result<Recorded, ImportError> {
        let answer = batch.answer.await.unwrap_or_else(|error| {
            Err(CatalogCallError::Unavailable(format!(
                "the batch was lost: {error}"
            )))
        });
        match answer {
            Ok(outcomes) => outcomes.into_iter().for_each(|o| job.record(o)),
            Err(CatalogCallError::Unavailable(reason)) => {
                tracing::warn!(%reason, "the catalog is unavailable; the import waits");
                return Ok(Recorded::Over(false));
            }
            Err(CatalogCallError::Refused(reason)) => {
                job.fail(format!("the catalog refused a batch: {reason}"), now_ms());
                self.finish(job, etag).await?;
                return Ok(Recorded::Over(true));
            }
        }
        job.checkpoint = Some(batch.checkpoint);
        Ok(match self.save(job, etag).await? {
            Some(etag) => Recorded::Saved(etag),
            None => Recorded::Over(true),
        })
    }

    /// Records every batch in flight, in order; `Some` when the import stops (see
    /// [`Recorded::Over`]).
    async fn record_all(
        &self,
        job: &mut ImportJob,
        etag: &mut ETag,
        in_flight: &mut VecDeque<InFlight>,
    ) -> Result<Option<bool>, ImportError> {
        while let Some(batch) = in_flight.pop_front() {
            match self.record(job, etag, batch).await? {
                Recorded::Saved(saved) => *etag = saved,
                Recorded::Over(over) => return Ok(Some(over)),
            }
        }
        Ok(None)
    }

    async fn finish(&self, job: &mut ImportJob, etag: &ETag) -> Result<(), ImportError> {
        if self.save(job, etag).await?.is_some() {
            tracing::info!(
                state = job.state.as_str(),
                processed = job.counts.processed,
                created = job.counts.created,
                updated = job.counts.updated,
                unchanged = job.counts.unchanged,
                failed = job.counts.failed,
                "import finished"
            );
            if let Some(reason) = &job.failure {
                // Alerts look for this line (docs/operations.md#runbook-import-failed).
                tracing::warn!(import = %job.id, %reason, "import failed");
            }
            self.metrics.job_finished(job.state.as_str());
            // The feed is no longer needed once its import is over.
            self.files.delete(&job.file).await?;
        }
        Ok(())
    }

    /// Sends the valid rows of a batch to the catalog; every row gets its outcome.
    async fn apply(&self, rows: Vec<Row>) -> Result<Vec<RowOutcome>, CatalogCallError> {
        let items: Vec<Value> = rows
            .iter()
            .filter_map(|row| row.item.as_ref().ok().cloned())
            .collect();
        let mut answers = if items.is_empty() {
            Vec::new()
        } else {
            self.catalog.upsert(&items).await?
        }
        .into_iter();
        let mut outcomes = Vec::with_capacity(rows.len());
        for row in rows {
            let outcome = match row.item {
                Err(error) => RowOutcome::Failed(error),
                Ok(_) => match answers.next() {
                    Some(answer) => match answer.status.as_str() {
                        "created" => RowOutcome::Created,
                        "updated" => RowOutcome::Updated,
                        "unchanged" => RowOutcome::Unchanged,
                        _ => {
                            let first = answer.errors.first();
                            RowOutcome::Failed(RowError {
                                line: row.line,
                                field: first
                                    .map(|e| feed_field(&e.field).to_owned())
                                    .unwrap_or_default(),
                                reason: first.map_or_else(
                                    || "was refused by the catalog".to_owned(),
                                    |e| e.message.clone(),
                                ),
                            })
                        }
                    },
                    None => {
                        return Err(CatalogCallError::Refused(
                            "answered fewer items than were sent".into(),
                        ));
                    }
                },
            };
            outcomes.push(outcome);
        }
        self.metrics.rows(&outcomes);
        Ok(outcomes)
    }

    /// A blocking reader of the job's feed from `offset`.
    async fn reader(
        &self,
        file: &str,
        offset: u64,
    ) -> Result<impl std::io::Read + Send + 'static, ImportError> {
        let stream = self
            .files
            .read_from(file, offset)
            .await?
            .map_err(std::io::Error::other);
        Ok(SyncIoBridge::new(StreamReader::new(stream)))
    }

    async fn count(&self, job: &ImportJob, format: FeedFormat) -> Result<u64, FeedError> {
        let reader = self
            .reader(&job.file, 0)
            .await
            .map_err(|e| FeedError::Io(std::io::Error::other(e)))?;
        let columns = self.settings.columns.clone();
        tokio::task::spawn_blocking(move || count_rows(format, reader, &columns))
            .await
            .map_err(|e| FeedError::Io(std::io::Error::other(e)))?
    }

    /// The job's rows from its checkpoint, in batches with the checkpoint after each, read on
    /// a blocking thread a batch or two ahead of the catalog calls.
    async fn read_batches(
        &self,
        job: &ImportJob,
        format: FeedFormat,
    ) -> Result<mpsc::Receiver<Result<(Vec<Row>, Checkpoint), FeedError>>, ImportError> {
        let checkpoint = job.checkpoint.clone();
        let offset = checkpoint.as_ref().map_or(0, |c| c.offset);
        let reader = self.reader(&job.file, offset).await?;
        let columns: BTreeMap<String, String> = self.settings.columns.clone();
        let batch_size = self.settings.batch_size;
        let (sender, receiver) = mpsc::channel(2);
        tokio::task::spawn_blocking(move || {
            let mut rows = match FeedRows::start(format, reader, &columns, checkpoint.as_ref()) {
                Ok(rows) => rows,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            };
            let mut batch = Vec::with_capacity(batch_size);
            loop {
                match rows.next_row() {
                    Some(Ok(row)) => {
                        batch.push(row);
                        if batch.len() < batch_size {
                            continue;
                        }
                    }
                    Some(Err(error)) => {
                        let _ = sender.blocking_send(Err(error));
                        return;
                    }
                    None if batch.is_empty() => return,
                    None => {}
                }
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_size));
                if sender.blocking_send(Ok((full, rows.checkpoint()))).is_err() {
                    return;
                }
            }
        });
        Ok(receiver)
    }
}
