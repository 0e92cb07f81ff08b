//! Order rules in plain Rust: no HTTP, no store, no bus.

pub mod order;

pub use order::{Order, OrderError, OrderLine, OrderStatus, PricedLine};
