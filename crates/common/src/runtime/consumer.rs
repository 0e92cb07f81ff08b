//! The idempotent consumer: an event's effect, the record that the event was handled, and
//! the events the effect publishes commit in one atomic batch, so a redelivered event is
//! recognised and changes nothing. The record expires after the configured retention
//! (`bus.processed_retention_seconds`), longer than any redelivery window.

use std::future::Future;

use serde::Serialize;

use crate::bus::CloudEvent;
use crate::bus::outbox::{OutboxSignal, outbox_op, processed_id, processed_op};
use crate::bus::worker::HandlerError;
use crate::events::EventType;
use crate::store::{BatchOp, SharedStore, StoreError};

/// Attempts before a handler gives the message back to the bus (its writes kept racing
/// other writers of the same partition).
const ATTEMPTS: usize = 32;

/// What handling an event does: writes in one partition, and events to publish with them.
#[derive(Debug, Default)]
pub struct Effect {
    pub operations: Vec<BatchOp>,
    pub events: Vec<(&'static str, CloudEvent)>,
}

impl Effect {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn write(mut self, operation: BatchOp) -> Self {
        self.operations.push(operation);
        self
    }

    /// Publishes an event of type `E` about `subject` once the effect commits.
    pub fn publish<E: EventType>(
        mut self,
        subject: &str,
        data: &E::Data,
    ) -> Result<Self, HandlerError> {
        let event = E::event(subject, data).map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.events.push((E::TOPIC, event));
        Ok(self)
    }
}

/// Serializes a model for a write; a model that cannot be is a bug, never worth a retry.
pub fn body<T: Serialize>(value: &T) -> Result<serde_json::Value, HandlerError> {
    serde_json::to_value(value).map_err(|e| HandlerError::Permanent(e.to_string()))
}

/// A store failure while handling: worth a retry.
pub fn transient(error: StoreError) -> HandlerError {
    HandlerError::Transient(error.to_string())
}

#[derive(Clone)]
pub struct IdempotentConsumer {
    store: SharedStore,
    signal: OutboxSignal,
    retention_seconds: u32,
    /// Readers of the partition's container besides the relay (views), woken on commit.
    also_notify: Vec<crate::runtime::FeedSignal>,
}

impl IdempotentConsumer {
    pub fn new(store: SharedStore, signal: OutboxSignal, retention_seconds: u32) -> Self {
        Self {
            store,
            signal,
            retention_seconds,
            also_notify: Vec::new(),
        }
    }

    /// Also wakes `signal`'s readers after each commit.
    pub fn also_notify(mut self, signal: crate::runtime::FeedSignal) -> Self {
        self.also_notify.push(signal);
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Whether `event` was handled in this partition already.
    pub async fn handled(
        &self,
        container: &str,
        pk: &str,
        event: &CloudEvent,
    ) -> Result<bool, HandlerError> {
        Ok(self
            .store
            .read(container, pk, &processed_id(&event.id))
            .await
            .map_err(transient)?
            .is_some())
    }

    /// Handles `event` once in partition `pk` of `container`: `plan` reads what it needs and
    /// says what to write; the writes, the processed record and the outbox entries commit
    /// together. A race with another writer plans again; a repeat of the event does nothing.
    pub async fn apply_once<F, Fut>(
        &self,
        container: &str,
        pk: &str,
        event: &CloudEvent,
        mut plan: F,
    ) -> Result<(), HandlerError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Effect, HandlerError>>,
    {
        for _ in 0..ATTEMPTS {
            if self.handled(container, pk, event).await? {
                return Ok(());
            }
            let effect = plan().await?;
            if self.try_commit(container, pk, event, effect).await? {
                return Ok(());
            }
            // Another delivery of the same event won, or what the plan read changed.
        }
        Err(HandlerError::Transient(
            "the partition kept changing under the handler; will retry".into(),
        ))
    }

    /// Commits `effect` as the handling of `event` in one attempt, for handlers whose plan
    /// has effects of its own elsewhere (writes in other partitions) and must know whether
    /// its decision is the one that stands.
    pub async fn commit_once(
        &self,
        container: &str,
        pk: &str,
        event: &CloudEvent,
        effect: Effect,
    ) -> Result<Commit, HandlerError> {
        if self.try_commit(container, pk, event, effect).await? {
            return Ok(Commit::Committed);
        }
        if self.handled(container, pk, event).await? {
            return Ok(Commit::HandledBefore);
        }
        Err(HandlerError::Transient(
            "what the handler planned on changed under it; will retry".into(),
        ))
    }

    /// Wakes the readers of the container (relay, views) after writes made outside a commit.
    pub fn notify_readers(&self) {
        self.signal.notify();
        for signal in &self.also_notify {
            signal.notify();
        }
    }

    /// One batch; false when it lost a race (the event was handled meanwhile, or a
    /// precondition of the plan no longer holds).
    async fn try_commit(
        &self,
        container: &str,
        pk: &str,
        event: &CloudEvent,
        effect: Effect,
    ) -> Result<bool, HandlerError> {
        let mut operations = effect.operations;
        operations.push(processed_op(&event.id, self.retention_seconds));
        for (topic, outgoing) in &effect.events {
            operations.push(outbox_op(topic, outgoing));
        }
        match self.store.batch(container, pk, operations).await {
            Ok(_) => {
                if !effect.events.is_empty() {
                    self.signal.notify();
                }
                for signal in &self.also_notify {
                    signal.notify();
                }
                for (_, outgoing) in &effect.events {
                    tracing::info!(event_type = %outgoing.event_type, subject = ?outgoing.subject, "published with the effect");
                }
                Ok(true)
            }
            Err(StoreError::Conflict | StoreError::PreconditionFailed | StoreError::NotFound) => {
                Ok(false)
            }
            Err(other) => Err(transient(other)),
        }
    }
}

/// Whose handling of an event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// This call's effect committed.
    Committed,
    /// The event had been handled before (another delivery's effect stands).
    HandledBefore,
}
