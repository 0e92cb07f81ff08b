//! The notifications service: webhook subscriptions whose endpoints receive the platform's
//! events signed as Standard Webhooks, with every attempt recorded and retried on a
//! schedule, and e-mail to the customer about their orders.

pub mod api;
pub mod deliveries;
pub mod domain;
pub mod handlers;
pub mod mail;
pub mod measure;
pub mod retention;
pub mod settings;
pub mod startup;
pub mod subscriptions;
pub mod wanted;
