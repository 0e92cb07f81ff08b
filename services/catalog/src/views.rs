//! The query side (CQRS): `product-views`, the storefront's product list, partitioned by
//! category so that a category's list is a one-partition query. Kept by two change-feed
//! readers (of `products` and of `stock`) that, for each SKU they see change, build its
//! view again from the product and its stock: any order of changes, any repeat, and any
//! crash in between converge on the same view. [`ProductViews::rebuild`] does the same for
//! every SKU.
//!
//! Per SKU, a locator (`pk = "locator:<sku>"`, id `locator`) remembers the category the
//! view was written under, so that a product that changes category leaves the old one.
//! Writes of a view are guarded by its ETag, read before the sources: a writer that read
//! older sources loses to one that read newer ones.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use common::runtime::FeedSignal;
use common::runtime::feed::{FeedError, FeedHandler};
use common::store::{Comparison, Document, Query, QueryScope, SharedStore, StoreError};
use serde_json::json;

use crate::catalog::{PRODUCT_VIEWS, PRODUCTS, STOCK, STOCK_PARTITION};
use crate::domain::{Product, ProductView, Stock};

/// The change-feed reader name of the view (leases `products.product-view`, `stock.product-view`).
pub const READER: &str = "product-view";
const LOCATOR_ID: &str = "locator";
const LOCATOR_KIND: &str = "view-locator";
/// Attempts of one refresh that keeps losing races to other writers.
const ATTEMPTS: usize = 16;

fn locator_partition(sku: &str) -> String {
    format!("locator:{sku}")
}

fn serialization(error: serde_json::Error) -> StoreError {
    StoreError::Serialization(error.into())
}

/// What a list asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewQuery {
    pub category: Option<String>,
    pub in_stock: Option<bool>,
    /// Bounds on the amount × 10⁴ (see [`ProductView::amount_scaled`]).
    pub min_amount: Option<i64>,
    pub max_amount: Option<i64>,
    pub sort: ViewSort,
    pub descending: bool,
    pub limit: u32,
    pub continuation: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewSort {
    Sku,
    Name,
    Price,
}

pub struct ViewPage {
    pub items: Vec<ProductView>,
    pub continuation: Option<String>,
}

/// How fresh the view is, as this process knows it.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    /// How long the oldest write made through this process has waited to reach the view.
    pub lag: Duration,
    /// When the view last caught up with every write.
    pub as_of: Option<SystemTime>,
}

/// How a rebuild went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RebuildReport {
    pub skus: usize,
    pub views: usize,
}

pub struct ProductViews {
    store: SharedStore,
    signal: FeedSignal,
    /// Refreshes in this process run one at a time; ETags guard against other processes.
    refreshing: tokio::sync::Mutex<()>,
}

