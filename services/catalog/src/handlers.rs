//! What the catalog does with other services' events: reserve stock for placed orders
//! (every line or none) and release it for cancelled ones. Each handler commits its
//! effect, the record that the event was handled, and the event it publishes in one batch
//! in the stock partition: exactly once, whatever the bus redelivers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use common::bus::outbox::{OutboxSignal, outbox_op, processed_id, processed_op};
use common::bus::worker::{HandlerError, MessageHandler};
use common::bus::{CloudEvent, Message, topics};
use common::events::{self, OrderLineV1, OrderPlacedV1, OrderRefV1, OrderRefusedV1, ShortageV1};
use common::store::{BatchOp, ETag, SharedStore, StoreError};

use crate::catalog::{STOCK, STOCK_PARTITION};
use crate::domain::stock::{Reservation, ReservedLine, Stock};

/// Attempts before a handler gives the message back to the bus (a write kept racing).
const ATTEMPTS: usize = 32;

pub struct OrderEvents {
    pub store: SharedStore,
    pub signal: OutboxSignal,
}

fn transient(error: StoreError) -> HandlerError {
    HandlerError::Transient(error.to_string())
}

fn body<T: serde::Serialize>(value: &T) -> Result<serde_json::Value, HandlerError> {
    serde_json::to_value(value).map_err(|e| HandlerError::Permanent(e.to_string()))
}

enum Outcome {
    Committed,
    Raced,
}

impl OrderEvents {
    async fn handled_already(&self, event: &CloudEvent) -> Result<bool, HandlerError> {
        Ok(self
            .store
            .read(STOCK, STOCK_PARTITION, &processed_id(&event.id))
            .await
            .map_err(transient)?
            .is_some())
    }

    async fn commit(
        &self,
        operations: Vec<BatchOp>,
        event: &CloudEvent,
    ) -> Result<Outcome, HandlerError> {
        match self.store.batch(STOCK, STOCK_PARTITION, operations).await {
            Ok(_) => {
                self.signal.notify();
                Ok(Outcome::Committed)
            }
            // Another delivery of the same event won, or a stock item changed under us.
            Err(StoreError::Conflict | StoreError::PreconditionFailed | StoreError::NotFound) => {
                if self.handled_already(event).await? {
                    Ok(Outcome::Committed)
                } else {
                    Ok(Outcome::Raced)
                }
            }
            Err(other) => Err(transient(other)),
        }
    }

    async fn stock_of(&self, sku: &str) -> Result<Option<(Stock, ETag)>, HandlerError> {
        let Some(document) = self
            .store
            .read(STOCK, STOCK_PARTITION, sku)
            .await
            .map_err(transient)?
        else {
            return Ok(None);
        };
        let (stock, etag) = document.into_model::<Stock>().map_err(transient)?;
        Ok(Some((stock, etag)))
    }

