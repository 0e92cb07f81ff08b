//! An import job: a feed file on its way into the catalog, with its counts, the first
//! errors by line, and the checkpoint it resumes from.

use serde::{Deserialize, Serialize};

use super::feed::{Checkpoint, FeedFormat, RowError};

/// Row errors kept on a job; the `failed` count stays exact beyond them.
pub const MAX_ERRORS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportState {
    Queued,
    Running,
    Completed,
    Failed,
}

impl ImportState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// How a feed reached sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImportSource {
    Upload,
    Folder,
}

/// Rows by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub processed: u64,
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub failed: u64,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowOutcome {
    Created,
    Updated,
    Unchanged,
    Failed(RowError),
}

/// The instance working on a job, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    /// Unix milliseconds.
    pub until: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportJob {
    pub id: String,
    pub state: ImportState,
    pub source: ImportSource,
    /// The name the feed came with (upload's `name`, or the dropped file's).
    pub file_name: String,
    /// Where the feed is kept while it is imported.
    pub file: String,
    /// `None` for a dropped file that is no feed by its name (the job failed at once).
    pub format: Option<FeedFormat>,
    pub size: u64,
    /// Unix milliseconds; also the list order.
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// Rows in the feed, once counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    pub counts: Counts,
    pub errors: Vec<RowError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
}

impl ImportJob {
    pub fn queued(
        id: String,
        source: ImportSource,
        file_name: String,
        file: String,
        format: Option<FeedFormat>,
        size: u64,
        now_ms: i64,
    ) -> Self {
        Self {
            id,
            state: ImportState::Queued,
            source,
            file_name,
            file,
            format,
            size,
            created_at: now_ms,
            started_at: None,
            finished_at: None,
            total: None,
            counts: Counts::default(),
            errors: Vec::new(),
            failure: None,
            checkpoint: None,
            lease: None,
        }
    }

    /// True when `owner` may work on the job now: it is unfinished and nobody else holds
    /// it (a lease that ran out is free; its holder stopped or died).
    pub fn claimable_by(&self, owner: &str, now_ms: i64) -> bool {
        !self.state.is_finished()
            && self
                .lease
                .as_ref()
                .is_none_or(|lease| lease.owner == owner || lease.until <= now_ms)
    }

    /// Takes (or renews) the job for `owner` until `until_ms`.
    pub fn lease_to(&mut self, owner: &str, until_ms: i64, now_ms: i64) {
        if self.state == ImportState::Queued {
            self.state = ImportState::Running;
            self.started_at = Some(now_ms);
        }
        self.lease = Some(Lease {
            owner: owner.to_owned(),
            until: until_ms,
        });
    }

    pub fn record(&mut self, outcome: RowOutcome) {
        self.counts.processed += 1;
        match outcome {
            RowOutcome::Created => self.counts.created += 1,
            RowOutcome::Updated => self.counts.updated += 1,
            RowOutcome::Unchanged => self.counts.unchanged += 1,
            RowOutcome::Failed(error) => {
                self.counts.failed += 1;
                if self.errors.len() < MAX_ERRORS {
                    self.errors.push(error);
                }
            }
        }
    }

    pub fn complete(&mut self, now_ms: i64) {
        self.state = ImportState::Completed;
        self.finished_at = Some(now_ms);
        self.lease = None;
        if self.total.is_none() {
            self.total = Some(self.counts.processed);
        }
    }

    pub fn fail(&mut self, reason: String, now_ms: i64) {
        self.state = ImportState::Failed;
        self.failure = Some(reason);
        self.finished_at = Some(now_ms);
        self.lease = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> ImportJob {
        ImportJob::queued(
            "j".into(),
            ImportSource::Upload,
            "feed.csv".into(),
            "uploads/j".into(),
            Some(FeedFormat::Csv),
            10,
            1_000,
        )
    }

    #[test]
    fn errors_stop_at_the_limit_and_the_count_stays_exact() {
        let mut job = job();
        for line in 0..1_500 {
            job.record(RowOutcome::Failed(RowError {
                line,
                field: "sku".into(),
                reason: "is required".into(),
            }));
        }
        job.record(RowOutcome::Created);
        assert_eq!(job.errors.len(), MAX_ERRORS);
        assert_eq!(job.counts.failed, 1_500);
        assert_eq!(job.counts.processed, 1_501);
    }

    #[test]
    fn a_job_is_held_by_one_instance_until_its_lease_runs_out() {
        let mut job = job();
        assert!(job.claimable_by("a", 1_000));
        job.lease_to("a", 5_000, 1_000);
        assert_eq!(job.state, ImportState::Running);
        assert!(job.claimable_by("a", 2_000));
        assert!(!job.claimable_by("b", 2_000));
        assert!(job.claimable_by("b", 5_000));
        job.complete(6_000);
        assert!(!job.claimable_by("a", 7_000));
        assert_eq!(job.total, Some(0));
    }
}
