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

use crate::catalog::{PRODUCT_VIEWS, PRODUCTS, STOCK};
use crate::domain::{Product, ProductView, Stock};

/// The change-feed reader name of the view (leases `products.product-view`, `stock.product-view`).
pub const READER: &str = "product-view";
const LOCATOR_ID: &str = "locator";
const LOCATOR_KIND: &str = "view-locator";
/// Attempts of one refresh that keeps losing races to other writers.
const ATTEMPTS: usize = 16;
/// SKUs a rebuild refreshes at once (and reports progress after).
const REBUILD_CHUNK: usize = 1000;

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

/// What a view is built from, read for one refresh.
struct ViewSources {
    /// The category of the product when first read: where the view's version was read.
    category: String,
    existing: Option<Document>,
    /// The product read again after the view's version (`None`: deleted meanwhile).
    product: Option<Product>,
    stock: Option<Stock>,
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

    /// The products of `skus`, `None` where absent or deleted (a tombstone).
    async fn products(&self, skus: &[&str]) -> Result<Vec<Option<Product>>, StoreError> {
        let keys: Vec<(String, String)> = skus
            .iter()
            .map(|sku| ((*sku).to_owned(), (*sku).to_owned()))
            .collect();
        self.store
            .read_many(PRODUCTS, &keys)
            .await?
            .into_iter()
            .map(|found| match found {
                Some(document) if document.body.get("kind").is_none() => {
                    Ok(Some(document.into_model::<Product>()?.0))
                }
                _ => Ok(None),
            })
            .collect()
    }

    async fn stocks(&self, skus: &[&str]) -> Result<Vec<Option<Stock>>, StoreError> {
        let keys: Vec<(String, String)> = skus
            .iter()
            .map(|sku| ((*sku).to_owned(), (*sku).to_owned()))
            .collect();
        self.store
            .read_many(STOCK, &keys)
            .await?
            .into_iter()
            .map(|found| {
                found
                    .map(|document| Ok(document.into_model::<Stock>()?.0))
                    .transpose()
            })
            .collect()
    }

    /// Builds the view of `sku` again from its product and stock.
    pub async fn refresh(&self, sku: &str) -> Result<(), StoreError> {
        self.refresh_many(&[sku.to_owned()]).await
    }

    /// Builds the views of `skus` again from their products and stock: read together,
    /// written together; a SKU whose view lost a race with another writer is built again
    /// on its own.
    pub async fn refresh_many(&self, skus: &[String]) -> Result<(), StoreError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut pending: Vec<&str> = skus.iter().map(String::as_str).collect();
        for _ in 0..ATTEMPTS {
            if pending.is_empty() {
                return Ok(());
            }
            pending = self.try_refresh(&pending).await?;
        }
        match pending.first() {
            None => Ok(()),
            Some(sku) => Err(StoreError::Unavailable(
                (format!("the view of {sku} kept changing under the refresh")).into(),
            )),
        }
    }

    /// One attempt for every SKU; returns those that lost a race.
    async fn try_refresh<'a>(&self, skus: &[&'a str]) -> Result<Vec<&'a str>, StoreError> {
        let locator_keys: Vec<(String, String)> = skus
            .iter()
            .map(|sku| (locator_partition(sku), LOCATOR_ID.to_owned()))
            .collect();
        let locators = self.store.read_many(PRODUCT_VIEWS, &locator_keys).await?;
        let probes = self.products(skus).await?;
        // The versions the writes will be guarded by, read before the sources they are
        // built from.
        let present: Vec<(usize, String)> = probes
            .iter()
            .enumerate()
            .filter_map(|(index, probe)| probe.as_ref().map(|p| (index, p.category.clone())))
            .collect();
        let view_keys: Vec<(String, String)> = present
            .iter()
            .map(|(index, category)| (category.clone(), skus[*index].to_owned()))
            .collect();
        let existing = self.store.read_many(PRODUCT_VIEWS, &view_keys).await?;
        let present_skus: Vec<&str> = present.iter().map(|(index, _)| skus[*index]).collect();
        let products = self.products(&present_skus).await?;
        let stocks = self.stocks(&present_skus).await?;
        let mut sources: Vec<Option<ViewSources>> = (0..skus.len()).map(|_| None).collect();
        for ((((index, category), existing), product), stock) in
            present.into_iter().zip(existing).zip(products).zip(stocks)
        {
            sources[index] = Some(ViewSources {
                category,
                existing,
                product,
                stock,
            });
        }
        let writes =
            skus.iter()
                .zip(locators)
                .zip(sources)
                .map(|((sku, locator), sources)| async move {
                    (*sku, self.write_view(sku, locator, sources).await)
                });
        let mut raced = Vec::new();
        for (sku, written) in futures::future::join_all(writes).await {
            match written {
                Ok(()) => {}
                Err(StoreError::PreconditionFailed | StoreError::Conflict) => raced.push(sku),
                Err(other) => return Err(other),
            }
        }
        Ok(raced)
    }

    /// Writes the view of `sku` from what was read (`sources`: `None` when the product
    /// is absent), and moves it when its category changed.
    async fn write_view(
        &self,
        sku: &str,
        locator: Option<Document>,
        sources: Option<ViewSources>,
    ) -> Result<(), StoreError> {
        let locator_pk = locator_partition(sku);
        let old_category = locator
            .as_ref()
            .and_then(|l| l.body.get("category"))
            .and_then(|c| c.as_str())
            .map(str::to_owned);
        let Some(sources) = sources else {
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
        let ViewSources {
            category,
            existing,
            product,
            stock,
        } = sources;
        let Some(product) = product else {
            return Err(StoreError::PreconditionFailed);
        };
        if product.category != category {
            return Err(StoreError::PreconditionFailed);
        }
        let view = ProductView::of(&product, stock.as_ref());
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
        let skus: Vec<String> = skus.into_iter().collect();
        let mut done = 0;
        for chunk in skus.chunks(REBUILD_CHUNK) {
            self.refresh_many(chunk).await?;
            done += chunk.len();
            progress(done);
        }
        // Views under a category their product is not in (or of no product at all) that
        // no locator leads to: removed, unless they changed since they were read.
        for view in written {
            let belongs = self
                .products(&[view.id.as_str()])
                .await?
                .pop()
                .flatten()
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
    let distinct: Vec<String> = skus
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    views
        .refresh_many(&distinct)
        .await
        .map_err(|e| FeedError::Transient(format!("refreshing the views: {e}")))
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
