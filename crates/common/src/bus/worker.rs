//! Runs a handler over a subscription: a span per message (child of the publisher's
//! trace), a received batch handled by subject (one subject's messages in order, different
//! subjects at once), complete on success (the batch's together), abandon with a back-off
//! on a transient failure, dead-letter on a permanent one. A handler that keeps failing
//! reaches the subscription's maximum delivery count and is dead-lettered by the bus.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::{Delivery, LockToken, Message, SharedBus};

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Worth retrying: a store or a peer was unavailable, a write raced another.
    #[error("transient: {0}")]
    Transient(String),
    /// Will never succeed: the message is malformed or violates the contract.
    #[error("permanent: {0}")]
    Permanent(String),
}

#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError>;
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub topic: String,
    pub subscription: String,
    pub batch_size: usize,
    /// Longest wait for new messages when the bus gives no wake-up.
    pub poll_interval: Duration,
    /// Delay before redelivery after the n-th failed attempt (the last one repeats).
    pub retry_backoff: Vec<Duration>,
}

impl WorkerSettings {
    pub fn new(topic: &str, subscription: &str) -> Self {
        Self {
            topic: topic.to_owned(),
            subscription: subscription.to_owned(),
            batch_size: 16,
            poll_interval: Duration::from_millis(200),
            retry_backoff: [100, 500, 2_000, 10_000]
                .map(Duration::from_millis)
                .to_vec(),
        }
    }

    fn backoff(&self, delivery_count: u32) -> Duration {
        let index = (delivery_count.saturating_sub(1) as usize)
            .min(self.retry_backoff.len().saturating_sub(1));
        let base = self
            .retry_backoff
            .get(index)
            .copied()
            .unwrap_or(Duration::from_secs(1));
        // Up to 20% jitter, so that retries of many messages do not arrive together.
        let jitter = base.mul_f64(rand::rng().random_range(0.0..0.2));
        base + jitter
    }
}

