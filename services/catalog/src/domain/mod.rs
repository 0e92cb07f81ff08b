//! Catalog rules in plain Rust: no HTTP, no store.

pub mod money;
pub mod product;
pub mod stock;

pub use money::{Money, MoneyError};
pub use product::{Product, ProductDraft, Sku};
pub use stock::{Stock, StockError};
