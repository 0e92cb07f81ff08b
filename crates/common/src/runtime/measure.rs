//! What the runtime measures for every service: each handled message (worker or trigger
//! alike), the outbox relay's lag, and the dead letters of each subscription.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use opentelemetry::KeyValue;

use super::{BackgroundWork, Dispatcher, FeedSignal, ServiceDescriptor, SubscriptionSpec};
use crate::bus::worker::{HandlerError, MessageHandler};
use crate::bus::{Message, SharedBus};
use crate::config::Settings;
use crate::metrics::{HandlerOutcome, Metrics, Points};
use crate::outbound::Breakers;
use crate::outbound::breaker::BreakerState;

/// `dispatcher`, timing and counting each message it handles.
pub(super) fn measured(
    metrics: &Metrics,
    subscription: &SubscriptionSpec,
    dispatcher: Dispatcher,
) -> Arc<dyn MessageHandler> {
    Arc::new(Measured {
        inner: dispatcher,
        metrics: metrics.clone(),
        topic: subscription.topic,
        subscription: subscription.name,
    })
}

struct Measured {
    inner: Dispatcher,
    metrics: Metrics,
    topic: &'static str,
    subscription: &'static str,
}

#[async_trait]
impl MessageHandler for Measured {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let started = Instant::now();
        let handled = AssertUnwindSafe(self.inner.handle(message))
            .catch_unwind()
            .await;
        let outcome = match &handled {
            Ok(Ok(())) => HandlerOutcome::Completed,
            Ok(Err(HandlerError::Permanent(_))) => HandlerOutcome::DeadLettered,
            Ok(Err(HandlerError::Transient(_))) | Err(_) => HandlerOutcome::Retried,
        };
        self.metrics
            .record_message(self.topic, self.subscription, outcome, started.elapsed());
        match handled {
            Ok(result) => result,
            // The worker's own guard turns a panic into a redelivery.
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// The gauges every service has: its outbound circuit breakers, how long the oldest commit
/// has waited for the outbox relay, and each subscription's dead letters and backlog.
pub(super) fn runtime_gauges(
    metrics: &Metrics,
    descriptor: &'static ServiceDescriptor,
    bus: &SharedBus,
    outbox_signal: &FeedSignal,
    breakers: &Breakers,
) {
    let watched = breakers.clone();
    metrics.probes().gauges(
        &[(
            "platform.outbound.breaker.state",
            "1",
            "Each outbound target's circuit: 0 closed, 1 half-open (probing), 2 open.",
        )],
        Arc::new(move || {
            let points = watched
                .states()
                .into_iter()
                .map(|(target, state)| {
                    let value = match state {
                        BreakerState::Closed => 0.0,
                        BreakerState::HalfOpen => 1.0,
                        BreakerState::Open => 2.0,
                    };
                    (vec![KeyValue::new("server.address", target)], value)
                })
                .collect();
            Box::pin(async move { vec![points] })
        }),
    );
    if !descriptor.outboxes.is_empty() {
        let signal = outbox_signal.clone();
        metrics.lag_gauge(
            "platform.outbox.lag",
            "How long the oldest commit not yet relayed to the bus has waited (this instance).",
            move || signal.lag(),
        );
    }
    if descriptor.subscriptions.is_empty() {
        return;
    }
    let bus = bus.clone();
    metrics.probes().gauges(
        &[
            (
                "platform.messaging.dead_letters",
                "{message}",
                "Messages in each subscription's dead-letter queue.",
            ),
            (
                "platform.messaging.backlog",
                "{message}",
                "Messages waiting in each subscription (locked ones included).",
            ),
        ],
        Arc::new(move || {
            let bus = bus.clone();
            Box::pin(async move {
                let (dead, waiting) = subscription_counts(&bus, descriptor).await;
                vec![dead, waiting]
            })
        }),
    );
}

fn subscription_attributes(subscription: &SubscriptionSpec) -> Vec<KeyValue> {
    vec![
        KeyValue::new("messaging.destination.name", subscription.topic),
        KeyValue::new("messaging.destination.subscription.name", subscription.name),
    ]
}

/// Both gauges from one look at each subscription's counts.
async fn subscription_counts(bus: &SharedBus, descriptor: &ServiceDescriptor) -> (Points, Points) {
    let (mut dead, mut waiting) = (Vec::new(), Vec::new());
    for subscription in descriptor.subscriptions {
        match bus.counts(subscription.topic, subscription.name).await {
            Ok(counts) => {
                let attributes = subscription_attributes(subscription);
                dead.push((attributes.clone(), counts.dead_lettered as f64));
                waiting.push((attributes, counts.waiting as f64));
            }
            Err(error) => {
                tracing::debug!(%error, subscription = subscription.name, "subscription not counted")
            }
        }
    }
    (dead, waiting)
}

/// When metrics are pushed over OTLP, the probes are sampled at the push interval (a scrape
/// of `/metrics` samples them itself).
pub(super) fn sample_probes_while_pushing(
    metrics: &Metrics,
    settings: &Settings,
) -> Option<BackgroundWork> {
    if settings.telemetry.otlp_endpoint.trim().is_empty() {
        return None;
    }
    let metrics = metrics.clone();
    let interval = Duration::from_millis(settings.telemetry.metrics_export_interval_ms);
    Some(Box::new(move |mut stopped| {
        tokio::spawn(async move {
            loop {
                metrics.probes().sample().await;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stopped.changed() => break,
                }
            }
        })
    }))
}
