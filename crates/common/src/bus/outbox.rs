//! The transactional outbox: events are written as documents in the same atomic batch as
//! the state change that causes them; a relay publishes them and then deletes them. A
//! crash between the two publishes again, which duplicate detection and idempotent
//! handlers absorb. Consumers record each handled event id in the same batch as its effect.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use super::{CloudEvent, Message, SharedBus};
use crate::store::{BatchOp, Query, QueryScope, SharedStore, StoreError};

pub const KIND_FIELD: &str = "kind";
pub const OUTBOX_KIND: &str = "outbox";
pub const PROCESSED_KIND: &str = "processed";

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
        body: serde_json::to_value(OutboxEntry {
            kind: OUTBOX_KIND.to_owned(),
            topic: topic.to_owned(),
            event: event.clone(),
        })
        .unwrap_or_default(),
    }
}

/// The id of the record that says an event was handled.
pub fn processed_id(event_id: &str) -> String {
    format!("processed-{event_id}")
}

/// The batch operation that records `event_id` as handled; the batch fails with
/// [`StoreError::Conflict`] when it was handled already.
pub fn processed_op(event_id: &str) -> BatchOp {
    BatchOp::Create {
        id: processed_id(event_id),
        body: json!({KIND_FIELD: PROCESSED_KIND, "eventId": event_id}),
    }
}

/// Wakes the relay right after a commit, so that events do not wait for the next poll.
#[derive(Clone, Default)]
pub struct OutboxSignal(Arc<Notify>);

impl OutboxSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

pub struct OutboxRelay {
    pub store: SharedStore,
    pub bus: SharedBus,
    pub container: &'static str,
    pub signal: OutboxSignal,
    pub poll_interval: Duration,
}

impl OutboxRelay {
    /// Publishes what is in the outbox now; returns how many events went out.
    pub async fn relay_once(&self) -> Result<usize, StoreError> {
        let mut sent = 0;
        loop {
            let query = Query::new(QueryScope::AllPartitions, 100).filter(KIND_FIELD, OUTBOX_KIND);
            let page = self.store.query(self.container, &query).await?;
            if page.items.is_empty() {
                return Ok(sent);
            }
            for document in page.items {
                let entry: OutboxEntry = match serde_json::from_value(document.body) {
                    Ok(entry) => entry,
                    Err(error) => {
                        tracing::error!(%error, id = %document.id, "unreadable outbox entry left in place");
                        continue;
                    }
                };
                let message =
                    Message::new(entry.event).with_correlation_id(document.partition_key.clone());
                if let Err(error) = self.bus.publish(&entry.topic, message).await {
                    tracing::warn!(%error, "publishing from the outbox failed; will retry");
                    return Ok(sent);
                }
                match self
                    .store
                    .delete(self.container, &document.partition_key, &document.id, None)
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound) => sent += 1,
                    Err(error) => return Err(error),
                }
            }
        }
    }

    pub fn spawn(self, mut shutdown: watch::Receiver<bool>) -> JoinHandle<()> {
        tokio::spawn(async move {
            while !*shutdown.borrow() {
                if let Err(error) = self.relay_once().await {
                    tracing::warn!(%error, container = self.container, "outbox relay failed; will retry");
                }
                tokio::select! {
                    _ = self.signal.0.notified() => {}
                    _ = tokio::time::sleep(self.poll_interval) => {}
                    _ = shutdown.changed() => {}
                }
            }
            // Drain what was committed before the stop.
            if let Err(error) = self.relay_once().await {
                tracing::warn!(%error, "outbox relay could not drain at shutdown");
            }
        })
    }
}
