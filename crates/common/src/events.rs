//! The platform's event contracts: each CloudEvents `type` is a Rust type implementing
//! [`EventType`], naming its topic and its `data`, from which its JSON Schema is generated.
//! A new version is a new type (`...v2`) published beside the old one.

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::bus::{CloudEvent, topics};

/// One event type of the platform's contract.
pub trait EventType: Send + Sync + 'static {
    /// The CloudEvents `type`, e.g. `orders.order.placed.v1`.
    const TYPE: &'static str;
    /// The topic it is published on.
    const TOPIC: &'static str;
    /// The publishing service (CloudEvents `source` is `/<service>`).
    const SOURCE: &'static str;
    /// What it says, in one line (AsyncAPI `summary`).
    const SUMMARY: &'static str;
    /// The event's `data`.
    type Data: Serialize + DeserializeOwned + JsonSchema + Send + Sync + 'static;

    /// A new event of this type about `subject`, carrying the current trace context.
    fn event(subject: &str, data: &Self::Data) -> Result<CloudEvent, serde_json::Error> {
        Ok(CloudEvent::new(
            Self::SOURCE,
            Self::TYPE,
            subject,
            serde_json::to_value(data)?,
        ))
    }

    /// Reads an event's data, or says why it cannot be read (a permanent failure).
    fn data(event: &CloudEvent) -> Result<Self::Data, String> {
        serde_json::from_value(event.data.clone())
            .map_err(|e| format!("{} data is malformed: {e}", event.event_type))
    }
}

/// What is known of an event type without naming it statically: for documents and checks.
#[derive(Debug, Clone)]
pub struct EventContract {
    pub event_type: &'static str,
    pub topic: &'static str,
    pub source: &'static str,
    pub summary: &'static str,
    /// The JSON Schema (2020-12) of the event's `data`.
    pub data_schema: serde_json::Value,
}

impl EventContract {
    pub fn of<E: EventType>() -> Self {
        // Inlined, so that the schema stands alone wherever it is embedded.
        let generator = schemars::generate::SchemaSettings::draft2020_12()
            .with(|settings| settings.inline_subschemas = true)
            .into_generator();
        let mut data_schema = generator.into_root_schema_for::<E::Data>().to_value();
        if let Some(fields) = data_schema.as_object_mut() {
            fields.remove("$schema");
        }
        Self {
            event_type: E::TYPE,
            topic: E::TOPIC,
            source: E::SOURCE,
            summary: E::SUMMARY,
            data_schema,
        }
    }

    /// The JSON Schema of the whole CloudEvents envelope of this type.
    pub fn envelope_schema(&self) -> serde_json::Value {
        serde_json::json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.event_type,
            "type": "object",
            "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
            "properties": {
                "specversion": {"const": "1.0"},
                "id": {"type": "string", "minLength": 1},
                "source": {"const": format!("/{}", self.source)},
                "type": {"const": self.event_type},
                "subject": {"type": "string"},
                "time": {"type": "string", "format": "date-time"},
                "datacontenttype": {"const": "application/json"},
                "data": self.data_schema,
                "traceparent": {"type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"},
            },
        })
    }
}

