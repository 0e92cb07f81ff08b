//! HTTP plumbing every service shares: problem+json for every failure (including actix's
//! own extractor errors), a span per request, health and OpenAPI routes, conditional
//! request headers, and one function that starts a service's server.

mod conditional;
mod connection;
mod extractors;
mod health;
mod metrics;
mod middleware;
mod openapi;
mod server;

pub use conditional::{IfMatch, etag_header_value, if_match, if_none_match_hits};
pub use extractors::{json_config, path_config, query_config};
pub use health::{BusReadiness, ReadinessCheck, StoreReadiness};
pub use metrics::OPERATOR_SCOPE;
pub use middleware::{LazyDocument, problem_fallback, trace_request};
pub use openapi::{BearerAuth, complete as complete_openapi};
pub use server::{Background, HttpContext, Listener, ServiceHandle, SharedHttp, bind, serve};
