//! The transactional outbox: events are written as documents in the same atomic batch as
//! the state change that causes them; a relay following the container's change feed
//! publishes them and then deletes them. A crash between the two publishes again, which
//! duplicate detection and idempotent handlers absorb. An entry that can never be published
//! (unreadable, too large, refused) is parked in place as `outbox-parked` with the reason,
//! and the entries behind it go on.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use super::{BusError, CloudEvent, Message, SharedBus};
use crate::runtime::feed::{FeedError, FeedHandler, FeedSignal};
use crate::store::{BatchOp, Document, SharedStore, StoreError};

pub const KIND_FIELD: &str = "kind";
pub const OUTBOX_KIND: &str = "outbox";
pub const PARKED_KIND: &str = "outbox-parked";
pub const PROCESSED_KIND: &str = "processed";
/// Deletes of published entries in flight at once: enough to share the embedded store's
/// commits, few enough not to burst a Cosmos DB partition's request units.
const DELETES_AT_ONCE: usize = 32;
/// An event relayed this long after it happened is reported as late.
const LATE: time::Duration = time::Duration::minutes(1);

/// The change-feed reader name of the relay (its lease is `<container>.outbox-relay`).
pub const RELAY_READER: &str = "outbox-relay";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub kind: String,
    pub topic: String,
    pub event: CloudEvent,
}

/// The batch operation that puts `event` in the outbox.
pub fn outbox_op(topic: &str, event: &CloudEvent) -> BatchOp {
    BatchOp::Create {
        id: format!("outbox-{}", event.id),
        body: json!({KIND_FIELD: OUTBOX_KIND, "topic": topic, "event": event}),
    }
}

/// The id of the record that says an event was handled.
pub fn processed_id(event_id: &str) -> String {
    format!("processed-{event_id}")
}

/// The batch operation that records `event_id` as handled for `retention_seconds`; the
/// batch fails with [`StoreError::Conflict`] when it was handled already.
pub fn processed_op(event_id: &str, retention_seconds: u32) -> BatchOp {
    BatchOp::CreateExpiring {
        id: processed_id(event_id),
        body: json!({KIND_FIELD: PROCESSED_KIND, "eventId": event_id}),
        ttl_seconds: retention_seconds,
    }
}

/// Wakes the relay right after a commit, so that events do not wait for the next poll.
pub type OutboxSignal = FeedSignal;

/// Publishes the outbox entries among a container's changes.
pub struct OutboxRelay {
    pub store: SharedStore,
    pub bus: SharedBus,
    pub container: &'static str,
}

impl OutboxRelay {
    pub fn new(store: SharedStore, bus: SharedBus, container: &'static str) -> Arc<Self> {
        Arc::new(Self {
            store,
            bus,
            container,
        })
    }

    async fn park(&self, document: &Document, reason: &str) -> Result<(), FeedError> {
        tracing::error!(id = %document.id, container = self.container, %reason, "outbox entry parked: it cannot be published");
        let mut body = document.body.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.insert(KIND_FIELD.to_owned(), json!(PARKED_KIND));
            fields.insert("parkedReason".to_owned(), json!(reason));
        } else {
            body = json!({KIND_FIELD: PARKED_KIND, "parkedReason": reason, "original": body});
        }
        match self
            .store
            .replace(
                self.container,
                &document.partition_key,
                &document.id,
                body,
                Some(&document.etag),
            )
            .await
        {
            // Gone or changed since the feed showed it: someone else dealt with it.
            Ok(_) | Err(StoreError::NotFound | StoreError::PreconditionFailed) => Ok(()),
            Err(other) => Err(FeedError::Transient(other.to_string())),
        }
    }

    /// The entry a change holds, or `None` once an unreadable one is parked.
    async fn entry(&self, document: &Document) -> Result<Option<OutboxEntry>, FeedError> {
        match serde_json::from_value::<OutboxEntry>(document.body.clone()) {
            Ok(entry) => {
                let waited = OffsetDateTime::now_utc() - entry.event.time;
                if waited > LATE {
                    // Alerts look for this line (docs/operations.md#runbook-outbox-or-view-lag).
                    tracing::warn!(
                        container = self.container,
                        event = %entry.event.id,
                        lag_seconds = waited.whole_seconds(),
                        "outbox lag: an event is relayed more than a minute after it happened"
                    );
                }
                Ok(Some(entry))
            }
            Err(error) => {
                self.park(document, &format!("unreadable entry: {error}"))
                    .await?;
                Ok(None)
            }
        }
    }

    /// Publishes a run of entries for one topic in one call, in order; parks those the bus
    /// refuses. Returns the entries published, to delete.
    async fn publish_run<'a>(
        &self,
        topic: &str,
        run: Vec<(&'a Document, OutboxEntry)>,
    ) -> Result<Vec<&'a Document>, FeedError> {
        let (documents, messages): (Vec<&Document>, Vec<Message>) = run
            .into_iter()
            .map(|(document, entry)| {
                let message =
                    Message::new(entry.event).with_correlation_id(document.partition_key.clone());
                (document, message)
            })
            .unzip();
        let outcomes = self
            .bus
            .publish_many(topic, messages)
            .await
            .map_err(|error| FeedError::Transient(error.to_string()))?;
        let mut published = Vec::with_capacity(documents.len());
        for (document, outcome) in documents.into_iter().zip(outcomes) {
            match outcome {
                Ok(()) => published.push(document),
                Err(BusError::Rejected(reason)) => {
                    self.park(document, &reason.to_string()).await?;
                }
                Err(other) => return Err(FeedError::Transient(other.to_string())),
            }
        }
        Ok(published)
    }
}

#[async_trait]
impl FeedHandler for OutboxRelay {
    /// Publishes a page's entries with one bus call per run of one topic (in the page's
    /// order), then deletes them all at once, so that their deletes share a commit. A
    /// failure leaves the page to be handled again: what was published is published again,
    /// and duplicate detection drops it.
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        let mut runs: Vec<(String, Vec<(&Document, OutboxEntry)>)> = Vec::new();
        for document in changes
            .iter()
            .filter(|d| d.body.get(KIND_FIELD).and_then(|k| k.as_str()) == Some(OUTBOX_KIND))
        {
            let Some(entry) = self.entry(document).await? else {
                continue;
            };
            match runs.last_mut() {
                Some((topic, run)) if *topic == entry.topic => run.push((document, entry)),
                _ => runs.push((entry.topic.clone(), vec![(document, entry)])),
            }
        }
        let mut published = Vec::new();
        for (topic, run) in runs {
            published.extend(self.publish_run(&topic, run).await?);
        }
        let store = &self.store;
        let container = self.container;
        let keys: Vec<(String, String)> = published
            .iter()
            .map(|document| (document.partition_key.clone(), document.id.clone()))
            .collect();
        let deletes = keys
            .into_iter()
            .map(|(pk, id)| async move { store.delete(container, &pk, &id, None).await });
        let deleted: Vec<Result<(), StoreError>> = futures::stream::iter(deletes)
            .buffer_unordered(DELETES_AT_ONCE)
            .collect()
            .await;
        for deleted in deleted {
            match deleted {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(other) => return Err(FeedError::Transient(other.to_string())),
            }
        }
        Ok(())
    }
}