macro_rules! event_types {
    ($($(#[$doc:meta])* $name:ident = $type:literal on $topic:expr, from $source:literal, data $data:ty, $summary:literal;)*) => {
        $(
            $(#[$doc])*
            pub struct $name;
            impl EventType for $name {
                const TYPE: &'static str = $type;
                const TOPIC: &'static str = $topic;
                const SOURCE: &'static str = $source;
                const SUMMARY: &'static str = $summary;
                type Data = $data;
            }
        )*
        /// Every event type of the platform.
        pub fn all() -> Vec<EventContract> {
            vec![$(EventContract::of::<$name>()),*]
        }
    };
}

event_types! {
    OrderPlaced = "orders.order.placed.v1" on topics::ORDERS, from "orders", data OrderPlacedV1,
        "An order was accepted as pending: reserve its lines, all or none.";
    OrderConfirmed = "orders.order.confirmed.v1" on topics::ORDERS, from "orders", data OrderRefV1,
        "Stock was reserved for every line: the order is confirmed.";
    OrderRejected = "orders.order.rejected.v1" on topics::ORDERS, from "orders", data OrderRefusedV1,
        "Stock could not be reserved: the order is rejected.";
    OrderCancelled = "orders.order.cancelled.v1" on topics::ORDERS, from "orders", data OrderRefV1,
        "The order was cancelled: release what it reserved.";
    StockReserved = "catalog.stock.reserved.v1" on topics::CATALOG, from "catalog", data OrderRefV1,
        "Every line of the order is reserved.";
    StockReservationFailed = "catalog.stock.reservation-failed.v1" on topics::CATALOG, from "catalog", data OrderRefusedV1,
        "Not every line could be reserved; nothing was.";
    StockReleased = "catalog.stock.released.v1" on topics::CATALOG, from "catalog", data OrderRefV1,
        "The stock an order held was given back.";
    ProductChanged = "catalog.product.changed.v1" on topics::CATALOG, from "catalog", data ProductChangedV1,
        "A product was created or changed; the event carries it whole.";
    ProductDeleted = "catalog.product.deleted.v1" on topics::CATALOG, from "catalog", data ProductDeletedV1,
        "A product was deleted, with its stock record.";
    StockChanged = "catalog.stock.changed.v1" on topics::CATALOG, from "catalog", data StockChangedV1,
        "A SKU's stock changed: counted, reserved or released.";
    EndpointDisabled = "notifications.endpoint.disabled.v1" on topics::NOTIFICATIONS, from "notifications", data EndpointDisabledV1,
        "A webhook endpoint failed for too long and was disabled; nothing is sent to it until it is resumed.";
}

/// The contracts of these event types (names that are no event type are left out).
pub fn contracts_of(types: &[&str]) -> Vec<EventContract> {
    let all = all();
    types
        .iter()
        .filter_map(|name| all.iter().find(|c| c.event_type == *name).cloned())
        .collect()
}

/// The contract of one event type, by its name.
pub fn contract(event_type: &str) -> Option<EventContract> {
    all().into_iter().find(|c| c.event_type == event_type)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLineV1 {
    pub sku: String,
    /// At least 1.
    #[schemars(range(min = 1))]
    pub quantity: i64,
}

/// `orders.order.placed.v1`: reserve these lines, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlacedV1 {
    pub order_id: String,
    pub customer_id: String,
    #[schemars(length(min = 1))]
    pub lines: Vec<OrderLineV1>,
}

/// `orders.order.cancelled.v1`, `orders.order.confirmed.v1`, `catalog.stock.reserved.v1`,
/// `catalog.stock.released.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefV1 {
    pub order_id: String,
    pub customer_id: String,
    /// Where the customer is told about the order (orders' events only, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(email)]
    pub contact_email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShortageV1 {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// `catalog.stock.reservation-failed.v1` and `orders.order.rejected.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefusedV1 {
    pub order_id: String,
    pub customer_id: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortages: Vec<ShortageV1>,
    /// Where the customer is told about the order (orders' events only, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(email)]
    pub contact_email: Option<String>,
}

/// A price in an event: exact decimal text and its ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PriceV1 {
    /// Written with exactly the currency's decimals, e.g. `12.50`.
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub amount: String,
    #[schemars(length(equal = 3))]
    pub currency: String,
}

/// `catalog.product.changed.v1`: the product as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductChangedV1 {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: PriceV1,
    /// When it was last changed (RFC 3339).
    pub updated_at: String,
}

/// `catalog.product.deleted.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductDeletedV1 {
    pub sku: String,
}

/// `catalog.stock.changed.v1`: the SKU's stock as it now is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockChangedV1 {
    pub sku: String,
    #[schemars(range(min = 0))]
    pub on_hand: i64,
    #[schemars(range(min = 0))]
    pub reserved: i64,
    /// On hand less reserved.
    pub available: i64,
}

/// `notifications.endpoint.disabled.v1`: a webhook subscription's endpoint was disabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointDisabledV1 {
    pub subscription_id: String,
    pub url: String,
    /// Since when every attempt failed (RFC 3339).
    pub failing_since: String,
    /// The last failure, e.g. `answered 503 Service Unavailable`.
    pub reason: String,
}
