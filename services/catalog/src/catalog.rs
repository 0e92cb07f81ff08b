//! The catalog's use cases over the document store port.
//!
//! Containers and partition keys:
//! - `products`: one item per product, id = SKU, partition key = SKU (point reads by SKU;
//!   listing by category is a cross-partition query).
//! - `stock`: partitioned by SKU, so that stock scales with the number of SKUs (a Cosmos DB
//!   logical partition serves at most 10,000 RU/s and 20 GB). A SKU's partition holds its
//!   stock record (id = SKU; absent means nothing counted yet) and one `hold-<order id>` per
//!   order holding some of it, each written in one batch with the stock it takes. An order's
//!   partition (`order:<order id>`, see [`order_partition`]) holds what catalog decided for it:
//!   its `reservation-<order id>`, the records of its events handled and the events published
//!   about it. An order of several SKUs is held SKU by SKU and decided in its own partition;
//!   when a line falls short, what was held is released again (see `handlers`).
//! - `product-views`: the storefront's read model (see `views`), partitioned by category.
//!
//! A deleted product stays as a tombstone (`{"kind": "tombstone"}`) in `products`: the
//! change feed shows only items that exist, so a delete is written as a change that the
//! view can see. Reads treat a tombstone as absent; creating the SKU again replaces it.

use common::runtime::FeedSignal;
use common::store::{Document, ETag, Query, QueryScope, SharedStore, StoreError, StoredText};
use serde_json::Value;
use time::OffsetDateTime;

use crate::domain::{Product, ProductDraft, Sku, Stock, StockError};

pub const PRODUCTS: &str = "products";
pub const STOCK: &str = "stock";
pub const PRODUCT_VIEWS: &str = "product-views";
pub const CONTAINERS: &[&str] = &[PRODUCTS, STOCK, PRODUCT_VIEWS];
/// What a deleted product leaves in `products`.
const TOMBSTONE: &str = "tombstone";

pub(crate) fn is_tombstone(document: &Document) -> bool {
    is_tombstone_body(&document.body)
}

fn is_tombstone_body(body: &Value) -> bool {
    body.get("kind").and_then(Value::as_str) == Some(TOMBSTONE)
}

/// A stored product decoded straight from its text (the point read is the catalog's
/// hottest path); `None` for a deleted one's tombstone, which is no product.
fn product_of(stored: StoredText) -> Result<Option<(Product, ETag)>, StoreError> {
    match serde_json::from_str::<Product>(&stored.text) {
        Ok(product) => Ok(Some((product, stored.etag))),
        Err(error) => {
            let body: Value = serde_json::from_str(&stored.text)
                .map_err(|error| StoreError::Serialization(error.into()))?;
            if is_tombstone_body(&body) {
                Ok(None)
            } else {
                Err(StoreError::Serialization(error.into()))
            }
        }
    }
}

/// The partition of the `stock` container that holds what catalog decided for an order
/// (a SKU never contains `:`, so it never names a SKU's partition).
pub fn order_partition(order_id: &str) -> String {
    format!("order:{order_id}")
}

/// How often a stock update retries after losing a race to another writer.
const STOCK_UPDATE_ATTEMPTS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("product {0} was not found")]
    NotFound(String),
    #[error("product {0} already exists")]
    AlreadyExists(String),
    #[error("the product was changed since the given ETag")]
    StaleETag,
    #[error("the stock of {0} is being changed by others; retry")]
    Contended(String),
    #[error(transparent)]
    Stock(#[from] StockError),
    #[error("product {0} has reserved stock; cancel its orders first")]
    Reserved(String),
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for CatalogError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::PreconditionFailed => CatalogError::StaleETag,
            other => CatalogError::Store(other),
        }
    }
}

/// One page of products.
pub struct ProductPage {
    pub products: Vec<(Product, ETag)>,
    pub continuation: Option<String>,
}

#[derive(Clone)]
pub struct Catalog {
    store: SharedStore,
    /// Wakes the readers that keep the views after each write.
    views: FeedSignal,
    /// Other readers of the same containers, woken as well.
    also: Vec<FeedSignal>,
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, CatalogError> {
    serde_json::to_value(value)
        .map_err(|e| CatalogError::Store(StoreError::Serialization(e.into())))
}

impl Catalog {
    pub fn new(store: SharedStore, views: FeedSignal) -> Self {
        Self {
            store,
            views,
            also: Vec::new(),
        }
    }

