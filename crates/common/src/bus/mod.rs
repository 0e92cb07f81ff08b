//! The event bus port: a small trait shaped after Azure Service Bus topics and
//! subscriptions.
//!
//! Publishing sends a CloudEvents 1.0 envelope to a topic; the message id is the event id,
//! and a repeat of an id within the duplicate-detection window is dropped. Every
//! subscription of the topic gets its own copy. A receiver takes messages in peek-lock: it
//! then completes, abandons (the message comes back after a delay) or dead-letters each;
//! a lock that expires returns the message to the subscription. Each delivery carries its
//! delivery count; a message delivered more than the maximum goes to the subscription's
//! dead-letter queue with the reason.

pub mod embedded;
mod event;
pub mod outbox;
pub mod servicebus;
pub mod type_rules;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

pub use event::CloudEvent;

use crate::store::Cause;

/// A message on its way to a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: CloudEvent,
    pub correlation_id: Option<String>,
    /// Application properties; `traceparent` travels here.
    pub properties: BTreeMap<String, String>,
    /// Not delivered before this time.
    pub scheduled_for: Option<OffsetDateTime>,
}

impl Message {
    /// A message for `event`, carrying the current span's trace context.
    pub fn new(event: CloudEvent) -> Self {
        let mut properties = BTreeMap::new();
        if let Some(traceparent) = &event.traceparent {
            properties.insert("traceparent".to_owned(), traceparent.clone());
        }
        Self {
            event,
            correlation_id: None,
            properties,
            scheduled_for: None,
        }
    }

    pub fn id(&self) -> &str {
        &self.event.id
    }

    pub fn with_correlation_id(mut self, id: impl Into<String>) -> Self {
        self.correlation_id = Some(id.into());
        self
    }

    pub fn scheduled(mut self, at: OffsetDateTime) -> Self {
        self.scheduled_for = Some(at);
        self
    }
}

/// Proof of a peek-lock; hand it back to settle the delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(pub String);

/// One delivery of a message to a subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub message: Message,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    pub lock: LockToken,
}

/// What a subscription holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionCounts {
    /// Waiting to be handled, locked ones included (Service Bus's active message count).
    pub waiting: u64,
    /// In the dead-letter queue, whoever put them there.
    pub dead_lettered: u64,
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message: Message,
    pub reason: String,
    pub description: String,
    pub delivery_count: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("the lock was lost (it expired, or the message was settled already)")]
    LockLost,
    #[error("no subscription {subscription} on topic {topic}")]
    UnknownSubscription { topic: String, subscription: String },
    #[error("the bus is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// This message can never be accepted (too large, malformed); retrying will not help.
    #[error("the bus refused the message: {0}")]
    Rejected(#[source] Cause),
    #[error("bus failure: {0}")]
    Backend(#[source] Cause),
}

/// Settings a subscription is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionOptions {
    pub max_delivery_count: u32,
    pub lock_duration: Duration,
    /// The event types (CloudEvents `type`) the subscription receives; empty takes every
    /// message of the topic (none, with `types_by_rule`). Applied by the broker (a rule on
    /// Service Bus), so that what a subscriber does not handle never reaches it.
    pub event_types: Vec<String>,
    /// The subscription takes `event_types` and whatever its type rules let in
    /// ([`EventBus::add_type_rule`]): for a subscriber whose wants change at run time.
    pub types_by_rule: bool,
}

impl Default for SubscriptionOptions {
    fn default() -> Self {
        Self {
            max_delivery_count: 10,
            lock_duration: Duration::from_secs(30),
            event_types: Vec::new(),
            types_by_rule: false,
        }
    }
}

impl SubscriptionOptions {
    pub fn for_event_types<S: AsRef<str>>(mut self, event_types: &[S]) -> Self {
        self.event_types = event_types.iter().map(|t| t.as_ref().to_owned()).collect();
        self
    }

    /// Only `event_types` (none when empty) and what type rules add.
    pub fn with_type_rules(mut self) -> Self {
        self.types_by_rule = true;
        self
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Creates the subscription if it does not exist, and makes its settings and event-type
    /// filter those given (Service Bus: provisioned, checked).
    async fn ensure_subscription(
        &self,
        topic: &str,
        subscription: &str,
        options: SubscriptionOptions,
    ) -> Result<(), BusError>;

    /// Lets `event_types` into a subscription made `types_by_rule`, besides what it takes
    /// already, under the rule `name` (letters, digits, `-`, `.`, `_`; at most 50). A rule's
    /// types never change: when a rule of that name exists, nothing is done. A message
    /// published before the rule was added is not let in.
    async fn add_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
        event_types: &[String],
    ) -> Result<(), BusError>;

