//! The catalog's HTTP API: `/v1/products` (price as a JSON number, deprecated) and
//! `/v2/products` (price as `{amount, currency}`), with stock under each product.

mod batch;
mod errors;
mod list;
pub mod openapi;
mod products;
mod representation;
mod stock;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::{Next, from_fn};
use actix_web::web;

pub use list::{AS_OF_HEADER, LAG_HEADER};
pub use representation::Version;

pub const READ_SCOPE: &str = "catalog.read";
pub const WRITE_SCOPE: &str = "catalog.write";

/// When v1 was deprecated (RFC 9745 `Deprecation`, a Unix time) and when it goes away
/// (RFC 8594 `Sunset`, an HTTP date).
const V1_DEPRECATED_AT: &str = "@1795478400";
const V1_SUNSET: &str = "Sat, 01 May 2027 00:00:00 GMT";

pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(
            web::scope("/v1/products")
                .wrap(from_fn(announce_v1_deprecation))
                .service(
                    web::resource("")
                        .route(web::post().to(products::create_v1))
                        .route(web::get().to(products::list_v1)),
                )
                .service(
                    web::resource("/{sku}")
                        .route(web::get().to(products::get_v1))
                        .route(web::put().to(products::replace_v1))
                        .route(web::delete().to(products::delete_v1)),
                )
                .service(
                    web::resource("/{sku}/stock")
                        .route(web::get().to(stock::get_v1))
                        .route(web::put().to(stock::count_v1)),
                ),
        )
        // Before the scope: `/v2/products:batch` is not under `/v2/products/`.
        .route("/v2/products:batch", web::post().to(batch::upsert))
        .service(
            web::scope("/v2/products")
                .service(
                    web::resource("")
                        .route(web::post().to(products::create_v2))
                        .route(web::get().to(list::list_v2)),
                )
                .service(
                    web::resource("/{sku}")
                        .route(web::get().to(products::get_v2))
                        .route(web::put().to(products::replace_v2))
                        .route(web::delete().to(products::delete_v2)),
                )
                .service(
                    web::resource("/{sku}/stock")
                        .route(web::get().to(stock::get_v2))
                        .route(web::put().to(stock::count_v2)),
                ),
        );
}

async fn announce_v1_deprecation(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let mut response = next.call(req).await?;
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("deprecation"),
        HeaderValue::from_static(V1_DEPRECATED_AT),
    );
    headers.insert(
        HeaderName::from_static("sunset"),
        HeaderValue::from_static(V1_SUNSET),
    );
    headers.insert(
        HeaderName::from_static("link"),
        HeaderValue::from_static("</v2/products>; rel=\"successor-version\""),
    );
    Ok(response)
}
