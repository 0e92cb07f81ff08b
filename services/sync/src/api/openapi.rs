use common::http::BearerAuth;
use utoipa::OpenApi;

use super::{connectors, imports};

#[derive(OpenApi)]
#[openapi(
    info(title = "sync", description = "Product-feed imports into the catalog; connectors that replicate order, product and stock changes to external systems. Errors are application/problem+json (RFC 9457)."),
    paths(imports::upload, imports::get, imports::list,
        connectors::create, connectors::list, connectors::get, connectors::replace, connectors::delete,
        connectors::pause, connectors::resume, connectors::retry, connectors::status,
        connectors::reconciliations, connectors::reconcile_now),
    components(schemas(common::error::Problem, common::error::FieldError)),
    modifiers(&BearerAuth),
)]
pub struct SyncApi;

pub fn document() -> serde_json::Value {
    serde_json::to_value(SyncApi::openapi()).unwrap_or_default()
}
