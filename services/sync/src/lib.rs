//! The sync service: product-feed imports into the catalog, and connectors that replicate
//! order, product and stock changes to external systems.

pub mod api;
pub mod catalog_client;
pub mod connectors;
pub mod domain;
pub mod handlers;
pub mod imports;
pub mod measure;
pub mod reconcile;
pub mod settings;
pub mod startup;
