//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use common::bus::outbox::{OutboxRelay, OutboxSignal};
use common::bus::topics;
use common::bus::worker::spawn_worker;
use common::config::{ConfigError, Settings, Sources};
use common::http::{Background, BusReadiness, HttpContext, ServiceHandle, StoreReadiness, serve};

use crate::catalog_client::CatalogClient;
use crate::handlers::StockEvents;
use crate::orders::{CONTAINERS, ORDERS, Orders};

pub const SERVICE: &str = "orders";
pub const DEFAULT_PORT: &str = "8082";
/// The orders service's subscription on the catalog topic.
pub const SUBSCRIPTION: &str = "orders";

/// Defaults, then `config/orders.toml`, then `PLATFORM__*` and `ORDERS__*`.
pub fn load_settings() -> Result<Settings, ConfigError> {
    Settings::load(SERVICE, &Sources::standard(&[("http.port", DEFAULT_PORT)]))
}

pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<ServiceHandle> {
    let store = common::bootstrap::open_store(&settings, SERVICE, CONTAINERS).await?;
    let bus = common::bootstrap::open_bus(&settings)?;
    bus.ensure_subscription(
        topics::CATALOG,
        SUBSCRIPTION,
        common::bootstrap::subscription_options(&settings),
    )
    .await?;
    let authenticator = common::bootstrap::authenticator(&settings)?;
    let catalog = CatalogClient::from_settings(&settings)?;

    let (shutdown, stopped) = tokio::sync::watch::channel(false);
    let signal = OutboxSignal::default();
    let relay = OutboxRelay {
        store: store.clone(),
        bus: bus.clone(),
        container: ORDERS,
        signal: signal.clone(),
        poll_interval: Duration::from_millis(settings.bus.poll_interval_ms),
    }
    .spawn(stopped.clone());
    let worker = spawn_worker(
        bus.clone(),
        common::bootstrap::worker_settings(&settings, topics::CATALOG, SUBSCRIPTION),
        Arc::new(StockEvents {
            store: store.clone(),
            signal: signal.clone(),
        }),
        stopped,
    );

    let orders = web::Data::new(Orders::new(store.clone(), catalog, signal));
    let context = HttpContext {
        name: SERVICE,
        settings,
        authenticator,
        readiness: vec![Arc::new(StoreReadiness(store)), Arc::new(BusReadiness(bus))],
        openapi: crate::api::openapi::document(),
    };
    let handle = serve(context, listener, move |config| {
        config
            .app_data(orders.clone())
            .configure(crate::api::configure);
    })?;
    Ok(handle.with_background(Background {
        shutdown,
        tasks: vec![relay, worker],
    }))
}
