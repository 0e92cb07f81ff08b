//! The catalog served for real on a random port, called over HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api_errors;
mod auth_and_limits;
mod batch;
mod durability;
mod helpers;
mod products;
mod stock;
mod views;
