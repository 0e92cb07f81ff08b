use common::money::{Money, parse_currency};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Lines an order may hold: a reservation of all of them must fit one store batch.
pub const MAX_LINES: usize = 50;
pub const MAX_QUANTITY: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Confirmed,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Confirmed => "confirmed",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Confirmed,
            Self::Rejected,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|status| status.as_str() == text)
    }
}

/// A line with the catalog's price at the time of ordering.
#[derive(Debug, Clone, PartialEq)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor_units: i64,
}

/// An order as stored (in the `orders` container, partition = customer id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub kind: String,
    pub id: String,
    pub customer_id: String,
    pub status: OrderStatus,
    pub lines: Vec<OrderLine>,
    pub currency: String,
    pub total_minor_units: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the customer is told about the order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact_email: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("an order needs 1 to {MAX_LINES} lines")]
    LineCount,
    #[error("all lines must be priced in one currency")]
    MixedCurrencies,
    #[error("the order total is too large")]
    TooLarge,
    #[error("a {from} order cannot become {to}")]
    Transition {
        from: &'static str,
        to: &'static str,
    },
}

impl Order {
    pub const KIND: &'static str = "order";

    /// A new pending order; the total is exact, in the lines' one currency.
    pub fn place(
        id: String,
        customer_id: String,
        lines: Vec<PricedLine>,
        now: OffsetDateTime,
    ) -> Result<Self, OrderError> {
        if lines.is_empty() || lines.len() > MAX_LINES {
            return Err(OrderError::LineCount);
        }
        let currency = lines[0].unit_price.currency();
        let mut total = Money::from_minor_units(0, currency);
        for line in &lines {
            if line.unit_price.currency() != currency {
                return Err(OrderError::MixedCurrencies);
            }
            let amount = line
                .unit_price
                .times(line.quantity)
                .ok_or(OrderError::TooLarge)?;
            total = total.plus(&amount).ok_or(OrderError::TooLarge)?;
        }
        Ok(Self {
            kind: Self::KIND.to_owned(),
            id,
            customer_id,
            status: OrderStatus::Pending,
            lines: lines
                .into_iter()
                .map(|line| OrderLine {
                    sku: line.sku,
                    quantity: line.quantity,
                    unit_price_minor_units: line.unit_price.minor_units(),
                })
                .collect(),
            currency: currency.code().to_owned(),
            total_minor_units: total.minor_units(),
            reason: None,
            contact_email: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// The same order, telling the customer at `contact_email`.
    pub fn with_contact_email(self, contact_email: Option<String>) -> Self {
        Self {
            contact_email,
            ..self
        }
    }

    fn become_(
        &self,
        to: OrderStatus,
        allowed_from: OrderStatus,
        reason: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Self, OrderError> {
        if self.status != allowed_from {
            return Err(OrderError::Transition {
                from: self.status.as_str(),
                to: to.as_str(),
            });
        }
        Ok(Self {
            status: to,
            reason: reason.or_else(|| self.reason.clone()),
            updated_at: now,
            ..self.clone()
        })
    }

    /// Stock was reserved: pending -> confirmed.
    pub fn confirm(&self, now: OffsetDateTime) -> Result<Self, OrderError> {
        self.become_(OrderStatus::Confirmed, OrderStatus::Pending, None, now)
    }

    /// Stock could not be reserved: pending -> rejected, with the reason.
    pub fn reject(&self, reason: String, now: OffsetDateTime) -> Result<Self, OrderError> {
        self.become_(
            OrderStatus::Rejected,
            OrderStatus::Pending,
            Some(reason),
            now,
        )
    }

    /// The customer cancels: confirmed -> cancelled (stock is then released).
    pub fn cancel(&self, now: OffsetDateTime) -> Result<Self, OrderError> {
        self.become_(OrderStatus::Cancelled, OrderStatus::Confirmed, None, now)
    }

    pub fn money(&self, minor_units: i64) -> Option<Money> {
        parse_currency(&self.currency)
            .ok()
            .map(|currency| Money::from_minor_units(minor_units, currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: &str) -> Money {
        Money::parse(amount, parse_currency("EUR").unwrap()).unwrap()
    }

    fn order() -> Order {
        let lines = vec![
            PricedLine {
                sku: "A".into(),
                quantity: 2,
                unit_price: eur("12.50"),
            },
            PricedLine {
                sku: "B".into(),
                quantity: 3,
                unit_price: eur("0.10"),
            },
        ];
        Order::place(
            "o-1".into(),
            "c-1".into(),
            lines,
            OffsetDateTime::UNIX_EPOCH,
        )
        .unwrap()
    }

    #[test]
    fn the_total_is_exact() {
        let order = order();
        assert_eq!(order.total_minor_units, 2530);
        assert_eq!(
            order.money(order.total_minor_units).unwrap().amount(),
            "25.30"
        );
        assert_eq!(order.status, OrderStatus::Pending);
    }

    #[test]
    fn lines_must_share_a_currency_and_fit() {
        let yen = Money::parse("100", parse_currency("JPY").unwrap()).unwrap();
        let mixed = vec![
            PricedLine {
                sku: "A".into(),
                quantity: 1,
                unit_price: eur("1"),
            },
            PricedLine {
                sku: "B".into(),
                quantity: 1,
                unit_price: yen,
            },
        ];
        assert_eq!(
            Order::place("o".into(), "c".into(), mixed, OffsetDateTime::UNIX_EPOCH),
            Err(OrderError::MixedCurrencies)
        );
        assert_eq!(
            Order::place("o".into(), "c".into(), vec![], OffsetDateTime::UNIX_EPOCH),
            Err(OrderError::LineCount)
        );
        let huge = vec![PricedLine {
            sku: "A".into(),
            quantity: 10_000,
            unit_price: eur("999999999999"),
        }];
        assert_eq!(
            Order::place("o".into(), "c".into(), huge, OffsetDateTime::UNIX_EPOCH),
            Err(OrderError::TooLarge)
        );
    }

    #[test]
    fn the_lifecycle_allows_only_its_transitions() {
        let now = OffsetDateTime::UNIX_EPOCH;
        let pending = order();
        let confirmed = pending.confirm(now).unwrap();
        assert_eq!(confirmed.status, OrderStatus::Confirmed);
        assert!(pending.cancel(now).is_err());
        assert!(confirmed.confirm(now).is_err());
        assert!(confirmed.reject("x".into(), now).is_err());
        let cancelled = confirmed.cancel(now).unwrap();
        assert_eq!(cancelled.status, OrderStatus::Cancelled);
        assert!(cancelled.cancel(now).is_err());
        let rejected = pending.reject("insufficient stock".into(), now).unwrap();
        assert_eq!(rejected.reason.as_deref(), Some("insufficient stock"));
        assert!(rejected.cancel(now).is_err());
    }
}
