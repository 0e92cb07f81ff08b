use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::Json;

/// A CloudEvents 1.0 envelope in its JSON format, with the `traceparent` extension
/// (CloudEvents distributed tracing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    pub specversion: String,
    pub id: String,
    /// The producing service, e.g. `/orders`.
    pub source: String,
    /// e.g. `orders.order.placed.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The entity the event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub datacontenttype: String,
    pub data: Json,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl CloudEvent {
    /// A new event with a fresh time-ordered id, carrying the current span's trace context.
    pub fn new(source: &str, event_type: &str, subject: impl Into<String>, data: Json) -> Self {
        Self {
            specversion: "1.0".to_owned(),
            id: uuid::Uuid::now_v7().to_string(),
            source: format!("/{}", source.trim_start_matches('/')),
            event_type: event_type.to_owned(),
            subject: Some(subject.into()),
            time: OffsetDateTime::now_utc(),
            datacontenttype: "application/json".to_owned(),
            data,
            traceparent: crate::telemetry::current_trace_headers().remove("traceparent"),
        }
    }
}
