//! Stores written before stock was partitioned by SKU kept all of it in one partition,
//! `stock`. At start the catalog moves what is still there: each stock record to its SKU's
//! partition, each reservation to its order's partition with a hold per line (the stock
//! record already counts them). Records of handled events stay until they expire; while any
//! remain, the order handlers also look there, so a message redelivered across the upgrade
//! is still recognised. Outbox entries left there are relayed as before.

use common::bus::outbox::{KIND_FIELD, PROCESSED_KIND};
use common::store::{BatchOp, Comparison, Document, Query, QueryScope, SharedStore, StoreError};

use crate::catalog::{STOCK, order_partition};
use crate::domain::stock::{Hold, Reservation};

/// The one partition all stock lived in.
pub const LEGACY_PARTITION: &str = "stock";

const PAGE: u32 = 100;

/// What the move found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Moved {
    pub stock_records: usize,
    pub reservations: usize,
    /// Records of handled events still in the old partition.
    pub processed_remain: bool,
}

/// Moves stock records and reservations out of the old partition; safe to repeat, and to
/// interrupt at any point (each item is copied before it is removed).
pub async fn move_legacy_stock(store: &SharedStore) -> Result<Moved, StoreError> {
    let mut moved = Moved::default();
    // A store written since has nothing there: one query, and start goes on.
    let anything = Query::new(QueryScope::Partition(LEGACY_PARTITION.to_owned()), 1);
    if store.query(STOCK, &anything).await?.items.is_empty() {
        return Ok(moved);
    }
    let stock_records = Query::new(QueryScope::Partition(LEGACY_PARTITION.to_owned()), PAGE)
        .compare("onHand", Comparison::Ge, 0);
    moved.stock_records = drain(store, &stock_records, move_stock_record).await?;
    let reservations = Query::new(QueryScope::Partition(LEGACY_PARTITION.to_owned()), PAGE)
        .filter(KIND_FIELD, Reservation::KIND);
    moved.reservations = drain(store, &reservations, move_reservation).await?;
    let processed = Query::new(QueryScope::Partition(LEGACY_PARTITION.to_owned()), 1)
        .filter(KIND_FIELD, PROCESSED_KIND);
    moved.processed_remain = !store.query(STOCK, &processed).await?.items.is_empty();
    if moved.stock_records + moved.reservations > 0 {
        tracing::info!(
            stock_records = moved.stock_records,
            reservations = moved.reservations,
            "stock moved from the single `stock` partition to one partition per SKU"
        );
    }
    Ok(moved)
}

/// Moves every item the query finds, a page at a time (moved items leave the partition, so
/// the first page is asked for again until it is empty).
async fn drain<F, Fut>(store: &SharedStore, query: &Query, move_one: F) -> Result<usize, StoreError>
where
    F: Fn(SharedStore, Document) -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut count = 0;
    loop {
        let page = store.query(STOCK, query).await?;
        if page.items.is_empty() {
            return Ok(count);
        }
        for document in page.items {
            move_one(store.clone(), document).await?;
            count += 1;
        }
    }
}

async fn move_stock_record(store: SharedStore, document: Document) -> Result<(), StoreError> {
    let sku = document.id.clone();
    match store.create(STOCK, &sku, &sku, document.body).await {
        // Counted in the new partition already: that count is the newer.
        Ok(_) | Err(StoreError::Conflict) => {}
        Err(other) => return Err(other),
    }
    remove(&store, &sku, document.etag).await
}

async fn move_reservation(store: SharedStore, document: Document) -> Result<(), StoreError> {
    let id = document.id.clone();
    let etag = document.etag.clone();
    let body = document.body.clone();
    let (reservation, _) = document.into_model::<Reservation>()?;
    for line in &reservation.lines {
        let hold = Hold::new(&reservation.order_id, line.sku.clone(), line.quantity);
        let hold =
            serde_json::to_value(&hold).map_err(|error| StoreError::Serialization(error.into()))?;
        let sku = line.sku.as_str();
        let operations = vec![BatchOp::Create {
            id: Hold::id_for(&reservation.order_id),
            body: hold,
        }];
        match store.batch(STOCK, sku, operations).await {
            Ok(_) | Err(StoreError::Conflict) => {}
            Err(other) => return Err(other),
        }
    }
    let partition = order_partition(&reservation.order_id);
    match store.create(STOCK, &partition, &id, body).await {
        Ok(_) | Err(StoreError::Conflict) => {}
        Err(other) => return Err(other),
    }
    remove(&store, &id, etag).await
}

async fn remove(
    store: &SharedStore,
    id: &str,
    etag: common::store::ETag,
) -> Result<(), StoreError> {
    match store.delete(STOCK, LEGACY_PARTITION, id, Some(&etag)).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(()),
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn stock_and_reservations_move_to_their_own_partitions_once() {
        let (_dir, store) = common::testing::embedded_store();
        assert_eq!(move_legacy_stock(&store).await.unwrap(), Moved::default());
        let old = |id: &str, body| {
            let store = store.clone();
            let id = id.to_owned();
            async move {
                store
                    .create(STOCK, LEGACY_PARTITION, &id, body)
                    .await
                    .unwrap()
            }
        };
        old("A", json!({"sku": "A", "onHand": 5, "reserved": 3})).await;
        old("B", json!({"sku": "B", "onHand": 1, "reserved": 0})).await;
        old(
            "reservation-o-1",
            json!({"kind": "reservation", "orderId": "o-1", "customerId": "c",
                   "lines": [{"sku": "A", "quantity": 3}]}),
        )
        .await;
        old(
            "processed-e-1",
            json!({"kind": "processed", "eventId": "e-1"}),
        )
        .await;

        let moved = move_legacy_stock(&store).await.unwrap();
        assert_eq!(
            moved,
            Moved {
                stock_records: 2,
                reservations: 1,
                processed_remain: true
            }
        );
        let a = store.read(STOCK, "A", "A").await.unwrap().unwrap();
        assert_eq!(a.body["reserved"], 3);
        let hold = store.read(STOCK, "A", "hold-o-1").await.unwrap().unwrap();
        assert_eq!(hold.body["quantity"], 3);
        let reservation = store
            .read(STOCK, &order_partition("o-1"), "reservation-o-1")
            .await
            .unwrap();
        assert!(reservation.is_some());
        assert!(
            store
                .read(STOCK, LEGACY_PARTITION, "A")
                .await
                .unwrap()
                .is_none()
        );

        // Again: nothing left to move; the handled record stays until it expires.
        let again = move_legacy_stock(&store).await.unwrap();
        assert_eq!((again.stock_records, again.reservations), (0, 0));
        assert!(again.processed_remain);
    }
}
