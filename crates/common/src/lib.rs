//! Everything the platform's services share: configuration, errors, authentication,
//! rate limiting, telemetry, HTTP plumbing, and the ports (traits) with their adapters.
//!
//! Business code in the services depends on the ports only; which adapter runs is chosen
//! from configuration in each service's start-up function.

pub mod auth;
pub mod bus;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod file_guard;
pub mod files;
pub mod http;
pub mod metrics;
pub mod money;
pub mod outbound;
pub mod private_files;
pub mod rate_limit;
pub mod runtime;
pub mod sku;
mod sqlite;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod usage;
pub mod validation;

pub use error::{ApiError, ErrorCode, FieldError};
