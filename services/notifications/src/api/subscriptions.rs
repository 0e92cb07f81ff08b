//! `/v1/subscriptions`: webhook endpoints, the events they take, their signing secrets.
//! A secret is shown at creation and at rotation only.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use common::auth::Principal;
use common::clock::rfc3339;
use common::error::Problem;
use common::http::{IfMatch, etag_header_value, if_match};
use common::store::ETag;
use common::validation::{Fields, JsonObject};
use common::{ApiError, ErrorCode, FieldError};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ADMIN_SCOPE, known_subscription};
use crate::deliveries::{Deliveries, DeliveryError};
use crate::domain::filter::EventFilter;
use crate::domain::subscription::Subscription;
use crate::subscriptions::{SubscriptionError, SubscriptionInput, Subscriptions};

impl From<SubscriptionError> for ApiError {
    fn from(error: SubscriptionError) -> Self {
        match error {
            SubscriptionError::NotFound(id) => ApiError::not_found(format!("subscription {id}")),
            SubscriptionError::Stale => ApiError::new(
                ErrorCode::PreconditionFailed,
                "the subscription changed since the ETag in If-Match; read it again",
            ),
            SubscriptionError::Target(reason) => {
                ApiError::validation(vec![FieldError::new("url", reason.to_string())])
            }
            SubscriptionError::Store(error) => error.into(),
            SubscriptionError::Bus(error) => {
                tracing::warn!(%error, "an endpoint's change was refused: the bus is unavailable");
                ApiError::new(
                    ErrorCode::Unavailable,
                    "the bus is unavailable; nothing was changed",
                )
                .with_retry_after(5)
            }
        }
    }
}

impl From<DeliveryError> for ApiError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::NotFound(id) => ApiError::not_found(format!("message {id}")),
            DeliveryError::Subscription(error) => error.into(),
            DeliveryError::Store(error) => error.into(),
        }
    }
}

/// The body of `POST /v1/subscriptions` and `PUT /v1/subscriptions/{id}`.
#[derive(ToSchema)]
#[allow(dead_code)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionInputDoc {
    /// Where deliveries are POSTed: http or https, a public address.
    #[schema(min_length = 1, max_length = 2048)]
    url: String,
    /// Exact event types (`orders.order.confirmed.v1`), prefixes (`orders.*`) or `*`.
    #[schema(min_items = 1, max_items = 50)]
    event_types: Vec<String>,
    /// Up to 500 characters.
    #[schema(max_length = 500)]
    description: Option<String>,
    /// Deliveries per second at most, 1-10000.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<u32>,
    /// Deliver one at a time, so that the events about one subject (an order, a SKU) arrive
    /// in the order they happened; a message waiting for its retry holds back the rest.
    ordered: Option<bool>,
}

/// A subscription as shown; its secret only when just made.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    id: String,
    url: String,
    event_types: Vec<String>,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rate_limit: Option<u32>,
    ordered: bool,
    /// `active`, `paused` or `disabled` (after failing too long; see `disabledReason`).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    /// Since when every attempt has failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    failing_since: Option<String>,
    /// The signing secret (`whsec_...`): in the answers to create and rotate-secret only.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

fn view(subscription: &Subscription, secret: Option<String>) -> SubscriptionView {
    SubscriptionView {
        id: subscription.id.clone(),
        url: subscription.url.clone(),
        event_types: subscription.event_types.clone(),
        description: subscription.description.clone(),
        rate_limit: subscription.rate_limit,
        ordered: subscription.ordered,
        status: subscription.status.as_str(),
        disabled_reason: subscription.disabled_reason.clone(),
        failing_since: subscription.failing_since.and_then(rfc3339),
        secret,
        created_at: rfc3339(subscription.created_at),
        updated_at: rfc3339(subscription.updated_at),
    }
}

fn answer(
    status: StatusCode,
    subscription: &Subscription,
    etag: &ETag,
    secret: Option<String>,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, etag_header_value(etag)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(view(subscription, secret))
}

fn read_input(body: JsonObject) -> Result<SubscriptionInput, ApiError> {
    let known = crate::startup::deliverable_event_types();
    let mut fields = Fields::new(body);
    let url = fields.exact_string("url", true, 1..=2048);
    let event_types = fields
        .string_list("eventTypes", true, 1..=50)
        .and_then(|texts| {
            let mut filters: Vec<String> = Vec::new();
            let mut problems = Vec::new();
            for text in texts {
                match EventFilter::parse(&text, &known) {
                    Ok(filter) if !filters.contains(&filter.as_text()) => {
                        filters.push(filter.as_text())
                    }
                    Ok(_) => problems.push(format!("{text} appears twice")),
                    Err(problem) => problems.push(problem),
                }
            }
            if problems.is_empty() {
                Some(filters)
            } else {
                fields.reject("eventTypes", problems.join("; "));
                None
            }
        });
    let description = fields.string("description", false, 0..=500);
    let rate_limit = fields
        .integer("rateLimit", false, 1..=10_000)
        .and_then(|n| u32::try_from(n).ok());
    let ordered = fields.boolean("ordered", false);
    let input = url
        .zip(event_types)
        .map(|(url, event_types)| SubscriptionInput {
            url,
            event_types,
            description: description.unwrap_or_default(),
            rate_limit,
            ordered: ordered.unwrap_or(false),
        });
    fields.finish(input)
}

