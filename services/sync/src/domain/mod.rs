//! Sync's business rules, free of HTTP, stores and buses.

pub mod connector;
pub mod feed;
pub mod import;
pub mod schedule;
