//! The one start-up path, shared by `main`, `platform up` and the tests.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::web;
use common::bus::topics;
use common::config::{ConfigError, Settings, Sources};
use common::events::{
    EventContract, EventType, OrderCancelled, OrderConfirmed, OrderPlaced, OrderRejected,
    ProductChanged, ProductDeleted, StockChanged,
};
use common::files::SharedFiles;
use common::files::blob::BlobFiles;
use common::files::folder::FolderFiles;
use common::http::ServiceHandle;
use common::runtime::functions::Tick;
use common::runtime::{Dispatcher, Launch, Runtime, Service, ServiceDescriptor, SubscriptionSpec};
use futures::FutureExt;
use futures::future::BoxFuture;

use crate::api::{STREAMED_UPLOADS, imports::MaxUpload};
use crate::catalog_client::CatalogClient;
use crate::connectors::{CONNECTORS, Connectors};
use crate::handlers::Replication;
use crate::imports::{IMPORTS, Imports};
use crate::measure::{ImportMetrics, connector_gauges};
use crate::reconcile::{RECONCILIATIONS, Reconciler, TIMERS, Timer};
use crate::settings::{DEFAULTS, FilesKind, SyncSettings};

pub const SERVICE: &str = "sync";
/// The peer imports write to.
const CATALOG_PEER: &str = "catalog";

/// Sync's subscriptions: the changes connectors replicate.
pub const ORDERS_SUBSCRIPTION: &str = "sync-orders";
pub const CATALOG_SUBSCRIPTION: &str = "sync-catalog";

pub static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
    name: SERVICE,
    default_port: 8083,
    containers: &[IMPORTS, CONNECTORS, RECONCILIATIONS, TIMERS],
    subscriptions: &[
        SubscriptionSpec {
            topic: topics::ORDERS,
            name: ORDERS_SUBSCRIPTION,
            types_by_rule: false,
            event_types: &[
                OrderPlaced::TYPE,
                OrderConfirmed::TYPE,
                OrderRejected::TYPE,
                OrderCancelled::TYPE,
            ],
        },
        SubscriptionSpec {
            topic: topics::CATALOG,
            name: CATALOG_SUBSCRIPTION,
            types_by_rule: false,
            event_types: &[
                ProductChanged::TYPE,
                ProductDeleted::TYPE,
                StockChanged::TYPE,
            ],
        },
    ],
    outboxes: &[],
    publishes: Vec::new,
    consumes: || {
        vec![
            EventContract::of::<OrderPlaced>(),
            EventContract::of::<OrderConfirmed>(),
            EventContract::of::<OrderRejected>(),
            EventContract::of::<OrderCancelled>(),
            EventContract::of::<ProductChanged>(),
            EventContract::of::<ProductDeleted>(),
            EventContract::of::<StockChanged>(),
        ]
    },
    indexed_fields: &[],
};

/// The sync service, as the platform hosts it.
pub struct SyncService;

impl Service for SyncService {
    type Settings = SyncSettings;
    const DESCRIPTOR: &'static ServiceDescriptor = &DESCRIPTOR;
    const OWN_DEFAULTS: &'static str = DEFAULTS;
    const OWN_SECRETS: &'static [&'static str] = &["files.blob.sas"];

    fn validate(own: &SyncSettings) -> Result<(), ConfigError> {
        own.validate()
    }

    fn start(
        settings: Settings,
        own: SyncSettings,
        launch: Launch,
    ) -> BoxFuture<'static, anyhow::Result<ServiceHandle>> {
        start(settings, own, launch).boxed()
    }
}

/// One pass of the import runner.
struct ImportsTick(Imports);

#[async_trait::async_trait]
impl Tick for ImportsTick {
    async fn tick(&self) -> Result<(), String> {
        self.0.run_once().await.map_err(|e| e.to_string())
    }
}

/// One round of connector deliveries.
struct ConnectorsTick(Connectors);

#[async_trait::async_trait]
impl Tick for ConnectorsTick {
    async fn tick(&self) -> Result<(), String> {
        self.0.round().await.map(drop).map_err(|e| e.to_string())
    }
}

/// A reconciliation run.
struct ReconcileTick(Reconciler);

