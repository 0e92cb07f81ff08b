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

use crate::catalog::{CONTAINERS, Catalog, STOCK};
use crate::handlers::OrderEvents;

pub const SERVICE: &str = "catalog";
pub const DEFAULT_PORT: &str = "8081";
/// The catalog's subscription on the orders topic.
pub const SUBSCRIPTION: &str = "catalog";

/// Defaults, then `config/catalog.toml`, then `PLATFORM__*` and `CATALOG__*`.
pub fn load_settings() -> Result<Settings, ConfigError> {
    Settings::load(SERVICE, &Sources::standard(&[("http.port", DEFAULT_PORT)]))
}

/// Opens the store and the bus, starts the order-event worker and the outbox relay, and
/// serves HTTP on `listener`.
pub async fn start(settings: Settings, listener: TcpListener) -> anyhow::Result<ServiceHandle> {
    let store = common::bootstrap::open_store(&settings, SERVICE, CONTAINERS).await?;
    let bus = common::bootstrap::open_bus(&settings)?;
    bus.ensure_subscription(
        topics::ORDERS,
        SUBSCRIPTION,
        common::bootstrap::subscription_options(&settings),
    )
    .await?;
    let authenticator = common::bootstrap::authenticator(&settings)?;

    let (shutdown, stopped) = tokio::sync::watch::channel(false);
    let signal = OutboxSignal::default();
    let relay = OutboxRelay {
        store: store.clone(),
        bus: bus.clone(),
        container: STOCK,
        signal: signal.clone(),
        poll_interval: Duration::from_millis(settings.bus.poll_interval_ms),
    }
    .spawn(stopped.clone());
    let worker = spawn_worker(
        bus.clone(),
        common::bootstrap::worker_settings(&settings, topics::ORDERS, SUBSCRIPTION),
        Arc::new(OrderEvents {
            store: store.clone(),
            signal,
        }),
        stopped,
    );

    let catalog = web::Data::new(Catalog::new(store.clone()));
    let context = HttpContext {
        name: SERVICE,
        settings,
        authenticator,
        readiness: vec![Arc::new(StoreReadiness(store)), Arc::new(BusReadiness(bus))],
        openapi: crate::api::openapi::document(),
    };
    let handle = serve(context, listener, move |config| {
        config
            .app_data(catalog.clone())
            .configure(crate::api::configure);
    })?;
    Ok(handle.with_background(Background {
        shutdown,
        tasks: vec![relay, worker],
    }))
}
