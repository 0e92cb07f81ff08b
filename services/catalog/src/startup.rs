//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;
use common::config::{ConfigError, Settings, Sources};
use common::http::{HttpContext, ServiceHandle, StoreReadiness, serve};

use crate::catalog::{CONTAINERS, Catalog};

pub const SERVICE: &str = "catalog";
pub const DEFAULT_PORT: &str = "8081";

/// Defaults, then `config/catalog.toml`, then `PLATFORM__*` and `CATALOG__*`.
pub fn load_settings() -> Result<Settings, ConfigError> {
    Settings::load(SERVICE, &Sources::standard(&[("http.port", DEFAULT_PORT)]))
}

/// Opens the store and starts serving on `listener`.
pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<ServiceHandle> {
    let store = common::bootstrap::open_store(&settings, SERVICE, CONTAINERS).await?;
    let authenticator = common::bootstrap::authenticator(&settings)?;
    let catalog = web::Data::new(Catalog::new(store.clone()));
    let context = HttpContext {
        name: SERVICE,
        settings,
        authenticator,
        readiness: vec![Arc::new(StoreReadiness(store))],
        openapi: crate::api::openapi::document(),
    };
    let handle = serve(context, listener, move |config| {
        config
            .app_data(catalog.clone())
            .configure(crate::api::configure);
    })?;
    Ok(handle)
}
