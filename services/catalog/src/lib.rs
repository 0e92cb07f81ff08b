//! The catalog service: products, prices and stock.

pub mod api;
pub mod bulk;
pub mod catalog;
pub mod change_events;
pub mod domain;
pub mod handlers;
pub mod legacy;
pub mod startup;
pub mod stock_gate;
pub mod views;
