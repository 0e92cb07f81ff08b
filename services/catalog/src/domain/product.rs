use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::money::{Money, parse_currency};

pub use common::sku::Sku;

/// What a client may set on a product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductDraft {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price: Money,
}

/// A product as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_minor_units: i64,
    pub currency: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl Product {
    pub fn create(draft: ProductDraft, now: OffsetDateTime) -> Self {
        Self {
            sku: draft.sku,
            name: draft.name,
            description: draft.description,
            category: draft.category,
            price_minor_units: draft.price.minor_units(),
            currency: draft.price.currency().code().to_owned(),
            created_at: now,
            updated_at: now,
        }
    }

    /// Applies a full replacement; the SKU and creation time stay.
    pub fn revise(&self, draft: ProductDraft, now: OffsetDateTime) -> Self {
        Self {
            created_at: self.created_at,
            ..Self::create(draft, now)
        }
    }

    /// True when applying `draft` would change nothing a client set.
    pub fn matches(&self, draft: &ProductDraft) -> bool {
        self.sku == draft.sku
            && self.name == draft.name
            && self.description == draft.description
            && self.category == draft.category
            && self.price_minor_units == draft.price.minor_units()
            && self.currency == draft.price.currency().code()
    }

    pub fn price(&self) -> Option<Money> {
        let currency = parse_currency(&self.currency).ok()?;
        Some(Money::from_minor_units(self.price_minor_units, currency))
    }
}
