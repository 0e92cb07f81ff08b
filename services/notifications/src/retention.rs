//! How long finished work is kept: delivered and failed messages and the records of sent
//! mail are deleted `webhooks.retention_days` after their last change (at start, then every
//! hour). Until then a repeated event finds its message or mail and sends nothing; after it, an
//! event that comes again is sent again.

use std::time::Duration;

use common::clock::now_ms;
use common::store::{Comparison, Query, QueryScope, SharedStore, StoreError};
use tokio::sync::watch;

use crate::deliveries::{MESSAGES, kind_of};
use crate::domain::message::MessageStatus;
use crate::mail::{EMAILS, SENT};

const DAY_MS: i64 = 24 * 3600 * 1000;
const EVERY: Duration = Duration::from_secs(3600);

/// Deletes, in `container`, the documents of `kind` whose `field` (Unix ms) is before
/// `before`; returns how many.
async fn purge_kind(
    store: &SharedStore,
    container: &str,
    kind: &str,
    field: &str,
    before: i64,
) -> Result<usize, StoreError> {
    let mut purged = 0;
    loop {
        let query = Query::new(QueryScope::AllPartitions, 100)
            .filter("kind", kind)
            .compare(field, Comparison::Lt, before);
        let page = store.query(container, &query).await?;
        if page.items.is_empty() {
            return Ok(purged);
        }
        for document in page.items {
            match store
                .delete(
                    container,
                    &document.partition_key,
                    &document.id,
                    Some(&document.etag),
                )
                .await
            {
                Ok(()) => purged += 1,
                // Changed meanwhile (retried by hand, say): kept; gone: someone else purged it.
                Err(StoreError::PreconditionFailed | StoreError::NotFound) => {}
                Err(other) => return Err(other),
            }
        }
    }
}

/// Deletes what finished more than `retention_days` before `now`; returns how many.
pub async fn purge_expired(
    store: &SharedStore,
    now: i64,
    retention_days: u64,
) -> Result<usize, StoreError> {
    let before = now.saturating_sub(
        i64::try_from(retention_days)
            .unwrap_or(i64::MAX / DAY_MS)
            .saturating_mul(DAY_MS),
    );
    let mut purged = 0;
    for status in [MessageStatus::Delivered, MessageStatus::Failed] {
        purged += purge_kind(store, MESSAGES, kind_of(status), "updatedAt", before).await?;
    }
    purged += purge_kind(store, EMAILS, SENT, "createdAt", before).await?;
    Ok(purged)
}

/// Purges at start, then every hour, until `stop`.
/// The first purge of a process, after its start.
const FIRST_AFTER: Duration = Duration::from_secs(60);

pub async fn run(store: SharedStore, retention_days: u64, mut stop: watch::Receiver<bool>) {
    // Nothing is due at start: the first purge waits a minute, so that a start (or a
    // scale-out) serves first.
    tokio::select! {
        _ = stop.changed() => return,
        () = tokio::time::sleep(FIRST_AFTER) => {}
    }
    loop {
        match purge_expired(&store, now_ms(), retention_days).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "finished messages and mail records purged"),
            Err(error) => tracing::warn!(%error, "finished messages could not be purged"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// The purge, as a custom handler's timer runs it.
pub struct RetentionTick {
    pub store: SharedStore,
    pub retention_days: u64,
}

#[async_trait::async_trait]
impl common::runtime::functions::Tick for RetentionTick {
    async fn tick(&self) -> Result<(), String> {
        purge_expired(&self.store, now_ms(), self.retention_days)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}