/// Create a subscription; the answer holds its signing secret, shown this once.
#[utoipa::path(post, path = "/v1/subscriptions", tag = "subscriptions", request_body = SubscriptionInputDoc,
    responses((status = 201, description = "Created; `ETag` and `Location` set", body = SubscriptionView),
        (status = 422, body = Problem),
        (status = 503, description = "The bus could not be asked for the endpoint's events; nothing was created", body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn create(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let input = read_input(body.into_inner())?;
    let (subscription, etag) = subscriptions.create(input).await?;
    let secret = subscription.current_secret().map(str::to_owned);
    let mut response = answer(StatusCode::CREATED, &subscription, &etag, secret);
    if let Ok(value) =
        header::HeaderValue::from_str(&format!("/v1/subscriptions/{}", subscription.id))
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page.
    #[param(min_length = 1)]
    continuation: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionPage {
    items: Vec<SubscriptionView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

/// The subscriptions, oldest first.
#[utoipa::path(get, path = "/v1/subscriptions", tag = "subscriptions", params(PageParams),
    responses((status = 200, body = SubscriptionPage), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn list(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    params: web::Query<PageParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let PageParams {
        limit,
        continuation,
    } = params.into_inner();
    let limit = common::validation::page_limit(limit)?;
    let (items, continuation) = subscriptions.page(limit, continuation).await?;
    Ok(HttpResponse::Ok().json(SubscriptionPage {
        items: items.iter().map(|(s, _)| view(s, None)).collect(),
        continuation,
    }))
}

/// A subscription (without its secret).
#[utoipa::path(get, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn get(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let (subscription, etag) = subscriptions.get(&id).await?;
    Ok(answer(StatusCode::OK, &subscription, &etag, None))
}

/// Replace a subscription's url, event types, description, rate and ordering. Needs
/// `If-Match`; the secret stays.
#[utoipa::path(put, path = "/v1/subscriptions/{id}", tag = "subscriptions", request_body = SubscriptionInputDoc,
    params(("If-Match" = String, Header, description = "The subscription's ETag as last read, or `*`", pattern = "^(\\*|(W/)?\"[!#-~]*\")$")),
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem), (status = 412, body = Problem),
        (status = 428, body = Problem), (status = 422, body = Problem),
        (status = 503, description = "The bus could not be asked for the endpoint's events; nothing was changed", body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn replace(
    req: HttpRequest,
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
    body: web::Json<JsonObject>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let expected = match if_match(&req)? {
        IfMatch::Absent => {
            return Err(ApiError::new(
                ErrorCode::PreconditionRequired,
                "send If-Match with the subscription's ETag (or *)",
            ));
        }
        IfMatch::Any => subscriptions.get(&id).await?.1,
        IfMatch::Tag(tag) => tag,
    };
    let input = read_input(body.into_inner())?;
    let (subscription, etag) = subscriptions.replace(&id, input, &expected).await?;
    Ok(answer(StatusCode::OK, &subscription, &etag, None))
}

/// Delete a subscription; its messages stay visible, and what was pending for it fails.
#[utoipa::path(delete, path = "/v1/subscriptions/{id}", tag = "subscriptions",
    params(("If-Match" = Option<String>, Header, nullable = false, description = "Only if the ETag still matches (or `*`)", pattern = "^(\\*|(W/)?\"[!#-~]*\")?$")),
    responses((status = 204), (status = 404, body = Problem), (status = 412, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn delete(
    req: HttpRequest,
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    deliveries: web::Data<Deliveries>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let expected = if_match(&req)?;
    subscriptions.delete(&id, expected.etag()).await?;
    deliveries.fail_pending(&id).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Stop sending to the endpoint; messages for it are kept and sent once resumed.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/pause", tag = "subscriptions",
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn pause(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_active(principal, subscriptions, id, false).await
}

/// Send to the endpoint again (also after it was disabled), what waited first.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/resume", tag = "subscriptions",
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn resume(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    set_active(principal, subscriptions, id, true).await
}

async fn set_active(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
    active: bool,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let (subscription, etag) = subscriptions.set_active(&id, active).await?;
    Ok(answer(StatusCode::OK, &subscription, &etag, None))
}

/// A new signing secret, shown this once; the old one keeps signing beside it for 24 hours
/// (both signatures in `webhook-signature`).
#[utoipa::path(post, path = "/v1/subscriptions/{id}/rotate-secret", tag = "subscriptions",
    responses((status = 200, body = SubscriptionView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn rotate_secret(
    principal: Principal,
    subscriptions: web::Data<Subscriptions>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let (subscription, etag, secret) = subscriptions.rotate_secret(&id).await?;
    Ok(answer(StatusCode::OK, &subscription, &etag, Some(secret)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecoverParams {
    /// RFC 3339: failed messages created since then are sent again.
    #[param(min_length = 1, format = DateTime)]
    since: String,
}

#[derive(Serialize, ToSchema)]
pub struct RecoverAnswer {
    /// How many failed messages are being sent again.
    recovered: usize,
}

/// Send again every failed message of the subscription created since a time.
#[utoipa::path(post, path = "/v1/subscriptions/{id}/recover", tag = "subscriptions", params(RecoverParams),
    responses((status = 202, body = RecoverAnswer), (status = 404, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn recover(
    principal: Principal,
    deliveries: web::Data<Deliveries>,
    id: web::Path<String>,
    params: web::Query<RecoverParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_subscription(&id)?;
    let since = time::OffsetDateTime::parse(
        &params.since,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|_| {
        ApiError::validation(vec![FieldError::new(
            "since",
            "must be an RFC 3339 time such as 2026-11-26T10:00:00Z",
        )])
    })?;
    let since_ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN);
    let recovered = deliveries.recover(&id, since_ms).await?;
    Ok(HttpResponse::Accepted().json(RecoverAnswer { recovered }))
}
