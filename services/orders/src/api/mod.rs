//! The orders HTTP API, `/v1/orders`.

mod errors;
pub mod openapi;
mod routes;

use actix_web::web;

pub const READ_SCOPE: &str = "orders.read";
pub const WRITE_SCOPE: &str = "orders.write";

pub fn configure(config: &mut web::ServiceConfig) {
    config.service(
        web::scope("/v1/orders")
            .service(
                web::resource("")
                    .route(web::post().to(routes::place))
                    .route(web::get().to(routes::list)),
            )
            .service(web::resource("/{id}").route(web::get().to(routes::get)))
            .service(web::resource("/{id}/cancel").route(web::post().to(routes::cancel))),
    );
}
