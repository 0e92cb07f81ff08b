//! What the catalog does with other services' events: reserve stock for placed orders
//! (every line or none) and release it for cancelled ones.
//!
//! Stock is partitioned by SKU, so an order of several SKUs cannot be reserved in one
//! transaction. It is reserved as a saga of its own, safe to repeat at any step:
//! 1. **Hold** every SKU at once: one batch in each SKU's partition takes the quantity from
//!    its stock (ETag-guarded, so never oversold) and writes the order's `hold-<order id>`
//!    (so a repeat holds nothing twice; a conflict on it means an earlier try held it).
//! 2. **Decide** in the order's partition, in one batch with the record that the event was
//!    handled and the event to publish: `reservation-<order id>` and `stock.reserved` when
//!    every line is held, only `stock.reservation-failed` when one falls short. One decision
//!    stands, whatever is redelivered.
//! 3. **Compensate**: when the decision that stands is not a reservation, every hold the
//!    order has is released again. Each delivery that held something reads the decision
//!    after making it (or losing it to another), so no hold outlives a refusal.
//!
//! A cancellation releases each hold of the reservation, then removes the reservation in
//! one batch with its handled record and `stock.released`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use common::bus::CloudEvent;
use common::bus::worker::HandlerError;
use common::events::{
    OrderCancelled, OrderPlaced, OrderPlacedV1, OrderRefV1, OrderRefusedV1, ShortageV1,
    StockReleased, StockReservationFailed, StockReserved,
};
use common::runtime::consumer::{body, transient};
use common::runtime::{Commit, Effect, Handles, IdempotentConsumer};
use common::store::{BatchOp, Document, ETag, StoreError};

use crate::catalog::{STOCK, order_partition};
use crate::domain::stock::{Hold, Reservation, ReservedLine, Shortage, wanted_quantities};
use crate::domain::{Sku, Stock};
use crate::stock_gate::StockGate;

/// How often one SKU's hold or release is tried again after losing a race on its stock.
const STOCK_ATTEMPTS: usize = 32;

pub struct OrderEvents {
    pub consumer: IdempotentConsumer,
    /// Records of events handled before stock was partitioned by SKU remain (see `legacy`).
    pub legacy_records: bool,
    /// This instance's turns at each SKU's stock.
    pub gate: StockGate,
}

/// What holding one line came to.
enum Held {
    Yes,
    Short { available: i64 },
}

/// What an order's lines came to once each was tried.
enum Outcome {
    Reserved(Vec<ReservedLine>),
    /// The SKUs that fall short, and those held (by this delivery or an earlier one).
    Refused {
        shortages: Vec<Shortage>,
        held: Vec<String>,
    },
}

impl OrderEvents {
    fn store(&self) -> &common::store::SharedStore {
        self.consumer.store()
    }

    /// The SKU's stock record and the order's hold on it.
    async fn stock_and_hold(
        &self,
        sku: &str,
        order_id: &str,
    ) -> Result<(Option<(Stock, ETag)>, Option<(Hold, ETag)>), HandlerError> {
        let keys = [
            (sku.to_owned(), sku.to_owned()),
            (sku.to_owned(), Hold::id_for(order_id)),
        ];
        let mut found = self
            .store()
            .read_many(STOCK, &keys)
            .await
            .map_err(transient)?
            .into_iter();
        let stock = found.next().flatten().map(model::<Stock>).transpose()?;
        let hold = found.next().flatten().map(model::<Hold>).transpose()?;
        Ok((stock, hold))
    }

    /// Takes `quantity` of `sku` for the order, unless the order holds it already.
    async fn hold(&self, order_id: &str, sku: &str, quantity: i64) -> Result<Held, HandlerError> {
        let _turn = self.gate.turn(sku).await;
        for _ in 0..STOCK_ATTEMPTS {
            let stock = self
                .store()
                .read(STOCK, sku, sku)
                .await
                .map_err(transient)?
                .map(model::<Stock>)
                .transpose()?;
            let taken = stock
                .as_ref()
                .and_then(|(stock, etag)| Some((stock.reserve(quantity)?, etag)));
            let Some((taken, etag)) = taken else {
                // Short, unless what is missing is this order's own hold from an earlier try.
                return match self.stock_and_hold(sku, order_id).await? {
                    (_, Some(_)) => Ok(Held::Yes),
                    (stock, None) => Ok(Held::Short {
                        available: stock.map_or(0, |(stock, _)| stock.available()),
                    }),
                };
            };
            let hold = Hold::new(order_id, taken.sku.clone(), quantity);
            let operations = vec![
                BatchOp::Replace {
                    id: sku.to_owned(),
                    body: body(&taken)?,
                    if_match: Some(etag.clone()),
                },
                BatchOp::Create {
                    id: Hold::id_for(order_id),
                    body: body(&hold)?,
                },
            ];
            match self.store().batch(STOCK, sku, operations).await {
                Ok(_) => return Ok(Held::Yes),
                // The hold exists: an earlier try of this order took it.
                Err(StoreError::Conflict) => return Ok(Held::Yes),
                // Another order changed the stock meanwhile.
                Err(StoreError::PreconditionFailed | StoreError::NotFound) => continue,
                Err(other) => return Err(transient(other)),
            }
        }
        Err(contended(sku))
    }

