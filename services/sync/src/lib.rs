//! The sync service: product-feed imports into the catalog.

pub mod api;
pub mod catalog_client;
pub mod domain;
pub mod imports;
pub mod settings;
pub mod startup;
