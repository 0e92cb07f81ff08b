//! The orders service's own settings (`[catalog]` in `config/orders.toml`, `ORDERS__CATALOG__*`),
//! beside the shared sections.

use common::config::ConfigError;
use serde::Deserialize;

/// Their defaults, with the reason for each.
pub const DEFAULTS: &str = include_str!("defaults.toml");

#[derive(Debug, Clone, Deserialize)]
pub struct OrdersSettings {
    pub catalog: CatalogPeer,
}

/// Where and how orders calls the catalog's versioned API.
#[derive(Debug, Clone, Deserialize)]
pub struct CatalogPeer {
    pub url: String,
    pub timeout_ms: u64,
    pub attempts: u32,
}

impl OrdersSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.catalog.url.starts_with("http://") && !self.catalog.url.starts_with("https://") {
            return Err(ConfigError::key(
                "catalog.url",
                "must be an http:// or https:// URL",
            ));
        }
        if self.catalog.attempts == 0 {
            return Err(ConfigError::key("catalog.attempts", "must be at least 1"));
        }
        if self.catalog.timeout_ms == 0 {
            return Err(ConfigError::key(
                "catalog.timeout_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
