//! The platform's event contracts: CloudEvents `type`s and their `data`, shared by the
//! services that publish and consume them. A new version is a new type (`...v2`).

use serde::{Deserialize, Serialize};

pub const ORDER_PLACED_V1: &str = "orders.order.placed.v1";
pub const ORDER_CONFIRMED_V1: &str = "orders.order.confirmed.v1";
pub const ORDER_REJECTED_V1: &str = "orders.order.rejected.v1";
pub const ORDER_CANCELLED_V1: &str = "orders.order.cancelled.v1";
pub const STOCK_RESERVED_V1: &str = "catalog.stock.reserved.v1";
pub const STOCK_RESERVATION_FAILED_V1: &str = "catalog.stock.reservation-failed.v1";
pub const STOCK_RELEASED_V1: &str = "catalog.stock.released.v1";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderLineV1 {
    pub sku: String,
    pub quantity: i64,
}

/// `orders.order.placed.v1`: reserve these lines, all or none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderPlacedV1 {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLineV1>,
}

/// `orders.order.cancelled.v1`, `orders.order.confirmed.v1`, `catalog.stock.reserved.v1`,
/// `catalog.stock.released.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefV1 {
    pub order_id: String,
    pub customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShortageV1 {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// `catalog.stock.reservation-failed.v1` and `orders.order.rejected.v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderRefusedV1 {
    pub order_id: String,
    pub customer_id: String,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shortages: Vec<ShortageV1>,
}

/// Reads an event's data, or says why it cannot be read (a permanent failure).
pub fn data<T: serde::de::DeserializeOwned>(event: &crate::bus::CloudEvent) -> Result<T, String> {
    serde_json::from_value(event.data.clone())
        .map_err(|e| format!("{} data is malformed: {e}", event.event_type))
}
