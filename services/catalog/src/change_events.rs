//! Product and stock changes as events (`catalog.product.changed.v1`,
//! `catalog.product.deleted.v1`, `catalog.stock.changed.v1`), published from the change feeds
//! of `products` and `stock`: every committed change, in order per SKU, at least once. The
//! event id is the SKU and the stored version, so a change read again after a crash is the
//! same event to duplicate detection and to idempotent consumers.

use async_trait::async_trait;
use common::bus::{CloudEvent, Message, SharedBus};
use common::events::{
    EventType, PriceV1, ProductChanged, ProductChangedV1, ProductDeleted, ProductDeletedV1,
    StockChanged, StockChangedV1,
};
use common::runtime::FeedHandler;
use common::runtime::feed::FeedError;
use common::store::Document;
use time::format_description::well_known::Rfc3339;

use crate::catalog::is_tombstone;
use crate::domain::{Product, Stock};

/// The readers' name (one lease per container).
pub const READER: &str = "change-events";

/// The event a stored version stands for, with its deterministic id.
fn stamped<E: EventType>(
    sku: &str,
    document: &Document,
    data: &E::Data,
) -> Result<CloudEvent, FeedError> {
    let mut event = E::event(sku, data)
        .map_err(|e| FeedError::Transient(format!("{} for {sku}: {e}", E::TYPE)))?;
    event.id = format!("{}:{sku}:{}", E::TYPE, document.etag.as_str());
    Ok(event)
}

/// `products` holds products and the tombstones of deleted ones, id = SKU.
fn product_event(document: &Document) -> Result<Option<CloudEvent>, FeedError> {
    let sku = document.id.as_str();
    if is_tombstone(document) {
        let data = ProductDeletedV1 {
            sku: sku.to_owned(),
        };
        return stamped::<ProductDeleted>(sku, document, &data).map(Some);
    }
    let Ok(product) = serde_json::from_value::<Product>(document.body.clone()) else {
        tracing::error!(sku, "a stored product is unreadable; no event for it");
        return Ok(None);
    };
    let Some(price) = product.price() else {
        tracing::error!(sku, currency = %product.currency, "a stored product has an unknown currency; no event for it");
        return Ok(None);
    };
    let data = ProductChangedV1 {
        sku: sku.to_owned(),
        name: product.name.clone(),
        description: product.description.clone(),
        category: product.category.clone(),
        price: PriceV1 {
            amount: price.amount(),
            currency: price.currency().code().to_owned(),
        },
        updated_at: product.updated_at.format(&Rfc3339).unwrap_or_default(),
    };
    stamped::<ProductChanged>(sku, document, &data).map(Some)
}

/// Of `stock`'s items only the stock records (no `kind`, id = SKU) are stock.
fn stock_event(document: &Document) -> Result<Option<CloudEvent>, FeedError> {
    if document.body.get("kind").is_some() || document.body.get("onHand").is_none() {
        return Ok(None);
    }
    let Ok(stock) = serde_json::from_value::<Stock>(document.body.clone()) else {
        tracing::error!(sku = %document.id, "a stored stock record is unreadable; no event for it");
        return Ok(None);
    };
    let sku = stock.sku.as_str();
    let data = StockChangedV1 {
        sku: sku.to_owned(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        available: stock.available(),
    };
    stamped::<StockChanged>(sku, document, &data).map(Some)
}

async fn publish_all(
    bus: &SharedBus,
    changes: Vec<Document>,
    event_of: fn(&Document) -> Result<Option<CloudEvent>, FeedError>,
) -> Result<(), FeedError> {
    let mut skus = Vec::with_capacity(changes.len());
    let mut messages = Vec::with_capacity(changes.len());
    for document in &changes {
        if let Some(event) = event_of(document)? {
            skus.push(document.id.as_str());
            messages.push(Message::new(event).with_correlation_id(document.id.clone()));
        }
    }
    if messages.is_empty() {
        return Ok(());
    }
    let outcomes = bus
        .publish_many(common::bus::topics::CATALOG, messages)
        .await
        .map_err(|e| FeedError::Transient(e.to_string()))?;
    for (sku, outcome) in skus.into_iter().zip(outcomes) {
        if let Err(reason) = outcome {
            tracing::error!(%sku, %reason, "a change event was refused by the bus; it is skipped");
        }
    }
    Ok(())
}

/// Follows `products`.
pub struct ProductChangeEvents(pub SharedBus);

#[async_trait]
impl FeedHandler for ProductChangeEvents {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        publish_all(&self.0, changes, product_event).await
    }
}

/// Follows `stock`.
pub struct StockChangeEvents(pub SharedBus);

#[async_trait]
impl FeedHandler for StockChangeEvents {
    async fn handle(&self, changes: Vec<Document>) -> Result<(), FeedError> {
        publish_all(&self.0, changes, stock_event).await
    }
}
