use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use common::auth::Principal;
use common::error::Problem;
use common::http::{IfMatch, etag_header_value, if_match, if_none_match_hits};
use common::store::ETag;
use common::validation::JsonObject;
use common::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::representation::{
    ProductInputV1, ProductInputV2, ProductReplacementV1, ProductReplacementV2, ProductV1,
    ProductV2, Version, page_limit, path_sku, read_draft, render,
};
use super::{READ_SCOPE, WRITE_SCOPE};
use crate::catalog::Catalog;
use crate::domain::{Product, Sku};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only products of this category.
    category: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    #[param(min_length = 1)]
    continuation: Option<String>,
}

/// A page of products; `continuation` is present while more may follow.
#[derive(Serialize, ToSchema)]
pub struct ProductPage<T> {
    items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

fn with_etag(
    mut response: actix_web::HttpResponseBuilder,
    etag: &ETag,
) -> actix_web::HttpResponseBuilder {
    response.insert_header((header::ETAG, etag_header_value(etag)));
    response
}

fn product_response(
    status: actix_web::http::StatusCode,
    product: &Product,
    etag: &ETag,
    version: Version,
) -> Result<HttpResponse, ApiError> {
    Ok(with_etag(HttpResponse::build(status), etag).json(render(product, version)?))
}

async fn create(
    principal: Principal,
    catalog: web::Data<Catalog>,
    body: web::Json<JsonObject>,
    version: Version,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let draft = read_draft(body.into_inner(), version, None)?;
    let (product, etag) = catalog.create_product(draft).await?;
    let location = format!("{}/{}", version.prefix(), product.sku.as_str());
    let mut response = product_response(
        actix_web::http::StatusCode::CREATED,
        &product,
        &etag,
        version,
    )?;
    if let Ok(value) = header::HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

async fn get(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    version: Version,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let sku = path_sku(&sku)?;
    let (product, etag) = catalog.product(&sku).await?;
    if if_none_match_hits(&req, &etag) {
        return Ok(with_etag(HttpResponse::NotModified(), &etag).finish());
    }
    product_response(actix_web::http::StatusCode::OK, &product, &etag, version)
}

async fn replace(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
    version: Version,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let sku = path_sku(&sku)?;
    let expected = match if_match(&req)? {
        IfMatch::Absent => {
            return Err(ApiError::new(
                ErrorCode::PreconditionRequired,
                "send If-Match with the product's ETag (or *) so that no one else's change is overwritten",
            ));
        }
        other => other,
    };
    let draft = read_draft(body.into_inner(), version, Some(&sku))?;
    let (product, etag) = catalog.replace_product(draft, expected.etag()).await?;
    product_response(actix_web::http::StatusCode::OK, &product, &etag, version)
}

async fn delete(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let sku = path_sku(&sku)?;
    let expected = if_match(&req)?;
    catalog.delete_product(&sku, expected.etag()).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn list(
    principal: Principal,
    catalog: web::Data<Catalog>,
    params: web::Query<ListParams>,
    version: Version,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let ListParams {
        category,
        limit,
        continuation,
    } = params.into_inner();
    let limit = page_limit(limit)?;
    let page = catalog
        .list_products(category.as_deref(), limit, continuation)
        .await?;
    let items = page
        .products
        .iter()
        .map(|(product, _)| render(product, version))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(ProductPage {
        items,
        continuation: page.continuation,
    }))
}

/// Create a product (deprecated: use v2).
#[utoipa::path(post, path = "/v1/products", tag = "products v1", request_body = ProductInputV1,
    responses((status = 201, description = "Created; `Location` and `ETag` set", body = ProductV1),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn create_v1(
    principal: Principal,
    catalog: web::Data<Catalog>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    create(principal, catalog, body, Version::V1).await
}

/// Create a product.
#[utoipa::path(post, path = "/v2/products", tag = "products", request_body = ProductInputV2,
    responses((status = 201, description = "Created; `Location` and `ETag` set", body = ProductV2),
        (status = 409, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn create_v2(
    principal: Principal,
    catalog: web::Data<Catalog>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    create(principal, catalog, body, Version::V2).await
}

/// Read a product (deprecated: use v2). `If-None-Match` answers 304 when unchanged.
#[utoipa::path(get, path = "/v1/products/{sku}", tag = "products v1",
    params(("sku" = inline(Sku), Path), ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag read before: 304 while it is current")),
    responses((status = 200, body = ProductV1), (status = 304), (status = 404, body = Problem)),
    security(("bearer" = ["catalog.read"])))]
pub async fn get_v1(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    get(req, principal, catalog, sku, Version::V1).await
}

/// Read a product. `If-None-Match` answers 304 when unchanged.
#[utoipa::path(get, path = "/v2/products/{sku}", tag = "products",
    params(("sku" = inline(Sku), Path), ("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag read before: 304 while it is current")),
    responses((status = 200, body = ProductV2), (status = 304), (status = 404, body = Problem)),
    security(("bearer" = ["catalog.read"])))]
pub async fn get_v2(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    get(req, principal, catalog, sku, Version::V2).await
}

/// Replace a product (deprecated: use v2). Needs `If-Match`.
#[utoipa::path(put, path = "/v1/products/{sku}", tag = "products v1", request_body = ProductReplacementV1,
    params(("sku" = inline(Sku), Path), ("If-Match" = String, Header, description = "The product's ETag as last read, or `*`", pattern = "^(\\*|(W/)?\"[!#-~]*\")$")),
    responses((status = 200, body = ProductV1), (status = 412, body = Problem), (status = 428, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn replace_v1(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    replace(req, principal, catalog, sku, body, Version::V1).await
}

/// Replace a product. Needs `If-Match`.
#[utoipa::path(put, path = "/v2/products/{sku}", tag = "products", request_body = ProductReplacementV2,
    params(("sku" = inline(Sku), Path), ("If-Match" = String, Header, description = "The product's ETag as last read, or `*`", pattern = "^(\\*|(W/)?\"[!#-~]*\")$")),
    responses((status = 200, body = ProductV2), (status = 412, body = Problem), (status = 428, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn replace_v2(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    replace(req, principal, catalog, sku, body, Version::V2).await
}

/// Delete a product and its stock (deprecated: use v2). `If-Match` optional.
#[utoipa::path(delete, path = "/v1/products/{sku}", tag = "products v1",
    params(("sku" = inline(Sku), Path), ("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn delete_v1(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    delete(req, principal, catalog, sku).await
}

/// Delete a product and its stock. `If-Match` optional.
#[utoipa::path(delete, path = "/v2/products/{sku}", tag = "products",
    params(("sku" = inline(Sku), Path), ("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn delete_v2(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    delete(req, principal, catalog, sku).await
}

/// List products by SKU (deprecated: use v2).
#[utoipa::path(get, path = "/v1/products", tag = "products v1", params(ListParams),
    responses((status = 200, body = ProductPage<ProductV1>), (status = 400, body = Problem)),
    security(("bearer" = ["catalog.read"])))]
pub async fn list_v1(
    principal: Principal,
    catalog: web::Data<Catalog>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    list(principal, catalog, params, Version::V1).await
}
