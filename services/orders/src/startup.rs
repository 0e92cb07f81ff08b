//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::web;
use common::bootstrap::{Messaging, ServiceRuntime};
use common::bus::{SharedBus, topics};
use common::config::{ConfigError, Settings, Sources};
use common::http::{ServiceHandle, serve};

use crate::catalog_client::CatalogClient;
use crate::handlers::StockEvents;
use crate::orders::{CONTAINERS, ORDERS, Orders};

pub const SERVICE: &str = "orders";
pub const DEFAULT_PORT: &str = "8082";
/// The orders service's subscription on the catalog topic.
pub const SUBSCRIPTION: &str = "orders";

const MESSAGING: Messaging = Messaging {
    topic: topics::CATALOG,
    subscription: SUBSCRIPTION,
    outbox_container: ORDERS,
};

/// Defaults, then `config/orders.toml`, then `PLATFORM__*` and `ORDERS__*`.
pub fn load_settings() -> Result<Settings, ConfigError> {
    Settings::load(SERVICE, &Sources::standard(&[("http.port", DEFAULT_PORT)]))
}

/// Opens the store and the bus, starts the stock-event worker and the outbox relay, and
/// serves HTTP on `listener`.
pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<ServiceHandle> {
    start_on_bus(settings, listener, None).await
}

/// As [`start`], on the given bus instead of the configured one.
pub async fn start_on_bus(
    settings: Settings,
    listener: TcpListener,
    bus: Option<SharedBus>,
) -> anyhow::Result<ServiceHandle> {
    let runtime = ServiceRuntime::open(settings, SERVICE, CONTAINERS, &MESSAGING, bus).await?;
    let catalog = CatalogClient::from_settings(&runtime.settings)?;
    let handler = StockEvents {
        store: runtime.store.clone(),
        signal: runtime.signal.clone(),
    };
    let background = runtime.background(&MESSAGING, Arc::new(handler));
    let orders = web::Data::new(Orders::new(
        runtime.store.clone(),
        catalog,
        runtime.signal.clone(),
    ));
    let context = runtime.http_context(SERVICE, crate::api::openapi::document());
    let handle = serve(context, listener, move |config| {
        config
            .app_data(orders.clone())
            .configure(crate::api::configure);
    })?;
    Ok(handle.with_background(background))
}
