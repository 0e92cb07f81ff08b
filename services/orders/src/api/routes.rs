use std::collections::BTreeSet;

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use common::auth::Principal;
use common::error::Problem;
use common::events::OrderLineV1;
use common::http::{etag_header_value, if_match, if_none_match_hits};
use common::store::ETag;
use common::validation::{Fields, JsonObject};
use common::{ApiError, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{READ_SCOPE, WRITE_SCOPE};
use crate::domain::order::{MAX_LINES, MAX_QUANTITY};
use crate::domain::{Order, OrderStatus};
use crate::orders::{Orders, PlaceOrder};

/// An order line as answered; prices are exact decimal text.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LineView {
    sku: String,
    quantity: i64,
    #[schema(example = "12.50")]
    unit_price: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    id: String,
    customer_id: String,
    status: OrderStatus,
    /// Why a rejected order was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_email: Option<String>,
    lines: Vec<LineView>,
    #[schema(example = "25.00")]
    total: String,
    #[schema(example = "EUR")]
    currency: String,
    created_at: String,
    updated_at: String,
}

/// The body of `POST /v1/orders`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlaceOrderInput {
    /// 1-100 characters; orders are partitioned by customer.
    #[schema(min_length = 1, max_length = 100, pattern = "\\S")]
    customer_id: String,
    /// 1-50 lines, one per SKU, quantity 1-10000.
    #[schema(min_items = 1, max_items = 50)]
    lines: Vec<LineInput>,
    /// Where the customer is told that the order was confirmed, rejected or cancelled.
    #[schema(format = Email, min_length = 3, max_length = 254)]
    contact_email: Option<String>,
}

#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(deny_unknown_fields)]
pub struct LineInput {
    /// 1-64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
    )]
    sku: String,
    #[schema(minimum = 1, maximum = 10_000)]
    quantity: i64,
}

#[derive(Serialize, ToSchema)]
pub struct OrderPageView {
    items: Vec<OrderView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this customer's orders (a single-partition query).
    #[param(min_length = 1)]
    customer_id: Option<String>,
    /// pending, confirmed, rejected or cancelled.
    #[param(pattern = "^(pending|confirmed|rejected|cancelled)$")]
    status: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page (same filters).
    #[param(min_length = 1)]
    continuation: Option<String>,
}

fn timestamp(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn view(order: &Order) -> Result<OrderView, ApiError> {
    let amount = |units: i64| {
        order
            .money(units)
            .map(|money| money.amount())
            .ok_or_else(|| {
                ApiError::internal(format!(
                    "order {} has currency {:?}",
                    order.id, order.currency
                ))
            })
    };
    Ok(OrderView {
        id: order.id.clone(),
        customer_id: order.customer_id.clone(),
        status: order.status,
        reason: order.reason.clone(),
        contact_email: order.contact_email.clone(),
        lines: order
            .lines
            .iter()
            .map(|line| {
                Ok(LineView {
                    sku: line.sku.clone(),
                    quantity: line.quantity,
                    unit_price: amount(line.unit_price_minor_units)?,
                })
            })
            .collect::<Result<_, ApiError>>()?,
        total: amount(order.total_minor_units)?,
        currency: order.currency.clone(),
        created_at: timestamp(order.created_at),
        updated_at: timestamp(order.updated_at),
    })
}

fn respond(status: StatusCode, order: &Order, etag: &ETag) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::build(status)
        .insert_header((header::ETAG, etag_header_value(etag)))
        .json(view(order)?))
}

fn read_request(body: JsonObject) -> Result<PlaceOrder, ApiError> {
    let mut fields = Fields::new(body);
    let customer_id = fields.string("customerId", true, 1..=100);
    let raw_lines = fields.object_list("lines", true, 1..=MAX_LINES);
    let mut lines = Vec::new();
    let mut seen = BTreeSet::new();
    for (index, line) in raw_lines.unwrap_or_default().into_iter().enumerate() {
        let mut line_fields = Fields::nested_at(line, &format!("lines.{index}"));
        let sku = line_fields
            .exact_string("sku", true, 1..=64)
            .and_then(|text| match common::sku::Sku::parse(&text) {
                Ok(sku) => Some(sku.as_str().to_owned()),
                Err(rule) => {
                    line_fields.reject("sku", rule);
                    None
                }
            });
        let quantity = line_fields.integer("quantity", true, 1..=MAX_QUANTITY);
        if let Some(sku) = &sku
            && !seen.insert(sku.clone())
        {
            line_fields.reject(
                "sku",
                "appears in more than one line; put the whole quantity on one",
            );
        }
        let line = sku
            .zip(quantity)
            .map(|(sku, quantity)| OrderLineV1 { sku, quantity });
        match line_fields.finish(line) {
            Ok(line) => lines.push(line),
            Err(error) => fields.absorb(error),
        }
    }
    let contact_email = fields.email("contactEmail", false);
    let request = customer_id.map(|customer_id| PlaceOrder {
        customer_id,
        lines,
        contact_email,
    });
    fields.finish(request)
}

