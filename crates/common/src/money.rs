//! Money as integer minor units of an ISO 4217 currency, shared by every service. Amounts
//! enter and leave as decimal text; no float ever holds one.

use std::fmt;
use std::str::FromStr;

use iso_currency::Currency;

/// Largest amount accepted, in minor units: far above any price, far below `i64::MAX`.
const MAX_MINOR_UNITS: i64 = 1_000_000_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    minor_units: i64,
    currency: Currency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("is not an ISO 4217 currency code")]
    UnknownCurrency,
    #[error("must be a plain decimal such as 12.50 (no sign, exponent or spaces)")]
    NotADecimal,
    #[error("has more decimal places than {currency} allows ({allowed})")]
    TooPrecise { currency: String, allowed: u16 },
    #[error("is too large")]
    TooLarge,
}

pub fn parse_currency(code: &str) -> Result<Currency, MoneyError> {
    // Funds and precious metals have codes too, but no minor unit: not for prices.
    Currency::from_code(code)
        .filter(|currency| currency.exponent().is_some())
        .ok_or(MoneyError::UnknownCurrency)
}

/// The ISO 4217 codes that [`parse_currency`] accepts, grouped by their number of decimals.
pub fn codes_by_decimals() -> std::collections::BTreeMap<u16, Vec<&'static str>> {
    use iso_currency::IntoEnumIterator;
    let mut groups = std::collections::BTreeMap::<u16, Vec<&'static str>>::new();
    for currency in Currency::iter() {
        if let Some(decimals) = currency.exponent() {
            groups.entry(decimals).or_default().push(currency.code());
        }
    }
    groups
}

/// How many digits the whole part of an amount may have, in a currency with `decimals`
/// decimals, so that every such amount is within the largest amount.
pub fn max_whole_digits(decimals: u16) -> usize {
    let mut digits = 0;
    let mut limit = MAX_MINOR_UNITS / 10_i64.pow(u32::from(decimals));
    while limit >= 10 {
        limit /= 10;
        digits += 1;
    }
    digits
}

impl Money {
    /// `quantity` times this amount; `None` on overflow or above the largest amount.
    pub fn times(&self, quantity: i64) -> Option<Money> {
        self.minor_units
            .checked_mul(quantity)
            .filter(|units| (0..=MAX_MINOR_UNITS).contains(units))
            .map(|minor_units| Money {
                minor_units,
                currency: self.currency,
            })
    }

    /// The sum, if both are in the same currency and it stays in range.
    pub fn plus(&self, other: &Money) -> Option<Money> {
        (self.currency == other.currency)
            .then(|| self.minor_units.checked_add(other.minor_units))
            .flatten()
            .filter(|units| *units <= MAX_MINOR_UNITS)
            .map(|minor_units| Money {
                minor_units,
                currency: self.currency,
            })
    }

    pub fn from_minor_units(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }

