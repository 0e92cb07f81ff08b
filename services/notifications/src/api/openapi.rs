use common::http::BearerAuth;
use utoipa::OpenApi;

use super::{messages, subscriptions};

#[derive(OpenApi)]
#[openapi(
    info(title = "notifications", description = "Webhook subscriptions whose endpoints receive the platform's events as Standard Webhooks (signed, retried on a schedule, every attempt recorded), and e-mail to customers about their orders. Errors are application/problem+json (RFC 9457)."),
    paths(subscriptions::create, subscriptions::list, subscriptions::get, subscriptions::replace,
        subscriptions::delete, subscriptions::pause, subscriptions::resume,
        subscriptions::rotate_secret, subscriptions::recover,
        messages::list, messages::get, messages::attempts, messages::retry),
    components(schemas(common::error::Problem, common::error::FieldError)),
    modifiers(&BearerAuth),
)]
pub struct NotificationsApi;

pub fn document() -> serde_json::Value {
    serde_json::to_value(NotificationsApi::openapi()).unwrap_or_default()
}