    #[tracing::instrument(skip_all, fields(order_id))]
    async fn reserve(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let placed: OrderPlacedV1 = events::data(event).map_err(HandlerError::Permanent)?;
        tracing::Span::current().record("order_id", placed.order_id.as_str());
        if placed.lines.is_empty() {
            return Err(HandlerError::Permanent("an order without lines".into()));
        }
        // Lines for one SKU are reserved together.
        let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
        for OrderLineV1 { sku, quantity } in &placed.lines {
            if *quantity <= 0 {
                return Err(HandlerError::Permanent(format!(
                    "line {sku} has quantity {quantity}"
                )));
            }
            *wanted.entry(sku.clone()).or_default() += quantity;
        }
        for _ in 0..ATTEMPTS {
            if self.handled_already(event).await? {
                return Ok(());
            }
            let mut operations = Vec::new();
            let mut shortages = Vec::new();
            let mut reserved = Vec::new();
            for (sku, quantity) in &wanted {
                match self.stock_of(sku).await? {
                    Some((stock, etag)) => match stock.reserve(*quantity) {
                        Some(after) => {
                            operations.push(BatchOp::Replace {
                                id: sku.clone(),
                                body: body(&after)?,
                                if_match: Some(etag),
                            });
                            reserved.push(ReservedLine {
                                sku: stock.sku.clone(),
                                quantity: *quantity,
                            });
                        }
                        None => shortages.push(ShortageV1 {
                            sku: sku.clone(),
                            requested: *quantity,
                            available: stock.available(),
                        }),
                    },
                    None => shortages.push(ShortageV1 {
                        sku: sku.clone(),
                        requested: *quantity,
                        available: 0,
                    }),
                }
            }
            let reference = OrderRefV1 {
                order_id: placed.order_id.clone(),
                customer_id: placed.customer_id.clone(),
            };
            let answer = if shortages.is_empty() {
                let reservation = Reservation {
                    kind: Reservation::KIND.to_owned(),
                    order_id: placed.order_id.clone(),
                    customer_id: placed.customer_id.clone(),
                    lines: reserved,
                };
                operations.push(BatchOp::Create {
                    id: Reservation::id_for(&placed.order_id),
                    body: body(&reservation)?,
                });
                CloudEvent::new(
                    "catalog",
                    events::STOCK_RESERVED_V1,
                    &placed.order_id,
                    body(&reference)?,
                )
            } else {
                operations.clear();
                let refused = OrderRefusedV1 {
                    order_id: placed.order_id.clone(),
                    customer_id: placed.customer_id.clone(),
                    reason: "insufficient stock".to_owned(),
                    shortages,
                };
                CloudEvent::new(
                    "catalog",
                    events::STOCK_RESERVATION_FAILED_V1,
                    &placed.order_id,
                    body(&refused)?,
                )
            };
            operations.push(processed_op(&event.id));
            operations.push(outbox_op(topics::CATALOG, &answer));
            if let Outcome::Committed = self.commit(operations, event).await? {
                tracing::info!(event_type = %answer.event_type, "answered order");
                return Ok(());
            }
        }
        Err(HandlerError::Transient(
            "stock kept changing; will retry".into(),
        ))
    }

    #[tracing::instrument(skip_all, fields(order_id))]
    async fn release(&self, event: &CloudEvent) -> Result<(), HandlerError> {
        let cancelled: OrderRefV1 = events::data(event).map_err(HandlerError::Permanent)?;
        tracing::Span::current().record("order_id", cancelled.order_id.as_str());
        let reservation_id = Reservation::id_for(&cancelled.order_id);
        for _ in 0..ATTEMPTS {
            if self.handled_already(event).await? {
                return Ok(());
            }
            let mut operations = Vec::new();
            if let Some(document) = self
                .store
                .read(STOCK, STOCK_PARTITION, &reservation_id)
                .await
                .map_err(transient)?
            {
                let (reservation, reservation_etag) =
                    document.into_model::<Reservation>().map_err(transient)?;
                for line in &reservation.lines {
                    if let Some((stock, etag)) = self.stock_of(line.sku.as_str()).await? {
                        operations.push(BatchOp::Replace {
                            id: line.sku.as_str().to_owned(),
                            body: body(&stock.release(line.quantity))?,
                            if_match: Some(etag),
                        });
                    }
                }
                operations.push(BatchOp::Delete {
                    id: reservation_id.clone(),
                    if_match: Some(reservation_etag),
                });
                let released = CloudEvent::new(
                    "catalog",
                    events::STOCK_RELEASED_V1,
                    &cancelled.order_id,
                    body(&cancelled)?,
                );
                operations.push(outbox_op(topics::CATALOG, &released));
            }
            operations.push(processed_op(&event.id));
            if let Outcome::Committed = self.commit(operations, event).await? {
                return Ok(());
            }
        }
        Err(HandlerError::Transient(
            "stock kept changing; will retry".into(),
        ))
    }
}

#[async_trait]
impl MessageHandler for OrderEvents {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        match message.event.event_type.as_str() {
            events::ORDER_PLACED_V1 => self.reserve(&message.event).await,
            events::ORDER_CANCELLED_V1 => self.release(&message.event).await,
            // Other order events are not the catalog's business.
            _ => Ok(()),
        }
    }
}
