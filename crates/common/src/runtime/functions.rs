//! Azure Functions custom-handler hosting. With `hosting.mode = "functions"` a service runs
//! none of its loops: the Functions host calls it once per trigger, at `POST /{function}`,
//! with the documented invocation payload (`Data`, `Metadata`), and takes the answer
//! (`Outputs`, `Logs`, `ReturnValue`). The same handlers run as in a process:
//!
//! - `serviceBusTrigger` per subscription (`fn-bus-<subscription>`): the subscription's
//!   dispatcher. A failure answers 500, so that the host abandons the message, Service Bus
//!   delivers it again, and finally dead-letters it (a permanent failure is logged as such).
//! - `cosmosDBTrigger` per followed container and reader (`fn-feed-<container>-<reader>`):
//!   the outbox relay or the view; the host keeps the leases and the checkpoint. A failure
//!   answers 500 and the function's retry policy hands the same batch again.
//!
//! Trigger routes answer only callers on loopback (the host runs beside the handler), and
//! the HTTP functions forward only the API's own paths, so they cannot be reached from
//! outside.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::bus::worker::{HandlerError, MessageHandler};
use crate::bus::{CloudEvent, Message};
use crate::runtime::feed::{FeedError, FeedHandler};
use crate::store::{Document, ETag};

/// Every trigger function's name starts so (never an API path).
pub const PREFIX: &str = "fn-";
/// Largest invocation accepted: a change-feed batch of 100 items of up to 2 MB each would be
/// more, but the functions ask for batches that fit.
const MAX_INVOCATION_BYTES: usize = 64 * 1024 * 1024;

/// What a trigger function is bound to, for `function.json` and for hosts that emulate
/// Functions (the tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "trigger", rename_all = "camelCase")]
pub enum TriggerBinding {
    ServiceBus {
        topic: &'static str,
        subscription: &'static str,
    },
    ChangeFeed {
        container: &'static str,
        reader: &'static str,
    },
    /// NCRONTAB, six fields (seconds first), UTC.
    Timer { schedule: String },
    /// A blob written under `path` (`<container>/<prefix>{name}`) in the files account.
    Blob { path: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct TriggerSpec {
    pub function: String,
    #[serde(flatten)]
    pub binding: TriggerBinding,
}

#[derive(Clone)]
pub(crate) enum TriggerHandler {
    Bus(Arc<dyn MessageHandler>),
    Feed(Arc<dyn FeedHandler>),
    Tick(Arc<dyn Tick>),
}

/// One pass of work a process runs in a loop (a scan, a retry round, a timer's job): what a
/// timer or blob trigger runs in custom-handler mode.
#[async_trait::async_trait]
pub trait Tick: Send + Sync + 'static {
    async fn tick(&self) -> Result<(), String>;
}

/// A service's trigger functions.
#[derive(Clone, Default)]
pub struct Triggers {
    handlers: BTreeMap<String, (TriggerSpec, TriggerHandler)>,
}

impl Triggers {
    pub(crate) fn bus(
        &mut self,
        topic: &'static str,
        subscription: &'static str,
        handler: Arc<dyn MessageHandler>,
    ) {
        let function = format!("{PREFIX}bus-{subscription}");
        let spec = TriggerSpec {
            function: function.clone(),
            binding: TriggerBinding::ServiceBus {
                topic,
                subscription,
            },
        };
        self.handlers
            .insert(function, (spec, TriggerHandler::Bus(handler)));
    }

    pub(crate) fn feed(
        &mut self,
        container: &'static str,
        reader: &'static str,
        handler: Arc<dyn FeedHandler>,
    ) {
        let function = format!("{PREFIX}feed-{container}-{reader}");
        let spec = TriggerSpec {
            function: function.clone(),
            binding: TriggerBinding::ChangeFeed { container, reader },
        };
        self.handlers
            .insert(function, (spec, TriggerHandler::Feed(handler)));
    }

    pub(crate) fn tick(&mut self, function: String, binding: TriggerBinding, tick: Arc<dyn Tick>) {
        let spec = TriggerSpec {
            function: function.clone(),
            binding,
        };
        self.handlers
            .insert(function, (spec, TriggerHandler::Tick(tick)));
    }

    pub fn specs(&self) -> Vec<TriggerSpec> {
        self.handlers
            .values()
            .map(|(spec, _)| spec.clone())
            .collect()
    }

    /// The `POST /{function}` route of every trigger.
    pub(crate) fn configure(&self, config: &mut web::ServiceConfig) {
        config.app_data(web::Data::new(self.clone())).service(
            web::resource("/{function:fn-[a-z0-9-]+}")
                .app_data(web::PayloadConfig::new(MAX_INVOCATION_BYTES))
                .route(web::post().to(invoke)),
        );
    }
}

/// The answer the host expects; `Logs` end up in the function's logs.
fn answer(status: actix_web::http::StatusCode, logs: Vec<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"Outputs": {}, "Logs": logs, "ReturnValue": null}))
}

