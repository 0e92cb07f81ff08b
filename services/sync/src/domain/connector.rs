//! Connectors: external systems sync replicates changes to, and the deliveries of those
//! changes, each with its attempts, its next try, and whether it is parked.

use serde::{Deserialize, Serialize};

/// What a connector may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    Orders,
    Products,
    Stock,
    /// Not a change it gets: a source of stock levels sync reads (`GET` on its URL) when it
    /// reconciles.
    #[serde(rename = "stockSource")]
    StockSource,
}

impl Entity {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "orders" => Some(Self::Orders),
            "products" => Some(Self::Products),
            "stock" => Some(Self::Stock),
            "stockSource" => Some(Self::StockSource),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Products => "products",
            Self::Stock => "stock",
            Self::StockSource => "stockSource",
        }
    }

    /// The entity an event type is a change of, if it is replicated at all.
    pub fn of_event(event_type: &str) -> Option<Self> {
        if event_type.starts_with("orders.order.") {
            Some(Self::Orders)
        } else if event_type.starts_with("catalog.product.") {
            Some(Self::Products)
        } else if event_type == "catalog.stock.changed.v1" {
            Some(Self::Stock)
        } else {
            None
        }
    }
}

/// How a connector proves to its target that a delivery is sync's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ConnectorAuth {
    /// `Authorization: Bearer <token>`.
    Bearer {
        token: String,
    },
    /// `X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with
    /// `X-Signature-Timestamp: <unix seconds>`.
    Hmac {
        secret: String,
    },
    None,
}

impl ConnectorAuth {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bearer { .. } => "bearer",
            Self::Hmac { .. } => "hmac",
            Self::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connector {
    pub id: String,
    pub name: String,
    pub url: String,
    pub entities: Vec<Entity>,
    pub auth: ConnectorAuth,
    pub paused: bool,
    /// Unix milliseconds.
    pub created_at: i64,
    pub updated_at: i64,
}

impl Connector {
    pub fn wants(&self, entity: Entity) -> bool {
        self.entities.contains(&entity)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Parked,
}

/// One change on its way to one connector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The event's id (one delivery per event and connector).
    pub event_id: String,
    pub event_type: String,
    pub entity: Entity,
    /// The entity's id: the order id or the SKU.
    pub key: String,
    /// The CloudEvent as it is sent.
    pub event: serde_json::Value,
    pub state: DeliveryState,
    /// When it was queued, in microseconds: deliveries go out in this order.
    pub seq: i64,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    RetryAt(i64),
    Park,
}

/// The next step after attempt number `attempts` failed at `now_ms`, on `schedule` (the
/// pause before each retry): retry after the next pause, or park once it is used up.
pub fn after_failure(attempts: u32, now_ms: i64, schedule: &[u64]) -> AfterFailure {
    match schedule.get(attempts.saturating_sub(1) as usize) {
        Some(pause) => {
            AfterFailure::RetryAt(now_ms + i64::try_from(*pause).unwrap_or(i64::MAX / 2))
        }
        None => AfterFailure::Park,
    }
}

/// The entity key of an event: the order id for order events, else the SKU.
pub fn entity_key(
    entity: Entity,
    data: &serde_json::Value,
    subject: Option<&str>,
) -> Option<String> {
    let field = match entity {
        Entity::Orders => "orderId",
        Entity::Products | Entity::Stock | Entity::StockSource => "sku",
    };
    data.get(field)
        .and_then(|v| v.as_str())
        .or(subject)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_the_entities_connectors_ask_for() {
        assert_eq!(
            Entity::of_event("orders.order.confirmed.v1"),
            Some(Entity::Orders)
        );
        assert_eq!(
            Entity::of_event("catalog.product.deleted.v1"),
            Some(Entity::Products)
        );
        assert_eq!(
            Entity::of_event("catalog.stock.changed.v1"),
            Some(Entity::Stock)
        );
        assert_eq!(Entity::of_event("catalog.stock.reserved.v1"), None);
    }

    #[test]
    fn failures_retry_on_the_schedule_then_park() {
        let schedule = [1_000, 5_000];
        assert_eq!(after_failure(1, 0, &schedule), AfterFailure::RetryAt(1_000));
        assert_eq!(
            after_failure(2, 10, &schedule),
            AfterFailure::RetryAt(5_010)
        );
        assert_eq!(after_failure(3, 10, &schedule), AfterFailure::Park);
    }
}
