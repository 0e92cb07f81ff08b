use common::http::BearerAuth;
use utoipa::OpenApi;

use super::{batch, products, stock};

#[derive(OpenApi)]
#[openapi(
    info(title = "catalog", description = "Products, prices and stock. Errors are application/problem+json (RFC 9457). v1 is deprecated (see the Deprecation and Sunset headers); use v2."),
    paths(
        products::create_v1, products::get_v1, products::replace_v1, products::delete_v1, products::list_v1,
        products::create_v2, products::get_v2, products::replace_v2, products::delete_v2, super::list::list_v2,
        stock::get_v1, stock::count_v1, stock::get_v2, stock::count_v2, batch::upsert,
    ),
    components(schemas(common::error::Problem, common::error::FieldError)),
    modifiers(&BearerAuth),
)]
pub struct CatalogApi;

/// The OpenAPI document served at `/openapi.json`.
pub fn document() -> serde_json::Value {
    serde_json::to_value(CatalogApi::openapi()).unwrap_or_default()
}
