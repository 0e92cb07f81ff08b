//! Bulk upsert: many products (and their stock counts) in one call, each item reported on
//! its own, for feeds from an ERP or PIM. An item is idempotent: sending it again changes
//! nothing and says `unchanged`, so a caller that lost the answer sends the batch again.

use common::store::StoreError;
use futures::StreamExt;
use time::OffsetDateTime;

use crate::catalog::{
    Catalog, CatalogError, PRODUCTS, STOCK, STOCK_PARTITION, is_tombstone, to_json,
};
use crate::domain::{Product, ProductDraft, Sku, Stock};

/// Items written at once within a batch; each is a handful of store operations.
const CONCURRENT_ITEMS: usize = 16;
/// How often an item is tried again after losing a race to another writer of its SKU.
const ATTEMPTS: usize = 16;

/// A product as a feed gives it, with the stock on hand when the feed counts it.
#[derive(Debug, Clone)]
pub struct UpsertItem {
    pub draft: ProductDraft,
    pub on_hand: Option<i64>,
}

/// What an item did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsertOutcome {
    Created,
    Updated,
    Unchanged,
}

/// Why an item was not applied, for the caller to fix; the other items go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRefused {
    pub field: &'static str,
    pub reason: String,
}

impl Catalog {
    /// Upserts every item, in order of the answer (not of writing), several at once. An
    /// item's rule failures come back as its `Err`; a failure of the store ends the call:
    /// what was applied stays, and applying the batch again is safe.
    pub async fn upsert_products(
        &self,
        items: Vec<UpsertItem>,
    ) -> Result<Vec<Result<UpsertOutcome, ItemRefused>>, CatalogError> {
        let outcomes: Vec<_> = futures::stream::iter(items)
            .map(|item| self.upsert_product(item))
            .buffered(CONCURRENT_ITEMS)
            .collect()
            .await;
        outcomes.into_iter().collect()
    }

    async fn upsert_product(
        &self,
        item: UpsertItem,
    ) -> Result<Result<UpsertOutcome, ItemRefused>, CatalogError> {
        let sku = item.draft.sku.clone();
        let product = self.put_product(item.draft).await?;
        let stock_changed = match item.on_hand {
            // A product just created has no stock record (a deleted one's went with it).
            Some(on_hand) => match self
                .put_stock(&sku, on_hand, product == UpsertOutcome::Created)
                .await
            {
                Ok(changed) => changed,
                Err(CatalogError::Stock(rule)) => {
                    return Ok(Err(ItemRefused {
                        field: "onHand",
                        reason: rule.to_string(),
                    }));
                }
                Err(other) => return Err(other),
            },
            None => false,
        };
        Ok(Ok(match (product, stock_changed) {
            (UpsertOutcome::Created, _) => UpsertOutcome::Created,
            (UpsertOutcome::Unchanged, false) => UpsertOutcome::Unchanged,
            _ => UpsertOutcome::Updated,
        }))
    }

    /// Writes the product unless it already says the same; races with other writers of the
    /// SKU are retried from a fresh read.
    async fn put_product(&self, draft: ProductDraft) -> Result<UpsertOutcome, CatalogError> {
        let sku = draft.sku.as_str().to_owned();
        for _ in 0..ATTEMPTS {
            let now = OffsetDateTime::now_utc();
            let current = self.store().read(PRODUCTS, &sku, &sku).await?;
            let written = match current {
                None => {
                    let product = Product::create(draft.clone(), now);
                    self.store()
                        .create(PRODUCTS, &sku, &sku, to_json(&product)?)
                        .await
                        .map(|_| UpsertOutcome::Created)
                }
                Some(document) if is_tombstone(&document) => {
                    let product = Product::create(draft.clone(), now);
                    self.store()
                        .replace(
                            PRODUCTS,
                            &sku,
                            &sku,
                            to_json(&product)?,
                            Some(&document.etag),
                        )
                        .await
                        .map(|_| UpsertOutcome::Created)
                }
                Some(document) => {
                    let (product, etag): (Product, _) = document.into_model()?;
                    if product.matches(&draft) {
                        return Ok(UpsertOutcome::Unchanged);
                    }
                    let revised = product.revise(draft.clone(), now);
                    self.store()
                        .replace(PRODUCTS, &sku, &sku, to_json(&revised)?, Some(&etag))
                        .await
                        .map(|_| UpsertOutcome::Updated)
                }
            };
            match written {
                Ok(outcome) => {
                    self.notify_views();
                    return Ok(outcome);
                }
                Err(
                    StoreError::Conflict | StoreError::PreconditionFailed | StoreError::NotFound,
                ) => {
                    continue;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CatalogError::Contended(sku))
    }

    /// Records the count unless it is already the count; true when it changed. `fresh`: the
    /// product was just created, so the record is most likely absent (one write, no read).
    async fn put_stock(&self, sku: &Sku, on_hand: i64, fresh: bool) -> Result<bool, CatalogError> {
        if fresh {
            let counted = Stock::empty(sku.clone()).count(on_hand)?;
            match self
                .store()
                .create(STOCK, STOCK_PARTITION, sku.as_str(), to_json(&counted)?)
                .await
            {
                Ok(_) => {
                    self.notify_views();
                    return Ok(true);
                }
                Err(StoreError::Conflict) => {}
                Err(other) => return Err(other.into()),
            }
        }
        let (current, _) = self.stock_record(sku).await?;
        if current.on_hand == on_hand {
            return Ok(false);
        }
        self.record_count(sku, on_hand, None).await?;
        Ok(true)
    }
}
