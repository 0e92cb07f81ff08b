use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use common::ApiError;
use common::auth::Principal;
use common::error::Problem;
use common::http::{etag_header_value, if_match};
use common::validation::{Fields, JsonObject};
use serde::Serialize;
use utoipa::ToSchema;

use super::representation::path_sku;
use super::{READ_SCOPE, WRITE_SCOPE};
use crate::catalog::Catalog;
use crate::domain::stock::MAX_ON_HAND;
use crate::domain::{Sku, Stock};

/// Stock of a SKU; `available` is `onHand - reserved`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockView {
    sku: String,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

/// The body of a stock count.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StockCount {
    /// 0 to 1,000,000,000; not below what is reserved.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    on_hand: i64,
}

fn view(stock: &Stock) -> StockView {
    StockView {
        sku: stock.sku.as_str().to_owned(),
        on_hand: stock.on_hand,
        reserved: stock.reserved,
        available: stock.available(),
    }
}

async fn get(
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let sku = path_sku(&sku)?;
    let (stock, etag) = catalog.stock(&sku).await?;
    let mut response = HttpResponse::Ok();
    if let Some(etag) = etag {
        response.insert_header((header::ETAG, etag_header_value(&etag)));
    }
    Ok(response.json(view(&stock)))
}

async fn count(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let sku = path_sku(&sku)?;
    let expected = if_match(&req)?;
    let mut fields = Fields::new(body.into_inner());
    let on_hand = fields.integer("onHand", true, 0..=MAX_ON_HAND);
    let on_hand = fields.finish(on_hand)?;
    let (stock, etag) = catalog.count_stock(&sku, on_hand, expected.etag()).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, etag_header_value(&etag)))
        .json(view(&stock)))
}

/// Read the stock of a product.
#[utoipa::path(get, path = "/v1/products/{sku}/stock", tag = "stock",
    params(("sku" = inline(Sku), Path)),
    responses((status = 200, body = StockView), (status = 404, body = Problem)),
    security(("bearer" = ["catalog.read"])))]
pub async fn get_v1(
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    get(principal, catalog, sku).await
}

/// Read the stock of a product.
#[utoipa::path(get, path = "/v2/products/{sku}/stock", tag = "stock",
    params(("sku" = inline(Sku), Path)),
    responses((status = 200, body = StockView), (status = 404, body = Problem)),
    security(("bearer" = ["catalog.read"])))]
pub async fn get_v2(
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    get(principal, catalog, sku).await
}

/// Record a stock count: sets what is on hand; reservations stay.
#[utoipa::path(put, path = "/v1/products/{sku}/stock", tag = "stock", request_body = StockCount,
    params(("sku" = inline(Sku), Path), ("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 200, body = StockView), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn count_v1(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    count(req, principal, catalog, sku, body).await
}

/// Record a stock count: sets what is on hand; reservations stay.
#[utoipa::path(put, path = "/v2/products/{sku}/stock", tag = "stock", request_body = StockCount,
    params(("sku" = inline(Sku), Path), ("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 200, body = StockView), (status = 409, body = Problem), (status = 412, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["catalog.write"])))]
pub async fn count_v2(
    req: HttpRequest,
    principal: Principal,
    catalog: web::Data<Catalog>,
    sku: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    count(req, principal, catalog, sku, body).await
}
