//! Integration tests of the common crate: one binary, one module per concern.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod auth;
mod bus_contract;
mod files_contract;
mod http;
mod runtime;
mod store_contract;
