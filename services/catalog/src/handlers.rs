//! What the catalog does with other services' events: reserve stock for placed orders
//! (every line or none, planned by `domain::stock::plan_reservation`) and release it for
//! cancelled ones. Each handler commits its effect, the record that the event was handled,
//! and the event it publishes in one batch in the stock partition (the runtime's idempotent
//! consumer): exactly once, whatever the bus redelivers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use common::bus::CloudEvent;
use common::bus::worker::HandlerError;
use common::events::{
    OrderCancelled, OrderPlaced, OrderPlacedV1, OrderRefV1, OrderRefusedV1, ShortageV1,
    StockReleased, StockReservationFailed, StockReserved,
};
use common::runtime::consumer::{body, transient};
use common::runtime::{Effect, Handles, IdempotentConsumer};
use common::store::{BatchOp, ETag};

use crate::catalog::{STOCK, STOCK_PARTITION};
use crate::domain::Stock;
use crate::domain::stock::{Reservation, ReservationPlan, plan_reservation, wanted_quantities};

pub struct OrderEvents {
    pub consumer: IdempotentConsumer,
}

impl OrderEvents {
    async fn stock_of(&self, sku: &str) -> Result<Option<(Stock, ETag)>, HandlerError> {
        let Some(document) = self
            .consumer
            .store()
            .read(STOCK, STOCK_PARTITION, sku)
            .await
            .map_err(transient)?
        else {
            return Ok(None);
        };
        Ok(Some(document.into_model::<Stock>().map_err(transient)?))
    }

    async fn plan_reservation(
        &self,
        placed: &OrderPlacedV1,
        wanted: &BTreeMap<String, i64>,
    ) -> Result<Effect, HandlerError> {
        let mut current = BTreeMap::new();
        let mut etags = BTreeMap::new();
        for sku in wanted.keys() {
            if let Some((stock, etag)) = self.stock_of(sku).await? {
                current.insert(sku.clone(), stock);
                etags.insert(sku.clone(), etag);
            }
        }
        match plan_reservation(wanted, &current) {
            ReservationPlan::Reserve { updated, lines } => {
                let mut effect = Effect::none();
                for stock in updated {
                    let id = stock.sku.as_str().to_owned();
                    effect = effect.write(BatchOp::Replace {
                        if_match: etags.get(&id).cloned(),
                        id,
                        body: body(&stock)?,
                    });
                }
                let reservation = Reservation {
                    kind: Reservation::KIND.to_owned(),
                    order_id: placed.order_id.clone(),
                    customer_id: placed.customer_id.clone(),
                    lines,
                };
                effect
                    .write(BatchOp::Create {
                        id: Reservation::id_for(&placed.order_id),
                        body: body(&reservation)?,
                    })
                    .publish::<StockReserved>(
                        &placed.order_id,
                        &OrderRefV1 {
                            order_id: placed.order_id.clone(),
                            customer_id: placed.customer_id.clone(),
                            contact_email: None,
                        },
                    )
            }
            ReservationPlan::Refuse(shortages) => Effect::none().publish::<StockReservationFailed>(
                &placed.order_id,
                &OrderRefusedV1 {
                    order_id: placed.order_id.clone(),
                    customer_id: placed.customer_id.clone(),
                    reason: "insufficient stock".to_owned(),
                    shortages: shortages
                        .into_iter()
                        .map(|s| ShortageV1 {
                            sku: s.sku,
                            requested: s.requested,
                            available: s.available,
                        })
                        .collect(),
                    contact_email: None,
                },
            ),
        }
    }

    async fn plan_release(&self, cancelled: &OrderRefV1) -> Result<Effect, HandlerError> {
        let reservation_id = Reservation::id_for(&cancelled.order_id);
        let Some(document) = self
            .consumer
            .store()
            .read(STOCK, STOCK_PARTITION, &reservation_id)
            .await
            .map_err(transient)?
        else {
            // Nothing was reserved (rejected, or released already): only record the event.
            return Ok(Effect::none());
        };
        let (reservation, reservation_etag) =
            document.into_model::<Reservation>().map_err(transient)?;
        let mut effect = Effect::none();
        for line in &reservation.lines {
            if let Some((stock, etag)) = self.stock_of(line.sku.as_str()).await? {
                effect = effect.write(BatchOp::Replace {
                    id: line.sku.as_str().to_owned(),
                    body: body(&stock.release(line.quantity))?,
                    if_match: Some(etag),
                });
            }
        }
        effect
            .write(BatchOp::Delete {
                id: reservation_id,
                if_match: Some(reservation_etag),
            })
            .publish::<StockReleased>(&cancelled.order_id, cancelled)
    }
}

#[async_trait]
impl Handles<OrderPlaced> for OrderEvents {
    #[tracing::instrument(name = "catalog.reserve", skip_all, fields(order_id = %placed.order_id))]
    async fn handle(&self, event: &CloudEvent, placed: OrderPlacedV1) -> Result<(), HandlerError> {
        let wanted = wanted_quantities(placed.lines.iter().map(|l| (l.sku.as_str(), l.quantity)))
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.consumer
            .apply_once(STOCK, STOCK_PARTITION, event, || {
                self.plan_reservation(&placed, &wanted)
            })
            .await
    }
}

#[async_trait]
impl Handles<OrderCancelled> for OrderEvents {
    #[tracing::instrument(name = "catalog.release", skip_all, fields(order_id = %cancelled.order_id))]
    async fn handle(&self, event: &CloudEvent, cancelled: OrderRefV1) -> Result<(), HandlerError> {
        self.consumer
            .apply_once(STOCK, STOCK_PARTITION, event, || {
                self.plan_release(&cancelled)
            })
            .await
    }
}
