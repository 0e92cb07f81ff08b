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

/// A SKU an order wants more of than is available.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortage {
    pub sku: String,
    pub requested: i64,
    pub available: i64,
}

/// What reserving an order's lines comes to: every line, or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReservationPlan {
    /// The stock of each SKU after the reservation, and the lines held.
    Reserve {
        updated: Vec<Stock>,
        lines: Vec<ReservedLine>,
    },
    /// Nothing is reserved; these SKUs fall short.
    Refuse(Vec<Shortage>),
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

/// Reserves every wanted quantity or none: `stock` holds the current stock of each SKU
/// that has any (a SKU missing from it has nothing available).
pub fn plan_reservation(
    wanted: &BTreeMap<String, i64>,
    stock: &BTreeMap<String, Stock>,
) -> ReservationPlan {
    let mut updated = Vec::new();
    let mut lines = Vec::new();
    let mut shortages = Vec::new();
    for (sku, quantity) in wanted {
        match stock.get(sku) {
            Some(current) => match current.reserve(*quantity) {
                Some(after) => {
                    lines.push(ReservedLine {
                        sku: current.sku.clone(),
                        quantity: *quantity,
                    });
                    updated.push(after);
                }
                None => shortages.push(Shortage {
                    sku: sku.clone(),
                    requested: *quantity,
                    available: current.available(),
                }),
            },
            None => shortages.push(Shortage {
                sku: sku.clone(),
                requested: *quantity,
                available: 0,
            }),
        }
    }
    if shortages.is_empty() {
        ReservationPlan::Reserve { updated, lines }
    } else {
        ReservationPlan::Refuse(shortages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stock(sku: &str, on_hand: i64, reserved: i64) -> (String, Stock) {
        (
            sku.to_owned(),
            Stock {
                sku: Sku::parse(sku).unwrap(),
                on_hand,
                reserved,
            },
        )
    }

    #[test]
    fn a_reservation_takes_every_line_or_none() {
        let wanted = wanted_quantities([("A", 2), ("B", 1), ("A", 1)]).unwrap();
        assert_eq!(wanted["A"], 3);
        let all = BTreeMap::from([stock("A", 3, 0), stock("B", 1, 0)]);
        match plan_reservation(&wanted, &all) {
            ReservationPlan::Reserve { updated, lines } => {
                assert_eq!(updated.len(), 2);
                assert_eq!(updated[0].reserved, 3);
                assert_eq!(lines.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let short = BTreeMap::from([stock("A", 3, 1)]);
        assert_eq!(
            plan_reservation(&wanted, &short),
            ReservationPlan::Refuse(vec![
                Shortage {
                    sku: "A".into(),
                    requested: 3,
                    available: 2
                },
                Shortage {
                    sku: "B".into(),
                    requested: 1,
                    available: 0
                },
            ])
        );
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
