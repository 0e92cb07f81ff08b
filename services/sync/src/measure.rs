//! What sync adds to the runtime's metrics: import rows by outcome, and each connector's
//! lag, pending and parked changes.

use std::sync::Arc;

use common::metrics::{Counter, KeyValue, Metrics, Points};

use crate::connectors::Connectors;
use crate::domain::import::RowOutcome;

#[derive(Clone)]
pub struct ImportMetrics {
    rows: Counter<u64>,
    jobs: Counter<u64>,
}

impl ImportMetrics {
    pub fn new(metrics: &Metrics) -> Self {
        let rows = metrics
            .meter()
            .u64_counter("platform.import.rows")
            .with_unit("{row}")
            .with_description(
                "Feed rows imported, by outcome (created, updated, unchanged, failed).",
            )
            .build();
        let jobs = metrics
            .meter()
            .u64_counter("platform.import.jobs")
            .with_unit("{import}")
            .with_description("Imports finished, by state (completed, failed).")
            .build();
        Self { rows, jobs }
    }

    pub fn job_finished(&self, state: &'static str) {
        self.jobs
            .add(1, &[KeyValue::new("platform.import.state", state)]);
    }

    pub fn rows(&self, outcomes: &[RowOutcome]) {
        let mut counts = [0u64; 4];
        for outcome in outcomes {
            let slot = match outcome {
                RowOutcome::Created => 0,
                RowOutcome::Updated => 1,
                RowOutcome::Unchanged => 2,
                RowOutcome::Failed(_) => 3,
            };
            counts[slot] += 1;
        }
        for (outcome, count) in ["created", "updated", "unchanged", "failed"]
            .into_iter()
            .zip(counts)
        {
            if count > 0 {
                self.rows
                    .add(count, &[KeyValue::new("platform.outcome", outcome)]);
            }
        }
    }
}

/// Registers the connectors' gauges: one look at the connectors, sampled when the metrics
/// are read, feeds all three.
pub fn connector_gauges(metrics: &Metrics, connectors: Connectors) {
    metrics.probes().gauges(
        &[
            (
                "platform.connector.lag",
                "s",
                "How long each connector's oldest pending change has waited (0 when none).",
            ),
            (
                "platform.connector.pending",
                "{change}",
                "Changes waiting to be delivered to each connector.",
            ),
            (
                "platform.connector.parked",
                "{change}",
                "Changes parked after their last attempt, per connector.",
            ),
        ],
        Arc::new(move || {
            let connectors = connectors.clone();
            Box::pin(async move {
                let figures = connector_figures(&connectors).await;
                let split = |pick: fn(&(f64, f64, f64)) -> f64| -> Points {
                    figures
                        .iter()
                        .map(|(attributes, values)| (attributes.clone(), pick(values)))
                        .collect()
                };
                vec![split(|v| v.0), split(|v| v.1), split(|v| v.2)]
            })
        }),
    );
}

async fn connector_figures(connectors: &Connectors) -> Vec<(Vec<KeyValue>, (f64, f64, f64))> {
    let Ok(listed) = connectors.list().await else {
        return Vec::new();
    };
    let mut figures = Vec::with_capacity(listed.len());
    for connector in listed {
        let Ok(status) = connectors.status(&connector.id).await else {
            continue;
        };
        let lag = status.oldest_pending_ms.unwrap_or(0).max(0) as f64 / 1000.0;
        figures.push((
            vec![
                KeyValue::new("platform.connector.id", connector.id.clone()),
                KeyValue::new("platform.connector.name", connector.name.clone()),
            ],
            (lag, status.pending as f64, status.parked.len() as f64),
        ));
    }
    figures
}
