//! Bulk upsert: many products (and their stock counts) in one call, each item reported on
//! its own, for feeds from an ERP or PIM. An item is idempotent: sending it again changes
//! nothing and says `unchanged`, so a caller that lost the answer sends the batch again.

use common::store::StoreError;
use std::collections::HashSet;

use time::OffsetDateTime;

use crate::catalog::{Catalog, CatalogError, PRODUCTS, STOCK, is_tombstone, to_json};
use crate::domain::{Product, ProductDraft, Sku, Stock};

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
    /// Upserts every item, answering in the order given. The batch is read in one go,
    /// written in one go (the store groups the writes), and only items that lost a race
    /// with another writer, or repeat an earlier item's SKU, take the one-by-one path. An
    /// item's rule failures come back as its `Err`; a failure of the store ends the call:
    /// what was applied stays, and applying the batch again is safe.
    pub async fn upsert_products(
        &self,
        items: Vec<UpsertItem>,
    ) -> Result<Vec<Result<UpsertOutcome, ItemRefused>>, CatalogError> {
        // A SKU met again goes after the rest, in order, so that the last row wins.
        let mut seen = HashSet::new();
        let (first, repeats): (Vec<_>, Vec<_>) = items
            .into_iter()
            .enumerate()
            .partition(|(_, item)| seen.insert(item.draft.sku.clone()));
        let mut outcomes = vec![Ok(UpsertOutcome::Unchanged); first.len() + repeats.len()];
        let (products, counted) = self.put_products(&first).await?;
        let stocks = self.put_stocks(&first, counted).await?;
        for (((index, _), product), stock) in first.iter().zip(products).zip(stocks) {
            outcomes[*index] = stock.map(|stock_changed| combine(product, stock_changed));
        }
        for (index, item) in repeats {
            outcomes[index] = self.upsert_product(item).await?;
        }
        self.notify_views();
        Ok(outcomes)
    }

    /// The products of `items` (distinct SKUs), each created, revised or left alone. A
    /// product about to be created has no stock record (a deleted one's went with it): its
    /// count is created in the same round, and said in the second answer (`None`: not
    /// settled here).
    async fn put_products(
        &self,
        items: &[(usize, UpsertItem)],
    ) -> Result<(Vec<UpsertOutcome>, Vec<Option<StockCounted>>), CatalogError> {
        let keys: Vec<(String, String)> = items
            .iter()
            .map(|(_, item)| {
                let sku = item.draft.sku.as_str().to_owned();
                (sku.clone(), sku)
            })
            .collect();
        let current = self.store().read_many(PRODUCTS, &keys).await?;
        let now = OffsetDateTime::now_utc();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut counted: Vec<Option<StockCounted>> = vec![None; items.len()];
        let mut writes = Vec::new();
        let mut stock_creates = Vec::new();
        for ((index, (_, item)), document) in items.iter().enumerate().zip(current) {
            let sku = item.draft.sku.as_str();
            let planned = match document {
                None => {
                    let body = to_json(&Product::create(item.draft.clone(), now))?;
                    Some((UpsertOutcome::Created, body, None))
                }
                Some(document) if is_tombstone(&document) => {
                    let body = to_json(&Product::create(item.draft.clone(), now))?;
                    Some((UpsertOutcome::Created, body, Some(document.etag)))
                }
                Some(document) => {
                    let (product, etag): (Product, _) = document.into_model()?;
                    if product.matches(&item.draft) {
                        None
                    } else {
                        let body = to_json(&product.revise(item.draft.clone(), now))?;
                        Some((UpsertOutcome::Updated, body, Some(etag)))
                    }
                }
            };
            match planned {
                None => outcomes.push(UpsertOutcome::Unchanged),
                Some((outcome, body, etag)) => {
                    outcomes.push(outcome);
                    if let Some(on_hand) = item.on_hand {
                        match Stock::empty(item.draft.sku.clone()).count(on_hand) {
                            Ok(stock) => {
                                let (store, stock_body) = (self.store(), to_json(&stock)?);
                                stock_creates.push(async move {
                                    let created = store.create(STOCK, sku, sku, stock_body).await;
                                    (index, created)
                                });
                            }
                            Err(rule) => counted[index] = Some(Err(refused(rule))),
                        }
                    }
                    let store = self.store();
                    writes.push(async move {
                        let written = match etag {
                            None => store.create(PRODUCTS, sku, sku, body).await,
                            Some(etag) => {
                                store.replace(PRODUCTS, sku, sku, body, Some(&etag)).await
                            }
                        };
                        (index, written)
                    });
                }
            }
        }
        let (written, created) = futures::join!(
            futures::future::join_all(writes),
            futures::future::join_all(stock_creates)
        );
        for (index, created) in created {
            match created {
                Ok(_) => counted[index] = Some(Ok(true)),
                // There after all: counted from a read with the others.
                Err(StoreError::Conflict) => {}
                Err(other) => return Err(other.into()),
            }
        }
        for (index, written) in written {
            match written {
                Ok(_) => {}
                Err(
                    StoreError::Conflict | StoreError::PreconditionFailed | StoreError::NotFound,
                ) => {
                    // Another writer got in between: from a fresh read, on its own.
                    outcomes[index] = self.put_product(items[index].1.draft.clone()).await?;
                }
                Err(other) => return Err(other.into()),
            }
        }
        Ok((outcomes, counted))
    }

    /// The stock counts of `items` (distinct SKUs) whose feed gives one and that
    /// [`Catalog::put_products`] did not settle; per item, whether the count changed, or
    /// why it was refused. Those records are read together and counted where the count
    /// differs.
    async fn put_stocks(
        &self,
        items: &[(usize, UpsertItem)],
        counted: Vec<Option<StockCounted>>,
    ) -> Result<Vec<StockCounted>, CatalogError> {
        let mut changed = vec![Ok(false); items.len()];
        let mut to_read = Vec::new();
        for (index, ((_, item), settled)) in items.iter().zip(counted).enumerate() {
            match settled {
                Some(settled) => changed[index] = settled,
                None if item.on_hand.is_some() => to_read.push(index),
                None => {}
            }
        }
        if to_read.is_empty() {
            return Ok(changed);
        }
        let keys: Vec<(String, String)> = to_read
            .iter()
            .map(|&index| {
                let sku = items[index].1.draft.sku.as_str().to_owned();
                (sku.clone(), sku)
            })
            .collect();
        let current = self.store().read_many(STOCK, &keys).await?;
        let mut counts = Vec::new();
        for (&index, document) in to_read.iter().zip(current) {
            let on_hand = items[index].1.on_hand.unwrap_or_default();
            let counted = match document {
                Some(document) => document.into_model::<Stock>()?.0.on_hand,
                None => 0,
            };
            if counted != on_hand {
                let sku = &items[index].1.draft.sku;
                counts.push(async move { (index, self.record_count(sku, on_hand, None).await) });
            }
        }
        for (index, counted) in futures::future::join_all(counts).await {
            changed[index] = match counted {
                Ok(_) => Ok(true),
                Err(CatalogError::Stock(rule)) => Err(refused(rule)),
                Err(other) => return Err(other),
            };
        }
        Ok(changed)
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
                Err(CatalogError::Stock(rule)) => return Ok(Err(refused(rule))),
                Err(other) => return Err(other),
            },
            None => false,
        };
        Ok(Ok(combine(product, stock_changed)))
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
                .create(STOCK, sku.as_str(), sku.as_str(), to_json(&counted)?)
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

/// Whether an item's stock count changed, or why it was refused.
type StockCounted = Result<bool, ItemRefused>;

fn refused(rule: crate::domain::StockError) -> ItemRefused {
    ItemRefused {
        field: "onHand",
        reason: rule.to_string(),
    }
}

/// An item's outcome from its product's and whether its stock count changed.
fn combine(product: UpsertOutcome, stock_changed: bool) -> UpsertOutcome {
    match (product, stock_changed) {
        (UpsertOutcome::Created, _) => UpsertOutcome::Created,
        (UpsertOutcome::Unchanged, false) => UpsertOutcome::Unchanged,
        _ => UpsertOutcome::Updated,
    }
}
