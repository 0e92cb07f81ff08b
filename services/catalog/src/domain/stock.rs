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

/// What an order holds: written when stock is reserved, removed when it is released.
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

#[cfg(test)]
mod tests {
    use super::*;

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