impl ProductViews {
    pub fn new(store: SharedStore, signal: FeedSignal) -> Arc<Self> {
        Arc::new(Self {
            store,
            signal,
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    pub fn freshness(&self) -> Freshness {
        Freshness {
            lag: self.signal.lag(),
            as_of: self.signal.drained_at(),
        }
    }

    async fn product(&self, sku: &str) -> Result<Option<Product>, StoreError> {
        match self.store.read(PRODUCTS, sku, sku).await? {
            Some(document) if document.body.get("kind").is_none() => {
                Ok(Some(document.into_model::<Product>()?.0))
            }
            // Absent, or the tombstone of a deleted product.
            _ => Ok(None),
        }
    }

    async fn stock(&self, sku: &str) -> Result<Option<Stock>, StoreError> {
        match self.store.read(STOCK, STOCK_PARTITION, sku).await? {
            Some(document) => Ok(Some(document.into_model::<Stock>()?.0)),
            None => Ok(None),
        }
    }

    /// Builds the view of `sku` again from its product and stock.
    pub async fn refresh(&self, sku: &str) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        for _ in 0..ATTEMPTS {
            match self.try_refresh(sku).await {
                Ok(()) => return Ok(()),
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => continue,
                Err(other) => return Err(other),
            }
        }
        Err(StoreError::Unavailable(
            (format!("the view of {sku} kept changing under the refresh")).into(),
        ))
    }

    async fn try_refresh(&self, sku: &str) -> Result<(), StoreError> {
        let locator_pk = locator_partition(sku);
        let locator = self
            .store
            .read(PRODUCT_VIEWS, &locator_pk, LOCATOR_ID)
            .await?;
        let old_category = locator
            .as_ref()
            .and_then(|l| l.body.get("category"))
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        let Some(probe) = self.product(sku).await? else {
            if let Some(category) = &old_category {
                ignore_missing(self.store.delete(PRODUCT_VIEWS, category, sku, None).await)?;
            }
            if let Some(locator) = &locator {
                ignore_missing(
                    self.store
                        .delete(PRODUCT_VIEWS, &locator_pk, LOCATOR_ID, Some(&locator.etag))
                        .await,
                )?;
            }
            return Ok(());
        };
        let category = probe.category;
        // The version the write will be guarded by, read before the sources it is built from.
        let existing = self.store.read(PRODUCT_VIEWS, &category, sku).await?;
        let Some(product) = self.product(sku).await? else {
            return Err(StoreError::PreconditionFailed);
        };
        if product.category != category {
            return Err(StoreError::PreconditionFailed);
        }
        let view = ProductView::of(&product, self.stock(sku).await?.as_ref());
        let body = serde_json::to_value(&view).map_err(serialization)?;
        match existing {
            Some(current) if current.body == body => {}
            Some(current) => {
                self.store
                    .replace(PRODUCT_VIEWS, &category, sku, body, Some(&current.etag))
                    .await?;
            }
            None => {
                self.store
                    .create(PRODUCT_VIEWS, &category, sku, body)
                    .await?;
            }
        }
        if old_category.as_deref() != Some(category.as_str()) {
            if let Some(old) = &old_category {
                ignore_missing(self.store.delete(PRODUCT_VIEWS, old, sku, None).await)?;
            }
            self.store
                .upsert(
                    PRODUCT_VIEWS,
                    &locator_pk,
                    LOCATOR_ID,
                    json!({"kind": LOCATOR_KIND, "category": category}),
                )
                .await?;
        }
        Ok(())
    }

    /// Builds every view again from the products and the stock: each product's view is
    /// written, and views of products that no longer exist are removed. The service may
    /// keep running meanwhile; its readers converge with the rebuild.
    pub async fn rebuild(&self, progress: impl Fn(usize)) -> Result<RebuildReport, StoreError> {
        let mut skus = BTreeSet::new();
        self.each_id(PRODUCTS, None, |d| {
            skus.insert(d.id.clone());
        })
        .await?;
        let mut written = Vec::new();
        self.each_id(PRODUCT_VIEWS, Some(ProductView::KIND), |d| {
            skus.insert(d.id.clone());
            written.push(d.clone());
        })
        .await?;
        self.each_id(PRODUCT_VIEWS, Some(LOCATOR_KIND), |d| {
            if let Some(sku) = d.partition_key.strip_prefix("locator:") {
                skus.insert(sku.to_owned());
            }
        })
        .await?;
        for (done, sku) in skus.iter().enumerate() {
            self.refresh(sku).await?;
            if (done + 1) % 1000 == 0 {
                progress(done + 1);
            }
        }
        // Views under a category their product is not in (or of no product at all) that
        // no locator leads to: removed, unless they changed since they were read.
        for view in written {
            let belongs = self
                .product(&view.id)
                .await?
                .is_some_and(|p| p.category == view.partition_key);
            if !belongs {
                match self
                    .store
                    .delete(
                        PRODUCT_VIEWS,
                        &view.partition_key,
                        &view.id,
                        Some(&view.etag),
                    )
                    .await
                {
                    Ok(()) | Err(StoreError::NotFound | StoreError::PreconditionFailed) => {}
                    Err(other) => return Err(other),
                }
            }
        }
        let mut views = 0;
        self.each_id(PRODUCT_VIEWS, Some(ProductView::KIND), |_| views += 1)
            .await?;
        Ok(RebuildReport {
            skus: skus.len(),
            views,
        })
    }

    async fn each_id(
        &self,
        container: &str,
        kind: Option<&str>,
        mut visit: impl FnMut(&Document),
    ) -> Result<(), StoreError> {
        let mut continuation = None;
        loop {
            let mut query = Query::new(QueryScope::AllPartitions, 500).continue_from(continuation);
            if let Some(kind) = kind {
                query = query.filter("kind", kind);
            }
            let page = self.store.query(container, &query).await?;
            page.items.iter().for_each(&mut visit);
            match page.continuation {
                Some(next) => continuation = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// One page of the list.
    pub async fn list(&self, request: ViewQuery) -> Result<ViewPage, StoreError> {
        let scope = match &request.category {
            Some(category) => QueryScope::Partition(category.clone()),
            None => QueryScope::AllPartitions,
        };
        let mut query = Query::new(scope, request.limit)
            .filter("kind", ProductView::KIND)
            .continue_from(request.continuation);
        if let Some(in_stock) = request.in_stock {
            query = query.filter("inStock", in_stock);
        }
        if let Some(min) = request.min_amount {
            query = query.compare("amountScaled", Comparison::Ge, min);
        }
        if let Some(max) = request.max_amount {
            query = query.compare("amountScaled", Comparison::Le, max);
        }
        query = match (request.sort, request.descending) {
            (ViewSort::Sku, false) => query,
            (ViewSort::Sku, true) => query.order_by("sku", true),
            (ViewSort::Name, descending) => query.order_by("name", descending),
            (ViewSort::Price, descending) => query.order_by("amountScaled", descending),
        };
        let page = self.store.query(PRODUCT_VIEWS, &query).await?;
        let items = page
            .items
            .into_iter()
            .map(|d| Ok(d.into_model::<ProductView>()?.0))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(ViewPage {
            items,
            continuation: page.continuation,
        })
    }
}

fn ignore_missing(result: Result<(), StoreError>) -> Result<(), StoreError> {
    match result {
        Err(StoreError::NotFound) => Ok(()),
        other => other,
    }
}

/// Refreshes the SKUs among a batch of changes.
async fn refresh_all(
    views: &ProductViews,
    skus: impl IntoIterator<Item = String>,
) -> Result<(), FeedError> {
    let distinct: BTreeSet<String> = skus.into_iter().collect();
    for sku in distinct {
        views
            .refresh(&sku)
            .await
            .map_err(|e| FeedError::Transient(format!("refreshing the view of {sku}: {e}")))?;
    }
    Ok(())
}

/// Follows `products`: every item there is a product or its tombstone, id = SKU.
pub struct ProductChanges(pub Arc<ProductViews>);

#[async_trait]
impl FeedHandler for ProductChanges {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        refresh_all(&self.0, changes.into_iter().map(|d| d.id)).await
    }
}

/// Follows `stock`: of its items, the stock records (no `kind`) matter, id = SKU.
pub struct StockChanges(pub Arc<ProductViews>);

#[async_trait]
impl FeedHandler for StockChanges {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        let skus = changes
            .into_iter()
            .filter(|d| d.body.get("kind").is_none() && d.body.get("onHand").is_some())
            .map(|d| d.id);
        refresh_all(&self.0, skus).await
    }
}
