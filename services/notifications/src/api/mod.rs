//! The notifications HTTP API: `/v1/subscriptions`, `/v1/messages`.

pub mod messages;
pub mod openapi;
pub mod subscriptions;

use actix_web::web;
use common::ApiError;

/// Every notifications route needs it: subscriptions hold secrets, messages hold events.
pub const ADMIN_SCOPE: &str = "notifications.admin";

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/v1/subscriptions")
            .service(
                web::resource("")
                    .route(web::post().to(subscriptions::create))
                    .route(web::get().to(subscriptions::list)),
            )
            .service(
                web::resource("/{id}")
                    .route(web::get().to(subscriptions::get))
                    .route(web::put().to(subscriptions::replace))
                    .route(web::delete().to(subscriptions::delete)),
            )
            .service(web::resource("/{id}/pause").route(web::post().to(subscriptions::pause)))
            .service(web::resource("/{id}/resume").route(web::post().to(subscriptions::resume)))
            .service(
                web::resource("/{id}/rotate-secret")
                    .route(web::post().to(subscriptions::rotate_secret)),
            )
            .service(web::resource("/{id}/recover").route(web::post().to(subscriptions::recover))),
    );
    config.service(
        web::scope("/v1/messages")
            .service(web::resource("").route(web::get().to(messages::list)))
            .service(web::resource("/{id}").route(web::get().to(messages::get)))
            .service(web::resource("/{id}/attempts").route(web::get().to(messages::attempts)))
            .service(web::resource("/{id}/retry").route(web::post().to(messages::retry))),
    );
}

/// A subscription id is a UUID: anything else is unknown, never looked up.
pub fn known_subscription(id: &str) -> Result<(), ApiError> {
    match uuid::Uuid::parse_str(id) {
        Ok(_) => Ok(()),
        Err(_) => Err(ApiError::not_found(format!("subscription {id}"))),
    }
}