/// Starts the worker; it stops after the batch in hand when `shutdown` turns true.
pub fn spawn_worker(
    bus: SharedBus,
    settings: WorkerSettings,
    handler: Arc<dyn MessageHandler>,
    mut shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut failures = 0u32;
        let mut wake_ups = bus.wake_ups(&settings.topic, &settings.subscription);
        while !*shutdown.borrow() {
            if let Some(wake_ups) = wake_ups.as_mut() {
                wake_ups.borrow_and_update();
            }
            // A receive may long-poll (Service Bus waits for a message): a stop does not
            // wait for it; a message it locked meanwhile comes back when its lock expires.
            let received = tokio::select! {
                received = bus.receive(&settings.topic, &settings.subscription, settings.batch_size) => received,
                _ = shutdown.changed() => break,
            };
            match received {
                Ok(deliveries) if !deliveries.is_empty() => {
                    failures = 0;
                    let handled = handle_batch(&bus, &settings, handler.as_ref(), deliveries).await;
                    complete_all(&bus, &settings, &handled).await;
                }
                Ok(_) => {
                    let woken = wake_ups.is_some();
                    let published = async {
                        match wake_ups.as_mut() {
                            Some(wake_ups) => {
                                let _ = wake_ups.changed().await;
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    // A message locked or backed off here comes due on its own time; a bus
                    // that wakes for every publisher needs no look before then. Without
                    // wake-ups the poll interval bounds the wait.
                    let due = bus.ready_in(&settings.topic, &settings.subscription);
                    let wait = match (woken, due) {
                        (true, Some(due)) => due,
                        (_, due) => due.map_or(settings.poll_interval, |due| {
                            due.min(settings.poll_interval)
                        }),
                    };
                    tokio::select! {
                        _ = published => {}
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(%error, topic = %settings.topic, subscription = %settings.subscription, "receive failed");
                    let pause = settings.poll_interval * failures.min(10);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    })
}

/// Handles a received batch: messages about one subject (an order, a SKU) one after
/// another in the order received, different subjects at once. Returns the locks of those
/// handled, to complete.
async fn handle_batch(
    bus: &SharedBus,
    settings: &WorkerSettings,
    handler: &dyn MessageHandler,
    deliveries: Vec<Delivery>,
) -> Vec<LockToken> {
    let mut groups: Vec<Vec<Delivery>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for delivery in deliveries {
        let event = &delivery.message.event;
        let key = event.subject.clone().unwrap_or_else(|| event.id.clone());
        match group_of.get(&key) {
            Some(&group) => groups[group].push(delivery),
            None => {
                group_of.insert(key, groups.len());
                groups.push(vec![delivery]);
            }
        }
    }
    let handled = groups.into_iter().map(|group| async move {
        let mut locks = Vec::with_capacity(group.len());
        for delivery in group {
            if let Some(lock) = handle_one(bus, settings, handler, delivery).await {
                locks.push(lock);
            }
        }
        locks
    });
    futures::future::join_all(handled)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Completes the messages of a received batch that were handled, together.
async fn complete_all(bus: &SharedBus, settings: &WorkerSettings, locks: &[LockToken]) {
    if locks.is_empty() {
        return;
    }
    let (topic, subscription) = (&settings.topic, &settings.subscription);
    match bus.complete_many(topic, subscription, locks).await {
        Ok(outcomes) => {
            let lost = outcomes.iter().filter(|o| o.is_err()).count();
            if lost > 0 {
                // Their locks expired while the batch was handled: they come again, and
                // handlers are idempotent.
                tracing::warn!(lost, %topic, %subscription, "could not complete some handled messages");
            }
        }
        Err(error) => {
            tracing::warn!(%error, %topic, %subscription, "could not complete the handled messages; they come again");
        }
    }
}

/// Handles one message and settles it unless it was handled: then its lock is returned,
/// to be completed with the rest of the batch.
async fn handle_one(
    bus: &SharedBus,
    settings: &WorkerSettings,
    handler: &dyn MessageHandler,
    delivery: Delivery,
) -> Option<LockToken> {
    let event = &delivery.message.event;
    let span = tracing::info_span!(
        "bus.handle",
        otel.name = %format!("{} process", event.event_type),
        otel.kind = "consumer",
        topic = %settings.topic,
        subscription = %settings.subscription,
        message_id = %event.id,
        event_type = %event.event_type,
        delivery_count = delivery.delivery_count,
        outcome = tracing::field::Empty,
    );
    let traceparent = delivery
        .message
        .properties
        .get("traceparent")
        .or(event.traceparent.as_ref());
    crate::telemetry::adopt_parent(
        &span,
        traceparent.map(String::as_str),
        delivery
            .message
            .properties
            .get("tracestate")
            .map(String::as_str),
    );
    async {
        let outcome = AssertUnwindSafe(handler.handle(&delivery.message))
            .catch_unwind()
            .await;
        let (topic, subscription, lock) = (&settings.topic, &settings.subscription, &delivery.lock);
        let settled = match outcome {
            Ok(Ok(())) => {
                tracing::Span::current().record("outcome", "completed");
                return Some(lock.clone());
            }
            Ok(Err(HandlerError::Permanent(reason))) => {
                tracing::Span::current().record("outcome", "dead-lettered");
                tracing::warn!(%reason, "message rejected; dead-lettering");
                bus.dead_letter(topic, subscription, lock, "HandlerRejected", &reason)
                    .await
            }
            Ok(Err(HandlerError::Transient(reason))) => {
                tracing::Span::current().record("outcome", "abandoned");
                tracing::warn!(%reason, "message failed; will be redelivered");
                bus.abandon(
                    topic,
                    subscription,
                    lock,
                    settings.backoff(delivery.delivery_count),
                )
                .await
            }
            Err(_) => {
                tracing::Span::current().record("outcome", "abandoned");
                tracing::error!("handler panicked; will be redelivered");
                bus.abandon(
                    topic,
                    subscription,
                    lock,
                    settings.backoff(delivery.delivery_count),
                )
                .await
            }
        };
        if let Err(error) = settled {
            // The lock expired while handling: the message will come again, and handlers
            // are idempotent.
            tracing::warn!(%error, "could not settle the message");
        }
        None
    }
    .instrument(span)
    .await
}
