//! The orders service: orders, their lifecycle, and the saga with catalog.

pub mod api;
pub mod catalog_client;
pub mod domain;
pub mod handlers;
pub mod orders;
pub mod settings;
pub mod startup;
