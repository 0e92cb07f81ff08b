//! The sync HTTP API: `/v1/imports`.

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
        web::scope("/v1/imports")
            .service(
                web::resource("")
                    .route(web::post().to(imports::upload))
                    .route(web::get().to(imports::list)),
            )
            .service(web::resource("/{id}").route(web::get().to(imports::get))),
    );
}
