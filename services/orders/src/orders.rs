//! The orders service's use cases over the store port, the bus outbox and the catalog.
//!
//! Container `orders`, partition key = customer id. Each partition holds the customer's
//! orders (id = order id), idempotency records (`idempotency-<key>`), the records of
//! handled events and the outbox: an order and the event it causes commit in one batch.

use common::bus::outbox::{KIND_FIELD, OutboxSignal, outbox_op};

use common::events::{
    EventType, OrderCancelled, OrderLineV1, OrderPlaced, OrderPlacedV1, OrderRefV1,
};
use common::store::{BatchOp, ETag, Query, QueryScope, SharedStore, StoreError};
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::catalog_client::{CatalogClient, CatalogError};
use crate::domain::{Order, OrderError, OrderStatus, PricedLine};

pub const ORDERS: &str = "orders";
pub const CONTAINERS: &[&str] = &[ORDERS];

#[derive(Debug, thiserror::Error)]
pub enum OrdersError {
    #[error("order {0} was not found")]
    NotFound(String),
    #[error("products do not exist: {0:?}")]
    UnknownProducts(Vec<(usize, String)>),
    #[error(transparent)]
    Catalog(CatalogError),
    #[error(transparent)]
    Rule(#[from] OrderError),
    #[error("the Idempotency-Key was used before with a different request")]
    IdempotencyMismatch,
    #[error("the order was changed since the given ETag")]
    StaleETag,
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for OrdersError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::PreconditionFailed => OrdersError::StaleETag,
            other => OrdersError::Store(other),
        }
    }
}

/// A validated request to place an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrder {
    pub customer_id: String,
    pub lines: Vec<OrderLineV1>,
    /// Where the customer is told about the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
}

/// What an `Idempotency-Key` was first used for by a client, and the order it makes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdempotencyRecord {
    kind: String,
    client: String,
    route: String,
    request: PlaceOrder,
    order_id: String,
}

/// The route idempotency keys of placements belong to.
const PLACE_ROUTE: &str = "POST /v1/orders";
/// How long a key is remembered: a day covers every client's retries.
const IDEMPOTENCY_TTL_SECONDS: u32 = 24 * 3600;

/// Where a client's key for the placement route is recorded: the client's own partition
/// (never the customer's, which the body chooses), under a digest of route and key (a key
/// may hold characters an id may not).
fn idempotency_location(client: &str, key: &str) -> (String, String) {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{PLACE_ROUTE}\n{key}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    (format!("client:{client}"), format!("idempotency-{hex}"))
}

enum Claim {
    /// The key was used for this very request, which made this order.
    Answered(Box<(Order, ETag)>),
    /// Place the order, with this id.
    Place(String),
}

fn to_json<T: Serialize>(value: &T) -> Result<serde_json::Value, OrdersError> {
    serde_json::to_value(value).map_err(|e| OrdersError::Store(StoreError::Serialization(e.into())))
}

pub struct OrderPage {
    pub orders: Vec<(Order, ETag)>,
    pub continuation: Option<String>,
}

#[derive(Clone)]
pub struct Orders {
    store: SharedStore,
    catalog: CatalogClient,
    signal: OutboxSignal,
}

impl Orders {
    pub fn new(store: SharedStore, catalog: CatalogClient, signal: OutboxSignal) -> Self {
        Self {
            store,
            catalog,
            signal,
        }
    }

