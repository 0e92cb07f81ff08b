//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::sync::Arc;

use actix_web::web;
use common::bus::topics;
use common::config::{ConfigError, NoOwnSettings, Settings, Sources};
use common::events::{
    EventContract, EventType, OrderCancelled, OrderPlaced, ProductChanged, ProductDeleted,
    StockChanged, StockReleased, StockReservationFailed, StockReserved,
};
use common::http::ServiceHandle;
use common::runtime::{
    Dispatcher, FeedHandler, FeedSignal, Launch, Runtime, Service, ServiceDescriptor,
    SubscriptionSpec,
};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::catalog::{CONTAINERS, Catalog, PRODUCTS, STOCK};
use crate::change_events::{self, ProductChangeEvents, StockChangeEvents};
use crate::handlers::OrderEvents;
use crate::views::{self, ProductChanges, ProductViews, StockChanges};

pub const SERVICE: &str = "catalog";
/// The catalog's subscription on the orders topic.
pub const SUBSCRIPTION: &str = "catalog";

pub static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: SERVICE,
    default_port: 8081,
    containers: CONTAINERS,
    subscriptions: &[SubscriptionSpec {
        topic: topics::ORDERS,
        name: SUBSCRIPTION,
        types_by_rule: false,
        event_types: &[OrderPlaced::TYPE, OrderCancelled::TYPE],
    }],
    outboxes: &[STOCK],
    publishes: || {
        vec![
            EventContract::of::<StockReserved>(),
            EventContract::of::<StockReservationFailed>(),
            EventContract::of::<StockReleased>(),
            EventContract::of::<ProductChanged>(),
            EventContract::of::<ProductDeleted>(),
            EventContract::of::<StockChanged>(),
        ]
    },
    consumes: || {
        vec![
            EventContract::of::<OrderPlaced>(),
            EventContract::of::<OrderCancelled>(),
        ]
    },
    indexed_fields: &[],
};

/// The catalog service, as the platform hosts it.
pub struct CatalogService;

impl Service for CatalogService {
    type Settings = NoOwnSettings;
    const DESCRIPTOR: &'static ServiceDescriptor = &DESCRIPTOR;
    const OWN_DEFAULTS: &'static str = "";

    fn start(
        settings: Settings,
        _own: NoOwnSettings,
        launch: Launch,
    ) -> BoxFuture<'static, anyhow::Result<ServiceHandle>> {
        start(settings, launch).boxed()
    }
}

/// Defaults, then `config/catalog.toml`, then `PLATFORM__*` and `CATALOG__*`.
pub fn load_settings() -> Result<Settings, ConfigError> {
    Ok(CatalogService::load(&Sources::standard(&[]))?.0)
}

/// Opens the store and the bus, starts the order-event worker and the outbox relay, and
/// serves HTTP on the launch's listener.
pub async fn start(settings: Settings, launch: Launch) -> anyhow::Result<ServiceHandle> {
    let mut runtime = Runtime::open(&DESCRIPTOR, settings, launch.bus).await?;
    // The storefront's list, kept by the change feeds of products and stock.
    let view_signal = FeedSignal::default();
    let views = ProductViews::new(runtime.store.clone(), view_signal.clone());
    let lagging = view_signal.clone();
    runtime.metrics.lag_gauge(
        "platform.view.lag",
        "How long the oldest product or stock change not yet in the product view has waited.",
        move || lagging.lag(),
    );
    for (container, handler) in [
        (
            PRODUCTS,
            Arc::new(ProductChanges(views.clone())) as Arc<dyn FeedHandler>,
        ),
        (STOCK, Arc::new(StockChanges(views.clone()))),
    ] {
        let reader = runtime.feed_reader(container, views::READER, view_signal.clone(), handler);
        runtime.follow(reader);
    }
    // Product and stock changes as events, from the same feeds.
    let events_signal = FeedSignal::default();
    for (container, handler) in [
        (
            PRODUCTS,
            Arc::new(ProductChangeEvents(runtime.bus.clone())) as Arc<dyn FeedHandler>,
        ),
        (STOCK, Arc::new(StockChangeEvents(runtime.bus.clone()))),
    ] {
        let reader = runtime.feed_reader(
            container,
            change_events::READER,
            events_signal.clone(),
            handler,
        );
        runtime.follow(reader);
    }
    let moved = crate::legacy::move_legacy_stock(&runtime.store).await?;
    let order_events = Arc::new(OrderEvents {
        legacy_records: moved.processed_remain,
        gate: crate::stock_gate::StockGate::default(),
        consumer: runtime
            .consumer()
            .also_notify(view_signal.clone())
            .also_notify(events_signal.clone()),
    });
    let handlers = vec![(
        SUBSCRIPTION,
        Dispatcher::new()
            .on::<OrderPlaced, _>(order_events.clone())
            .on::<OrderCancelled, _>(order_events),
    )];
    let catalog =
        web::Data::new(Catalog::new(runtime.store.clone(), view_signal).also_notify(events_signal));
    let views = web::Data::from(views);
    runtime.serve(
        handlers,
        launch.listener,
        crate::api::openapi::document,
        move |config| {
            config
                .app_data(catalog.clone())
                .app_data(views.clone())
                .configure(crate::api::configure);
        },
    )
}