    /// Also wakes `signal`'s readers after each write.
    pub fn also_notify(mut self, signal: FeedSignal) -> Self {
        self.also.push(signal);
        self
    }

    pub fn store(&self) -> &SharedStore {
        &self.store
    }

    /// Wakes the readers of the containers (views, change events) after a write.
    pub(crate) fn notify_views(&self) {
        self.views.notify();
        for signal in &self.also {
            signal.notify();
        }
    }

    pub async fn create_product(
        &self,
        draft: ProductDraft,
    ) -> Result<(Product, ETag), CatalogError> {
        let product = Product::create(draft, OffsetDateTime::now_utc());
        let sku = product.sku.as_str();
        let written = match self
            .store
            .create(PRODUCTS, sku, sku, to_json(&product)?)
            .await
        {
            Ok(document) => document,
            Err(StoreError::Conflict) => {
                // Free again if what is there is the tombstone of a deleted product.
                let existing = self.store.read(PRODUCTS, sku, sku).await?;
                match existing {
                    Some(tombstone) if is_tombstone(&tombstone) => self
                        .store
                        .replace(
                            PRODUCTS,
                            sku,
                            sku,
                            to_json(&product)?,
                            Some(&tombstone.etag),
                        )
                        .await
                        .map_err(|error| match error {
                            StoreError::PreconditionFailed | StoreError::NotFound => {
                                CatalogError::AlreadyExists(sku.to_owned())
                            }
                            other => other.into(),
                        })?,
                    _ => return Err(CatalogError::AlreadyExists(sku.to_owned())),
                }
            }
            Err(other) => return Err(other.into()),
        };
        self.notify_views();
        Ok((product, written.etag))
    }

    pub async fn product(&self, sku: &Sku) -> Result<(Product, ETag), CatalogError> {
        self.store
            .read_text(PRODUCTS, sku.as_str(), sku.as_str())
            .await?
            .map(product_of)
            .transpose()?
            .flatten()
            .ok_or_else(|| CatalogError::NotFound(sku.as_str().to_owned()))
    }

    /// Replaces a product; with `expected`, only if it is still that version.
    pub async fn replace_product(
        &self,
        draft: ProductDraft,
        expected: Option<&ETag>,
    ) -> Result<(Product, ETag), CatalogError> {
        let (current, current_etag) = self.product(&draft.sku).await?;
        if expected.is_some_and(|expected| *expected != current_etag) {
            return Err(CatalogError::StaleETag);
        }
        let revised = current.revise(draft, OffsetDateTime::now_utc());
        let sku = revised.sku.as_str();
        // The store re-checks the version read above: a writer in between makes this fail.
        let document = self
            .store
            .replace(PRODUCTS, sku, sku, to_json(&revised)?, Some(&current_etag))
            .await
            .map_err(|error| match error {
                StoreError::NotFound => CatalogError::NotFound(sku.to_owned()),
                other => other.into(),
            })?;
        self.notify_views();
        Ok((revised, document.etag))
    }

    /// Deletes a product and its stock record. The stock record goes first, guarded by the
    /// ETag it was checked at: a reservation committed since makes the delete a 503 to
    /// retry (then a 409 while anything is reserved), never a lost reservation. Should the
    /// product then fail to go (changed meanwhile), the stock record is put back.
    pub async fn delete_product(
        &self,
        sku: &Sku,
        expected: Option<&ETag>,
    ) -> Result<(), CatalogError> {
        let (_, current) = self.product(sku).await?;
        if expected.is_some_and(|expected| *expected != current) {
            return Err(CatalogError::StaleETag);
        }
        let (stock, stock_etag) = self.stock_record(sku).await?;
        if stock.reserved > 0 {
            return Err(CatalogError::Reserved(sku.as_str().to_owned()));
        }
        if let Some(etag) = &stock_etag {
            match self
                .store
                .delete(STOCK, sku.as_str(), sku.as_str(), Some(etag))
                .await
            {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(StoreError::PreconditionFailed) => {
                    return Err(CatalogError::Contended(sku.as_str().to_owned()));
                }
                Err(other) => return Err(other.into()),
            }
        }
        let tombstone = serde_json::json!({
            "kind": TOMBSTONE,
            "sku": sku.as_str(),
            "deletedAt": OffsetDateTime::now_utc().unix_timestamp(),
        });
        let outcome = self
            .store
            .replace(
                PRODUCTS,
                sku.as_str(),
                sku.as_str(),
                tombstone,
                Some(&current),
            )
            .await;
        match outcome {
            Ok(_) => {
                self.notify_views();
                Ok(())
            }
            Err(error) => {
                if stock_etag.is_some() {
                    // Counted again meanwhile (a conflict) is as good as restored.
                    match self
                        .store
                        .create(STOCK, sku.as_str(), sku.as_str(), to_json(&stock)?)
                        .await
                    {
                        Ok(_) | Err(StoreError::Conflict) => {}
                        Err(restore) => tracing::error!(
                            sku = sku.as_str(),
                            %restore,
                            "the stock record of a product that could not be deleted was not put back"
                        ),
                    }
                }
                Err(match error {
                    StoreError::NotFound => CatalogError::NotFound(sku.as_str().to_owned()),
                    other => other.into(),
                })
            }
        }
    }

