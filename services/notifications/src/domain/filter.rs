//! Which events a subscription asks for: exact types (`orders.order.confirmed.v1`) and
//! prefixes (`orders.*`, or `*` for everything).

/// One entry of a subscription's `eventTypes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventFilter {
    Exact(String),
    /// Matches every type starting with the text before `*` (which ends with a dot).
    Prefix(String),
    All,
}

impl EventFilter {
    /// Reads a filter; `known` are the types there are, which an exact filter must name and
    /// a prefix must match at least one of.
    pub fn parse(text: &str, known: &[&str]) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::All);
        }
        if let Some(prefix) = text.strip_suffix('*') {
            let well_formed = prefix.ends_with('.')
                && prefix.len() > 1
                && prefix.trim_end_matches('.').split('.').all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            if !well_formed {
                return Err(format!("{text}: a prefix is written like `orders.*`"));
            }
            if !known.iter().any(|t| t.starts_with(prefix)) {
                return Err(format!("{text} matches no event type"));
            }
            return Ok(Self::Prefix(prefix.to_owned()));
        }
        if known.contains(&text) {
            Ok(Self::Exact(text.to_owned()))
        } else {
            Err(format!(
                "{text} is not an event type; see GET /asyncapi.json"
            ))
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Self::Exact(exact) => exact == event_type,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::All => true,
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            Self::Exact(exact) => exact.clone(),
            Self::Prefix(prefix) => format!("{prefix}*"),
            Self::All => "*".to_owned(),
        }
    }
}

/// True when any of `filters` takes `event_type`.
pub fn wants(filters: &[String], event_type: &str) -> bool {
    filters.iter().any(|filter| match filter.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => filter == event_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "orders.order.placed.v1",
        "orders.order.confirmed.v1",
        "catalog.product.changed.v1",
    ];

    #[test]
    fn exact_types_prefixes_and_everything() {
        assert_eq!(
            EventFilter::parse("orders.*", KNOWN),
            Ok(EventFilter::Prefix("orders.".into()))
        );
        assert_eq!(EventFilter::parse("*", KNOWN), Ok(EventFilter::All));
        assert!(EventFilter::parse("orders.order.placed.v1", KNOWN).is_ok());
        for bad in [
            "orders",
            "orders*",
            "billing.*",
            "orders.order.placed.v9",
            ".*",
            "Orders.*",
            "orders..*",
        ] {
            assert!(EventFilter::parse(bad, KNOWN).is_err(), "{bad}");
        }
        let filters = vec![
            "orders.*".to_owned(),
            "catalog.product.changed.v1".to_owned(),
        ];
        assert!(wants(&filters, "orders.order.placed.v1"));
        assert!(wants(&filters, "catalog.product.changed.v1"));
        assert!(!wants(&filters, "catalog.stock.changed.v1"));
        assert!(wants(&["*".to_owned()], "catalog.stock.changed.v1"));
    }
}
