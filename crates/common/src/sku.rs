//! The SKU, the one identifier every service passes around (catalog owns products by it,
//! orders prices and reserves by it, sync imports by it): one syntax everywhere, checked at
//! every border, and safe in a URL path segment by construction.

use serde::{Deserialize, Serialize};

/// A stock-keeping unit: 1 to 64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

/// Why a text is not a SKU.
pub const SKU_RULE: &str =
    "must be 1 to 64 of A-Z, a-z, 0-9, '.', '_' or '-', starting with a letter or digit";

/// [`SKU_RULE`] as a regular expression, for API documents.
pub const SKU_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$";

impl utoipa::PartialSchema for Sku {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(SKU_PATTERN))
            .min_length(Some(1))
            .max_length(Some(64))
            .description(Some(
                "1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit",
            ))
            .examples(["WIDGET-1"])
            .into()
    }
}

impl utoipa::ToSchema for Sku {}

impl Sku {
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let valid_chars = text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        let starts_well = text
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
        if text.len() <= 64 && valid_chars && starts_well {
            Ok(Self(text.to_owned()))
        } else {
            Err(SKU_RULE)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = &'static str;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Sku::parse(&text)
    }
}

impl From<Sku> for String {
    fn from(sku: Sku) -> String {
        sku.0
    }
}

impl std::fmt::Display for Sku {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_pattern_says_what_parse_accepts() {
        let pattern = regex_lite::Regex::new(SKU_PATTERN).unwrap();
        for text in [
            "A",
            "a.b_c-d",
            "0",
            &"x".repeat(64),
            "",
            ".a",
            "a/b",
            "a?b",
            &"x".repeat(65),
            "é",
        ] {
            assert_eq!(pattern.is_match(text), Sku::parse(text).is_ok(), "{text:?}");
        }
    }

    #[test]
    fn only_plain_identifiers_are_skus() {
        for good in ["A", "abc-1", "X.Y_Z", "0"] {
            assert!(Sku::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "", "-A", ".hidden", "A?x", "A#x", "A/B", "..", "A%2FB", "A B", "Ä",
        ] {
            assert!(Sku::parse(bad).is_err(), "{bad}");
        }
        assert!(Sku::parse(&"A".repeat(65)).is_err());
        assert!(serde_json::from_str::<Sku>("\"A?x\"").is_err());
    }
}