    /// Parses `12.50` for EUR into 1250 minor units; `12.505` is refused, not rounded.
    pub fn parse(amount: &str, currency: Currency) -> Result<Self, MoneyError> {
        let exponent = currency.exponent().unwrap_or(0);
        let (whole, fraction) = amount.split_once('.').unwrap_or((amount, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty()
            || !digits_only(whole)
            || !digits_only(fraction)
            || (amount.contains('.') && fraction.is_empty())
        {
            return Err(MoneyError::NotADecimal);
        }
        let significant = fraction.trim_end_matches('0');
        if significant.len() > usize::from(exponent) {
            return Err(MoneyError::TooPrecise {
                currency: currency.code().to_owned(),
                allowed: exponent,
            });
        }
        let scale = 10_i64.pow(u32::from(exponent));
        let whole: i64 = whole.parse().map_err(|_| MoneyError::TooLarge)?;
        let padded = format!("{significant:0<width$}", width = usize::from(exponent));
        let fraction: i64 = if padded.is_empty() {
            0
        } else {
            padded.parse().map_err(|_| MoneyError::NotADecimal)?
        };
        let minor_units = whole
            .checked_mul(scale)
            .and_then(|units| units.checked_add(fraction))
            .filter(|units| *units <= MAX_MINOR_UNITS)
            .ok_or(MoneyError::TooLarge)?;
        Ok(Self {
            minor_units,
            currency,
        })
    }

    pub fn minor_units(&self) -> i64 {
        self.minor_units
    }

    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The amount as decimal text with exactly the currency's number of decimals.
    pub fn amount(&self) -> String {
        let exponent = u32::from(self.currency.exponent().unwrap_or(0));
        if exponent == 0 {
            return self.minor_units.to_string();
        }
        let scale = 10_i64.pow(exponent);
        format!(
            "{}.{:0width$}",
            self.minor_units / scale,
            self.minor_units % scale,
            width = exponent as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount(), self.currency.code())
    }
}

impl FromStr for Money {
    type Err = MoneyError;
    /// `"12.50 EUR"`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (amount, code) = text.split_once(' ').ok_or(MoneyError::NotADecimal)?;
        Money::parse(amount, parse_currency(code)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        parse_currency("EUR").unwrap()
    }

    #[test]
    fn every_listed_code_parses_and_the_largest_whole_part_fits() {
        let groups = codes_by_decimals();
        assert_eq!(groups.keys().copied().collect::<Vec<_>>(), [0, 2, 3, 4]);
        for (decimals, codes) in groups {
            let whole = "9".repeat(max_whole_digits(decimals));
            let widest = match decimals {
                0 => whole,
                _ => format!("{whole}.{}", "9".repeat(usize::from(decimals))),
            };
            for code in codes {
                let currency = parse_currency(code).unwrap();
                assert!(Money::parse(&widest, currency).is_ok(), "{widest} {code}");
            }
        }
    }

    #[test]
    fn parses_exactly() {
        assert_eq!(Money::parse("12.50", eur()).unwrap().minor_units(), 1250);
        assert_eq!(Money::parse("12.5", eur()).unwrap().minor_units(), 1250);
        assert_eq!(Money::parse("0.1", eur()).unwrap().minor_units(), 10);
        assert_eq!(Money::parse("7", eur()).unwrap().minor_units(), 700);
        assert_eq!(Money::parse("12.500", eur()).unwrap().minor_units(), 1250);
        assert_eq!(Money::parse("1999.99", eur()).unwrap().amount(), "1999.99");
    }

    #[test]
    fn respects_the_currency_exponent() {
        let yen = parse_currency("JPY").unwrap();
        assert_eq!(Money::parse("1500", yen).unwrap().amount(), "1500");
        assert!(matches!(
            Money::parse("1500.5", yen),
            Err(MoneyError::TooPrecise { .. })
        ));
        let dinar = parse_currency("KWD").unwrap();
        assert_eq!(Money::parse("1.234", dinar).unwrap().minor_units(), 1234);
        assert_eq!(Money::parse("1.2", dinar).unwrap().amount(), "1.200");
    }

    #[test]
    fn refuses_what_is_not_a_plain_decimal() {
        for text in [
            "", "-1", "1e3", "1.", ".5", "1,5", " 1", "abc", "1.2.3", "+1",
        ] {
            assert_eq!(
                Money::parse(text, eur()),
                Err(MoneyError::NotADecimal),
                "{text:?}"
            );
        }
        assert!(matches!(
            Money::parse("12.505", eur()),
            Err(MoneyError::TooPrecise { .. })
        ));
        assert_eq!(
            Money::parse("99999999999999999999", eur()),
            Err(MoneyError::TooLarge)
        );
    }

    #[test]
    fn currency_codes_are_checked() {
        assert!(parse_currency("EUR").is_ok());
        assert_eq!(parse_currency("EURO"), Err(MoneyError::UnknownCurrency));
        assert_eq!(parse_currency("eur"), Err(MoneyError::UnknownCurrency));
        assert_eq!(parse_currency("XAU"), Err(MoneyError::UnknownCurrency));
    }
}