fn idempotency_key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get("idempotency-key") else {
        return Ok(None);
    };
    let key =
        value.to_str().ok().map(str::trim).filter(|key| {
            (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
        });
    key.map(|key| Some(key.to_owned())).ok_or_else(|| {
        ApiError::validation(vec![FieldError::new(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        )])
    })
}

/// Place an order: priced from the catalog, stored as `pending`; stock is reserved
/// asynchronously and the order becomes `confirmed` or `rejected`.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", request_body = PlaceOrderInput,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = "^[!-~]{1,255}$", description = "Same key and body: same answer, one order")),
    responses((status = 202, description = "Accepted; `Location` and `ETag` set", body = OrderView),
        (status = 422, body = Problem), (status = 424, body = Problem), (status = 503, body = Problem)),
    security(("bearer" = ["orders.write"])))]
pub async fn place(
    req: HttpRequest,
    principal: Principal,
    orders: web::Data<Orders>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let key = idempotency_key(&req)?;
    let request = read_request(body.into_inner())?;
    let (order, etag, replayed) = orders
        .place(&principal.subject, request, key.as_deref())
        .await?;
    let mut response = respond(StatusCode::ACCEPTED, &order, &etag)?;
    if let Ok(location) = header::HeaderValue::from_str(&format!("/v1/orders/{}", order.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if replayed && let Ok(value) = header::HeaderValue::from_str("true") {
        response.headers_mut().insert(
            header::HeaderName::from_static("idempotent-replayed"),
            value,
        );
    }
    Ok(response)
}

/// Read an order. `If-None-Match` answers 304 when unchanged.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "orders",
    params(("If-None-Match" = Option<String>, Header, nullable = false, description = "An ETag read before: 304 while it is current")),
    responses((status = 200, body = OrderView), (status = 304), (status = 404, body = Problem)),
    security(("bearer" = ["orders.read"])))]
pub async fn get(
    req: HttpRequest,
    principal: Principal,
    orders: web::Data<Orders>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let (order, etag) = orders.get(&id).await?;
    if if_none_match_hits(&req, &etag) {
        return Ok(HttpResponse::NotModified()
            .insert_header((header::ETAG, etag_header_value(&etag)))
            .finish());
    }
    respond(StatusCode::OK, &order, &etag)
}

/// List orders, by customer and status.
#[utoipa::path(get, path = "/v1/orders", tag = "orders", params(ListParams),
    responses((status = 200, body = OrderPageView), (status = 400, body = Problem)),
    security(("bearer" = ["orders.read"])))]
pub async fn list(
    principal: Principal,
    orders: web::Data<Orders>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(READ_SCOPE)?;
    let ListParams {
        customer_id,
        status,
        limit,
        continuation,
    } = params.into_inner();
    let status = match status.as_deref() {
        None => None,
        Some(text) => Some(OrderStatus::parse(text).ok_or_else(|| {
            ApiError::validation(vec![FieldError::new(
                "status",
                "must be pending, confirmed, rejected or cancelled",
            )])
        })?),
    };
    let limit = common::validation::page_limit(limit)?;
    let page = orders
        .list(customer_id.as_deref(), status, limit, continuation)
        .await?;
    let items = page
        .orders
        .iter()
        .map(|(order, _)| view(order))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(OrderPageView {
        items,
        continuation: page.continuation,
    }))
}

/// Cancel a confirmed order; its stock is released. `If-Match` optional.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "orders",
    params(("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 200, body = OrderView), (status = 404, body = Problem), (status = 409, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = ["orders.write"])))]
pub async fn cancel(
    req: HttpRequest,
    principal: Principal,
    orders: web::Data<Orders>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(WRITE_SCOPE)?;
    let expected = if_match(&req)?;
    let (order, etag) = orders.cancel(&id, expected.etag()).await?;
    respond(StatusCode::OK, &order, &etag)
}
