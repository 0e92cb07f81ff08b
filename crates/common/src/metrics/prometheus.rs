//! The Prometheus text exposition format (version 0.0.4) of what the meter provider holds,
//! following OpenTelemetry's Prometheus compatibility rules: dots become underscores, the
//! unit becomes a suffix (`_seconds`), monotonic sums are counters ending in `_total`.
//!
//! Written here because OpenTelemetry's own Prometheus exporter is discontinued (it pulls an
//! unmaintained protobuf crate); the encoding is small and fixed.

use std::fmt::Write as _;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, Metric, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

use super::MetricsError;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Lets the provider own a reader that `/metrics` also reads.
#[derive(Debug)]
pub(super) struct SharedReader(pub(super) Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: Weak<Pipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

pub(super) fn render(reader: &ManualReader, service: &str) -> Result<String, MetricsError> {
    let mut collected = ResourceMetrics::default();
    reader
        .collect(&mut collected)
        .map_err(|e| MetricsError::Collect(e.to_string()))?;
    let mut text = String::new();
    let _ = writeln!(text, "# HELP target_info Target metadata");
    let _ = writeln!(text, "# TYPE target_info gauge");
    let _ = writeln!(
        text,
        "target_info{{service_name=\"{}\"}} 1",
        escape(service)
    );
    for scope in collected.scope_metrics() {
        for metric in scope.metrics() {
            match metric.data() {
                AggregatedMetrics::F64(data) => write_metric(&mut text, metric, data),
                AggregatedMetrics::U64(data) => write_metric(&mut text, metric, data),
                AggregatedMetrics::I64(data) => write_metric(&mut text, metric, data),
            }
        }
    }
    Ok(text)
}

/// A value as the exposition format writes it.
trait Sample: Copy {
    fn text(self) -> String;
}

impl Sample for f64 {
    fn text(self) -> String {
        if self.is_nan() {
            "NaN".to_owned()
        } else if self.is_infinite() {
            if self > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
        } else {
            self.to_string()
        }
    }
}

impl Sample for u64 {
    fn text(self) -> String {
        self.to_string()
    }
}

impl Sample for i64 {
    fn text(self) -> String {
        self.to_string()
    }
}

fn write_metric<T: Sample>(text: &mut String, metric: &Metric, data: &MetricData<T>) {
    let base = metric_name(metric.name(), metric.unit());
    match data {
        MetricData::Gauge(gauge) => {
            header(text, &base, metric.description(), "gauge");
            for point in gauge.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(text, "{base}{labels} {}", point.value().text());
            }
        }
        MetricData::Sum(sum) => {
            let (name, kind) = if sum.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base.clone(), "gauge")
            };
            header(text, &name, metric.description(), kind);
            for point in sum.data_points() {
                let labels = labels(point.attributes(), None);
                let _ = writeln!(text, "{name}{labels} {}", point.value().text());
            }
        }
        MetricData::Histogram(histogram) => {
            header(text, &base, metric.description(), "histogram");
            for point in histogram.data_points() {
                let mut cumulative = 0u64;
                let counts: Vec<u64> = point.bucket_counts().collect();
                for (index, bound) in point.bounds().enumerate() {
                    cumulative += counts.get(index).copied().unwrap_or(0);
                    let le = bound.text();
                    let labels = labels(point.attributes(), Some(&le));
                    let _ = writeln!(text, "{base}_bucket{labels} {cumulative}");
                }
                let labels_inf = labels(point.attributes(), Some("+Inf"));
                let _ = writeln!(text, "{base}_bucket{labels_inf} {}", point.count());
                let labels = labels(point.attributes(), None);
                let _ = writeln!(text, "{base}_sum{labels} {}", point.sum().text());
                let _ = writeln!(text, "{base}_count{labels} {}", point.count());
            }
        }
        // No instrument of the platform aggregates exponentially.
        MetricData::ExponentialHistogram(_) => {}
    }
}

fn header(text: &mut String, name: &str, description: &str, kind: &str) {
    if !description.is_empty() {
        let _ = writeln!(text, "# HELP {name} {}", description.replace('\n', " "));
    }
    let _ = writeln!(text, "# TYPE {name} {kind}");
}

/// `http.server.request.duration` in `s` -> `http_server_request_duration_seconds`.
fn metric_name(name: &str, unit: &str) -> String {
    let mut sanitized = sanitize(name);
    let suffix = match unit {
        "s" => "seconds",
        "ms" => "milliseconds",
        "By" => "bytes",
        "%" => "percent",
        // Dimensionless and annotations (`{message}`) add nothing.
        _ => "",
    };
    if !suffix.is_empty() && !sanitized.ends_with(suffix) {
        sanitized.push('_');
        sanitized.push_str(suffix);
    }
    sanitized
}

fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn labels<'a>(attributes: impl Iterator<Item = &'a KeyValue>, le: Option<&str>) -> String {
    let mut pairs: Vec<(String, String)> = attributes
        .map(|kv| (sanitize(kv.key.as_str()), value_text(&kv.value)))
        .collect();
    pairs.sort();
    if let Some(le) = le {
        pairs.push(("le".to_owned(), le.to_owned()));
    }
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_compatibility_rules() {
        assert_eq!(
            metric_name("http.server.request.duration", "s"),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("messaging.client.consumed.messages", "{message}"),
            "messaging_client_consumed_messages"
        );
        assert_eq!(metric_name("9lives", ""), "_9lives");
    }

    #[test]
    fn label_values_are_escaped() {
        let attributes = [KeyValue::new("a.b", "say \"hi\"\\\n")];
        assert_eq!(
            labels(attributes.iter(), Some("+Inf")),
            r#"{a_b="say \"hi\"\\\n",le="+Inf"}"#
        );
    }
}
