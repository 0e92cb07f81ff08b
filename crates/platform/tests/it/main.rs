//! End-to-end tests across services: the order saga on the embedded store and bus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod change_events;
mod compose;
mod connectors;
mod console;
pub mod crash;
mod functions;
mod helpers;
mod imports;
mod metrics;
mod notifications;
mod resilience;
mod saga;
mod up;