    /// Places an order: prices from the catalog, stored as pending together with its
    /// `orders.order.placed.v1` event. With an idempotency key, a repeat of the same
    /// request by the same client answers with the same order; `replayed` says so.
    pub async fn place(
        &self,
        client: &str,
        request: PlaceOrder,
        idempotency_key: Option<&str>,
    ) -> Result<(Order, ETag, bool), OrdersError> {
        let order_id = match idempotency_key {
            None => uuid::Uuid::now_v7().to_string(),
            Some(key) => match self.claim(client, &request, key).await? {
                Claim::Answered(answered) => {
                    let (order, etag) = *answered;
                    return Ok((order, etag, true));
                }
                Claim::Place(order_id) => order_id,
            },
        };
        let priced = self.price(&request).await?;
        let order = Order::place(
            order_id,
            request.customer_id.clone(),
            priced,
            OffsetDateTime::now_utc(),
        )?
        .with_contact_email(request.contact_email.clone());
        let placed = OrderPlacedV1 {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            lines: request.lines.clone(),
        };
        let event = OrderPlaced::event(&order.id, &placed)
            .map_err(|e| OrdersError::Store(StoreError::Serialization(e.into())))?;
        let operations = vec![
            BatchOp::Create {
                id: order.id.clone(),
                body: to_json(&order)?,
            },
            outbox_op(OrderPlaced::TOPIC, &event),
        ];
        match self
            .store
            .batch(ORDERS, &order.customer_id, operations)
            .await
        {
            Ok(etags) => {
                self.signal.notify();
                let etag = etags
                    .into_iter()
                    .next()
                    .flatten()
                    .unwrap_or_else(|| ETag::new(""));
                Ok((order, etag, false))
            }
            // A concurrent request with the same key placed it first: answer as it did.
            Err(StoreError::Conflict) if idempotency_key.is_some() => {
                let (order, etag) = self.order_in(&order.customer_id, &order.id).await?;
                Ok((order, etag, true))
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Takes `key` for this client and request, or finds what it was taken for. The
    /// record lives in the client's own partition, whatever customer the body names, and
    /// carries the order id chosen for the request, so that a retry after a failure places
    /// the very same order.
    async fn claim(
        &self,
        client: &str,
        request: &PlaceOrder,
        key: &str,
    ) -> Result<Claim, OrdersError> {
        let (pk, id) = idempotency_location(client, key);
        for _ in 0..4 {
            if let Some(document) = self.store.read(ORDERS, &pk, &id).await? {
                let (record, _) = document.into_model::<IdempotencyRecord>()?;
                if record.request != *request {
                    return Err(OrdersError::IdempotencyMismatch);
                }
                return match self
                    .store
                    .read(ORDERS, &request.customer_id, &record.order_id)
                    .await?
                {
                    Some(order) => {
                        let (order, etag) = order.into_model::<Order>()?;
                        Ok(Claim::Answered(Box::new((order, etag))))
                    }
                    // Taken, but the order was never stored (a failure, or a crash): place it now.
                    None => Ok(Claim::Place(record.order_id)),
                };
            }
            let record = IdempotencyRecord {
                kind: "idempotency".to_owned(),
                client: client.to_owned(),
                route: PLACE_ROUTE.to_owned(),
                request: request.clone(),
                order_id: uuid::Uuid::now_v7().to_string(),
            };
            let operation = BatchOp::CreateExpiring {
                id: id.clone(),
                body: to_json(&record)?,
                ttl_seconds: IDEMPOTENCY_TTL_SECONDS,
            };
            match self.store.batch(ORDERS, &pk, vec![operation]).await {
                Ok(_) => return Ok(Claim::Place(record.order_id)),
                // Another request took the key first: read what it was taken for.
                Err(StoreError::Conflict) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(OrdersError::Store(StoreError::Unavailable(
            "the idempotency key is being taken concurrently; retry".into(),
        )))
    }

    async fn order_in(
        &self,
        customer_id: &str,
        order_id: &str,
    ) -> Result<(Order, ETag), OrdersError> {
        let document = self
            .store
            .read(ORDERS, customer_id, order_id)
            .await?
            .ok_or_else(|| OrdersError::NotFound(order_id.to_owned()))?;
        Ok(document.into_model::<Order>()?)
    }

    async fn price(&self, request: &PlaceOrder) -> Result<Vec<PricedLine>, OrdersError> {
        let prices = join_all(
            request
                .lines
                .iter()
                .map(|line| self.catalog.price(&line.sku)),
        )
        .await;
        let mut priced = Vec::new();
        let mut unknown = Vec::new();
        for (index, (line, price)) in request.lines.iter().zip(prices).enumerate() {
            match price {
                Ok(unit_price) => priced.push(PricedLine {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price,
                }),
                Err(CatalogError::UnknownProduct(sku)) => unknown.push((index, sku)),
                Err(other) => return Err(OrdersError::Catalog(other)),
            }
        }
        if !unknown.is_empty() {
            return Err(OrdersError::UnknownProducts(unknown));
        }
        Ok(priced)
    }

    /// Finds an order by id alone (a cross-partition lookup).
    pub async fn get(&self, id: &str) -> Result<(Order, ETag), OrdersError> {
        let document = self
            .store
            .find_by_id(ORDERS, id)
            .await?
            .filter(|document| {
                document.body.get(KIND_FIELD).and_then(|kind| kind.as_str()) == Some(Order::KIND)
            })
            .ok_or_else(|| OrdersError::NotFound(id.to_owned()))?;
        Ok(document.into_model()?)
    }

    pub async fn list(
        &self,
        customer_id: Option<&str>,
        status: Option<OrderStatus>,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<OrderPage, OrdersError> {
        let scope = match customer_id {
            Some(customer) => QueryScope::Partition(customer.to_owned()),
            None => QueryScope::AllPartitions,
        };
        let mut query = Query::new(scope, limit)
            .filter(KIND_FIELD, Order::KIND)
            .continue_from(continuation);
        if let Some(status) = status {
            query = query.filter("status", status.as_str());
        }
        let page = self.store.query(ORDERS, &query).await?;
        let orders = page
            .items
            .into_iter()
            .map(|d| d.into_model())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OrderPage {
            orders,
            continuation: page.continuation,
        })
    }

    /// Cancels a confirmed order; catalog releases its stock on the event.
    pub async fn cancel(
        &self,
        id: &str,
        expected: Option<&ETag>,
    ) -> Result<(Order, ETag), OrdersError> {
        let (order, etag) = self.get(id).await?;
        if expected.is_some_and(|expected| *expected != etag) {
            return Err(OrdersError::StaleETag);
        }
        let cancelled = order.cancel(OffsetDateTime::now_utc())?;
        let reference = OrderRefV1 {
            order_id: order.id.clone(),
            customer_id: order.customer_id.clone(),
            contact_email: order.contact_email.clone(),
        };
        let event = OrderCancelled::event(&order.id, &reference)
            .map_err(|e| OrdersError::Store(StoreError::Serialization(e.into())))?;
        let operations = vec![
            BatchOp::Replace {
                id: order.id.clone(),
                body: to_json(&cancelled)?,
                if_match: Some(etag),
            },
            outbox_op(OrderCancelled::TOPIC, &event),
        ];
        let etags = self
            .store
            .batch(ORDERS, &order.customer_id, operations)
            .await?;
        self.signal.notify();
        Ok((
            cancelled,
            etags
                .into_iter()
                .next()
                .flatten()
                .unwrap_or_else(|| ETag::new("")),
        ))
    }
}