async fn invoke(
    req: HttpRequest,
    function: web::Path<String>,
    triggers: web::Data<Triggers>,
    body: web::Bytes,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    if !req.peer_addr().is_some_and(|peer| peer.ip().is_loopback()) {
        return answer(StatusCode::NOT_FOUND, vec![]);
    }
    let Some((spec, handler)) = triggers.handlers.get(function.as_str()) else {
        return answer(
            StatusCode::NOT_FOUND,
            vec![format!("no function {function}")],
        );
    };
    let invocation: Map<String, Value> = match serde_json::from_slice(&body) {
        Ok(Value::Object(invocation)) => invocation,
        _ => {
            return answer(
                StatusCode::BAD_REQUEST,
                vec!["the invocation is not a JSON object".into()],
            );
        }
    };
    let data = invocation
        .get("Data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let metadata = invocation
        .get("Metadata")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    match handler {
        TriggerHandler::Bus(handler) => match bus_message(&data, &metadata) {
            Ok(message) => deliver(&spec.function, handler.as_ref(), &message, &metadata).await,
            Err(reason) => {
                // Never readable, whatever the retries: the host retries, then Service Bus
                // dead-letters it, as the embedded worker would at once.
                tracing::error!(function = %spec.function, %reason, "unreadable Service Bus message");
                answer(StatusCode::INTERNAL_SERVER_ERROR, vec![reason])
            }
        },
        TriggerHandler::Tick(tick) => match tick.tick().await {
            Ok(()) => answer(StatusCode::OK, vec![]),
            Err(reason) => {
                tracing::warn!(function = %spec.function, %reason, "timed work failed; the next trigger tries again");
                answer(StatusCode::INTERNAL_SERVER_ERROR, vec![reason])
            }
        },
        TriggerHandler::Feed(handler) => match feed_documents(&data) {
            Ok(documents) => {
                let count = documents.len();
                match handler.handle(documents).await {
                    Ok(()) => answer(StatusCode::OK, vec![format!("{count} changes handled")]),
                    Err(FeedError::Transient(reason)) => {
                        tracing::warn!(function = %spec.function, %reason, "change-feed batch failed; the host retries it");
                        answer(StatusCode::INTERNAL_SERVER_ERROR, vec![reason])
                    }
                }
            }
            Err(reason) => {
                tracing::error!(function = %spec.function, %reason, "unreadable change-feed batch");
                answer(StatusCode::BAD_REQUEST, vec![reason])
            }
        },
    }
}

/// Runs the handler on one message inside the span the embedded worker would open.
async fn deliver(
    function: &str,
    handler: &dyn MessageHandler,
    message: &Message,
    metadata: &Map<String, Value>,
) -> HttpResponse {
    use actix_web::http::StatusCode;
    use tracing::Instrument;
    let event = &message.event;
    let delivery_count = metadata
        .get("DeliveryCount")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(1);
    let span = tracing::info_span!(
        "bus.handle",
        otel.name = %format!("{} process", event.event_type),
        otel.kind = "consumer",
        function = %function,
        message_id = %event.id,
        event_type = %event.event_type,
        delivery_count = delivery_count,
        outcome = tracing::field::Empty,
    );
    crate::telemetry::adopt_parent(
        &span,
        message
            .properties
            .get("traceparent")
            .or(event.traceparent.as_ref())
            .map(String::as_str),
        message.properties.get("tracestate").map(String::as_str),
    );
    async {
        match handler.handle(message).await {
            Ok(()) => {
                tracing::Span::current().record("outcome", "completed");
                answer(StatusCode::OK, vec![])
            }
            Err(HandlerError::Permanent(reason)) => {
                tracing::Span::current().record("outcome", "rejected");
                tracing::warn!(%reason, "message rejected; Service Bus dead-letters it after its retries");
                answer(StatusCode::INTERNAL_SERVER_ERROR, vec![format!("rejected: {reason}")])
            }
            Err(HandlerError::Transient(reason)) => {
                tracing::Span::current().record("outcome", "abandoned");
                tracing::warn!(%reason, "message failed; will be redelivered");
                answer(StatusCode::INTERNAL_SERVER_ERROR, vec![format!("failed: {reason}")])
            }
        }
    }
    .instrument(span)
    .await
}

/// The one binding's value of `Data` (its name is the function's business).
fn binding_value(data: &Map<String, Value>) -> Result<&Value, String> {
    match data.len() {
        1 => data
            .values()
            .next()
            .ok_or_else(|| "Data is empty".to_owned()),
        0 => Err("Data holds no binding".into()),
        _ => Err(format!(
            "Data holds {} bindings; one is expected",
            data.len()
        )),
    }
}

/// A JSON value that may arrive as JSON text inside a string (custom handlers get binding
/// data serialized so).
fn unwrap_json(value: &Value) -> Result<Value, String> {
    match value {
        Value::String(text) => {
            serde_json::from_str(text).map_err(|e| format!("the body is not JSON: {e}"))
        }
        other => Ok(other.clone()),
    }
}

/// The message of a `serviceBusTrigger` invocation: the CloudEvent from the body, the
/// correlation id and application properties (`traceparent`) from the metadata.
pub fn bus_message(
    data: &Map<String, Value>,
    metadata: &Map<String, Value>,
) -> Result<Message, String> {
    let body = unwrap_json(binding_value(data)?)?;
    let event: CloudEvent =
        serde_json::from_value(body).map_err(|e| format!("the body is not a CloudEvent: {e}"))?;
    let mut message = Message::new(event);
    if let Some(correlation) = metadata.get("CorrelationId").and_then(Value::as_str) {
        message.correlation_id = Some(correlation.to_owned());
    }
    for key in ["ApplicationProperties", "UserProperties"] {
        if let Some(properties) = metadata.get(key).map(unwrap_json).transpose()?
            && let Some(properties) = properties.as_object()
        {
            for (name, value) in properties {
                let text = match value {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                message.properties.insert(name.clone(), text);
            }
        }
    }
    Ok(message)
}

/// The documents of a `cosmosDBTrigger` invocation, as the Cosmos DB adapter stores them
/// (`{id, pk, doc, _etag}`).
pub fn feed_documents(data: &Map<String, Value>) -> Result<Vec<Document>, String> {
    let items = unwrap_json(binding_value(data)?)?;
    let Value::Array(items) = items else {
        return Err("the documents are not a list".into());
    };
    items
        .into_iter()
        .map(|item| {
            let field = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| format!("an item has no {name}"))
            };
            Ok(Document {
                id: field("id")?,
                partition_key: field("pk")?,
                etag: ETag::new(field("_etag")?),
                body: item.get("doc").cloned().ok_or("an item has no doc")?,
            })
        })
        .collect()
}