    pub async fn list_products(
        &self,
        category: Option<&str>,
        limit: u32,
        continuation: Option<String>,
    ) -> Result<ProductPage, CatalogError> {
        let mut query = Query::new(QueryScope::AllPartitions, limit).continue_from(continuation);
        if let Some(category) = category {
            query = query.filter("category", category);
        }
        let page = self.store.query(PRODUCTS, &query).await?;
        // A page may come out shorter than asked for where tombstones were; the
        // continuation still says whether more may follow.
        let products = page
            .items
            .into_iter()
            .filter(|document| !is_tombstone(document))
            .map(|document| document.into_model())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProductPage {
            products,
            continuation: page.continuation,
        })
    }

    /// The SKU's stock, with the ETag of its stock record when one exists.
    pub async fn stock(&self, sku: &Sku) -> Result<(Stock, Option<ETag>), CatalogError> {
        self.product(sku).await?;
        self.stock_record(sku).await
    }

    pub(crate) async fn stock_record(
        &self,
        sku: &Sku,
    ) -> Result<(Stock, Option<ETag>), CatalogError> {
        match self.store.read(STOCK, sku.as_str(), sku.as_str()).await? {
            Some(document) => {
                let (stock, etag) = document.into_model()?;
                Ok((stock, Some(etag)))
            }
            None => Ok((Stock::empty(sku.clone()), None)),
        }
    }

    /// Records a stock count. With `expected`, only if the stock record is still that
    /// version; without, it retries when another writer got in between.
    pub async fn count_stock(
        &self,
        sku: &Sku,
        on_hand: i64,
        expected: Option<&ETag>,
    ) -> Result<(Stock, ETag), CatalogError> {
        self.product(sku).await?;
        self.record_count(sku, on_hand, expected).await
    }

