//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::sync::Arc;

use actix_web::web;
use common::bus::topics;
use common::config::{ConfigError, Settings, Sources};
use common::events::{
    EndpointDisabled, EventContract, EventType, OrderCancelled, OrderConfirmed, OrderPlaced,
    OrderRejected, ProductChanged, ProductDeleted, StockChanged, StockReleased,
    StockReservationFailed, StockReserved,
};
use common::http::ServiceHandle;
use common::runtime::{Launch, Runtime, Service, ServiceDescriptor, SubscriptionSpec};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::deliveries::{Deliveries, MESSAGES};
use crate::handlers::{Fanout, dispatchers};
use crate::mail::{EMAILS, Mailer};
use crate::measure::WebhookMetrics;
use crate::settings::{DEFAULTS, EmailKind, NotificationsSettings};
use crate::subscriptions::{SUBSCRIPTIONS, Subscriptions};
use crate::wanted::{ReconcileTick, WantedEvents};

pub const SERVICE: &str = "notifications";

pub const ORDERS_SUBSCRIPTION: &str = "notifications-orders";
pub const CATALOG_SUBSCRIPTION: &str = "notifications-catalog";
pub const OWN_SUBSCRIPTION: &str = "notifications-own";

const ORDER_EVENTS: &[&str] = &[
    OrderPlaced::TYPE,
    OrderConfirmed::TYPE,
    OrderRejected::TYPE,
    OrderCancelled::TYPE,
];
const CATALOG_EVENTS: &[&str] = &[
    StockReserved::TYPE,
    StockReservationFailed::TYPE,
    StockReleased::TYPE,
    ProductChanged::TYPE,
    ProductDeleted::TYPE,
    StockChanged::TYPE,
];
const OWN_EVENTS: &[&str] = &[EndpointDisabled::TYPE];

/// Every event type a webhook subscription can ask for.
pub fn deliverable_event_types() -> Vec<&'static str> {
    [ORDER_EVENTS, CATALOG_EVENTS, OWN_EVENTS].concat()
}

pub static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: SERVICE,
    default_port: 8084,
    containers: &[SUBSCRIPTIONS, MESSAGES, EMAILS],
    subscriptions: &[
        SubscriptionSpec {
            topic: topics::ORDERS,
            name: ORDERS_SUBSCRIPTION,
            types_by_rule: true,
            event_types: ORDER_EVENTS,
        },
        SubscriptionSpec {
            topic: topics::CATALOG,
            name: CATALOG_SUBSCRIPTION,
            types_by_rule: true,
            event_types: CATALOG_EVENTS,
        },
        SubscriptionSpec {
            topic: topics::NOTIFICATIONS,
            name: OWN_SUBSCRIPTION,
            types_by_rule: true,
            event_types: OWN_EVENTS,
        },
    ],
    outboxes: &[SUBSCRIPTIONS],
    publishes: || vec![EventContract::of::<EndpointDisabled>()],
    consumes: || common::events::contracts_of(&deliverable_event_types()),
    indexed_fields: &[],
};

/// The notifications service, as the platform hosts it.
pub struct NotificationsService;

impl Service for NotificationsService {
    type Settings = NotificationsSettings;
    const DESCRIPTOR: &'static ServiceDescriptor = &DESCRIPTOR;
    const OWN_DEFAULTS: &'static str = DEFAULTS;
    const OWN_SECRETS: &'static [&'static str] = &["email.smtp.password"];

    fn validate(own: &NotificationsSettings) -> Result<(), ConfigError> {
        own.validate()
    }

    fn start(
        settings: Settings,
        own: NotificationsSettings,
        launch: Launch,
    ) -> BoxFuture<'static, anyhow::Result<ServiceHandle>> {
        start(settings, own, launch).boxed()
    }
}

/// One pass over the due webhook messages.
struct ScanTick(Deliveries);

