//! Catalog rules in plain Rust: no HTTP, no store.

pub mod money;
pub mod product;
pub mod stock;
pub mod view;

pub use money::{Money, MoneyError};
pub use product::{Product, ProductDraft, Sku};
pub use stock::{Stock, StockError};
pub use view::ProductView;
