//! Metrics: OpenTelemetry instruments beside the traces, one meter provider per service.
//!
//! Every service reads its own figures at `GET /metrics` (Prometheus text, see
//! [`prometheus`]) and pushes them over OTLP/HTTP when `telemetry.otlp_endpoint` is set.
//! Names and attributes follow OpenTelemetry's semantic conventions where one exists
//! (`http.server.request.duration`, `messaging.process.duration`,
//! `messaging.client.consumed.messages`); the platform's own start with `platform.`.
//!
//! Recording is an in-memory aggregation (no I/O, no lock held across calls); figures that
//! need a look at the store or the bus (dead letters) are sampled when someone reads them.

mod probes;
pub mod prometheus;

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::{ManualReader, PeriodicReader, SdkMeterProvider};

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{Counter, Histogram};
pub use probes::{GaugeProbe, GaugeSpec, Points, Probes};

use crate::config::{MetricsAccess, TelemetrySettings};
use crate::telemetry::{TelemetryError, otlp_url};

/// The bucket boundaries, in seconds, that OpenTelemetry's HTTP and messaging conventions
/// recommend for durations.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How a handled message ended, as counted by `platform.messaging.handler.outcomes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandlerOutcome {
    Completed,
    /// A transient failure (or a panic): the message comes again after a back-off.
    Retried,
    /// A permanent failure: the message goes to the dead-letter queue.
    DeadLettered,
}

impl HandlerOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Retried => "retried",
            Self::DeadLettered => "dead-lettered",
        }
    }
}

/// A service's meter and the instruments every service records.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    access: MetricsAccess,
    provider: SdkMeterProvider,
    reader: Arc<ManualReader>,
    meter: Meter,
    probes: Probes,
    http_duration: Histogram<f64>,
    process_duration: Histogram<f64>,
    consumed: Counter<u64>,
    outcomes: Counter<u64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Pushes what the periodic reader has not sent yet.
        let _ = self.provider.shutdown();
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// The meter provider of `service`: read at `/metrics`, and pushed over OTLP when an
    /// endpoint is configured.
    pub fn new(
        service: &'static str,
        settings: &TelemetrySettings,
    ) -> Result<Self, TelemetryError> {
        let reader = Arc::new(ManualReader::builder().build());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus::SharedReader(reader.clone()));
        if let Some(url) = otlp_url(&settings.otlp_endpoint, "metrics") {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_endpoint(url)
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let periodic = PeriodicReader::builder(exporter)
                .with_interval(Duration::from_millis(settings.metrics_export_interval_ms))
                .build();
            builder = builder.with_reader(periodic);
        }
        let provider = builder.build();
        let meter = provider.meter("integration-platform");
        let http_duration = meter
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        let process_duration = meter
            .f64_histogram("messaging.process.duration")
            .with_unit("s")
            .with_description("Duration of handling a message taken from a subscription.")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build();
        let consumed = meter
            .u64_counter("messaging.client.consumed.messages")
            .with_unit("{message}")
            .with_description("Messages handed to a handler, by subscription and error type.")
            .build();
        let outcomes = meter
            .u64_counter("platform.messaging.handler.outcomes")
            .with_unit("{message}")
            .with_description("How handled messages ended: completed, retried, dead-lettered.")
            .build();
        let probes = Probes::new(&meter);
        Ok(Self {
            inner: Arc::new(Inner {
                service,
                access: settings.metrics_access,
                provider,
                reader,
                meter,
                probes,
                http_duration,
                process_duration,
                consumed,
                outcomes,
            }),
        })
    }

    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// Who may read `GET /metrics`.
    pub fn access(&self) -> MetricsAccess {
        self.inner.access
    }

    /// For a service's own instruments (webhook attempts, import rows, ...).
    pub fn meter(&self) -> &Meter {
        &self.inner.meter
    }

    /// Figures sampled when read: register gauges whose value needs an await.
    pub fn probes(&self) -> &Probes {
        &self.inner.probes
    }

    /// A gauge in seconds of how far behind some reader is (`lag` is cheap: no await).
    pub fn lag_gauge(
        &self,
        name: &'static str,
        description: &'static str,
        lag: impl Fn() -> Duration + Send + Sync + 'static,
    ) {
        let lag = Arc::new(lag);
        self.probes().gauges(
            &[(name, "s", description)],
            Arc::new(move || {
                let seconds = lag().as_secs_f64();
                Box::pin(async move { vec![vec![(Vec::new(), seconds)]] })
            }),
        );
    }

    /// One HTTP request, by its route pattern (never the path: bounded cardinality).
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.inner.http_duration.record(
            elapsed.as_secs_f64(),
            &[
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }

    /// One message handled from `topic`/`subscription`.
    pub fn record_message(
        &self,
        topic: &'static str,
        subscription: &'static str,
        outcome: HandlerOutcome,
        elapsed: Duration,
    ) {
        let mut attributes = vec![
            KeyValue::new("messaging.system", "servicebus"),
            KeyValue::new("messaging.operation.name", "process"),
            KeyValue::new("messaging.destination.name", topic),
            KeyValue::new("messaging.destination.subscription.name", subscription),
        ];
        match outcome {
            HandlerOutcome::Completed => {}
            HandlerOutcome::Retried => attributes.push(KeyValue::new("error.type", "transient")),
            HandlerOutcome::DeadLettered => {
                attributes.push(KeyValue::new("error.type", "permanent"))
            }
        }
        self.inner
            .process_duration
            .record(elapsed.as_secs_f64(), &attributes);
        self.inner.consumed.add(1, &attributes);
        self.inner.outcomes.add(
            1,
            &[
                KeyValue::new("messaging.destination.name", topic),
                KeyValue::new("messaging.destination.subscription.name", subscription),
                KeyValue::new("platform.outcome", outcome.as_str()),
            ],
        );
    }

    /// The Prometheus text exposition of everything recorded so far, after sampling the
    /// probes.
    pub async fn render_prometheus(&self) -> Result<String, MetricsError> {
        self.inner.probes.sample().await;
        prometheus::render(&self.inner.reader, self.inner.service)
    }

    /// Pushes what is pending over OTLP now (a custom handler may be frozen between
    /// invocations).
    pub fn flush(&self) {
        if let Err(error) = self.inner.provider.force_flush() {
            tracing::debug!(%error, "metrics flush failed");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("collecting metrics: {0}")]
    Collect(String),
}