#[async_trait::async_trait]
impl Tick for ReconcileTick {
    async fn tick(&self) -> Result<(), String> {
        self.0
            .run("timer")
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Defaults, then `config/sync.toml`, then `PLATFORM__*` and `SYNC__*`.
pub fn load_settings() -> Result<(Settings, SyncSettings), ConfigError> {
    SyncService::load(&Sources::standard(&[]))
}

/// Where feeds live: `files.folder`, else `<data_dir>/sync-files`.
pub fn files_folder(settings: &Settings, own: &SyncSettings) -> PathBuf {
    if own.files.folder.is_empty() {
        settings.data_dir.join("sync-files")
    } else {
        PathBuf::from(&own.files.folder)
    }
}

/// Opens the store, the files and the catalog client, starts the import runner and serves
/// HTTP on the launch's listener.
pub async fn start(
    settings: Settings,
    own: SyncSettings,
    launch: Launch,
) -> anyhow::Result<ServiceHandle> {
    let files: SharedFiles = match own.files.kind {
        FilesKind::Folder => {
            let folder = FolderFiles::open(files_folder(&settings, &own))?;
            // The watched folder is there to be found before the first feed is dropped.
            common::private_files::create_private_dir(
                &folder
                    .root()
                    .join(crate::imports::INCOMING.trim_end_matches('/')),
            )?;
            Arc::new(folder)
        }
        FilesKind::Blob => Arc::new(BlobFiles::connect(&own.files.blob).await?),
    };
    let mut runtime = Runtime::open(&DESCRIPTOR, settings, launch.bus).await?;
    let catalog = CatalogClient::from_settings(
        &runtime.settings,
        &own.catalog,
        launch.peers.url(CATALOG_PEER),
        runtime.breakers.clone(),
    )?;
    let reconciling_catalog = catalog.clone();
    let imports = Imports::new(
        runtime.store.clone(),
        files,
        catalog,
        own.imports.clone(),
        runtime.instance.clone(),
        ImportMetrics::new(&runtime.metrics),
    );
    let runner = imports.clone();
    runtime.run_beside(
        "the feed imports",
        Box::new(move |stop| tokio::spawn(runner.run(stop))),
    );
    let connectors = Connectors::new(
        runtime.store.clone(),
        own.connectors.clone(),
        runtime.breakers.clone(),
    )?;
    connector_gauges(&runtime.metrics, connectors.clone());
    let deliveries = connectors.clone();
    runtime.run_beside(
        "the connector deliveries",
        Box::new(move |stop| tokio::spawn(deliveries.run(stop))),
    );
    // As a custom handler: imports when a feed is written to the container (and every
    // minute, for the watched prefix and imports waiting for the catalog); connector
    // retries every minute.
    let imports_tick: Arc<dyn Tick> = Arc::new(ImportsTick(imports.clone()));
    runtime.on_timer("imports", "30 * * * * *", imports_tick.clone());
    let container = own.files.blob.container.clone();
    runtime.on_blob(
        "incoming",
        &format!("{container}/{}{{name}}", crate::imports::INCOMING),
        imports_tick.clone(),
    );
    runtime.on_blob(
        "uploads",
        &format!("{container}/{}{{name}}", crate::imports::UPLOADS),
        imports_tick,
    );
    runtime.on_timer(
        "connectors",
        "0 * * * * *",
        Arc::new(ConnectorsTick(connectors.clone())),
    );
    let replication = std::sync::Arc::new(Replication {
        connectors: connectors.clone(),
    });
    let handlers = vec![
        (
            ORDERS_SUBSCRIPTION,
            Dispatcher::new()
                .on::<OrderPlaced, _>(replication.clone())
                .on::<OrderConfirmed, _>(replication.clone())
                .on::<OrderRejected, _>(replication.clone())
                .on::<OrderCancelled, _>(replication.clone()),
        ),
        (
            CATALOG_SUBSCRIPTION,
            Dispatcher::new()
                .on::<ProductChanged, _>(replication.clone())
                .on::<ProductDeleted, _>(replication.clone())
                .on::<StockChanged, _>(replication),
        ),
    ];
    let reconciler = Reconciler::new(
        runtime.store.clone(),
        connectors.clone(),
        reconciling_catalog,
        std::time::Duration::from_millis(own.connectors.timeout_ms),
        own.connectors.allow_private_targets,
    )?;
    if !own.timers.reconcile.trim().is_empty() {
        let timer = Timer::parse("reconcile", &own.timers.reconcile)
            .map_err(|reason| anyhow::anyhow!("timers.reconcile: {reason}"))?;
        let (store, timed) = (runtime.store.clone(), reconciler.clone());
        runtime.run_beside(
            "the reconcile timer",
            Box::new(move |stop| {
                tokio::spawn(crate::reconcile::run_timer(store, timer, timed, stop))
            }),
        );
        // NCRONTAB has six fields, seconds first.
        let schedule = own.timers.reconcile.trim();
        let schedule = if schedule.split_whitespace().count() == 5 {
            format!("0 {schedule}")
        } else {
            schedule.to_owned()
        };
        runtime.on_timer(
            "reconcile",
            &schedule,
            Arc::new(ReconcileTick(reconciler.clone())),
        );
    }
    let reconciler = web::Data::new(reconciler);
    let connectors = web::Data::new(connectors);
    runtime.stream_uploads_on(STREAMED_UPLOADS);
    let imports = web::Data::new(imports);
    let max_upload = web::Data::new(MaxUpload(own.imports.max_upload_mb * 1024 * 1024));
    runtime.serve(
        handlers,
        launch.listener,
        crate::api::openapi::document,
        move |config| {
            config
                .app_data(imports.clone())
                .app_data(connectors.clone())
                .app_data(reconciler.clone())
                .app_data(max_upload.clone())
                .configure(crate::api::configure);
        },
    )
}
