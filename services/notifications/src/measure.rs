//! What notifications adds to the runtime's metrics: each webhook attempt by endpoint and
//! outcome, and how many endpoints are in each state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::metrics::{Counter, DURATION_BUCKETS, Histogram, KeyValue, Metrics};

use crate::domain::message::Attempt;
use crate::subscriptions::Subscriptions;

#[derive(Clone)]
pub struct WebhookMetrics {
    attempts: Counter<u64>,
    duration: Histogram<f64>,
}

impl WebhookMetrics {
    pub fn new(metrics: &Metrics, subscriptions: Subscriptions) -> Self {
        let meter = metrics.meter();
        let attempts = meter
            .u64_counter("platform.webhook.attempts")
            .with_unit("{attempt}")
            .with_description("Webhook attempts by endpoint (subscription) and outcome.")
            .build();
        let duration = meter
            .f64_histogram("platform.webhook.attempt.duration")
            .with_unit("s")
            .with_description("How long endpoints took to answer an attempt.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        metrics.probes().gauges(
            &[(
                "platform.webhook.endpoints",
                "{endpoint}",
                "Webhook endpoints by status, and whether they are failing.",
            )],
            Arc::new(move || {
                let subscriptions = subscriptions.clone();
                Box::pin(async move { vec![endpoint_health(&subscriptions).await] })
            }),
        );
        Self { attempts, duration }
    }

    pub fn attempt(&self, subscription_id: &str, attempt: &Attempt) {
        let outcome = if attempt.succeeded {
            "delivered"
        } else if attempt.status_code.is_some() {
            "refused"
        } else {
            "unreachable"
        };
        let mut attributes = vec![
            KeyValue::new("platform.subscription.id", subscription_id.to_owned()),
            KeyValue::new("platform.outcome", outcome),
        ];
        if let Some(status) = attempt.status_code {
            attributes.push(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        self.attempts.add(1, &attributes);
        self.duration.record(
            Duration::from_millis(attempt.latency_ms).as_secs_f64(),
            &attributes[..2],
        );
    }
}

async fn endpoint_health(subscriptions: &Subscriptions) -> common::metrics::Points {
    let Ok(listed) = subscriptions.current().await else {
        return Vec::new();
    };
    let mut counts: BTreeMap<(&'static str, bool), f64> = BTreeMap::new();
    for subscription in listed.iter() {
        let key = (
            subscription.status.as_str(),
            subscription.failing_since.is_some(),
        );
        *counts.entry(key).or_default() += 1.0;
    }
    counts
        .into_iter()
        .map(|((status, failing), count)| {
            (
                vec![
                    KeyValue::new("platform.endpoint.status", status),
                    KeyValue::new("platform.endpoint.failing", failing),
                ],
                count,
            )
        })
        .collect()
}