    /// Writes a stock count on the SKU's stock record (whose product is known to exist):
    /// with `expected`, only over that version; without, again after losing a race.
    pub(crate) async fn record_count(
        &self,
        sku: &Sku,
        on_hand: i64,
        expected: Option<&ETag>,
    ) -> Result<(Stock, ETag), CatalogError> {
        for _ in 0..STOCK_UPDATE_ATTEMPTS {
            let (current, etag) = self.stock_record(sku).await?;
            if expected.is_some_and(|expected| Some(expected) != etag.as_ref()) {
                return Err(CatalogError::StaleETag);
            }
            let counted = current.count(on_hand)?;
            let body = to_json(&counted)?;
            let written = match &etag {
                Some(etag) => {
                    self.store
                        .replace(STOCK, sku.as_str(), sku.as_str(), body, Some(etag))
                        .await
                }
                None => {
                    self.store
                        .create(STOCK, sku.as_str(), sku.as_str(), body)
                        .await
                }
            };
            match written {
                Ok(document) => {
                    self.notify_views();
                    return Ok((counted, document.etag));
                }
                Err(
                    StoreError::PreconditionFailed | StoreError::Conflict | StoreError::NotFound,
                ) if expected.is_none() => continue,
                Err(
                    StoreError::PreconditionFailed | StoreError::Conflict | StoreError::NotFound,
                ) => {
                    return Err(CatalogError::StaleETag);
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CatalogError::Contended(sku.as_str().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use async_trait::async_trait;
    use common::store::{BatchOp, ChangeBatch, Checkpoint, Document, DocumentStore, Json, Page};

    use super::*;

    /// A store on which a reservation commits just before the catalog deletes stock.
    struct ReservationInBetween(SharedStore);

    #[async_trait]
    impl DocumentStore for ReservationInBetween {
        async fn read(&self, c: &str, pk: &str, id: &str) -> Result<Option<Document>, StoreError> {
            self.0.read(c, pk, id).await
        }
        async fn find_by_id(&self, c: &str, id: &str) -> Result<Option<Document>, StoreError> {
            self.0.find_by_id(c, id).await
        }
        async fn create(
            &self,
            c: &str,
            pk: &str,
            id: &str,
            body: Json,
        ) -> Result<Document, StoreError> {
            self.0.create(c, pk, id, body).await
        }
        async fn replace(
            &self,
            c: &str,
            pk: &str,
            id: &str,
            body: Json,
            etag: Option<&ETag>,
        ) -> Result<Document, StoreError> {
            self.0.replace(c, pk, id, body, etag).await
        }
        async fn upsert(
            &self,
            c: &str,
            pk: &str,
            id: &str,
            body: Json,
        ) -> Result<Document, StoreError> {
            self.0.upsert(c, pk, id, body).await
        }
        async fn delete(
            &self,
            c: &str,
            pk: &str,
            id: &str,
            etag: Option<&ETag>,
        ) -> Result<(), StoreError> {
            if c == STOCK {
                let reserved = serde_json::json!({"sku": id, "onHand": 5, "reserved": 2});
                self.0.replace(c, pk, id, reserved, None).await?;
            }
            self.0.delete(c, pk, id, etag).await
        }
        async fn query(&self, c: &str, query: &Query) -> Result<Page, StoreError> {
            self.0.query(c, query).await
        }
        async fn changes(
            &self,
            c: &str,
            since: Option<&Checkpoint>,
            max: usize,
        ) -> Result<ChangeBatch, StoreError> {
            self.0.changes(c, since, max).await
        }
        async fn batch(
            &self,
            c: &str,
            pk: &str,
            ops: Vec<BatchOp>,
        ) -> Result<Vec<Option<ETag>>, StoreError> {
            self.0.batch(c, pk, ops).await
        }
        async fn ping(&self) -> Result<(), StoreError> {
            self.0.ping().await
        }
    }

    fn draft_of(sku: Sku) -> ProductDraft {
        ProductDraft {
            sku,
            name: "r".into(),
            description: String::new(),
            category: "c".into(),
            price: crate::domain::Money::parse(
                "1.00",
                common::money::parse_currency("EUR").unwrap(),
            )
            .unwrap(),
        }
    }

    /// The point read decodes the stored text straight into a product; a deleted product's
    /// tombstone is no product, and a body that is neither is an error, not a 404.
    #[test]
    fn a_stored_product_decodes_from_its_text_and_a_tombstone_is_none() {
        let etag = ETag::new("1");
        let stored = |body: Value| StoredText {
            text: body.to_string(),
            etag: etag.clone(),
        };
        let product = Product::create(
            draft_of(Sku::parse("SKU-1").unwrap()),
            OffsetDateTime::UNIX_EPOCH,
        );
        let (decoded, decoded_etag) = product_of(stored(serde_json::to_value(&product).unwrap()))
            .unwrap()
            .unwrap();
        assert_eq!(decoded, product);
        assert_eq!(decoded_etag, etag);
        let tombstone = serde_json::json!({"kind": TOMBSTONE, "sku": "SKU-1", "deletedAt": 0});
        assert!(product_of(stored(tombstone)).unwrap().is_none());
        assert!(product_of(stored(serde_json::json!({"kind": "other"}))).is_err());
    }

    #[tokio::test]
    async fn a_reservation_committed_during_a_delete_is_never_lost() {
        let (_dir, store) = common::testing::embedded_store();
        let catalog = Catalog::new(
            Arc::new(ReservationInBetween(store.clone())),
            FeedSignal::default(),
        );
        let sku = Sku::parse("R-1").unwrap();
        catalog.create_product(draft_of(sku.clone())).await.unwrap();
        catalog.count_stock(&sku, 5, None).await.unwrap();
        let refused = catalog.delete_product(&sku, None).await;
        assert!(
            matches!(refused, Err(CatalogError::Contended(_))),
            "{refused:?}"
        );
        let (stock, _) = catalog.stock(&sku).await.unwrap();
        assert_eq!(stock.reserved, 2, "the reservation survived");
        assert!(catalog.product(&sku).await.is_ok(), "the product stays");
    }
}
