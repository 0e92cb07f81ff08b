use common::http::BearerAuth;
use utoipa::OpenApi;

use super::routes;

#[derive(OpenApi)]
#[openapi(
    info(title = "orders", description = "Orders and their lifecycle: pending -> confirmed | rejected; confirmed -> cancelled. Errors are application/problem+json (RFC 9457)."),
    paths(routes::place, routes::get, routes::list, routes::cancel),
    components(schemas(common::error::Problem, common::error::FieldError)),
    modifiers(&BearerAuth),
)]
pub struct OrdersApi;

pub fn document() -> serde_json::Value {
    serde_json::to_value(OrdersApi::openapi()).unwrap_or_default()
}
