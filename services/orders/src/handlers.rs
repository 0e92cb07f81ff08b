//! What orders does with the catalog's answers: confirm or reject the pending order, in
//! one batch with the record that the event was handled and the event it publishes (the
//! runtime's idempotent consumer).

use async_trait::async_trait;
use common::bus::CloudEvent;
use common::bus::worker::HandlerError;
use common::events::{
    OrderConfirmed, OrderRefV1, OrderRefusedV1, OrderRejected, StockReservationFailed,
    StockReserved,
};
use common::runtime::consumer::{body, transient};
use common::runtime::{Effect, Handles, IdempotentConsumer};
use common::store::BatchOp;
use time::OffsetDateTime;

use crate::domain::Order;
use crate::orders::ORDERS;

pub struct StockEvents {
    pub consumer: IdempotentConsumer,
}

enum Answer {
    Confirm,
    Reject(String),
}

impl StockEvents {
    async fn plan(
        &self,
        order_id: &str,
        customer_id: &str,
        answer: &Answer,
    ) -> Result<Effect, HandlerError> {
        let document = self
            .consumer
            .store()
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
        let next = match answer {
            Answer::Confirm => order.confirm(now),
            Answer::Reject(reason) => order.reject(reason.clone(), now),
        };
        let next = match next {
            Ok(next) => next,
            // Already decided (a repeat, or a cancel got there first): record and move on.
            Err(rule) => {
                tracing::info!(%rule, "answer does not apply to the order's state");
                return Ok(Effect::none());
            }
        };
        let effect = Effect::none().write(BatchOp::Replace {
            id: order.id.clone(),
            body: body(&next)?,
            if_match: Some(etag),
        });
        match answer {
            Answer::Confirm => effect.publish::<OrderConfirmed>(
                &order.id,
                &OrderRefV1 {
                    order_id: order.id.clone(),
                    customer_id: order.customer_id.clone(),
                    contact_email: order.contact_email.clone(),
                },
            ),
            Answer::Reject(reason) => effect.publish::<OrderRejected>(
                &order.id,
                &OrderRefusedV1 {
                    order_id: order.id.clone(),
                    customer_id: order.customer_id.clone(),
                    reason: reason.clone(),
                    shortages: Vec::new(),
                    contact_email: order.contact_email.clone(),
                },
            ),
        }
    }

    #[tracing::instrument(skip_all, fields(order_id = %order_id))]
    async fn apply(
        &self,
        event: &CloudEvent,
        order_id: &str,
        customer_id: &str,
        answer: Answer,
    ) -> Result<(), HandlerError> {
        self.consumer
            .apply_once(ORDERS, customer_id, event, || {
                self.plan(order_id, customer_id, &answer)
            })
            .await
    }
}

#[async_trait]
impl Handles<StockReserved> for StockEvents {
    async fn handle(&self, event: &CloudEvent, reserved: OrderRefV1) -> Result<(), HandlerError> {
        self.apply(
            event,
            &reserved.order_id,
            &reserved.customer_id,
            Answer::Confirm,
        )
        .await
    }
}

#[async_trait]
impl Handles<StockReservationFailed> for StockEvents {
    async fn handle(&self, event: &CloudEvent, failed: OrderRefusedV1) -> Result<(), HandlerError> {
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
}
