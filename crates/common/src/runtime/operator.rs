//! What an operator can do with any service over its own API (scope `platform.operator`):
//! see the dead letters of the service's subscriptions, replay or discard them. The console
//! and scripts use this; on Azure it works the same against Service Bus.

use actix_web::{HttpResponse, web};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ServiceDescriptor;
use crate::auth::Principal;
use crate::bus::{BusError, SharedBus};
use crate::error::{ApiError, ErrorCode};
use crate::http::OPERATOR_SCOPE;

/// Dead letters shown per subscription at most.
const MAX_SHOWN: usize = 100;

#[derive(Clone)]
struct Operated {
    bus: SharedBus,
    descriptor: &'static ServiceDescriptor,
}

/// Adds the operator routes under `/v1/admin`.
pub(crate) fn configure(
    config: &mut web::ServiceConfig,
    bus: SharedBus,
    descriptor: &'static ServiceDescriptor,
) {
    config
        .app_data(web::Data::new(Operated { bus, descriptor }))
        .route("/v1/admin/dead-letters", web::get().to(list))
        .route(
            "/v1/admin/dead-letters/{topic}/{subscription}/{id}/replay",
            web::post().to(replay),
        )
        .route(
            "/v1/admin/dead-letters/{topic}/{subscription}/{id}/discard",
            web::post().to(discard),
        );
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

fn unavailable(error: BusError) -> ApiError {
    tracing::warn!(%error, "the bus could not be asked for dead letters");
    ApiError::new(ErrorCode::Unavailable, "the bus is unavailable").with_retry_after(5)
}

async fn list(
    principal: Principal,
    operated: web::Data<Operated>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    principal.require(OPERATOR_SCOPE)?;
    let limit = query.limit.unwrap_or(MAX_SHOWN).clamp(1, MAX_SHOWN);
    let mut subscriptions = Vec::new();
    for subscription in operated.descriptor.subscriptions {
        let dead = operated
            .bus
            .dead_letters(subscription.topic, subscription.name, limit)
            .await
            .map_err(unavailable)?;
        let messages: Vec<Value> = dead
            .into_iter()
            .map(|letter| {
                let event = &letter.message.event;
                json!({
                    "id": event.id,
                    "type": event.event_type,
                    "subject": event.subject,
                    "source": event.source,
                    "time": event.time.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                    "reason": letter.reason,
                    "description": letter.description,
                    "deliveryCount": letter.delivery_count,
                    "data": event.data,
                })
            })
            .collect();
        subscriptions.push(json!({
            "topic": subscription.topic,
            "subscription": subscription.name,
            "messages": messages,
        }));
    }
    Ok(HttpResponse::Ok().json(json!({
        "service": operated.descriptor.name,
        "subscriptions": subscriptions,
    })))
}

#[derive(Deserialize)]
struct Letter {
    topic: String,
    subscription: String,
    id: String,
}

/// The service's own subscription named by the path, or 404.
fn own<'a>(operated: &Operated, letter: &'a Letter) -> Result<(&'a str, &'a str), ApiError> {
    operated
        .descriptor
        .subscriptions
        .iter()
        .any(|s| s.topic == letter.topic && s.name == letter.subscription)
        .then_some((letter.topic.as_str(), letter.subscription.as_str()))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "subscription {}/{} of {}",
                letter.topic, letter.subscription, operated.descriptor.name
            ))
        })
}

/// What an operator does with a dead letter.
#[derive(Clone, Copy)]
enum Action {
    Replay,
    Discard,
}

async fn replay(
    principal: Principal,
    operated: web::Data<Operated>,
    letter: web::Path<Letter>,
) -> Result<HttpResponse, ApiError> {
    act(principal, &operated, &letter, Action::Replay).await
}

async fn discard(
    principal: Principal,
    operated: web::Data<Operated>,
    letter: web::Path<Letter>,
) -> Result<HttpResponse, ApiError> {
    act(principal, &operated, &letter, Action::Discard).await
}

async fn act(
    principal: Principal,
    operated: &Operated,
    letter: &Letter,
    action: Action,
) -> Result<HttpResponse, ApiError> {
    principal.require(OPERATOR_SCOPE)?;
    let (topic, subscription) = own(operated, letter)?;
    let done = match action {
        Action::Replay => operated.bus.replay(topic, subscription, &letter.id).await,
        Action::Discard => operated.bus.discard(topic, subscription, &letter.id).await,
    }
    .map_err(unavailable)?;
    if !done {
        return Err(ApiError::not_found(format!("dead letter {}", letter.id)));
    }
    let operator = &principal.subject;
    let answer = match action {
        Action::Replay => {
            tracing::info!(topic, subscription, id = %letter.id, %operator, "dead letter replayed");
            json!({"replayed": letter.id})
        }
        Action::Discard => {
            tracing::warn!(topic, subscription, id = %letter.id, %operator, "dead letter discarded");
            json!({"discarded": letter.id})
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}
