use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

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
