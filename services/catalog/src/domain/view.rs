//! The storefront's read model of a product: what a list shows (the product and how many
//! are available), with the fields its queries filter and sort on. Built from the product
//! and its stock by a pure function, so that it can always be built again from them.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Product, Sku, Stock};

/// Decimal places of [`ProductView::amount_scaled`]: enough for every ISO 4217 currency.
pub const SCALE_DIGITS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProductView {
    pub kind: String,
    pub sku: Sku,
    pub name: String,
    pub description: String,
    pub category: String,
    pub price_minor_units: i64,
    pub currency: String,
    /// The price's amount × 10⁴, whatever the currency: what price filters and sorting use.
    pub amount_scaled: i64,
    pub available: i64,
    pub in_stock: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl ProductView {
    pub const KIND: &'static str = "product-view";

    /// The view of `product` with `stock` (none counted yet: nothing available).
    pub fn of(product: &Product, stock: Option<&Stock>) -> Self {
        let available = stock.map(Stock::available).unwrap_or(0).max(0);
        let exponent = product
            .price()
            .and_then(|price| price.currency().exponent())
            .map(u32::from)
            .unwrap_or(0)
            .min(SCALE_DIGITS);
        Self {
            kind: Self::KIND.to_owned(),
            sku: product.sku.clone(),
            name: product.name.clone(),
            description: product.description.clone(),
            category: product.category.clone(),
            price_minor_units: product.price_minor_units,
            currency: product.currency.clone(),
            amount_scaled: product
                .price_minor_units
                .saturating_mul(10_i64.pow(SCALE_DIGITS - exponent)),
            available,
            in_stock: available > 0,
            created_at: product.created_at,
            updated_at: product.updated_at,
        }
    }

    /// The product the view was built from.
    pub fn product(&self) -> Product {
        Product {
            sku: self.sku.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            category: self.category.clone(),
            price_minor_units: self.price_minor_units,
            currency: self.currency.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// Reads a price bound such as `12.5` as an amount × 10⁴.
pub fn parse_amount_bound(text: &str) -> Result<i64, &'static str> {
    const WHY: &str = "must be a plain decimal such as 12.50, with at most 4 decimals";
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 14
        || !digits(whole)
        || !digits(fraction)
        || fraction.len() > SCALE_DIGITS as usize
        || (text.contains('.') && fraction.is_empty())
    {
        return Err(WHY);
    }
    let whole: i64 = whole.parse().map_err(|_| WHY)?;
    let padded = format!("{fraction:0<width$}", width = SCALE_DIGITS as usize);
    let fraction: i64 = padded.parse().map_err(|_| WHY)?;
    Ok(whole * 10_i64.pow(SCALE_DIGITS) + fraction)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Money, ProductDraft};

    fn product(amount: &str, currency: &str) -> Product {
        let currency = common::money::parse_currency(currency).unwrap();
        Product::create(
            ProductDraft {
                sku: Sku::parse("V-1").unwrap(),
                name: "v".into(),
                description: String::new(),
                category: "c".into(),
                price: Money::parse(amount, currency).unwrap(),
            },
            OffsetDateTime::UNIX_EPOCH,
        )
    }

    #[test]
    fn amounts_compare_across_exponents() {
        assert_eq!(
            ProductView::of(&product("12.50", "EUR"), None).amount_scaled,
            125_000
        );
        assert_eq!(
            ProductView::of(&product("12", "JPY"), None).amount_scaled,
            120_000
        );
        assert_eq!(parse_amount_bound("12.5"), Ok(125_000));
        assert_eq!(parse_amount_bound("0"), Ok(0));
        for bad in ["", "1.", ".5", "-1", "1.23456", "1 ", "1e3"] {
            assert!(parse_amount_bound(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn availability_comes_from_the_stock() {
        let product = product("1.00", "EUR");
        let view = ProductView::of(&product, None);
        assert_eq!((view.available, view.in_stock), (0, false));
        let stock = Stock {
            sku: product.sku.clone(),
            on_hand: 5,
            reserved: 2,
        };
        let view = ProductView::of(&product, Some(&stock));
        assert_eq!((view.available, view.in_stock), (3, true));
        assert_eq!(view.product(), product);
    }
}