    /// The names of the subscription's type rules (not its own filter). Empty when the
    /// credentials may not manage rules (Service Bus: the rules are then provisioned).
    async fn type_rules(&self, topic: &str, subscription: &str) -> Result<Vec<String>, BusError>;

    /// Removes a type rule; nothing when there is none of that name.
    async fn remove_type_rule(
        &self,
        topic: &str,
        subscription: &str,
        name: &str,
    ) -> Result<(), BusError>;

    /// Publishes to every subscription of the topic; a repeated message id within the
    /// duplicate-detection window is accepted and dropped.
    async fn publish(&self, topic: &str, message: Message) -> Result<(), BusError>;

    /// Publishes each message as [`EventBus::publish`] would, in order; each message's
    /// refusal ([`BusError::Rejected`]) is its own. Any other error ends the call: some
    /// messages may be published, and publishing them again is safe (duplicate detection).
    async fn publish_many(
        &self,
        topic: &str,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<(), BusError>>, BusError> {
        let mut outcomes = Vec::with_capacity(messages.len());
        for message in messages {
            match self.publish(topic, message).await {
                Err(BusError::Rejected(reason)) => outcomes.push(Err(BusError::Rejected(reason))),
                Err(other) => return Err(other),
                Ok(()) => outcomes.push(Ok(())),
            }
        }
        Ok(outcomes)
    }

    /// Up to `max` messages, each locked for the subscription's lock duration.
    async fn receive(
        &self,
        topic: &str,
        subscription: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, BusError>;

    /// Removes the message: it was handled.
    async fn complete(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
    ) -> Result<(), BusError>;

    /// Completes each message, in order; each answer is its own (a lost lock is that
    /// message's [`BusError::LockLost`]). Any other error ends the call.
    async fn complete_many(
        &self,
        topic: &str,
        subscription: &str,
        locks: &[LockToken],
    ) -> Result<Vec<Result<(), BusError>>, BusError> {
        let mut outcomes = Vec::with_capacity(locks.len());
        for lock in locks {
            match self.complete(topic, subscription, lock).await {
                Err(BusError::LockLost) => outcomes.push(Err(BusError::LockLost)),
                Err(other) => return Err(other),
                Ok(()) => outcomes.push(Ok(())),
            }
        }
        Ok(outcomes)
    }

    /// Releases the lock; the message is delivered again after `delay`.
    async fn abandon(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
        delay: Duration,
    ) -> Result<(), BusError>;

    /// Moves the message to the subscription's dead-letter queue.
    async fn dead_letter(
        &self,
        topic: &str,
        subscription: &str,
        lock: &LockToken,
        reason: &str,
        description: &str,
    ) -> Result<(), BusError>;

    /// The dead-letter queue, oldest first.
    async fn dead_letters(
        &self,
        topic: &str,
        subscription: &str,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, BusError>;

    /// Sends a dead-lettered message back to its subscription (delivery count reset);
    /// false when no such message is dead-lettered.
    async fn replay(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError>;

    /// How many messages wait in the subscription and how many are dead-lettered, counted
    /// by the bus itself (no message is looked at, so a scrape costs one or two calls).
    async fn counts(&self, topic: &str, subscription: &str)
    -> Result<SubscriptionCounts, BusError>;

    /// Removes a dead-lettered message for good (an operator decided it is not to be
    /// handled); false when no such message is dead-lettered.
    async fn discard(
        &self,
        topic: &str,
        subscription: &str,
        message_id: &str,
    ) -> Result<bool, BusError>;

    /// Cheap round trip used by readiness checks.
    async fn ping(&self) -> Result<(), BusError>;

    /// A counter that moves whenever a message may have become available in the
    /// subscription, whoever published it (another process's publish within the bus's own
    /// polling interval); receivers wait on it instead of polling, and a publish to another
    /// subscription wakes nobody here. Taking the value before a receive and waiting for a
    /// change after it loses no wake-up. `None` for adapters that cannot tell.
    fn wake_ups(
        &self,
        _topic: &str,
        _subscription: &str,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// How long until a message the subscription holds (locked, or delivered later after a
    /// back-off) becomes ready, when the bus knows; a receiver that found nothing need not
    /// look again before then, unless woken. `None` when it cannot tell.
    fn ready_in(&self, _topic: &str, _subscription: &str) -> Option<std::time::Duration> {
        None
    }
}

pub type SharedBus = Arc<dyn EventBus>;

/// The largest message either bus accepts (Service Bus standard tier: 256 KB including
/// headers; the embedded bus refuses the same serialized size).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// The platform's topics.
pub mod topics {
    pub const CATALOG: &str = "catalog-events";
    pub const ORDERS: &str = "orders-events";
    pub const SYNC: &str = "sync-events";
    pub const NOTIFICATIONS: &str = "notifications-events";
}
