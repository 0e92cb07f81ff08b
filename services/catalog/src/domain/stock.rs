use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::product::Sku;

pub const MAX_ON_HAND: i64 = 1_000_000_000;

/// Stock of one SKU: what is on hand, and how much of it orders have reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stock {
    pub sku: Sku,
    pub on_hand: i64,
    pub reserved: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockError {
    #[error("on hand ({on_hand}) cannot be below what is reserved ({reserved})")]
    BelowReserved { on_hand: i64, reserved: i64 },
}

impl Stock {
    pub fn empty(sku: Sku) -> Self {
        Self {
            sku,
            on_hand: 0,
            reserved: 0,
        }
    }

    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// A stock count from the warehouse replaces what is on hand; reservations stay.
    pub fn count(&self, on_hand: i64) -> Result<Self, StockError> {
        if on_hand < self.reserved {
            return Err(StockError::BelowReserved {
                on_hand,
                reserved: self.reserved,
            });
        }
        Ok(Self {
            on_hand,
            ..self.clone()
        })
    }
}

impl Stock {
    /// Holds `quantity` for an order, if that much is available.
    pub fn reserve(&self, quantity: i64) -> Option<Self> {
        (quantity > 0 && quantity <= self.available()).then(|| Self {
            reserved: self.reserved + quantity,
            ..self.clone()
        })
    }

    /// Gives back what an order held (never below zero, so a repeat cannot go negative).
    pub fn release(&self, quantity: i64) -> Self {
        Self {
            reserved: (self.reserved - quantity).max(0),
            ..self.clone()
        }
    }
}

/// What catalog decided for an order that got its stock: every line held. It lives in the
/// order's partition (see `catalog::order_partition`), written with the record that the
/// order's event was handled, and removed when the order's stock is released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub kind: String,
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<ReservedLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservedLine {
    pub sku: Sku,
    pub quantity: i64,
}

impl Reservation {
    pub const KIND: &'static str = "reservation";

    pub fn id_for(order_id: &str) -> String {
        format!("reservation-{order_id}")
    }
}

/// What one order holds of one SKU, in that SKU's partition: written in one batch with the
/// stock it takes from, so that an order holds a SKU at most once whatever is redelivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hold {
    pub kind: String,
    pub order_id: String,
    pub sku: Sku,
    pub quantity: i64,
}

impl Hold {
    pub const KIND: &'static str = "hold";

    pub fn new(order_id: &str, sku: Sku, quantity: i64) -> Self {
        Self {
            kind: Self::KIND.to_owned(),
            order_id: order_id.to_owned(),
            sku,
            quantity,
        }
    }

    pub fn id_for(order_id: &str) -> String {
        format!("hold-{order_id}")
    }
}

/// A SKU an order wants more of than is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// Why an order's lines cannot be planned at all (a malformed order, never retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("an order without lines")]
    NoLines,
    #[error("line {sku} has quantity {quantity}")]
    BadQuantity { sku: String, quantity: i64 },
}

/// Sums an order's lines per SKU (lines for one SKU are reserved together).
pub fn wanted_quantities<'a>(
    lines: impl IntoIterator<Item = (&'a str, i64)>,
) -> Result<BTreeMap<String, i64>, PlanError> {
    let mut wanted: BTreeMap<String, i64> = BTreeMap::new();
    for (sku, quantity) in lines {
        if quantity <= 0 {
            return Err(PlanError::BadQuantity {
                sku: sku.to_owned(),
                quantity,
            });
        }
        let total = wanted.entry(sku.to_owned()).or_default();
        *total = total.saturating_add(quantity);
    }
    if wanted.is_empty() {
        return Err(PlanError::NoLines);
    }
    Ok(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_order_wants_the_sum_of_its_lines_per_sku() {
        let wanted = wanted_quantities([("B", 1), ("A", 2), ("A", 1)]).unwrap();
        assert_eq!(wanted["A"], 3);
        // Held in SKU order, the same order on every attempt.
        assert_eq!(wanted.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(wanted_quantities([]), Err(PlanError::NoLines));
        assert!(wanted_quantities([("A", 0)]).is_err());
    }

    #[test]
    fn counting_below_reserved_is_refused() {
        let stock = Stock {
            sku: Sku::parse("A").unwrap(),
            on_hand: 10,
            reserved: 4,
        };
        assert_eq!(
            stock.count(3),
            Err(StockError::BelowReserved {
                on_hand: 3,
                reserved: 4
            })
        );
        let counted = stock.count(7).unwrap();
        assert_eq!(counted.available(), 3);
    }

    #[test]
    fn reserving_never_exceeds_what_is_available() {
        let stock = Stock {
            sku: Sku::parse("A").unwrap(),
            on_hand: 5,
            reserved: 3,
        };
        assert_eq!(stock.reserve(2).unwrap().reserved, 5);
        assert!(stock.reserve(3).is_none());
        assert!(stock.reserve(0).is_none());
        assert_eq!(stock.release(2).reserved, 1);
        assert_eq!(stock.release(10).reserved, 0);
    }
}
