//! `GET /v2/products`: the storefront's list, served from the `product-views` read model
//! (one partition per category), with how fresh it is in the answer's headers.

use std::time::UNIX_EPOCH;

use actix_web::{HttpResponse, web};
use common::auth::Principal;
use common::error::Problem;
use common::{ApiError, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::READ_SCOPE;
use super::representation::{ProductV2, Rendered, Version, page_limit, render};
use crate::domain::view::parse_amount_bound;
use crate::views::{ProductViews, ViewQuery, ViewSort};

/// Milliseconds the oldest write made through this instance has waited to reach the list
/// (0: every such write is in it).
pub const LAG_HEADER: &str = "view-lag-ms";
/// When the list last caught up with every change it follows (RFC 3339).
pub const AS_OF_HEADER: &str = "view-as-of";

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParamsV2 {
    /// Only products of this category (answered from one partition).
    #[param(min_length = 1)]
    category: Option<String>,
    /// `true`: only products with stock available; `false`: only those without.
    in_stock: Option<bool>,
    /// Lowest price amount, decimal text with at most 4 decimals, compared with the amount
    /// in the product's own currency.
    #[param(pattern = "^[0-9]{1,14}(\\.[0-9]{1,4})?$")]
    min_price: Option<String>,
    /// Highest price amount, as `minPrice`.
    #[param(pattern = "^[0-9]{1,14}(\\.[0-9]{1,4})?$")]
    max_price: Option<String>,
    /// `sku` (default), `name` or `price`; a leading `-` sorts descending.
    #[param(pattern = "^-?(sku|name|price)$")]
    sort: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page (same filters and sort).
    #[param(min_length = 1)]
    continuation: Option<String>,
}

/// A product in the list, with what is available of it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProductSummaryV2 {
    #[serde(flatten)]
    product: ProductV2,
    /// On hand less reserved.
    available: i64,
    in_stock: bool,
}

/// A page of the list; `continuation` is present while more may follow.
#[derive(Serialize, ToSchema)]
pub struct ProductListV2 {
    items: Vec<ProductSummaryV2>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

fn read_query(params: ListParamsV2) -> Result<ViewQuery, ApiError> {
    let mut errors = Vec::new();
    let mut bound = |field: &str, text: Option<String>| {
        text.and_then(|text| match parse_amount_bound(&text) {
            Ok(amount) => Some(amount),
            Err(why) => {
                errors.push(FieldError::new(field, why));
                None
            }
        })
    };
    let min_amount = bound("minPrice", params.min_price);
    let max_amount = bound("maxPrice", params.max_price);
    let sort_text = params.sort.unwrap_or_else(|| "sku".to_owned());
    let (descending, key) = match sort_text.strip_prefix('-') {
        Some(key) => (true, key),
        None => (false, sort_text.as_str()),
    };
    let sort = match key {
        "sku" => Some(ViewSort::Sku),
        "name" => Some(ViewSort::Name),
        "price" => Some(ViewSort::Price),
        _ => {
            errors.push(FieldError::new(
                "sort",
                "must be sku, name or price, optionally with a leading -",
            ));
            None
        }
    };
    if let (Some(min), Some(max)) = (min_amount, max_amount)
        && min > max
    {
        errors.push(FieldError::new("minPrice", "must not be above maxPrice"));
    }
    if params.category.as_deref().is_some_and(str::is_empty) {
        errors.push(FieldError::new("category", "must not be empty"));
    }
    let limit = page_limit(params.limit);
    match (sort, limit) {
        (Some(sort), Ok(limit)) if errors.is_empty() => Ok(ViewQuery {
            category: params.category,
            in_stock: params.in_stock,
            min_amount,
            max_amount,
            sort,
            descending,
            limit,
            continuation: params.continuation,
        }),
        (_, Err(limit_error)) if errors.is_empty() => Err(limit_error),
        _ => Err(ApiError::validation(errors)),
    }
}

/// List products, from the storefront's read model.
#[utoipa::path(get, path = "/v2/products", tag = "products", params(ListParamsV2),
    responses((status = 200, body = ProductListV2, headers(
            ("view-lag-ms" = u64, description = "How long the oldest write made through this instance has waited to reach the list, in ms (0: none waits)"),
            ("view-as-of" = String, description = "When the list last caught up with every change (RFC 3339)"))),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = ["catalog.read"])))]
pub async fn list_v2(
    principal: Principal,
    views: web::Data<ProductViews>,
    params: web::Query<ListParamsV2>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let query = read_query(params.into_inner())?;
    // Taken before the read: the answer is at least this fresh.
    let freshness = views.freshness();
    let page = views.list(query).await?;
    let mut items = Vec::with_capacity(page.items.len());
    for view in &page.items {
        let Rendered::V2(product) = render(&view.product(), Version::V2)? else {
            return Err(ApiError::internal("v2 rendered as another version"));
        };
        items.push(ProductSummaryV2 {
            product,
            available: view.available,
            in_stock: view.in_stock,
        });
    }
    let mut response = HttpResponse::Ok();
    // Rounded up: a write still waiting is never reported as none.
    let lag_ms = freshness.lag.as_micros().div_ceil(1000);
    response.insert_header((LAG_HEADER, lag_ms.to_string()));
    if let Some(as_of) = freshness.as_of
        && let Ok(since_epoch) = as_of.duration_since(UNIX_EPOCH)
        && let Ok(at) =
            time::OffsetDateTime::from_unix_timestamp_nanos(since_epoch.as_nanos() as i128)
        && let Ok(text) = at.format(&time::format_description::well_known::Rfc3339)
    {
        response.insert_header((AS_OF_HEADER, text));
    }
    Ok(response.json(ProductListV2 {
        items,
        continuation: page.continuation,
    }))
}
