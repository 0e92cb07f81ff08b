//! The sync HTTP API: `/v1/imports`, `/v1/connectors`.

pub mod connectors;
mod errors;
pub mod imports;
pub mod openapi;

use actix_web::web;

/// Every sync route needs it, reads too: imports show what the systems around sent.
pub const ADMIN_SCOPE: &str = "sync.admin";

/// Routes whose bodies are feed files streamed through.
pub const STREAMED_UPLOADS: &[&str] = &["/v1/imports"];

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::resource("/v1/reconciliations")
            .route(web::get().to(connectors::reconciliations))
            .route(web::post().to(connectors::reconcile_now)),
    );
    config.service(
        web::scope("/v1/connectors")
            .service(
                web::resource("")
                    .route(web::post().to(connectors::create))
                    .route(web::get().to(connectors::list)),
            )
            .service(
                web::resource("/{id}")
                    .route(web::get().to(connectors::get))
                    .route(web::put().to(connectors::replace))
                    .route(web::delete().to(connectors::delete)),
            )
            .service(web::resource("/{id}/pause").route(web::post().to(connectors::pause)))
            .service(web::resource("/{id}/resume").route(web::post().to(connectors::resume)))
            .service(web::resource("/{id}/retry").route(web::post().to(connectors::retry)))
            .service(web::resource("/{id}/status").route(web::get().to(connectors::status))),
    );
    config.service(
        web::scope("/v1/imports")
            .service(
                web::resource("")
                    .route(web::post().to(imports::upload))
                    .route(web::get().to(imports::list)),
            )
            .service(web::resource("/{id}").route(web::get().to(imports::get))),
    );
}
