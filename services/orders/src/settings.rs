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
pub type CatalogPeer = common::outbound::PeerSettings;

impl OrdersSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.catalog.validate("catalog")
    }
}
