//! The rules of notifications, free of HTTP, store and bus: which events a subscription
//! wants, how a delivery is signed, when a failed attempt is tried again.

pub mod filter;
pub mod message;
pub mod schedule;
pub mod signature;
pub mod subscription;