#[async_trait::async_trait]
impl common::runtime::functions::Tick for ScanTick {
    async fn tick(&self) -> Result<(), String> {
        self.0.scan_once().await.map_err(|e| e.to_string())
    }
}

/// Defaults, then `config/notifications.toml`, then `PLATFORM__*` and `NOTIFICATIONS__*`.
pub fn load_settings() -> Result<(Settings, NotificationsSettings), ConfigError> {
    NotificationsService::load(&Sources::standard(&[]))
}

/// Opens the store and the bus, starts the deliveries and serves HTTP on the launch's
/// listener.
pub async fn start(
    settings: Settings,
    own: NotificationsSettings,
    launch: Launch,
) -> anyhow::Result<ServiceHandle> {
    let mut runtime = Runtime::open(&DESCRIPTOR, settings, launch.bus).await?;
    let wanted = WantedEvents::new(runtime.bus.clone(), own.email.kind != EmailKind::Off);
    let subscriptions = Subscriptions::new(
        runtime.store.clone(),
        own.webhooks.allow_private_targets,
        runtime.outbox_signal.clone(),
    )
    .asking(wanted.clone());
    // Before serving: the endpoints' and the mail's events are let in (a new release may
    // deliver more types than the one that added the rules); only then do the subscriptions,
    // which took every type meanwhile, keep to the rules.
    crate::wanted::reconcile_now(&wanted, &subscriptions)
        .await
        .map_err(|error| anyhow::anyhow!("matching the bus rules to the endpoints: {error}"))?;
    runtime.keep_to_type_rules().await?;
    let (kept_wanted, kept_subscriptions) = (wanted.clone(), subscriptions.clone());
    runtime.run_beside(
        "the bus rules",
        Box::new(move |stop| {
            tokio::spawn(crate::wanted::run(kept_wanted, kept_subscriptions, stop))
        }),
    );
    runtime.on_timer(
        "bus-rules",
        "0 */5 * * * *",
        Arc::new(ReconcileTick {
            wanted,
            subscriptions: subscriptions.clone(),
        }),
    );
    let deliveries = Deliveries::new(
        runtime.store.clone(),
        subscriptions.clone(),
        own.webhooks.clone(),
        runtime.is_custom_handler(),
        WebhookMetrics::new(&runtime.metrics, subscriptions.clone()),
        runtime.breakers.clone(),
    )?;
    let mailer = Arc::new(Mailer::new(
        runtime.store.clone(),
        &own.email,
        &runtime.settings.data_dir,
    )?);
    let scan = deliveries.clone();
    runtime.run_beside(
        "the webhook delivery scan",
        Box::new(move |stop| tokio::spawn(scan.run_scan(stop))),
    );
    let (store, retention_days) = (runtime.store.clone(), own.webhooks.retention_days);
    runtime.run_beside(
        "the retention purge",
        Box::new(move |stop| tokio::spawn(crate::retention::run(store, retention_days, stop))),
    );
    // As a custom handler: due retries every minute, the purge every hour.
    runtime.on_timer(
        "webhook-retries",
        "0 * * * * *",
        Arc::new(ScanTick(deliveries.clone())),
    );
    runtime.on_timer(
        "retention",
        "0 17 * * * *",
        Arc::new(crate::retention::RetentionTick {
            store: runtime.store.clone(),
            retention_days,
        }),
    );
    let (orders, catalog, own_events) = dispatchers(Arc::new(Fanout {
        deliveries: deliveries.clone(),
        mailer,
    }));
    let handlers = vec![
        (ORDERS_SUBSCRIPTION, orders),
        (CATALOG_SUBSCRIPTION, catalog),
        (OWN_SUBSCRIPTION, own_events),
    ];
    let subscriptions = web::Data::new(subscriptions);
    let deliveries = web::Data::new(deliveries);
    runtime.serve(
        handlers,
        launch.listener,
        crate::api::openapi::document,
        move |config| {
            config
                .app_data(subscriptions.clone())
                .app_data(deliveries.clone())
                .configure(crate::api::configure);
        },
    )
}