/// A `cosmosDBTrigger` item for a document, as the Cosmos DB adapter stores it (for hosts
/// that emulate Functions).
pub fn feed_item(document: &Document) -> Value {
    json!({"id": document.id, "pk": document.partition_key, "doc": document.body,
        "_etag": document.etag.as_str(), "_ts": 0})
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture(name: &str) -> (Map<String, Value>, Map<String, Value>) {
        let path = format!(
            "{}/tests/fixtures/functions/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let invocation: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        (
            invocation["Data"].as_object().unwrap().clone(),
            invocation["Metadata"].as_object().unwrap().clone(),
        )
    }

    #[test]
    fn a_service_bus_invocation_gives_the_cloudevent_and_its_trace_context() {
        let (data, metadata) = fixture("servicebus-trigger.json");
        let message = bus_message(&data, &metadata).unwrap();
        assert_eq!(message.event.event_type, "orders.order.confirmed.v1");
        assert_eq!(message.event.data["customerId"], "c-1");
        assert_eq!(message.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(
            message.properties["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        // The body as an object, not a string, is taken too.
        let mut as_object = data.clone();
        let body: Value = serde_json::from_str(data["message"].as_str().unwrap()).unwrap();
        as_object.insert("message".into(), body);
        assert_eq!(
            bus_message(&as_object, &metadata).unwrap().event,
            message.event
        );
        // A body that is not a CloudEvent is refused with the reason.
        let mut broken = data;
        broken.insert("message".into(), Value::String("{\"hello\": 1}".into()));
        assert!(
            bus_message(&broken, &metadata)
                .unwrap_err()
                .contains("CloudEvent")
        );
    }

    #[test]
    fn a_cosmos_db_invocation_gives_the_stored_documents() {
        let (data, _) = fixture("cosmosdb-trigger.json");
        let documents = feed_documents(&data).unwrap();
        assert_eq!(documents.len(), 1);
        let document = &documents[0];
        assert_eq!(document.partition_key, "c-1");
        assert_eq!(document.body["kind"], "outbox");
        assert_eq!(
            document.etag.as_str(),
            "\"0b00a6e1-0000-0d00-0000-6745f1b10000\""
        );
        let again = feed_documents(
            &json!({"documents": [feed_item(document)]})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
        assert_eq!(again, documents);
        assert!(feed_documents(&json!({"documents": "{}"}).as_object().unwrap().clone()).is_err());
    }
}
