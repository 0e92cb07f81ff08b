//! `/v1/messages`: what was sent where, every attempt, and sending again by hand.

use actix_web::{HttpResponse, web};
use common::ApiError;
use common::FieldError;
use common::auth::Principal;
use common::clock::rfc3339;
use common::error::Problem;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::ADMIN_SCOPE;
use crate::deliveries::Deliveries;
use crate::domain::message::{Attempt, Message, MessageStatus, is_message_id};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    at: Option<String>,
    /// The endpoint's status code, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    latency_ms: u64,
    /// The start of the answer, or why there was none.
    response: String,
    succeeded: bool,
    /// `scheduled`, or `manual` (retry, recover).
    trigger: String,
}

fn attempt_view(attempt: &Attempt) -> AttemptView {
    AttemptView {
        at: rfc3339(attempt.at),
        status_code: attempt.status_code,
        latency_ms: attempt.latency_ms,
        response: attempt.excerpt.clone(),
        succeeded: attempt.succeeded,
        trigger: attempt.trigger.clone(),
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    /// The `webhook-id` the endpoint sees, the same on every attempt.
    id: String,
    subscription_id: String,
    event_id: String,
    event_type: String,
    /// `pending`, `delivered` or `failed`.
    status: &'static str,
    /// When a pending message is next tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<String>,
    attempts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_attempt: Option<AttemptView>,
    /// The CloudEvent sent as the body.
    #[schema(value_type = Object)]
    payload: Value,
    created_at: Option<String>,
    updated_at: Option<String>,
}

fn view(message: &Message) -> MessageView {
    MessageView {
        id: message.id.clone(),
        subscription_id: message.subscription_id.clone(),
        event_id: message.event_id.clone(),
        event_type: message.event_type.clone(),
        status: message.status.as_str(),
        next_attempt_at: (message.status == MessageStatus::Pending)
            .then(|| rfc3339(message.next_attempt_at))
            .flatten(),
        attempts: message.attempts.len(),
        last_attempt: message.attempts.last().map(attempt_view),
        payload: message.event.clone(),
        created_at: rfc3339(message.created_at),
        updated_at: rfc3339(message.updated_at),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only this subscription's messages.
    #[param(min_length = 1)]
    subscription_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    #[param(pattern = "^(pending|delivered|failed)$")]
    status: Option<String>,
    /// Page size, 1-100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The `continuation` of the previous page (same filters).
    #[param(min_length = 1)]
    continuation: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessagePage {
    items: Vec<MessageView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation: Option<String>,
}

/// Messages, newest first.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListParams),
    responses((status = 200, body = MessagePage), (status = 400, body = Problem), (status = 422, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn list(
    principal: Principal,
    deliveries: web::Data<Deliveries>,
    params: web::Query<ListParams>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    let ListParams {
        subscription_id,
        status,
        limit,
        continuation,
    } = params.into_inner();
    let limit = common::validation::page_limit(limit)?;
    let status = match status.as_deref() {
        None => None,
        Some(text) => Some(MessageStatus::parse(text).ok_or_else(|| {
            ApiError::validation(vec![FieldError::new(
                "status",
                "must be pending, delivered or failed",
            )])
        })?),
    };
    if let Some(id) = &subscription_id
        && uuid::Uuid::parse_str(id).is_err()
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "subscriptionId",
            "must be a subscription id",
        )]));
    }
    let (items, continuation) = deliveries
        .page(subscription_id.as_deref(), status, limit, continuation)
        .await?;
    Ok(HttpResponse::Ok().json(MessagePage {
        items: items.iter().map(view).collect(),
        continuation,
    }))
}

fn known_message(id: &str) -> Result<(), ApiError> {
    if is_message_id(id) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("message {id}")))
    }
}

/// A message.
#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    responses((status = 200, body = MessageView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn get(
    principal: Principal,
    deliveries: web::Data<Deliveries>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_message(&id)?;
    let (message, _) = deliveries.get(&id).await?;
    Ok(HttpResponse::Ok().json(view(&message)))
}

#[derive(Serialize, ToSchema)]
pub struct AttemptList {
    /// Oldest first (the last 50 are kept).
    items: Vec<AttemptView>,
}

/// Every attempt to deliver a message: time, status code, latency, the start of the answer.
#[utoipa::path(get, path = "/v1/messages/{id}/attempts", tag = "messages",
    responses((status = 200, body = AttemptList), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn attempts(
    principal: Principal,
    deliveries: web::Data<Deliveries>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_message(&id)?;
    let (message, _) = deliveries.get(&id).await?;
    Ok(HttpResponse::Ok().json(AttemptList {
        items: message.attempts.iter().map(attempt_view).collect(),
    }))
}

/// Send a message again now, with the same `webhook-id`, as a new round of attempts.
#[utoipa::path(post, path = "/v1/messages/{id}/retry", tag = "messages",
    responses((status = 202, body = MessageView), (status = 404, body = Problem)),
    security(("bearer" = ["notifications.admin"])))]
pub async fn retry(
    principal: Principal,
    deliveries: web::Data<Deliveries>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    principal.require(ADMIN_SCOPE)?;
    known_message(&id)?;
    let message = deliveries.retry(&id).await?;
    Ok(HttpResponse::Accepted().json(view(&message)))
}
