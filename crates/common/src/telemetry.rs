//! Tracing set up in one place: a log layer, an OpenTelemetry layer that exports over OTLP
//! when an endpoint is configured, and W3C `traceparent` propagation in and out.

use std::collections::HashMap;

use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetrySettings};

/// Keeps the tracer provider alive; dropping it flushes spans not yet exported.
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {error}");
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry.otlp_endpoint: {0}")]
    Exporter(String),
    #[error("telemetry.log_level: {0}")]
    Filter(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// Builds the tracer provider: spans always get W3C trace ids (used in problem answers
/// and propagated downstream); they are exported only when an endpoint is set.
pub fn tracer_provider(
    settings: &TelemetrySettings,
    service_name: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let traces_url = otlp_url(&settings.otlp_endpoint, "traces");
    let exporting = traces_url.is_some();
    // With nothing to export to, new traces are not recorded (they still get ids, for
    // problem answers and propagation); a caller's sampled trace is still followed, so
    // that the chain stays whole for services that do export.
    let root = if exporting {
        Sampler::TraceIdRatioBased(settings.sample_ratio)
    } else {
        Sampler::AlwaysOff
    };
    let sampler = Sampler::ParentBased(Box::new(root));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource);
    if let Some(url) = traces_url {
        use opentelemetry_otlp::WithExportConfig;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        builder = builder.with_batch_exporter(exporter);
    }
    Ok(builder.build())
}

/// The OTLP/HTTP URL of a signal (`traces`, `metrics`) from `telemetry.otlp_endpoint`, the
/// collector's base URL; a URL already ending in a signal's path (as this setting once
/// required) is taken as its base. `None` when export is off.
pub(crate) fn otlp_url(endpoint: &str, signal: &str) -> Option<String> {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.is_empty() {
        return None;
    }
    let base = ["/v1/traces", "/v1/metrics", "/v1/logs"]
        .iter()
        .find_map(|path| endpoint.strip_suffix(path))
        .unwrap_or(endpoint);
    Some(format!("{base}/v1/{signal}"))
}

/// Installs the global subscriber for a binary. Tests use [`init_for_tests`].
pub fn init(
    settings: &TelemetrySettings,
    service_name: &str,
) -> Result<TelemetryGuard, TelemetryError> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = tracer_provider(settings, service_name)?;
    let tracer = provider.tracer("integration-platform");
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.is_empty() => EnvFilter::try_new(directive),
        _ => EnvFilter::try_new(&settings.log_level),
    }
    .map_err(|e| TelemetryError::Filter(e.to_string()))?;
    // The log filter applies to the log output only: spans keep their trace ids (for
    // problem answers and propagation) whatever the log level.
    let exporting = otlp_url(&settings.otlp_endpoint, "traces").is_some();
    let registry = tracing_subscriber::registry().with(otel_layer(tracer, exporting));
    let installed = match settings.log_format {
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_filter(filter))
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_filter(filter),
            )
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInstalled)?;
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider })
}

/// The OpenTelemetry layer: spans at INFO and above get W3C trace ids.
///
/// With nothing exported a span needs only its ids: what the layer records besides (code
/// location, thread, busy and idle times) and the OpenTelemetry context it attaches on every
/// poll cost a tenth of a point read's CPU for nothing.
fn otel_layer<S>(tracer: opentelemetry_sdk::trace::Tracer, exporting: bool) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(exporting)
        .with_threads(exporting)
        .with_tracked_inactivity(exporting)
        .with_context_activation(exporting)
        .with_filter(LevelFilter::INFO)
}

/// A quiet subscriber with trace ids, for test binaries; safe to call many times.
pub fn init_for_tests() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let tracer = provider.tracer("tests");
    let logs = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::registry()
        .with(otel_layer(tracer, false))
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(logs),
        )
        .try_init();
}

/// The W3C trace id of the current span, if tracing with OpenTelemetry is installed.
pub fn current_trace_id() -> Option<String> {
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The `traceparent` (and `tracestate`) of the current span, for an outgoing call or message.
pub fn current_trace_headers() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MapInjector(&mut carrier));
    carrier
}

/// Makes `span` a child of the trace described by a received `traceparent` (and optional
/// `tracestate`); does nothing when there is no valid `traceparent`.
pub fn adopt_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    let Some(traceparent) = traceparent else {
        return;
    };
    let mut carrier = HashMap::new();
    carrier.insert("traceparent".to_owned(), traceparent.to_owned());
    if let Some(tracestate) = tracestate {
        carrier.insert("tracestate".to_owned(), tracestate.to_owned());
    }
    let context = TraceContextPropagator::new().extract(&carrier);
    if context.span().span_context().is_valid() {
        let _ = span.set_parent(context);
    }
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::otlp_url;

    #[test]
    fn each_signal_has_its_path_under_the_collector_url() {
        assert_eq!(otlp_url("  ", "traces"), None);
        assert_eq!(
            otlp_url("http://collector:4318/", "metrics").as_deref(),
            Some("http://collector:4318/v1/metrics")
        );
        assert_eq!(
            otlp_url("http://collector:4318/v1/traces", "metrics").as_deref(),
            Some("http://collector:4318/v1/metrics")
        );
    }
}