    /// Gives back what the order holds of `sku`, if anything; true when something was.
    async fn release(&self, order_id: &str, sku: &str) -> Result<bool, HandlerError> {
        let _turn = self.gate.turn(sku).await;
        for _ in 0..STOCK_ATTEMPTS {
            let (stock, hold) = self.stock_and_hold(sku, order_id).await?;
            let Some((hold, hold_etag)) = hold else {
                return Ok(false);
            };
            let mut operations = Vec::with_capacity(2);
            if let Some((stock, etag)) = stock {
                operations.push(BatchOp::Replace {
                    id: sku.to_owned(),
                    body: body(&stock.release(hold.quantity))?,
                    if_match: Some(etag),
                });
            }
            operations.push(BatchOp::Delete {
                id: Hold::id_for(order_id),
                if_match: Some(hold_etag),
            });
            match self.store().batch(STOCK, sku, operations).await {
                Ok(_) => return Ok(true),
                Err(StoreError::PreconditionFailed | StoreError::NotFound) => continue,
                Err(other) => return Err(transient(other)),
            }
        }
        Err(contended(sku))
    }

    /// Releases the order's holds on `skus`, waking the views when anything changed.
    async fn release_all<'a>(
        &self,
        order_id: &str,
        skus: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), HandlerError> {
        let releases = skus.into_iter().map(|sku| self.release(order_id, sku));
        let mut released = false;
        let mut failure = None;
        for outcome in futures::future::join_all(releases).await {
            match outcome {
                Ok(one) => released |= one,
                Err(error) => failure = Some(error),
            }
        }
        if released {
            self.consumer.notify_readers();
        }
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(())
    }

    /// Tries to hold every wanted SKU at once (each in its own partition, so they do not
    /// wait on one another); what was held is released again when one falls short.
    async fn hold_lines(
        &self,
        order_id: &str,
        wanted: &BTreeMap<String, i64>,
    ) -> Result<Outcome, HandlerError> {
        let tries = wanted.iter().map(|(sku, &quantity)| async move {
            (sku, quantity, self.hold(order_id, sku, quantity).await)
        });
        let (mut held, mut shortages) = (Vec::new(), Vec::new());
        let mut failure = None;
        for (sku, quantity, tried) in futures::future::join_all(tries).await {
            match tried {
                Ok(Held::Yes) => held.push(sku.clone()),
                Ok(Held::Short { available }) => shortages.push(Shortage {
                    sku: sku.clone(),
                    requested: quantity,
                    available,
                }),
                // Holds already taken stay: the retry finds them (and a refusal releases them).
                Err(error) => failure = Some(error),
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        if shortages.is_empty() {
            let lines = wanted
                .iter()
                .map(|(sku, &quantity)| {
                    Ok(ReservedLine {
                        sku: Sku::parse(sku).map_err(|rule| {
                            HandlerError::Permanent(format!("line {sku}: {rule}"))
                        })?,
                        quantity,
                    })
                })
                .collect::<Result<_, HandlerError>>()?;
            Ok(Outcome::Reserved(lines))
        } else {
            Ok(Outcome::Refused { shortages, held })
        }
    }

    /// The order's reservation, when the decision that stands is one.
    async fn reservation(&self, order_id: &str) -> Result<Option<Document>, HandlerError> {
        self.store()
            .read(
                STOCK,
                &order_partition(order_id),
                &Reservation::id_for(order_id),
            )
            .await
            .map_err(transient)
    }

    async fn reserve(
        &self,
        event: &CloudEvent,
        placed: &OrderPlacedV1,
        wanted: &BTreeMap<String, i64>,
    ) -> Result<(), HandlerError> {
        let order_id = placed.order_id.as_str();
        let partition = order_partition(order_id);
        let handled_before_the_move = self.legacy_records
            && (self.consumer)
                .handled(STOCK, crate::legacy::LEGACY_PARTITION, event)
                .await?;
        if handled_before_the_move || self.consumer.handled(STOCK, &partition, event).await? {
            return self.settle_decided(order_id, wanted).await;
        }
        let outcome = self.hold_lines(order_id, wanted).await?;
        let order = OrderRefV1 {
            order_id: placed.order_id.clone(),
            customer_id: placed.customer_id.clone(),
            contact_email: None,
        };
        let (effect, held) = match outcome {
            Outcome::Reserved(lines) => {
                let reservation = Reservation {
                    kind: Reservation::KIND.to_owned(),
                    order_id: placed.order_id.clone(),
                    customer_id: placed.customer_id.clone(),
                    lines,
                };
                let effect = Effect::none()
                    .write(BatchOp::Create {
                        id: Reservation::id_for(order_id),
                        body: body(&reservation)?,
                    })
                    .publish::<StockReserved>(order_id, &order)?;
                (effect, None)
            }
            Outcome::Refused { shortages, held } => {
                let refused = OrderRefusedV1 {
                    order_id: order.order_id,
                    customer_id: order.customer_id,
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
                };
                let effect =
                    Effect::none().publish::<StockReservationFailed>(order_id, &refused)?;
                (effect, Some(held))
            }
        };
        match self
            .consumer
            .commit_once(STOCK, &partition, event, effect)
            .await?
        {
            Commit::Committed => match held {
                Some(held) => self.release_all(order_id, &held).await,
                None => Ok(()),
            },
            Commit::HandledBefore => self.settle_decided(order_id, wanted).await,
        }
    }

    /// The order's event was decided (by this delivery or another): unless the decision is
    /// a reservation, nothing may stay held.
    async fn settle_decided(
        &self,
        order_id: &str,
        wanted: &BTreeMap<String, i64>,
    ) -> Result<(), HandlerError> {
        if self.reservation(order_id).await?.is_some() {
            return Ok(());
        }
        self.release_all(order_id, wanted.keys()).await
    }

    async fn plan_release(&self, cancelled: &OrderRefV1) -> Result<Effect, HandlerError> {
        let order_id = cancelled.order_id.as_str();
        let Some(document) = self.reservation(order_id).await? else {
            // Nothing was reserved (refused, or released already): only record the event.
            return Ok(Effect::none());
        };
        let (reservation, reservation_etag) = model::<Reservation>(document)?;
        let skus: Vec<String> = reservation
            .lines
            .iter()
            .map(|line| line.sku.as_str().to_owned())
            .collect();
        self.release_all(order_id, &skus).await?;
        Effect::none()
            .write(BatchOp::Delete {
                id: Reservation::id_for(order_id),
                if_match: Some(reservation_etag),
            })
            .publish::<StockReleased>(order_id, cancelled)
    }
}

fn model<T: serde::de::DeserializeOwned>(document: Document) -> Result<(T, ETag), HandlerError> {
    document.into_model::<T>().map_err(transient)
}

fn contended(sku: &str) -> HandlerError {
    HandlerError::Transient(format!("the stock of {sku} kept changing; will retry"))
}

#[async_trait]
impl Handles<OrderPlaced> for OrderEvents {
    #[tracing::instrument(name = "catalog.reserve", skip_all, fields(order_id = %placed.order_id))]
    async fn handle(&self, event: &CloudEvent, placed: OrderPlacedV1) -> Result<(), HandlerError> {
        let wanted = wanted_quantities(placed.lines.iter().map(|l| (l.sku.as_str(), l.quantity)))
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        self.reserve(event, &placed, &wanted).await
    }
}

#[async_trait]
impl Handles<OrderCancelled> for OrderEvents {
    #[tracing::instrument(name = "catalog.release", skip_all, fields(order_id = %cancelled.order_id))]
    async fn handle(&self, event: &CloudEvent, cancelled: OrderRefV1) -> Result<(), HandlerError> {
        self.consumer
            .apply_once(STOCK, &order_partition(&cancelled.order_id), event, || {
                self.plan_release(&cancelled)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::events::{EventType, OrderLineV1};
    use common::runtime::FeedSignal;
    use common::store::{Query, QueryScope, SharedStore};

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        store: SharedStore,
        events: OrderEvents,
        /// Another instance of the service on the same store: its own turns at the stock.
        peer: OrderEvents,
    }

    fn fixture() -> Fixture {
        let (dir, store) = common::testing::embedded_store();
        let instance = || OrderEvents {
            consumer: IdempotentConsumer::new(store.clone(), FeedSignal::default(), 3600),
            legacy_records: false,
            gate: StockGate::default(),
        };
        Fixture {
            events: instance(),
            peer: instance(),
            _dir: dir,
            store,
        }
    }

    impl Fixture {
        async fn count(&self, sku: &str, on_hand: i64) {
            let stock = serde_json::json!({"sku": sku, "onHand": on_hand, "reserved": 0});
            self.store.upsert(STOCK, sku, sku, stock).await.unwrap();
        }

        async fn stock(&self, sku: &str) -> Stock {
            let document = self.store.read(STOCK, sku, sku).await.unwrap().unwrap();
            document.into_model::<Stock>().unwrap().0
        }

        async fn holds(&self, sku: &str) -> Vec<Hold> {
            let query =
                Query::new(QueryScope::Partition(sku.to_owned()), 100).filter("kind", Hold::KIND);
            let page = self.store.query(STOCK, &query).await.unwrap();
            page.items
                .into_iter()
                .map(|d| d.into_model::<Hold>().unwrap().0)
                .collect()
        }

        /// What the order's partition says was published about it.
        async fn published(&self, order_id: &str) -> Vec<String> {
            let query = Query::new(QueryScope::Partition(order_partition(order_id)), 100)
                .filter("kind", "outbox");
            let page = self.store.query(STOCK, &query).await.unwrap();
            page.items
                .into_iter()
                .map(|d| d.body["event"]["type"].as_str().unwrap().to_owned())
                .collect()
        }

        async fn place(&self, event: &CloudEvent) -> Result<(), HandlerError> {
            self.place_on(&self.events, event).await
        }

        async fn place_on(
            &self,
            instance: &OrderEvents,
            event: &CloudEvent,
        ) -> Result<(), HandlerError> {
            let placed: OrderPlacedV1 = serde_json::from_value(event.data.clone()).unwrap();
            Handles::<OrderPlaced>::handle(instance, event, placed).await
        }

        async fn cancel(&self, order_id: &str) {
            let data = OrderRefV1 {
                order_id: order_id.to_owned(),
                customer_id: "c".into(),
                contact_email: None,
            };
            let event = OrderCancelled::event(order_id, &data).unwrap();
            Handles::<OrderCancelled>::handle(&self.events, &event, data)
                .await
                .unwrap();
        }
    }

    fn placed(order_id: &str, lines: &[(&str, i64)]) -> CloudEvent {
        let data = OrderPlacedV1 {
            order_id: order_id.to_owned(),
            customer_id: "c".into(),
            lines: lines
                .iter()
                .map(|(sku, quantity)| OrderLineV1 {
                    sku: (*sku).to_owned(),
                    quantity: *quantity,
                })
                .collect(),
        };
        OrderPlaced::event(order_id, &data).unwrap()
    }

    #[tokio::test]
    async fn every_line_is_held_in_its_own_skus_partition() {
        let f = fixture();
        f.count("A", 5).await;
        f.count("B", 5).await;
        let event = placed("o-1", &[("A", 2), ("B", 3)]);
        f.place(&event).await.unwrap();
        assert_eq!(f.stock("A").await.reserved, 2);
        assert_eq!(f.stock("B").await.reserved, 3);
        assert_eq!(f.holds("B").await[0].quantity, 3);
        assert_eq!(f.published("o-1").await, [StockReserved::TYPE]);
        // A redelivery changes nothing.
        f.place(&event).await.unwrap();
        assert_eq!(f.stock("A").await.reserved, 2);
        assert_eq!(f.published("o-1").await.len(), 1);
        // Cancelling gives it all back, once.
        f.cancel("o-1").await;
        f.cancel("o-1").await;
        assert_eq!(f.stock("A").await.reserved, 0);
        assert_eq!(f.stock("B").await.reserved, 0);
        assert!(f.holds("A").await.is_empty() && f.holds("B").await.is_empty());
    }

    #[tokio::test]
    async fn a_line_that_falls_short_releases_what_the_others_held() {
        let f = fixture();
        f.count("A", 5).await;
        f.count("B", 1).await;
        f.count("C", 0).await;
        f.place(&placed("o-2", &[("A", 2), ("B", 3), ("C", 1), ("D", 1)]))
            .await
            .unwrap();
        assert_eq!(f.stock("A").await.reserved, 0, "A's hold was released");
        assert!(f.holds("A").await.is_empty());
        assert_eq!(f.published("o-2").await, [StockReservationFailed::TYPE]);
        let outbox = f
            .store
            .query(
                STOCK,
                &Query::new(QueryScope::Partition(order_partition("o-2")), 10)
                    .filter("kind", "outbox"),
            )
            .await
            .unwrap();
        let shortages = &outbox.items[0].body["event"]["data"]["shortages"];
        assert_eq!(
            shortages,
            &serde_json::json!([
                {"sku": "B", "requested": 3, "available": 1},
                {"sku": "C", "requested": 1, "available": 0},
                {"sku": "D", "requested": 1, "available": 0},
            ])
        );
    }

    #[tokio::test]
    async fn a_hold_left_by_a_try_that_crashed_counts_once() {
        let f = fixture();
        f.count("A", 2).await;
        f.count("B", 2).await;
        // An earlier try held A entirely, then the process died before deciding.
        assert!(matches!(f.events.hold("o-3", "A", 2).await, Ok(Held::Yes)));
        assert_eq!(f.stock("A").await.available(), 0);
        f.place(&placed("o-3", &[("A", 2), ("B", 1)]))
            .await
            .unwrap();
        assert_eq!(f.stock("A").await.reserved, 2, "held once, not twice");
        assert_eq!(f.stock("B").await.reserved, 1);
        assert_eq!(f.published("o-3").await, [StockReserved::TYPE]);
    }

    #[tokio::test]
    async fn a_late_delivery_releases_what_it_held_when_the_order_was_refused() {
        let f = fixture();
        f.count("A", 5).await;
        let event = placed("o-4", &[("A", 1), ("B", 1)]);
        // One delivery decides: refused (B has no stock).
        f.place(&event).await.unwrap();
        assert_eq!(f.published("o-4").await, [StockReservationFailed::TYPE]);
        // Another delivery of the same event held A before it saw that decision.
        assert!(matches!(f.events.hold("o-4", "A", 1).await, Ok(Held::Yes)));
        assert_eq!(f.stock("A").await.reserved, 1);
        f.place(&event).await.unwrap();
        assert_eq!(f.stock("A").await.reserved, 0);
        assert!(f.holds("A").await.is_empty());
        assert_eq!(f.published("o-4").await.len(), 1);
    }

    #[tokio::test]
    async fn concurrent_orders_never_take_more_than_there_is() {
        let f = Arc::new(fixture());
        f.count("A", 10).await;
        f.count("B", 10).await;
        // Two instances, so that turns within one and ETag races between them both happen.
        let tries = (0..30).map(|n| {
            let f = f.clone();
            tokio::spawn(async move {
                let event = placed(&format!("o-{n}"), &[("A", 1), ("B", 1 + n % 2)]);
                let instance = if n % 3 == 0 { &f.peer } else { &f.events };
                while f.place_on(instance, &event).await.is_err() {}
            })
        });
        for done in futures::future::join_all(tries).await {
            done.unwrap();
        }
        let (a, b) = (f.stock("A").await, f.stock("B").await);
        assert!(a.available() >= 0 && b.available() >= 0);
        let held_a: i64 = f.holds("A").await.iter().map(|h| h.quantity).sum();
        let held_b: i64 = f.holds("B").await.iter().map(|h| h.quantity).sum();
        assert_eq!((a.reserved, b.reserved), (held_a, held_b));
        // Each order has one decision; a reserved one holds both lines, a refused one none.
        let mut reserved = 0;
        for n in 0..30 {
            let order_id = format!("o-{n}");
            let published = f.published(&order_id).await;
            assert_eq!(published.len(), 1, "{order_id}: {published:?}");
            let holds = f.holds("A").await.into_iter().chain(f.holds("B").await);
            let held = holds.filter(|h| h.order_id == order_id).count();
            if published[0] == StockReserved::TYPE {
                reserved += 1;
                assert_eq!(held, 2, "{order_id}");
            } else {
                assert_eq!(held, 0, "{order_id}");
            }
        }
        assert_eq!(held_a, reserved);
        assert!(reserved > 0);
    }
}
