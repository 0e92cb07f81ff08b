//! The transactional outbox: events are written as documents in the same atomic batch as
//! the state change that causes them; a relay following the container's change feed
//! publishes them and then deletes them. A crash between the two publishes again, which
//! duplicate detection and idempotent handlers absorb. An entry that can never be published
//! (unreadable, too large, refused) is parked in place as `outbox-parked` with the reason,
//! and the entries behind it go on.

use std::sync::Arc;

use async_trait::async_trait;
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

    async fn relay(&self, document: &Document) -> Result<(), FeedError> {
        let entry: OutboxEntry = match serde_json::from_value(document.body.clone()) {
            Ok(entry) => entry,
            Err(error) => {
                return self
                    .park(document, &format!("unreadable entry: {error}"))
                    .await;
            }
        };
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
        let message = Message::new(entry.event).with_correlation_id(document.partition_key.clone());
        match self.bus.publish(&entry.topic, message).await {
            Ok(()) => {}
            Err(BusError::Rejected(reason)) => {
                return self.park(document, &reason.to_string()).await;
            }
            Err(other) => return Err(FeedError::Transient(other.to_string())),
        }
        match self
            .store
            .delete(self.container, &document.partition_key, &document.id, None)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => Ok(()),
            Err(other) => Err(FeedError::Transient(other.to_string())),
        }
    }
}

#[async_trait]
impl FeedHandler for OutboxRelay {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        for document in changes
            .iter()
            .filter(|d| d.body.get(KIND_FIELD).and_then(|k| k.as_str()) == Some(OUTBOX_KIND))
        {
            self.relay(document).await?;
        }
        Ok(())
    }
}
