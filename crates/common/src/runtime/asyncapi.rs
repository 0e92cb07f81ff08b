//! A service's events as an AsyncAPI 3.0 document, generated from its descriptor: one
//! channel per topic, a `send` operation per event type it publishes and a `receive`
//! operation per subscription, each message a CloudEvents 1.0 envelope whose `data` follows
//! the JSON Schema generated from the event's Rust type.

use serde_json::{Map, Value, json};

use super::ServiceDescriptor;
use crate::events::EventContract;

const SCHEMA_FORMAT: &str = "application/schema+json;version=draft-2020-12";

fn message_ref(topic: &str, event_type: &str) -> Value {
    json!({"$ref": format!("#/channels/{topic}/messages/{event_type}")})
}

/// The AsyncAPI document of `descriptor`'s events.
pub fn document(descriptor: &ServiceDescriptor) -> Value {
    let mut channels: Map<String, Value> = Map::new();
    let mut operations: Map<String, Value> = Map::new();
    let mut messages: Map<String, Value> = Map::new();
    let mut add = |contract: &EventContract, channels: &mut Map<String, Value>| {
        messages.insert(
            contract.event_type.to_owned(),
            json!({
                "name": contract.event_type,
                "title": contract.event_type,
                "summary": contract.summary,
                "contentType": "application/cloudevents+json",
                "payload": {"schemaFormat": SCHEMA_FORMAT, "schema": contract.envelope_schema()},
            }),
        );
        let channel = channels.entry(contract.topic.to_owned()).or_insert_with(|| {
            json!({
                "address": contract.topic,
                "description": "A topic of the platform's bus (Service Bus topic, or the embedded bus).",
                "messages": {},
            })
        });
        if let Some(list) = channel["messages"].as_object_mut() {
            list.insert(
                contract.event_type.to_owned(),
                json!({"$ref": format!("#/components/messages/{}", contract.event_type)}),
            );
        }
    };
    for contract in (descriptor.publishes)() {
        add(&contract, &mut channels);
        operations.insert(
            format!("send.{}", contract.event_type),
            json!({
                "action": "send",
                "summary": contract.summary,
                "channel": {"$ref": format!("#/channels/{}", contract.topic)},
                "messages": [message_ref(contract.topic, contract.event_type)],
            }),
        );
    }
    let consumed = (descriptor.consumes)();
    for contract in &consumed {
        add(contract, &mut channels);
    }
    for subscription in descriptor.subscriptions {
        let refs: Vec<Value> = subscription
            .event_types
            .iter()
            .map(|event_type| message_ref(subscription.topic, event_type))
            .collect();
        operations.insert(
            format!("receive.{}.{}", subscription.topic, subscription.name),
            json!({
                "action": "receive",
                "summary": format!("Subscription `{}` on `{}`: at-least-once delivery, handled idempotently by event id.", subscription.name, subscription.topic),
                "channel": {"$ref": format!("#/channels/{}", subscription.topic)},
                "messages": refs,
            }),
        );
    }
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("{} events", descriptor.name),
            "version": "1",
            "description": format!("The events the {} service publishes and consumes. Every message is a CloudEvents 1.0 envelope (JSON); `id` is unique per event and is the bus message id; a breaking change is a new `...v2` type published beside the old one.", descriptor.name),
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    })
}
