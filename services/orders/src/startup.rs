//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::sync::Arc;

use actix_web::web;
use common::bus::topics;
use common::config::{ConfigError, Settings, Sources};
use common::events::{
    EventContract, EventType, OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected,
    StockReservationFailed, StockReserved,
};
use common::http::ServiceHandle;
use common::runtime::{Dispatcher, Launch, Runtime, Service, ServiceDescriptor, SubscriptionSpec};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::catalog_client::CatalogClient;
use crate::handlers::StockEvents;
use crate::orders::{CONTAINERS, ORDERS, Orders};
use crate::settings::{DEFAULTS, OrdersSettings};

pub const SERVICE: &str = "orders";
/// The orders service's subscription on the catalog topic.
pub const SUBSCRIPTION: &str = "orders";
/// The peer orders prices from.
const CATALOG_PEER: &str = "catalog";

pub static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: SERVICE,
    default_port: 8082,
    containers: CONTAINERS,
    subscriptions: &[SubscriptionSpec {
        topic: topics::CATALOG,
        name: SUBSCRIPTION,
        types_by_rule: false,
        event_types: &[StockReserved::TYPE, StockReservationFailed::TYPE],
    }],
    outboxes: &[ORDERS],
    publishes: || {
        vec![
            EventContract::of::<OrderPlaced>(),
            EventContract::of::<OrderConfirmed>(),
            EventContract::of::<OrderRejected>(),
            EventContract::of::<OrderCancelled>(),
        ]
    },
    consumes: || {
        vec![
            EventContract::of::<StockReserved>(),
            EventContract::of::<StockReservationFailed>(),
        ]
    },
    indexed_fields: &["status"],
};

/// The orders service, as the platform hosts it.
pub struct OrdersService;

impl Service for OrdersService {
    type Settings = OrdersSettings;
    const DESCRIPTOR: &'static ServiceDescriptor = &DESCRIPTOR;
    const OWN_DEFAULTS: &'static str = DEFAULTS;

    fn validate(own: &OrdersSettings) -> Result<(), ConfigError> {
        own.validate()
    }

    fn start(
        settings: Settings,
        own: OrdersSettings,
        launch: Launch,
    ) -> BoxFuture<'static, anyhow::Result<ServiceHandle>> {
        start(settings, own, launch).boxed()
    }
}

/// Defaults, then `config/orders.toml`, then `PLATFORM__*` and `ORDERS__*`.
pub fn load_settings() -> Result<(Settings, OrdersSettings), ConfigError> {
    OrdersService::load(&Sources::standard(&[]))
}

/// Opens the store and the bus, starts the stock-event worker and the outbox relay, and
/// serves HTTP on the launch's listener. The catalog is the one the platform runs, when it
/// runs one (`launch.peers`), else the configured `catalog.url`.
pub async fn start(
    settings: Settings,
    own: OrdersSettings,
    launch: Launch,
) -> anyhow::Result<ServiceHandle> {
    let runtime = Runtime::open(&DESCRIPTOR, settings, launch.bus).await?;
    let catalog = CatalogClient::from_settings(
        &runtime.settings,
        &own.catalog,
        launch.peers.url(CATALOG_PEER),
        runtime.breakers.clone(),
    )?;
    let stock_events = Arc::new(StockEvents {
        consumer: runtime.consumer(),
    });
    let handlers = vec![(
        SUBSCRIPTION,
        Dispatcher::new()
            .on::<StockReserved, _>(stock_events.clone())
            .on::<StockReservationFailed, _>(stock_events),
    )];
    let orders = web::Data::new(Orders::new(
        runtime.store.clone(),
        catalog,
        runtime.outbox_signal.clone(),
    ));
    runtime.serve(
        handlers,
        launch.listener,
        crate::api::openapi::document,
        move |config| {
            config
                .app_data(orders.clone())
                .configure(crate::api::configure);
        },
    )
}
