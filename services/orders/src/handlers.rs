//! What orders does with the catalog's answers: confirm or reject the pending order, in
//! one batch with the record that the event was handled and the event it publishes.

use async_trait::async_trait;
use common::bus::outbox::{OutboxSignal, outbox_op, processed_id, processed_op};
use common::bus::worker::{HandlerError, MessageHandler};
use common::bus::{CloudEvent, Message, topics};
use common::events::{self, OrderRefV1, OrderRefusedV1};
use common::store::{BatchOp, SharedStore, StoreError};
use time::OffsetDateTime;

use crate::domain::Order;
use crate::orders::ORDERS;

const ATTEMPTS: usize = 16;

pub struct StockEvents {
    pub store: SharedStore,
    pub signal: OutboxSignal,
}

fn transient(error: StoreError) -> HandlerError {
    HandlerError::Transient(error.to_string())
}

enum Answer {
    Confirm,
    Reject(String),
}

impl StockEvents {
    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn apply(
        &self,
        event: &CloudEvent,
        order_id: &str,
        customer_id: &str,
        answer: Answer,
    ) -> Result<(), HandlerError> {
        for _ in 0..ATTEMPTS {
            if self
                .store
                .read(ORDERS, customer_id, &processed_id(&event.id))
                .await
                .map_err(transient)?
                .is_some()
            {
                return Ok(());
            }
            let document = self
                .store
                .read(ORDERS, customer_id, order_id)
                .await
                .map_err(transient)?
                .ok_or_else(|| {
                    HandlerError::Permanent(format!(
                        "order {order_id} of customer {customer_id} does not exist"
                    ))
                })?;
            let (order, etag) = document.into_model::<Order>().map_err(transient)?;
            let now = OffsetDateTime::now_utc();
            let next = match &answer {
                Answer::Confirm => order.confirm(now),
                Answer::Reject(reason) => order.reject(reason.clone(), now),
            };
            let mut operations = vec![processed_op(&event.id)];
            match next {
                Ok(next) => {
                    let reference = OrderRefV1 {
                        order_id: order.id.clone(),
                        customer_id: order.customer_id.clone(),
                    };
                    let (event_type, data) = match &answer {
                        Answer::Confirm => {
                            (events::ORDER_CONFIRMED_V1, serde_json::to_value(&reference))
                        }
                        Answer::Reject(reason) => (
                            events::ORDER_REJECTED_V1,
                            serde_json::to_value(OrderRefusedV1 {
                                order_id: order.id.clone(),
                                customer_id: order.customer_id.clone(),
                                reason: reason.clone(),
                                shortages: Vec::new(),
                            }),
                        ),
                    };
                    let data = data.map_err(|e| HandlerError::Permanent(e.to_string()))?;
                    let outcome = CloudEvent::new("orders", event_type, &order.id, data);
                    let body = serde_json::to_value(&next)
                        .map_err(|e| HandlerError::Permanent(e.to_string()))?;
                    operations.push(BatchOp::Replace {
                        id: order.id.clone(),
                        body,
                        if_match: Some(etag),
                    });
                    operations.push(outbox_op(topics::ORDERS, &outcome));
                }
                // Already decided (a repeat, or a cancel got there first): record and move on.
                Err(rule) => tracing::info!(%rule, "answer does not apply to the order's state"),
            }
            match self.store.batch(ORDERS, customer_id, operations).await {
                Ok(_) => {
                    self.signal.notify();
                    return Ok(());
                }
                Err(StoreError::Conflict | StoreError::PreconditionFailed) => continue,
                Err(other) => return Err(transient(other)),
            }
        }
        Err(HandlerError::Transient(
            "the order kept changing; will retry".into(),
        ))
    }
}

#[async_trait]
impl MessageHandler for StockEvents {
    async fn handle(&self, message: &Message) -> Result<(), HandlerError> {
        let event = &message.event;
        match event.event_type.as_str() {
            events::STOCK_RESERVED_V1 => {
                let reserved: OrderRefV1 = events::data(event).map_err(HandlerError::Permanent)?;
                self.apply(
                    event,
                    &reserved.order_id,
                    &reserved.customer_id,
                    Answer::Confirm,
                )
                .await
            }
            events::STOCK_RESERVATION_FAILED_V1 => {
                let failed: OrderRefusedV1 =
                    events::data(event).map_err(HandlerError::Permanent)?;
                let reason = match failed.shortages.as_slice() {
                    [] => failed.reason.clone(),
                    shortages => format!(
                        "{}: {}",
                        failed.reason,
                        shortages
                            .iter()
                            .map(|s| format!(
                                "{} (requested {}, available {})",
                                s.sku, s.requested, s.available
                            ))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.apply(
                    event,
                    &failed.order_id,
                    &failed.customer_id,
                    Answer::Reject(reason),
                )
                .await
            }
            _ => Ok(()),
        }
    }
}
